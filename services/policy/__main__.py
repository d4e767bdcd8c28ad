"""``python -m services.policy``: run the policy service (see ``--help``)."""

import sys

from services.policy.main import main

sys.exit(main())
