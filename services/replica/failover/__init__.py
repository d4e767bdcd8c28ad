"""Failover of a site's VMs (issue 11, docs/failover.md)."""
