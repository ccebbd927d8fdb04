"""Admin registrations of the keys app (none yet: it has no models)."""
