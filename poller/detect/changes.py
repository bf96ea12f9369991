"""Field-level changes of UPDATED events (DESIGN §12): old object + new object → `changes`.

Pure functions beside the diff (`poller.detect.diff`, untouched): the cycle runs them on its
result for instances with `event.poller.changes`.
- `compare(old, new)`: the list of `{"path", "old"?, "new"?}`. `path` is an RFC 6901 JSON
  Pointer: the parent's path in the new object, then the key (for a removed array element, its
  index in the old array: the only place it exists). A changed value has both `old` and `new`,
  an added one only `new`, a removed one only `old`. Values are the subtrees themselves, so
  QuickBooks' decimal literals (`orjson.Fragment`s, `poller.qbo.parse.loads_verbatim`) stay as
  QuickBooks wrote them.
- Arrays: elements that are objects with an `Id` (invoice lines) are matched by `Id`, the
  others by their position among the elements without one (a trailing SubTotalLine, or every
  element of an array of CustomFields, LinkedTxn...). So inserting line 2 of 5 is one added
  element, not four changed ones. When the matched elements changed order (or an `Id` repeats),
  the array is one change with its old and new values: a reorder has no smaller honest form.
- Volatile fields are left out (`VOLATILE`): `SyncToken` and `MetaData.LastUpdatedTime` change
  with every write by definition, so they would be in every event and say nothing the event
  does not already say (its version and its `date`). Everything else QuickBooks changes is
  reported, even when a user did not type it: `LastModifiedByRef` (who), balances, totals,
  renumbered `LineNum`s, the " (deleted)" QuickBooks appends to a deactivated name. Those are
  real changes of the record a receiver may act on.
- Numbers compare by value (`12.50` equals `12.5`): a re-serialisation elsewhere must not look
  like an edit. Booleans are not numbers here (`true` is not `1`).
- `apply(old, changes)` is the inverse, the executable definition of the above (the property
  tests check `apply(old, compare(old, new)) == new` up to the volatile fields).

`annotate` puts the changes on a diff's UPDATED events; `kept_objects` picks the objects the
snapshot keeps for the next comparison.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from poller.qbo.parse import loads_verbatim
from poller.records import Change, Event, EventType, QboObject, SnapshotRow

# Keys from the object's root: left out of `changes` at these places only (not inside lines).
VOLATILE: frozenset[tuple[str, ...]] = frozenset({("SyncToken",), ("MetaData", "LastUpdatedTime")})
_VOLATILE_DEPTH = max(len(place) for place in VOLATILE)
# The keys from the root to a value, or None below an array or deeper than any volatile place.
Keys = tuple[str, ...] | None

_MISSING = object()


def compare(old: QboObject, new: QboObject) -> list[Change]:
    """The changes from `old` to `new` (see the module docstring)."""
    out: list[Change] = []
    _dict(old, new, "", (), out)
    return out


def annotate(events: Sequence[Event], old_objects: Mapping[str, str]) -> list[Event]:
    """`events` with `changes` on each UPDATED one: compared with the object as stored
    (`old_objects`: object id → JSON text), or None when none was stored. Other events are
    returned as they are (no `changes` key)."""
    out: list[Event] = []
    for event in events:
        if event.event_type is not EventType.UPDATED:
            out.append(event)
            continue
        out.append(replace(event, changes=_compare_stored(old_objects.get(event.object_id), event)))
    return out


def _compare_stored(text: str | None, event: Event) -> list[Change] | None:
    if text is None:
        return None
    try:
        old = loads_verbatim(text.encode())
    except ValueError:  # a kept copy that cannot be read is as good as none: never a stuck pair
        return None
    return compare(old, event.raw) if isinstance(old, dict) else None


def kept_objects(
    snapshots: Iterable[SnapshotRow], fetched: Iterable[QboObject]
) -> dict[str, QboObject]:
    """The fetched object behind each live snapshot row (same Id and SyncToken): what the
    snapshot keeps for the next comparison. Tombstones keep nothing."""
    wanted = {s.object_id: s.sync_token for s in snapshots if not s.deleted}
    kept: dict[str, QboObject] = {}
    for obj in fetched:
        object_id = str(obj.get("Id"))
        token = wanted.get(object_id, _MISSING)
        if token is not _MISSING and str(obj.get("SyncToken")) == token:
            kept[object_id] = obj
    return kept


def updated_ids(events: Iterable[Event]) -> list[str]:
    """The objects whose stored copies `annotate` needs."""
    return [e.object_id for e in events if e.event_type is EventType.UPDATED]


# -- comparing --


def _pointer(path: str, key: str | int) -> str:
    text = str(key)
    return f"{path}/{text.replace('~', '~0').replace('/', '~1')}"


def _dict(
    old: Mapping[str, Any], new: Mapping[str, Any], path: str, at: Keys, out: list[Change]
) -> None:
    for key, new_value in new.items():
        below = _below(at, key)
        if below in VOLATILE:
            continue
        if key not in old:
            out.append({"path": _pointer(path, key), "new": new_value})
        else:
            _value(old[key], new_value, _pointer(path, key), below, out)
    for key, old_value in old.items():
        if key not in new and _below(at, key) not in VOLATILE:
            out.append({"path": _pointer(path, key), "old": old_value})


def _below(at: Keys, key: str) -> Keys:
    """The keys from the root down to `key`, while a volatile field may still be below."""
    return None if at is None or len(at) >= _VOLATILE_DEPTH else (*at, key)


def _value(old: Any, new: Any, path: str, at: Keys, out: list[Change]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        _dict(old, new, path, at, out)
    elif isinstance(old, list) and isinstance(new, list):
        _list(old, new, path, out)
    elif not same(old, new):
        out.append({"path": path, "old": old, "new": new})


def _list(old: list[Any], new: list[Any], path: str, out: list[Change]) -> None:
    old_keys, new_keys = element_keys(old), element_keys(new)
    if old_keys is None or new_keys is None:
        _whole(old, new, path, out)
        return
    new_at = {k: i for i, k in enumerate(new_keys)}
    old_at = {k: i for i, k in enumerate(old_keys)}
    if [k for k in old_keys if k in new_at] != [k for k in new_keys if k in old_at]:
        _whole(old, new, path, out)  # the kept elements changed order
        return
    for i, key in enumerate(old_keys):
        if key not in new_at:
            out.append({"path": _pointer(path, i), "old": old[i]})
    for j, key in enumerate(new_keys):
        was = old_at.get(key)
        if was is None:
            out.append({"path": _pointer(path, j), "new": new[j]})
        else:
            # Inside array elements nothing is volatile (VOLATILE names top-level places).
            _value(old[was], new[j], _pointer(path, j), None, out)


def _whole(old: list[Any], new: list[Any], path: str, out: list[Change]) -> None:
    if not same(old, new):
        out.append({"path": path, "old": old, "new": new})


def element_keys(items: Sequence[Any]) -> list[tuple[str, str | int]] | None:
    """How array elements are matched: ("id", Id) for objects with an `Id`, ("at", n) for the
    n-th element without one. None when an `Id` repeats (no matching is trustworthy then)."""
    keys: list[tuple[str, str | int]] = []
    ids: set[str] = set()
    unkeyed = 0
    for item in items:
        element_id = item.get("Id") if isinstance(item, dict) else None
        if isinstance(element_id, str | int) and not isinstance(element_id, bool):
            text = str(element_id)
            if text in ids:
                return None
            ids.add(text)
            keys.append(("id", text))
        else:
            keys.append(("at", unkeyed))
            unkeyed += 1
    return keys


def same(a: Any, b: Any) -> bool:
    """Deep equality of decoded JSON, numbers by value, `true` never equal to `1`."""
    if type(a) is type(b) and not isinstance(a, orjson.Fragment | float | dict | list):
        return bool(a == b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(v, b[k]) for k, v in a.items())
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    na, nb = _number(a), _number(b)
    return na is not None and nb is not None and na == nb


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | orjson.Fragment):
        return None
    try:
        return Decimal(orjson.dumps(value).decode())
    except InvalidOperation:  # a Fragment holding something else than a number
        return None


# -- applying (the definition, executable) --


def apply(old: Any, changes: Sequence[Change]) -> Any:
    """`old` with `changes` applied: `apply(old, compare(old, new))` is `new`, volatile
    fields aside (they keep their old values)."""
    parsed = [(_tokens(c["path"]), c) for c in changes]
    return _apply(old, parsed)


def _tokens(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"not a JSON Pointer: {path!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _apply(node: Any, changes: list[tuple[list[str], Change]]) -> Any:
    for tokens, change in changes:
        if not tokens:  # the node itself was replaced
            return change["new"]
    if isinstance(node, dict):
        return _apply_dict(node, changes)
    if isinstance(node, list):
        return _apply_list(node, changes)
    raise ValueError(f"changes below a scalar: {[c['path'] for _, c in changes]}")


def _groups(changes: list[tuple[list[str], Change]]) -> dict[str, list[tuple[list[str], Change]]]:
    groups: dict[str, list[tuple[list[str], Change]]] = {}
    for tokens, change in changes:
        groups.setdefault(tokens[0], []).append((tokens[1:], change))
    return groups


def _apply_dict(node: Mapping[str, Any], changes: list[tuple[list[str], Change]]) -> Any:
    out = dict(node)
    for key, group in _groups(changes).items():
        here = [c for rest, c in group if not rest]
        if here and "new" not in here[0]:
            out.pop(key, None)
        elif here and key not in out:
            out[key] = here[0]["new"]
        else:
            out[key] = _apply(out[key], group)
    return out


def _apply_list(node: list[Any], changes: list[tuple[list[str], Change]]) -> list[Any]:
    groups = {int(k): g for k, g in _groups(changes).items()}
    removed = {i for i, g in groups.items() if any(not r and "new" not in c for r, c in g)}
    added = {j: c["new"] for j, g in groups.items() for r, c in g if not r and "old" not in c}
    # The kept elements keep their order (else `compare` replaced the whole array): they fill
    # the places the added ones leave free.
    survivors = iter([item for i, item in enumerate(node) if i not in removed])
    length = len(node) - len(removed) + len(added)
    out = [added[j] if j in added else next(survivors) for j in range(length)]
    for j, group in groups.items():
        rest = [(r, c) for r, c in group if r or ("old" in c and "new" in c)]
        if j < len(out) and j not in added and rest:
            out[j] = _apply(out[j], rest)
    return out
