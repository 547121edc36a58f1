"""Shared pieces of OVSS: the worker protocol, image I/O, output writing and hashing.

Installed into the harness environment and into every method environment, so that the
three method workers speak the same protocol and write the same files. Depends on numpy
and Pillow only (no torch).
"""

from ovss_common.protocol import PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION"]
