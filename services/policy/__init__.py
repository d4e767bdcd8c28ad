"""The Overland policy service."""
