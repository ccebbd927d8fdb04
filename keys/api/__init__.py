"""The REST API of the keys app: accounts, sessions, devices and prekeys (docs/api.md)."""
