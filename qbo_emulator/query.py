"""The QBO query dialect: tokenizer, parser and evaluator.

    SELECT * | COUNT(*) FROM <Entity>
      [WHERE <prop> <op> <value> [AND ...]]
      [ORDERBY|ORDER BY <prop> [ASC|DESC][, ...]]
      [STARTPOSITION n] [MAXRESULTS n]

Facts implemented (reference §2.2-2.3): operators ``= < > <= >= IN LIKE``
(``%`` is the only wildcard); no OR, no GROUP BY, no JOIN; keywords, entity
and property names are case-insensitive; nested properties such as
``MetaData.LastUpdatedTime`` (compared as instants, offsets honoured, a bare
timestamp read as Pacific); ``Id`` supports only ``=`` and ``IN``; ``\\'``
escapes a quote; ``' '`` stands for null; STARTPOSITION is 1-based;
MAXRESULTS defaults to 100 and may not exceed 1000; inactive name-list rows are
hidden unless the WHERE has an ``Active`` condition; without ORDERBY rows come
in ascending Id order.

Choices where the reference is silent: a select list such as ``*, Sku`` (sent
by python-quickbooks for Item) is accepted and every field is returned; ``=``
on strings is exact, ``LIKE`` is case-insensitive; string ORDERBY is
case-insensitive; a ``Ref`` property (``CustomerRef``) compares by its
``value``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import faults
from .clock import TimestampError, parse_timestamp
from .entities import canonical_entity
from .store import Record, Table

DEFAULT_MAX_RESULTS = 100
MAX_RESULTS_LIMIT = 1000

_KEYWORDS = {
    "select",
    "from",
    "where",
    "and",
    "or",
    "in",
    "like",
    "orderby",
    "order",
    "by",
    "asc",
    "desc",
    "startposition",
    "maxresults",
    "count",
    "true",
    "false",
    "not",
    "null",
}


@dataclass(slots=True)
class Token:
    kind: str  # ident | string | number | op | ( | ) | , | * | eof
    text: str
    value: Any
    col: int  # 1-based column, as QBO's parser reports it


_NUMBER = re.compile(r"[-+]?\d*\.?\d+")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i, length = 0, len(text)
    while i < length:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        col = i + 1
        if ch == "'":
            j, buf = i + 1, []
            while j < length:
                char = text[j]
                if char == "\\" and j + 1 < length:  # \' escapes a quote
                    buf.append(text[j + 1])
                    j += 2
                    continue
                if char == "'":
                    break
                buf.append(char)
                j += 1
            else:
                raise faults.query_parse_error(
                    f"Lexical error at line 1, column {length + 1}.  "
                    f'Encountered: <EOF> after : "{text[i:]}"'
                )
            tokens.append(Token("string", text[i : j + 1], "".join(buf), col))
            i = j + 1
            continue
        if ch.isdigit() or (ch in "-+." and i + 1 < length and text[i + 1].isdigit()):
            number = _NUMBER.match(text, i)
            assert number is not None
            raw = number.group(0)
            tokens.append(Token("number", raw, float(raw) if "." in raw else int(raw), col))
            i = number.end()
            continue
        if ch.isalpha() or ch == "_":
            ident = _IDENT.match(text, i)
            assert ident is not None
            tokens.append(Token("ident", ident.group(0), ident.group(0), col))
            i = ident.end()
            continue
        if text.startswith(("<=", ">=", "!=", "<>"), i):
            tokens.append(Token("op", text[i : i + 2], text[i : i + 2], col))
            i += 2
            continue
        if ch in "=<>":
            tokens.append(Token("op", ch, ch, col))
            i += 1
            continue
        if ch in "(),*":
            tokens.append(Token(ch, ch, ch, col))
            i += 1
            continue
        raise faults.query_parse_error(
            f'Lexical error at line 1, column {col}.  Encountered: "{ch}" ({ord(ch)}), after : ""'
        )
    tokens.append(Token("eof", "<EOF>", None, length + 1))
    return tokens


@dataclass(slots=True)
class Condition:
    path: str  # as written, e.g. "Metadata.LastUpdatedTime"
    op: str  # = < > <= >= in like
    values: list[Any]
    col: int


@dataclass(slots=True)
class Query:
    count: bool
    entity: str
    where: list[Condition] = field(default_factory=list)
    order: list[tuple[str, bool]] = field(default_factory=list)  # (path, descending)
    start: int = 1
    max_results: int | None = None


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.pos = 0

    # -- token helpers ---------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.tokens[self.pos]

    def _is_kw(self, word: str) -> bool:
        return self.tok.kind == "ident" and self.tok.text.lower() == word

    def _take(self) -> Token:
        tok = self.tok
        self.pos += 1
        return tok

    def _expect_kw(self, word: str) -> None:
        if not self._is_kw(word):
            self._fail(f'"{word.upper()}" ...')
        self._take()

    def _expect(self, kind: str, expected: str) -> Token:
        if self.tok.kind != kind:
            self._fail(expected)
        return self._take()

    def _fail(self, expected: str) -> None:
        tok = self.tok
        if tok.kind == "eof":
            seen = '"<EOF>"'
        elif tok.kind == "ident" and tok.text.lower() not in _KEYWORDS:
            seen = f'" <IDENTIFIER> "{tok.text} ""'
        elif tok.kind == "string":
            seen = f'" <STRING_LITERAL> "{tok.text} ""'
        elif tok.kind == "number":
            seen = f'" <NUMBER> "{tok.text} ""'
        else:
            seen = f'" "{tok.text.lower()}" "{tok.text.upper()} ""'
        raise faults.query_parse_error(
            f"Encountered {seen} at line 1, column {tok.col}.\nWas expecting:\n    {expected}\n    "
        )

    def _identifier(self) -> Token:
        if self.tok.kind != "ident" or self.tok.text.lower() in _KEYWORDS:
            self._fail("<IDENTIFIER> ...")
        return self._take()

    # -- grammar -----------------------------------------------------------
    def parse(self) -> Query:
        self._expect_kw("select")
        count = self._select_list()
        self._expect_kw("from")
        entity = self._identifier().text
        query = Query(count=count, entity=entity)
        if self._is_kw("where"):
            self._take()
            query.where.append(self._condition())
            while self._is_kw("and"):
                self._take()
                query.where.append(self._condition())
            if self._is_kw("or"):
                self._fail('"AND" ...')  # OR is not part of the dialect
        if self._is_kw("orderby") or self._is_kw("order"):
            if self._take().text.lower() == "order":
                self._expect_kw("by")
            query.order.append(self._order_item())
            while self.tok.kind == ",":
                self._take()
                query.order.append(self._order_item())
        seen: set[str] = set()
        while self._is_kw("startposition") or self._is_kw("maxresults"):
            word = self._take().text.lower()
            if word in seen:
                self._fail("<EOF>")
            seen.add(word)
            number = self._expect("number", "<INTEGER> ...")
            if not isinstance(number.value, int):
                raise faults.invalid_query(f"value {number.text} is not a valid integer")
            if word == "startposition":
                query.start = number.value
            else:
                query.max_results = number.value
        if self.tok.kind != "eof":
            self._fail("<EOF>")
        return query

    def _select_list(self) -> bool:
        if self._is_kw("count"):
            self._take()
            self._expect("(", '"(" ...')
            self._expect("*", '"*" ...')
            self._expect(")", '")" ...')
            return True
        if self.tok.kind == "*":
            self._take()
        else:
            self._identifier()
        while self.tok.kind == ",":  # projections are accepted; every field is returned
            self._take()
            self._identifier()
        return False

    def _condition(self) -> Condition:
        prop = self._identifier()
        if self._is_kw("in"):
            self._take()
            self._expect("(", '"(" ...')
            values = [self._literal()]
            while self.tok.kind == ",":
                self._take()
                values.append(self._literal())
            self._expect(")", '")" ...')
            return Condition(prop.text, "in", values, prop.col)
        if self._is_kw("like"):
            self._take()
            literal = self._expect("string", "<STRING_LITERAL> ...")
            return Condition(prop.text, "like", [literal.value], prop.col)
        if self.tok.kind != "op" or self.tok.text in ("!=", "<>"):
            self._fail(
                '"=" ...\n    "<" ...\n    ">" ...\n    "<=" ...\n    ">=" ...\n'
                '    "IN" ...\n    "LIKE" ...'
            )
        op = self._take().text
        return Condition(prop.text, op, [self._literal()], prop.col)

    def _literal(self) -> Any:
        tok = self.tok
        if tok.kind in ("string", "number"):
            self._take()
            return tok.value
        if tok.kind == "ident" and tok.text.lower() in ("true", "false"):
            self._take()
            return tok.text.lower() == "true"
        self._fail("<STRING_LITERAL> ...\n    <NUMBER> ...\n    <BOOLEAN> ...")
        return None  # unreachable

    def _order_item(self) -> tuple[str, bool]:
        prop = self._identifier().text
        desc = False
        if self._is_kw("asc") or self._is_kw("desc"):
            desc = self._take().text.lower() == "desc"
        return prop, desc


def parse(text: str) -> Query:
    """Parse a statement or raise a QBOFault (4000 parse error / 4001 invalid)."""
    if not text or not text.strip():
        raise faults.query_parse_error(
            'Encountered "<EOF>" at line 1, column 1.\nWas expecting:\n    "SELECT" ...\n    '
        )
    return _Parser(text).parse()


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------

Getter = Callable[[Record], Any]
_META_TIMES = {"createtime": "created", "lastupdatedtime": "updated"}


@dataclass(slots=True)
class Result:
    entity: str
    count_only: bool
    total: int
    rows: list[Record]
    start: int


def _getter(table: Table, path: str) -> tuple[Getter, bool]:
    """Compile a property path into a getter; also say whether it is an instant."""
    parts = path.split(".")
    first = table.keys.get(parts[0].lower())
    if first is None:
        raise faults.invalid_query(f"property '{path}' is not queryable")
    if first == "MetaData":
        if len(parts) != 2 or parts[1].lower() not in _META_TIMES:
            raise faults.invalid_query(f"property '{path}' is not queryable")
        attr = _META_TIMES[parts[1].lower()]
        return (lambda rec: getattr(rec, attr)), True
    rest = parts[1:]

    def get(rec: Record) -> Any:
        cur: Any = rec.live_obj.get(first)
        for seg in rest:
            if not isinstance(cur, dict):
                return None
            nxt = cur.get(seg)
            if nxt is None:  # case-insensitive fallback
                low = seg.lower()
                nxt = next((v for k, v in cur.items() if k.lower() == low), None)
            cur = nxt
        if isinstance(cur, dict) and "value" in cur:  # a Ref compares by its value
            return cur["value"]
        return cur

    return get, False


def _instant(value: Any, path: str) -> float:
    if not isinstance(value, str):
        raise faults.invalid_query(f"value {value!r} is not a valid date-time for {path}")
    try:
        return parse_timestamp(value).timestamp()
    except TimestampError:
        raise faults.invalid_query(f"value '{value}' is not a valid date-time for {path}") from None


def _looks_like_instant(value: str) -> bool:
    return len(value) >= 19 and value[4] == "-" and value[10] in "T "


def _as_bool(value: Any) -> bool:
    """A boolean property or literal; the text "true" (any case) is true."""
    return value.lower() == "true" if isinstance(value, str) else bool(value)


def _coerce_pair(prop: Any, lit: Any) -> tuple[Any, Any] | None:
    """Bring a property value and a literal to comparable types, or None."""
    if prop is None:
        return None
    if isinstance(lit, bool) or isinstance(prop, bool):
        return _as_bool(prop), _as_bool(lit)
    if isinstance(lit, (int, float)):
        if isinstance(prop, (int, float)):
            return prop, lit
        try:
            return float(prop), lit
        except (TypeError, ValueError):
            return None
    if isinstance(prop, (int, float)):
        try:
            return prop, float(lit)
        except (TypeError, ValueError):
            return None
    if isinstance(prop, str) and isinstance(lit, str):
        if _looks_like_instant(prop) and _looks_like_instant(lit):
            try:
                return parse_timestamp(prop).timestamp(), parse_timestamp(lit).timestamp()
            except TimestampError:
                pass
        if prop.isdigit() and lit.isdigit():  # Ids and other numeric strings
            return int(prop), int(lit)
        return prop, lit
    return None


_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
}


def _predicate(table: Table, cond: Condition) -> Callable[[Record], bool]:
    get, is_instant = _getter(table, cond.path)
    if cond.path.lower() == "id" and cond.op not in ("=", "in"):
        raise faults.invalid_query(f"Operator {cond.op.upper()} is not supported for property Id")
    if is_instant:
        if cond.op == "like":
            raise faults.invalid_query(f"Operator LIKE is not supported for property {cond.path}")
        instants = [_instant(v, cond.path) for v in cond.values]
        if cond.op == "in":
            wanted = {int(t) for t in instants}
            return lambda rec: get(rec) in wanted
        cmp, target = _CMP[cond.op], instants[0]
        return lambda rec: cmp(get(rec), target)
    if cond.op == "like":
        pattern = "".join(".*" if ch == "%" else re.escape(ch) for ch in cond.values[0])
        rx = re.compile(pattern, re.I | re.S)
        return lambda rec: isinstance(v := get(rec), str) and rx.fullmatch(v) is not None
    if cond.op == "in":
        values = cond.values

        def is_in(rec: Record) -> bool:
            prop = get(rec)
            for lit in values:
                pair = _null_or_pair(prop, lit)
                if pair is True or (pair and pair[0] == pair[1]):
                    return True
            return False

        return is_in
    cmp, lit = _CMP[cond.op], cond.values[0]

    def compare(rec: Record) -> bool:
        pair = _null_or_pair(get(rec), lit)
        if pair is True:
            return cond.op == "="
        if not pair:
            return False
        try:
            return cmp(pair[0], pair[1])
        except TypeError:
            return False

    return compare


def _null_or_pair(prop: Any, lit: Any) -> Any:
    """``' '`` is QBO's null: it matches a missing or empty property."""
    if lit == " ":
        return prop in (None, "", [])
    return _coerce_pair(prop, lit)


