"""``python -m services.policy``: run the policy service (see ``--help``)."""

import sys

from services.policy.process import main

sys.exit(main())
