"""Unit tests of the vswitch control plane: routing table core, next-hop selection, watch loop."""
