"""The field-level comparison (poller.detect.changes, DESIGN §12): examples and properties."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poller.detect.changes import annotate, apply, compare, kept_objects, same
from poller.qbo.parse import loads_verbatim
from poller.records import UNTRACKED, Event, EventType, SnapshotRow

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def obj(text: str) -> Any:
    return loads_verbatim(text.encode())


def line(line_id: str, amount: str) -> str:
    return f'{{"Id":"{line_id}","Amount":{amount},"DetailType":"SalesItemLineDetail"}}'


def invoice(lines: list[str], token: str = "1", total: str = "0") -> Any:
    return obj(
        f'{{"Id":"9","SyncToken":"{token}","MetaData":{{"CreateTime":"c",'
        f'"LastUpdatedTime":"t{token}"}},"Line":[{",".join(lines)}],"TotalAmt":{total}}}'
    )


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


# -- examples --


def test_inserting_line_two_of_five_is_one_added_element() -> None:
    five = [line(str(i), "1.00") for i in range(1, 6)]
    old = invoice([five[0], *five[2:]], "1")
    new = invoice(five, "2")
    assert dumps(compare(old, new)) == (
        '[{"path":"/Line/1","new":{"Id":"2","Amount":1.00,"DetailType":"SalesItemLineDetail"}}]'
    )


def test_removed_line_is_one_change_at_its_old_index() -> None:
    old = invoice([line("1", "1.00"), line("2", "2.50"), line("3", "3.00")])
    new = invoice([line("1", "1.00"), line("3", "3.00")], "2")
    assert dumps(compare(old, new)) == (
        '[{"path":"/Line/1","old":{"Id":"2","Amount":2.50,"DetailType":"SalesItemLineDetail"}}]'
    )


def test_volatile_fields_are_left_out_and_literals_kept() -> None:
    old = invoice([line("1", "10.00")], "1", total="10.00")
    new = invoice([line("1", "12.50")], "2", total="12.50")
    assert dumps(compare(old, new)) == (
        '[{"path":"/Line/0/Amount","old":10.00,"new":12.50},'
        '{"path":"/TotalAmt","old":10.00,"new":12.50}]'
    )


def test_only_top_level_places_are_volatile() -> None:
    old = obj('{"Line":[{"SyncToken":"1"}],"Ref":{"MetaData":{"LastUpdatedTime":"a"}}}')
    new = obj('{"Line":[{"SyncToken":"2"}],"Ref":{"MetaData":{"LastUpdatedTime":"b"}}}')
    assert [c["path"] for c in compare(old, new)] == [
        "/Line/0/SyncToken",
        "/Ref/MetaData/LastUpdatedTime",
    ]


def test_added_key_has_no_old_and_removed_key_no_new() -> None:
    old = obj('{"Id":"1","Notes":"x","Phone":null}')
    new = obj('{"Id":"1","Notes":"x","Email":"a@b.c"}')
    assert compare(old, new) == [
        {"path": "/Email", "new": "a@b.c"},
        {"path": "/Phone", "old": None},
    ]


def test_arrays_without_ids_compare_by_position() -> None:
    old = obj('{"CustomField":[{"DefinitionId":"1","StringValue":"a"},{"DefinitionId":"2"}]}')
    new = obj('{"CustomField":[{"DefinitionId":"1","StringValue":"b"}]}')
    assert compare(old, new) == [
        {"path": "/CustomField/1", "old": {"DefinitionId": "2"}},
        {"path": "/CustomField/0/StringValue", "old": "a", "new": "b"},
    ]


def test_reordered_lines_are_one_change_of_the_array() -> None:
    old = invoice([line("1", "1"), line("2", "2")])
    new = invoice([line("2", "2"), line("1", "1")], "2")
    changes = compare(old, new)
    assert [c["path"] for c in changes] == ["/Line"]
    assert apply(old, changes)["Line"] == new["Line"]


def test_repeated_ids_fall_back_to_the_whole_array() -> None:
    old = invoice([line("1", "1"), line("1", "2")])
    new = invoice([line("1", "1"), line("1", "3")], "2")
    assert [c["path"] for c in compare(old, new)] == ["/Line"]


def test_pointer_escapes_slash_and_tilde() -> None:
    assert compare({"a/b": 1, "c~d": 1}, {"a/b": 2, "c~d": 2}) == [
        {"path": "/a~1b", "old": 1, "new": 2},
        {"path": "/c~0d", "old": 1, "new": 2},
    ]
    assert apply({"a/b": 1}, [{"path": "/a~1b", "old": 1, "new": 2}]) == {"a/b": 2}


def test_numbers_compare_by_value_booleans_are_not_numbers() -> None:
    assert same(obj("12.50"), 12.5) and same(obj("2.0"), 2)
    assert not same(True, 1) and not same(0, False) and not same("1", 1)
    assert compare({"Active": True}, {"Active": 1}) == [{"path": "/Active", "old": True, "new": 1}]
    assert compare({"Amount": obj("12.50")}, {"Amount": 12.5}) == []


def test_type_change_is_one_replacement() -> None:
    assert compare({"a": {"b": 1}}, {"a": [1]}) == [{"path": "/a", "old": {"b": 1}, "new": [1]}]


def test_annotate_puts_changes_on_updated_events_only() -> None:
    old_text = '{"Id":"1","SyncToken":"1","Name":"a"}'
    updated = Event("1", "2", EventType.UPDATED, T0, obj('{"Id":"1","SyncToken":"2","Name":"b"}'))
    unknown = Event("2", "5", EventType.UPDATED, T0, {"Id": "2", "SyncToken": "5"})
    created = Event("3", "0", EventType.CREATED, T0, {"Id": "3", "SyncToken": "0"})
    deleted = Event("4", "deleted", EventType.DELETED, T0, {"Id": "4", "status": "Deleted"})
    got = annotate([updated, unknown, created, deleted], {"1": old_text, "3": old_text})
    assert [e.changes for e in got] == [
        [{"path": "/Name", "old": "a", "new": "b"}],
        None,  # never seen in full: "changes": null
        UNTRACKED,
        UNTRACKED,
    ]


def test_an_unreadable_kept_copy_gives_null_not_an_error() -> None:
    event = Event("1", "2", EventType.UPDATED, T0, {"Id": "1", "SyncToken": "2"})
    for stored in ('{"Id": "1", trunc', "[1, 2]"):
        assert annotate([event], {"1": stored})[0].changes is None


def test_kept_objects_are_the_live_versions_written() -> None:
    fetched = [
        {"Id": "1", "SyncToken": "1"},
        {"Id": "1", "SyncToken": "2"},  # the version the snapshot row holds
        {"Id": "2", "status": "Deleted"},
        {"Id": "3", "SyncToken": "0"},  # already seen: no snapshot row written
    ]
    rows = [SnapshotRow("1", "2", T0), SnapshotRow("2", None, T0, deleted=True)]
    assert kept_objects(rows, fetched) == {"1": {"Id": "1", "SyncToken": "2"}}


# -- properties --

# too_slow measures how long examples take to generate: on the shared 2-core machine (8 helpers
# and a test loop) that is the load, not the strategy. The examples and their count stay.
LOADED = [HealthCheck.too_slow]

KEYS = st.sampled_from(["a", "b", "Id", "Amount", "x/y", "SyncToken", "MetaData"])
NUMBERS = st.one_of(
    st.integers(-5, 5),
    st.decimals(-100, 100, places=2).map(lambda d: orjson.Fragment(str(d).encode())),
)
LEAVES = st.one_of(st.none(), st.booleans(), NUMBERS, st.sampled_from(["", "p", "q", "1"]))


def _values(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    element = st.one_of(
        st.fixed_dictionaries({"Id": st.sampled_from(["1", "2", "3", "4"])}, optional={}).flatmap(
            lambda base: st.dictionaries(KEYS, children, max_size=3).map(lambda d: {**d, **base})
        ),
        children,
    )
    return st.one_of(st.lists(element, max_size=5), st.dictionaries(KEYS, children, max_size=4))


JSON = st.recursive(LEAVES, _values, max_leaves=25)
META = st.fixed_dictionaries(
    {"CreateTime": st.just("c")}, optional={"LastUpdatedTime": st.sampled_from(["t1", "t2"])}
)
OBJECTS = st.fixed_dictionaries(
    {"Id": st.just("9")},
    optional={
        "SyncToken": st.sampled_from(["1", "2"]),
        "MetaData": META,
        "Line": st.lists(JSON, max_size=5),
        "Amount": NUMBERS,
        "a": JSON,
        "b": JSON,
    },
)


def normal(value: Any) -> Any:
    """Decoded JSON with numbers as Decimals (what `same` treats as equal)."""
    if isinstance(value, dict):
        return {k: normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normal(v) for v in value]
    if isinstance(value, orjson.Fragment | float) or (
        isinstance(value, int) and not isinstance(value, bool)
    ):
        return ("number", Decimal(orjson.dumps(value).decode()))
    return value


def without_volatile(value: Any) -> Any:
    out = dict(value)
    out.pop("SyncToken", None)
    meta = out.get("MetaData")
    if isinstance(meta, dict):
        out["MetaData"] = {k: v for k, v in meta.items() if k != "LastUpdatedTime"}
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=LOADED)
@given(OBJECTS, OBJECTS)
def test_applying_changes_to_the_old_object_yields_the_new_one(old: Any, new: Any) -> None:
    changes = compare(old, new)
    assert normal(without_volatile(apply(old, changes))) == normal(without_volatile(new))


@settings(max_examples=100, deadline=None, suppress_health_check=LOADED)
@given(OBJECTS, st.data())
def test_small_edits_give_small_changes(old: Any, data: st.DataObject) -> None:
    """An edit of one line of an Id-matched array is one change, however many lines surround
    it; volatile fields never appear; comparing an object with itself finds nothing."""
    assert compare(old, old) == []
    lines = [{"Id": str(i), "Amount": i} for i in range(data.draw(st.integers(1, 8)))]
    new_line = {"Id": "new", "Amount": data.draw(NUMBERS)}
    at = data.draw(st.integers(0, len(lines)))
    before = {**old, "Line": lines, "SyncToken": "1"}
    after = {**old, "Line": [*lines[:at], new_line, *lines[at:]], "SyncToken": "2"}
    changes = compare(before, after)
    assert dumps(changes) == dumps([{"path": f"/Line/{at}", "new": new_line}])
    assert apply(before, changes)["Line"] == after["Line"]


@settings(max_examples=100, deadline=None, suppress_health_check=LOADED)
@given(OBJECTS, OBJECTS)
def test_paths_of_new_values_point_into_the_new_object(old: Any, new: Any) -> None:
    for change in compare(old, new):
        assert change.keys() in ({"path", "old", "new"}, {"path", "old"}, {"path", "new"})
        assert change["path"] not in ("/SyncToken", "/MetaData/LastUpdatedTime")
        if "new" in change:
            assert same(resolve(new, change["path"]), change["new"])


def resolve(doc: Any, pointer: str) -> Any:
    for token in pointer[1:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        doc = doc[int(token)] if isinstance(doc, list) else doc[token]
    return doc
