"""Integration tests of the vswitch agent against a real etcd."""
