"""Database models of the messaging app (none yet)."""
