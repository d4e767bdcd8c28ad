"""``python -m services.vswitch``: run this host's vswitch agent (see ``--help``)."""

import sys

from services.vswitch.process import main

sys.exit(main())
