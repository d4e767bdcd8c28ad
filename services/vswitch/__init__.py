"""The Overland vswitch service."""
