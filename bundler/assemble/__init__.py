"""bundle build: bundle files from a lock (archives, writer, SBOM, deltas, parts)."""
