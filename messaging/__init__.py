"""Store and forward of opaque ciphertext: envelopes and per-device queues, the WebSocket
relay consumer, attachment blobs and group membership.

An envelope is persisted before it is acknowledged or fanned out, and deleted when the
recipient device acknowledges it. The server never sees plaintext or message keys.
"""
