"""Admin registrations of the messaging app (none yet: it has no models)."""
