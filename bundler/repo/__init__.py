"""The OTA ring repository: store, publish/promote/yank, status, extend."""
