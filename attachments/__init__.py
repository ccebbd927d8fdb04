"""Attachment blobs: resumable, chunked upload and download of opaque encrypted blobs
(docs/protocol.md §17.5, docs/api.md "Attachments").

The client encrypts; the server stores ciphertext under a random 128-bit id and never
learns a file's name, type or key.
"""
