"""The client's one exception type, ``SealpostError``, and the codes it can carry.

A refusal from the server (REST ``{code, message}`` or a relay ``ERROR`` frame), a protocol
failure (``protocol.errors.ProtocolError``) and a local condition (no server reachable, no
account in this home) all reach the application as ``SealpostError``. ``code`` is the
server's ``ErrorCode`` whenever there is one; ``LocalErrorCode`` names the few conditions
the shared enum has no code for, because they never cross the wire.
"""

from __future__ import annotations

from enum import StrEnum

from protocol.errors import ErrorCode, ProtocolError


class LocalErrorCode(StrEnum):
    """Conditions only a client sees. The value is the slug printed by the CLI."""

    UNREACHABLE = "unreachable"  # no connection to the server (refused, DNS, TLS, timeout)
    NOT_REGISTERED = "not_registered"  # this home holds no account yet
    ALREADY_REGISTERED = "already_registered"  # register() on a home that has an account
    BAD_RESPONSE = "bad_response"  # the server answered something the contract does not allow
    CLOSED = "closed"  # the connection was closed while a request was waiting
    STORAGE = "storage"  # the local store cannot be opened or written

    @property
    def slug(self) -> str:
        return self.value


Code = ErrorCode | LocalErrorCode


class SealpostError(Exception):
    """A failure with a stable code: ``error.code`` is an ``ErrorCode`` or ``LocalErrorCode``.

    ``status`` is the HTTP status for REST errors, ``fields`` the per-field errors the
    server listed (``{"device.signed_prekey_b64": [{"code", "message"}]}``) and
    ``retry_after`` the seconds a 429 asked to wait.
    """

    def __init__(
        self,
        code: Code,
        message: str,
        *,
        status: int | None = None,
        fields: dict[str, list[dict[str, str]]] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{code.slug}: {message}")
        self.code: Code = code
        self.message = message
        self.status = status
        self.fields = fields or {}
        self.retry_after = retry_after

    @property
    def slug(self) -> str:
        return self.code.slug

    @classmethod
    def from_protocol(cls, exc: ProtocolError, context: str | None = None) -> SealpostError:
        message = f"{context}: {exc.message}" if context else exc.message
        return cls(exc.code, message)
