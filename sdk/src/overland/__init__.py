"""Overland client SDK: typed sync and asyncio clients for the policy, vswitch and replica APIs."""
