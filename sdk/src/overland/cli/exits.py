"""The ``overland`` command's exit codes that do not come from a gRPC status (those are in
``overland.cli.common.EXIT_CODES``). Kept apart, with no imports, so that the console script can exit
with them before anything else loads."""

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
