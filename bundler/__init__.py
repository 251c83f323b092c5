"""Bundle builder for K3s airgap bundles (runs on a connected host)."""

__version__ = "0.1.0"
