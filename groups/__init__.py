"""Groups: who is in which group, and who administers it (docs/api.md, "Groups").

The server keeps membership because the relay fans out every group message; it never
learns a group's name, timer or messages (docs/protocol.md §17.1).
"""
