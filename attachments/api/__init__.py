"""The REST API of the attachments app: create, upload, resume and download (docs/api.md)."""
