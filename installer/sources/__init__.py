"""Where bundles and ring repositories come from: folders, http(s), OCI, split parts."""
