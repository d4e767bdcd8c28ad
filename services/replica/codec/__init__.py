"""The delta stream's byte formats, shared by both sites: the primary encodes, the DR site decodes.

``chunks`` encodes and verifies one chunk (blake3, zstd, zero chunks); ``wire`` writes and reads the
``SendDelta`` messages that carry them without protobuf's copies; ``media`` frames the same stream as
an external-media export file.
"""
