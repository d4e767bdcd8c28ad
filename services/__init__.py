"""Overland services: policy (routing table in etcd), vswitch (NVGRE datapath) and replica (VHD DR)."""
