"""The compliance app's REST API, mounted under /api/v1/."""
