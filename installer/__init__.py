"""Offline installer for K3s airgap bundles.

This package runs on the disconnected host. It imports only the Python standard library and
must keep working on Python 3.8 (edge operating systems ship old interpreters). The bundle
format, canonical JSON, the content-addressed writer and the trust verifier are defined here
once; the builder (`bundler`) imports them to write and check its own output.
"""

__version__ = "0.1.0"
