"""``python -m services.replica --role primary|dr ...``: run one replica service process (see ``--help``)."""

import sys

from services.replica.process import main

sys.exit(main())
