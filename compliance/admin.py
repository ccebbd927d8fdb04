"""Admin registrations of the compliance app (none yet: it has no models)."""
