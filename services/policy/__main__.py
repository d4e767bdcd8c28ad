"""``python -m services.policy``: run the policy service."""

from services.policy.server import main

main()
