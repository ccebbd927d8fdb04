"""Protocol-wide limits. Each is also listed, with its reason, in docs/protocol.md."""

from typing import Final

PROTOCOL_VERSION: Final = 1

# Double Ratchet: libsignal's figures. At most this many skipped message keys are kept per
# session (oldest evicted first), and one message may not make the receiver derive more
# than MAX_JUMP skipped keys, summed over both chains and every state the session record
# tries: each costs two HMACs, so the bound caps the work one forged header can force.
MAX_SKIPPED_KEYS: Final = 2_000
MAX_JUMP: Final = 25_000

# A session record keeps the current ratchet state and this many earlier ones, so a
# message sent on a session that both sides started at once still decrypts.
MAX_ARCHIVED_STATES: Final = 10

# Server-side limits that clients also check before sending (Signal's figures).
MAX_CIPHERTEXT_BYTES: Final = 96 * 1024  # one device's ciphertext in a send
MAX_FRAME_BYTES: Final = 4 * 1024 * 1024  # one transport frame (a send to every device)
MAX_DEVICES_PER_SEND: Final = 1_000
MAX_PREKEYS_PER_UPLOAD: Final = 100
MAX_USERNAME_BYTES: Final = 64
MAX_TEXT_BYTES: Final = 64 * 1024
MAX_LIST_ITEMS: Final = 10_000  # any other list in a frame
MAX_STRING_BYTES: Final = 4 * 1024  # any other string in a frame
MAX_DEVICE_ID: Final = 0xFFFF

# Disappearing messages (section 17): a timer or a SEND's ttl_seconds is at most a year.
MAX_TTL_SECONDS: Final = 31_536_000
