"""Database models of the keys app (none yet)."""
