"""Bytes from upstream: HTTP transport, OCI client, sources, the cache, the engine."""
