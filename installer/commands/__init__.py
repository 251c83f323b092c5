"""The installer commands as functions over a Layout, and their results."""
