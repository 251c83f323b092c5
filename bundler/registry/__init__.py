"""OCI registries as a destination: push, pull, mirror."""
