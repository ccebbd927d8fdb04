"""The deployment signing key, and signed documents in canonical JSON.

The deployment signs what it publishes about itself (``/api/v1/policy``) with an Ed25519
key of its own, so a client can check that the policy it was shown is the one this
deployment serves, and pin the key. The key is the 32-byte seed, as base64, from
``DEPLOYMENT_SIGNING_KEY``; without it (and without PRODUCTION=1) a seed is generated once
into ``var/deployment_signing_key`` (mode 0600) and reused, as the secret key is. Every
node of a deployment must sign with the same key, which is why PRODUCTION=1 requires the
environment variable. The seed is never logged and never leaves this module except into
``protocol.primitives.ed25519_sign``.

Canonical JSON (``json-c14n-sorted-v1``): ``json.dumps`` with keys sorted by code point,
no whitespace (``,`` and ``:`` separators), non-ASCII characters as UTF-8 rather than
``\\u`` escapes, then UTF-8 encoded. Only strings, whole numbers, booleans, null, lists and
objects with string keys are allowed (no floats, whose text form differs between
languages). A verifier re-serialises the ``policy`` object it received the same way and
checks the signature over those bytes; ``JSON.stringify`` over key-sorted objects gives
the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from protocol.errors import ProtocolError
from protocol.primitives import (
    ED25519_SEED_BYTES,
    ed25519_public_key,
    ed25519_sign,
    random_bytes,
)

CANONICAL_FORM: Final = "json-c14n-sorted-v1"
KEY_FILE_NAME: Final = "deployment_signing_key"
KEY_ENV: Final = "DEPLOYMENT_SIGNING_KEY"


class SigningKeyError(Exception):
    """The deployment signing key is missing or unusable; the message says how to fix it."""


@dataclass(frozen=True, slots=True)
class DeploymentKey:
    seed: bytes = field(repr=False)
    public_key: bytes

    @classmethod
    def from_seed(cls, seed: bytes) -> DeploymentKey:
        return cls(seed, ed25519_public_key(seed))

    @property
    def public_key_b64(self) -> str:
        return base64.b64encode(self.public_key).decode("ascii")


def _decode_seed(text: str, where: str) -> bytes:
    try:
        seed = base64.b64decode(text.strip().encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise SigningKeyError(f"{where}: not standard base64") from None
    if len(seed) != ED25519_SEED_BYTES:
        raise SigningKeyError(
            f"{where}: must be {ED25519_SEED_BYTES} bytes (an Ed25519 seed), got {len(seed)}"
        )
    return seed


def _key_file(path: Path) -> bytes:
    """The seed stored at ``path``, created (mode 0600) on first use.

    Written to a private temporary file and hard-linked into place, so two processes
    starting at once never read a half-written key: the loser of the race reads the
    winner's.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(base64.b64encode(random_bytes(ED25519_SEED_BYTES)).decode("ascii"))
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            tmp.unlink(missing_ok=True)
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise SigningKeyError(f"{path}: cannot read the deployment signing key: {exc}") from None
    return _decode_seed(text, f"{path} (delete it to generate a new key)")


def load_deployment_key(
    environ: Mapping[str, str], key_file: Path, *, production: bool
) -> DeploymentKey:
    """The key from ``DEPLOYMENT_SIGNING_KEY``, else from (or generated into) ``key_file``."""
    if environ.get(KEY_ENV):
        return DeploymentKey.from_seed(_decode_seed(environ[KEY_ENV], KEY_ENV))
    if production:
        raise SigningKeyError(
            f"PRODUCTION=1 needs {KEY_ENV} (base64 of a 32-byte Ed25519 seed) in the "
            "environment, so that every node signs with the same key"
        )
    return DeploymentKey.from_seed(_key_file(key_file))


_lock = threading.Lock()
_loaded: DeploymentKey | None = None


def deployment_key() -> DeploymentKey:
    """This process's deployment key, loaded once (``compliance.apps`` loads it at start)."""
    global _loaded
    with _lock:
        if _loaded is None:
            from django.conf import settings

            _loaded = load_deployment_key(
                os.environ, Path(settings.VAR_DIR) / KEY_FILE_NAME, production=settings.PRODUCTION
            )
        return _loaded


# --- canonical JSON and signatures ------------------------------------------------------------


def _check_canonical(value: Any, path: str) -> None:
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_canonical(item, f"{path}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{path}: object key {key!r} is not a string")
            _check_canonical(item, f"{path}.{key}")
        return
    raise TypeError(f"{path or 'document'}: {type(value).__name__} has no canonical JSON form")


def canonical_json(value: Any) -> bytes:
    """The ``json-c14n-sorted-v1`` bytes of ``value`` (see the module doc)."""
    _check_canonical(value, "")
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


@dataclass(frozen=True, slots=True)
class SignedDocument:
    document: Mapping[str, Any]
    signature: bytes
    public_key: bytes

    def as_json(self, name: str) -> dict[str, Any]:
        return {
            name: self.document,
            "signature_b64": base64.b64encode(self.signature).decode("ascii"),
            "public_key_b64": base64.b64encode(self.public_key).decode("ascii"),
            "canonical": CANONICAL_FORM,
        }


def sign_document(document: Mapping[str, Any], key: DeploymentKey) -> SignedDocument:
    try:
        signature = ed25519_sign(key.seed, canonical_json(document))
    except ProtocolError as exc:  # a seed of the wrong length: a bug, not bad input
        raise SigningKeyError(f"cannot sign with the deployment key: {exc.message}") from None
    return SignedDocument(document, signature, key.public_key)
