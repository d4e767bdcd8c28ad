"""Build tools run from the Makefile (guest image, container images), importable by their tests."""
