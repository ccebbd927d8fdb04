"""Group ids and the roster digest (protocol/groups.py, docs/protocol.md 17.1)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from protocol import primitives as p
from protocol.encoding import Writer
from protocol.errors import ProtocolError
from protocol.groups import (
    GROUP_ID_BYTES,
    RosterEntry,
    group_id_hex,
    new_group_id,
    parse_group_id,
    roster_digest,
)

VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors"


def load() -> dict[str, Any]:
    return json.loads((VECTORS / "groups.json").read_text(encoding="utf-8"))


def entries_of(raw: list[dict[str, Any]]) -> list[RosterEntry]:
    return [RosterEntry(e["username"], e["device_id"], e["registration_id"]) for e in raw]


def test_roster_vectors() -> None:
    doc = load()
    assert len(doc["rosters"]) >= 3
    for case in doc["rosters"]:
        assert roster_digest(entries_of(case["entries"])).hex() == case["digest"]
    for case in doc["invalid_rosters"]:
        with pytest.raises(ProtocolError) as info:
            roster_digest(entries_of(case["entries"]))
        assert info.value.code.slug == case["error"]


def test_group_id_vectors() -> None:
    doc = load()
    for case in doc["group_ids"]:
        assert group_id_hex(bytes.fromhex(case["bytes"])) == case["text"]
        assert parse_group_id(case["text"]).hex() == case["bytes"]
    for text in doc["invalid_group_ids"]:
        with pytest.raises(ProtocolError) as info:
            parse_group_id(text)
        assert info.value.code.slug == "invalid_value"


def test_digest_is_the_documented_hash_and_ignores_input_order() -> None:
    entries = [RosterEntry("bob", 10, 2), RosterEntry("bobby", 1, 5), RosterEntry("bob", 2, 3)]
    expected = (
        Writer().raw(b"Sealpost v1 roster\x00").varint(3)
        .str_("bob").varint(2).varint(3)
        .str_("bob").varint(10).varint(2)
        .str_("bobby").varint(1).varint(5)
        .getvalue()
    )  # fmt: skip
    assert roster_digest(entries) == p.sha256(expected)[:16]
    for seed in range(5):
        shuffled = entries[:]
        random.Random(seed).shuffle(shuffled)
        assert roster_digest(shuffled) == roster_digest(entries)
    changed = [*entries[:2], RosterEntry("bob", 2, 4)]  # a device re-registered
    assert roster_digest(changed) != roster_digest(entries)


def test_group_ids() -> None:
    group_id = new_group_id()
    assert len(group_id) == GROUP_ID_BYTES and new_group_id() != group_id
    assert parse_group_id(group_id_hex(group_id)) == group_id
    with pytest.raises(ProtocolError):
        group_id_hex(bytes(15))
