"""Bundle builder for K3s airgap bundles (runs on a connected host)."""

from installer import __version__  # one version for both packages (pyproject reads it there)

__all__ = ["__version__"]
