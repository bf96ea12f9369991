"""Entity templates: genuine QBO objects, one per entity, in ``<Entity>.json`` beside this file.

Copied from ``reference/samples/entities/<Entity>.json`` (provenance in that
folder's README: recorded sandbox bodies where they exist, Intuit API-reference
samples otherwise).  The generator and the create path start from these, so
emulated objects carry the same fields, nesting and key order as real ones.
Kept as JSON files so the key order survives exactly; parsed once at import
(numbers become Python floats and ints, as the emulator has always served them).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import orjson


def _load_templates() -> dict[str, dict[str, Any]]:
    """Every ``<Entity>.json`` of this package, keyed by entity name, in name order."""
    folder = resources.files(__name__)
    paths = sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(".json")),
        key=lambda entry: entry.name,
    )
    return {path.name.removesuffix(".json"): orjson.loads(path.read_bytes()) for path in paths}


TEMPLATES: dict[str, dict[str, Any]] = _load_templates()

# What a deactivated name-list row looks like (Account.inactive.json): QBO appends
# " (deleted)" to Name and FullyQualifiedName.
DELETED_SUFFIX = " (deleted)"
