"""A minimal QMP client (qemu's JSON control protocol over a unix socket): connect, negotiate, execute.

Asynchronous events (``SHUTDOWN``, ``POWERDOWN``...) may arrive between a command and its answer; they
are kept in ``events`` so a caller can look at them afterwards. The process shell knows a VM stopped
from its qemu exiting, not from events.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from services.replica.vm.errors import QemuFailed, QmpCommandFailed

COMMAND_TIMEOUT = 10.0


class QmpClient:
    """One QMP session. Not thread-safe: a VM's process shell owns it."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._file = sock.makefile("rb")
        self.events: list[dict[str, Any]] = []
        greeting = self._read()
        if "QMP" not in greeting:
            raise QemuFailed(f"not a QMP greeting: {greeting}")
        self.version = greeting["QMP"].get("version", {}).get("qemu", {})
        self.execute("qmp_capabilities")

    @classmethod
    def connect(cls, path: Path, timeout: float = COMMAND_TIMEOUT) -> QmpClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            return cls(sock)
        except OSError as error:
            sock.close()
            raise QemuFailed(f"cannot talk QMP on {path}: {error}") from error
        except BaseException:
            sock.close()
            raise

    def _read(self) -> dict[str, Any]:
        try:
            line = self._file.readline()
        except OSError as error:
            raise QemuFailed(f"QMP read failed: {error}") from error
        if not line:
            raise QemuFailed("qemu closed the QMP connection")
        try:
            message = json.loads(line)
        except ValueError as error:
            raise QemuFailed(f"QMP sent a line that is not JSON: {line[:200]!r}") from error
        if not isinstance(message, dict):
            raise QemuFailed(f"QMP sent a non-object: {line[:200]!r}")
        return message

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run ``command`` and return its ``return`` value; a QMP error raises ``QmpCommandFailed``."""
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(request).encode() + b"\n")
        except OSError as error:
            raise QemuFailed(f"QMP {command}: {error}") from error
        while True:
            message = self._read()
            if "event" in message:
                self.events.append(message)
                continue
            if "error" in message:
                failure = message["error"]
                raise QmpCommandFailed(f"QMP {command}: {failure.get('class')}: {failure.get('desc')}")
            if "return" in message:
                return message["return"]

    def close(self) -> None:
        self._file.close()
        self._sock.close()
