"""Protocol figures: wire overhead, first-message size, ratchet speed on one core.

    make bench-protocol        (or: .venv/bin/python -m bench.protocol_figures [--json FILE])

Overhead is measured on real encodings, not computed from the spec: an ordinary 1:1 text
message (after the session is established) minus the UTF-8 text, with and without Padmé
padding, and the same for the first (prekey) message. Speed is encrypt + decrypt of a
100-byte plaintext, one message after another in one process (one core), over a bounded
number of messages and seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from protocol.content import Text, encode_content
from protocol.frames import Deliver, DeviceMessage, Send, encode_frame
from protocol.keys import (
    AccountIdentity,
    DeviceKeys,
    KemPreKeyPair,
    OneTimePreKeyPair,
    PreKeyBundle,
    SignedPreKeyPair,
)
from protocol.session import SessionRecord


class PreKeys:
    """The private prekeys of one device (``protocol.session.PreKeyStore``); one-time keys
    are consumed on lookup. Shared with bench.relay_bench."""

    def __init__(self) -> None:
        self.signed: dict[int, bytes] = {}
        self.one_time: dict[int, bytes] = {}
        self.kem: dict[int, tuple[bytes, bool]] = {}

    def signed_prekey(self, key_id: int) -> bytes | None:
        return self.signed.get(key_id)

    def one_time_prekey(self, key_id: int) -> bytes | None:
        return self.one_time.pop(key_id, None)

    def kem_prekey(self, key_id: int) -> tuple[bytes, bool] | None:
        return self.kem.get(key_id)


def _party() -> tuple[AccountIdentity, DeviceKeys, PreKeys, PreKeyBundle]:
    account = AccountIdentity.generate()
    device = DeviceKeys.create(account, 1)
    store = PreKeys()
    spk = SignedPreKeyPair.generate(device, 1)
    opk = OneTimePreKeyPair.generate(1)
    kem = KemPreKeyPair.generate(device, 1, last_resort=False)
    store.signed[1], store.one_time[1], store.kem[1] = (
        spk.private_key,
        opk.private_key,
        (
            kem.seed,
            False,
        ),
    )
    return (
        account,
        device,
        store,
        PreKeyBundle(account.public_key, device.certificate, spk.public, opk.public, kem.public),
    )


def measure(max_messages: int = 20_000, max_seconds: float = 5.0) -> dict[str, Any]:
    a_account, a_device, a_store, _ = _party()
    _, b_device, b_store, b_bundle = _party()
    alice = SessionRecord.initiate(a_device, b_bundle)
    bob = SessionRecord()
    text = "hello, how are you?"
    now_ms = int(time.time() * 1000)

    first = alice.encrypt(encode_content(Text(text, now_ms)))
    bob.decrypt(first, b_device, b_store)
    reply = bob.encrypt(encode_content(Text(text, now_ms)))
    alice.decrypt(reply, a_device, a_store)
    ordinary = alice.encrypt(encode_content(Text(text, now_ms)))
    padded = alice.encrypt(encode_content(Text(text, now_ms), hide_length=True))
    text_bytes = len(text.encode())

    # The same message as it crosses the relay: in a SEND frame (client → server) and in a
    # DELIVER frame (server → client), each inside a WebSocket frame (client frames are
    # masked: 2 + 4 header bytes for payloads under 126 bytes; server frames 2).
    send = encode_frame(Send(1, "bob", (DeviceMessage(1, 123456789, ordinary),)))
    deliver = encode_frame(Deliver(1234, "alice", 1, now_ms, ordinary))
    ws_client = 2 + 4 + (2 if len(send) >= 126 else 0)
    ws_server = 2 + (2 if len(deliver) >= 126 else 0)

    plaintext = b"x" * 100
    count = 0
    start = time.perf_counter()
    deadline = start + max_seconds
    while count < max_messages and time.perf_counter() < deadline:
        bob.decrypt(alice.encrypt(plaintext), b_device, b_store)
        count += 1
    elapsed = time.perf_counter() - start

    return {
        "text_bytes": text_bytes,
        "message_overhead_bytes": len(ordinary) - text_bytes,
        "message_overhead_padded_bytes": len(padded) - text_bytes,
        "first_message_bytes": len(first),
        "first_message_overhead_bytes": len(first) - text_bytes,
        "send_frame_overhead_bytes": len(send) + ws_client - text_bytes,
        "deliver_frame_overhead_bytes": len(deliver) + ws_server - text_bytes,
        "ratchet_encrypt_decrypt_per_second": round(count / elapsed),
        "ratchet_messages_measured": count,
    }


def print_table(figures: dict[str, Any]) -> None:
    rows = [
        ("ordinary 1:1 message overhead (bytes beyond the text)", "message_overhead_bytes"),
        ("  the same with Padmé padding", "message_overhead_padded_bytes"),
        ("first (prekey) message, total bytes", "first_message_bytes"),
        ("  overhead beyond the text", "first_message_overhead_bytes"),
        ("on the wire, client→server (SEND + WebSocket)", "send_frame_overhead_bytes"),
        ("on the wire, server→client (DELIVER + WebSocket)", "deliver_frame_overhead_bytes"),
        ("ratchet encrypt+decrypt per second, one core", "ratchet_encrypt_decrypt_per_second"),
    ]
    width = max(len(label) for label, _ in rows)
    print(f"protocol figures (text of {figures['text_bytes']} bytes)")
    for label, key in rows:
        print(f"  {label:<{width}}  {figures[key]:>8,}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    figures = measure(max_seconds=args.seconds)
    print_table(figures)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(figures, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
