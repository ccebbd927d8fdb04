"""Database models of the compliance app (none yet)."""
