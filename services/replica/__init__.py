"""The Overland replica service."""
