"""The device: install root, layout, state, staging, placement, journal, repair."""
