"""Writing region policies for tests: the shipped files, changed one field at a time."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from compliance.policy import DEFAULT_POLICY_DIR, DEFAULTS_FILE

SHIPPED_REGIONS = ("eu", "us-ca", "br", "in", "sg")


def shipped(name: str) -> dict[str, Any]:
    """A shipped file as written (``eu`` or ``_defaults``), not merged."""
    document: dict[str, Any] = yaml.safe_load((DEFAULT_POLICY_DIR / f"{name}.yaml").read_text())
    return document


def write_region(
    directory: Path,
    name: str,
    based_on: str = "eu",
    change: Callable[[dict[str, Any]], None] | None = None,
    defaults: dict[str, Any] | None = None,
) -> Path:
    """Write ``<name>.yaml`` (a copy of a shipped region, with ``change`` applied, its
    region id set to ``name``) and the shipped defaults into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    document = copy.deepcopy(shipped(based_on))
    document["region"]["id"] = name
    if change is not None:
        change(document)
    (directory / DEFAULTS_FILE).write_text(
        yaml.safe_dump(defaults if defaults is not None else shipped("_defaults"), sort_keys=False)
    )
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    return path


def put(document: dict[str, Any], dotted: str, **values: Any) -> None:
    """Set ``values`` in the mapping at ``dotted`` (created if missing), as a region file
    overrides keys of _defaults.yaml."""
    target = document
    for part in dotted.split("."):
        target = target.setdefault(part, {})
    target.update(values)
