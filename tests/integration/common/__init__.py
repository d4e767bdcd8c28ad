"""Overland tests."""
