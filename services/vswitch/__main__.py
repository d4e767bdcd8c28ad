"""``python -m services.vswitch``: run this host's vswitch agent (see ``--help``)."""

import sys

from services.vswitch.main import main

sys.exit(main())