def _sort_key(get: Getter) -> Callable[[Record], tuple[int, Any]]:
    def key(rec: Record) -> tuple[int, Any]:
        value = get(rec)
        if value is None:
            return (0, 0)
        if isinstance(value, bool):
            return (1, int(value))
        if isinstance(value, (int, float)):
            return (1, value)
        if isinstance(value, str):
            if value.isdigit():
                return (1, int(value))
            return (2, value.lower())
        return (3, str(value))

    return key


def execute(query: Query, table_for: Callable[[str], Table | None]) -> Result:
    """Run a parsed query against a realm's table (``table_for`` resolves the name)."""
    entity = canonical_entity(query.entity)
    table = table_for(entity) if entity else None
    if table is None:
        raise faults.invalid_query(f"invalid context declaration: {query.entity}")
    if query.max_results is not None and query.max_results > MAX_RESULTS_LIMIT:
        raise faults.invalid_query(
            f"value {query.max_results} is too large. Max allowed value is {MAX_RESULTS_LIMIT}"
        )
    predicates = [_predicate(table, c) for c in query.where]
    hide_inactive = table.facts.is_name_list and not any(
        c.path.lower() == "active" for c in query.where
    )
    rows: Iterable[Record] = _candidates(table, query.where)
    if hide_inactive:
        rows = (row for row in rows if row.live_obj.get("Active", True) is not False)
    if predicates:
        rows = (row for row in rows if all(matches(row) for matches in predicates))
    matched = list(rows)
    if query.count:
        return Result(table.facts.name, True, len(matched), [], 1)
    for path, desc in reversed(query.order):  # stable sorts, last key first
        get, _ = _getter(table, path)
        matched.sort(key=_sort_key(get), reverse=desc)
    start = max(query.start, 1)
    limit = DEFAULT_MAX_RESULTS if query.max_results is None else max(query.max_results, 0)
    page = matched[start - 1 : start - 1 + limit]
    return Result(table.facts.name, False, len(matched), page, start)


def _candidates(table: Table, where: list[Condition]) -> Iterable[Record]:
    """Rows worth testing: an ``Id =``/``Id IN`` condition is a dict lookup,
    not a scan (results stay in ascending Id order)."""
    for cond in where:
        if cond.path.lower() == "id" and cond.op in ("=", "in"):
            wanted = {_id_text(v) for v in cond.values}
            found = [table.live[i] for i in wanted if i in table.live]
            return sorted(found, key=lambda r: (len(r.id), r.id))
    return table.live.values()


def _id_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def run(text: str, table_for: Callable[[str], Table | None]) -> Result:
    return execute(parse(text), table_for)
