"""Safety numbers: what two people compare to know no one sits between them.

Derived only from the two accounts' identity keys and usernames, so they stay the same
when either person adds or removes a device, and change when an account key changes.
Follows Signal's NumericFingerprintGenerator (version 0 layout):

    h_0     = 0x0000 | account_public_key[32] | username (UTF-8)
    h_(i+1) = SHA-512(h_i | account_public_key)          for i in 0 .. 5199
    digits  = for each of the first 6 five-byte chunks c of h_5200:
              int.from_bytes(c, "big") mod 100000, as 5 digits  -> 30 digits per person
    number  = the two 30-digit strings, smaller first            -> 60 digits

The 5,200 iterations make a second-preimage search for a matching number cost an attacker
about 2**112 hash evaluations (Signal's figure).

QR payload (scanned instead of reading digits):
    version u8 (1) | fingerprint[32] | fingerprint[32]
where each fingerprint is the first 32 bytes of that person's h_5200, in the same order as
their 30-digit strings in the number (the smaller digit string first; if the digit strings
are equal, the smaller fingerprint first). Both people compute the same payload; a scan
matches only if both keys match.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import primitives as p
from .encoding import encode_utf8
from .errors import ErrorCode, ProtocolError

ITERATIONS = 5200
FINGERPRINT_VERSION = b"\x00\x00"
QR_VERSION = 1


def _digest(account_public_key: bytes, username: str) -> bytes:
    if len(account_public_key) != p.ED25519_PUBLIC_BYTES:
        raise ProtocolError(ErrorCode.BAD_KEY, "account identity key must be 32 bytes")
    state = FINGERPRINT_VERSION + account_public_key + encode_utf8(username)
    for _ in range(ITERATIONS):
        state = p.sha512(state + account_public_key)
    return state


def _digits(digest: bytes) -> str:
    return "".join(
        f"{int.from_bytes(digest[i : i + 5], 'big') % 100000:05d}" for i in range(0, 30, 5)
    )


@dataclass(frozen=True, slots=True)
class SafetyNumber:
    digits: str  # 60 digits
    qr_payload: bytes  # 65 bytes

    def groups(self) -> list[str]:
        """Twelve groups of five digits, as shown to people."""
        return [self.digits[i : i + 5] for i in range(0, 60, 5)]

    def matches_scan(self, scanned: bytes) -> bool:
        return p.constant_time_equal(self.qr_payload, scanned)


def safety_number(
    own_username: str, own_account_key: bytes, their_username: str, their_account_key: bytes
) -> SafetyNumber:
    mine = _digest(own_account_key, own_username)
    theirs = _digest(their_account_key, their_username)
    first, second = sorted([(_digits(mine), mine[:32]), (_digits(theirs), theirs[:32])])
    return SafetyNumber(
        digits=first[0] + second[0],
        qr_payload=bytes((QR_VERSION,)) + first[1] + second[1],
    )
