"""bundle lock: resolve a spec into a lock, the discovery gate."""
