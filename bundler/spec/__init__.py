"""What the user asked for: bundles.toml, its files, the lock model, refs, K3s facts."""
