"""Sealpost's sans-I/O protocol: the wire format and the crypto protocol.

Nothing here performs I/O or imports Django, asyncio or sockets (an import-linter
contract enforces it): bytes in, values or ``ProtocolError`` out. The server and the
Python reference client both wrap this package; the web client reimplements it in
JavaScript and proves byte-exact agreement through ``protocol/vectors/*.json``.
"""

from .errors import ErrorCode, ProtocolError
from .limits import PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION", "ErrorCode", "ProtocolError"]
