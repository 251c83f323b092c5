"""The bundle formats, pure: envelope, manifest, tar reader, canonical JSON."""
