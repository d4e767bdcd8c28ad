"""Tests of ``make run`` (services/devstack.py) as a person runs it."""
