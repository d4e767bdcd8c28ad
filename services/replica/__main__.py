"""``python -m services.replica ...``: run one site, one replica service process (see ``--help``)."""

import sys

from services.replica.process import main

sys.exit(main())
