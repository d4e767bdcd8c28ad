"""``python -m services.replica --role primary|dr ...``: run one replica service process."""

import sys

from services.replica.server import main

sys.exit(main())
