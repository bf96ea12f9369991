"""structlog set-up, stable event names, and secret redaction.

Two layers of redaction run on every log record:
- values under keys that name secrets (token, secret, password, signature, authorization, ...)
  are replaced, whatever they hold;
- every registered secret value (configured secrets, instance client secrets, signature keys,
  OAuth tokens as they rotate) is masked wherever it appears inside any string.
And URLs under `url` / `*_url` keys lose their credentials and query (`redact_url`): a callback
URL may carry `user:password@` or `?token=`. The CLI's tables and the dispatcher's error texts
use the same function, so a URL reads the same wherever the daemon writes it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import threading
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO, cast

import orjson
import structlog

REDACTED = "***"
_SECRET_KEY = re.compile(
    r"(token|secret|password|passwd|signature|authorization|api[._-]?key|auth[._-]?code|"
    r"cookie|credential|private[._-]?key)",
    re.IGNORECASE,
)
# Keys that match the pattern above but hold no secret.
_NOT_SECRET = frozenset(
    {
        "signature_scheme",
        "signature_ok",
        "token_url",
        "token_expires_at",
        "token_expires_in",
        "tokens_refreshed",
    }
)
_MIN_SECRET_LEN = 6  # shorter values would mask ordinary words
# C0 and C1 controls, DEL, and the invisible bidirectional and line-separator controls that make
# a terminal or a page show something other than what is stored.
CONTROL_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def escape_controls(text: str) -> str:
    """`text` with every control character written as an escape (`\\x1b`, `\\r`, `\\u202e`),
    so what a terminal shows is what is stored."""
    return CONTROL_CHARS.sub(lambda m: repr(m.group())[1:-1], text)


def redact_url(url: str) -> str:
    """A URL as logs and CLI output show it: credentials and query (and fragment) replaced,
    scheme, host, port and path kept: `https://***@host/path?***`, control characters
    escaped. Never raises."""
    return escape_controls(strip_url_secrets(url))


def strip_url_secrets(url: str) -> str:
    """`redact_url` without the escaping (for a caller that quotes the result itself)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        authority = REDACTED + "@" + authority.rpartition("@")[2]
    tail, has_fragment, _ = tail.partition("#")
    path, has_query, _ = tail.partition("?")
    shown = f"{scheme}{sep}{authority}{path}"
    shown += "?" + REDACTED if has_query else ""
    shown += "#" + REDACTED if has_fragment else ""
    return shown


def redact_urls(text: str) -> str:
    """Every URL inside `text` (an error message) as `redact_url` shows it."""
    return _URL_IN_TEXT.sub(_redact_match, text)


def _redact_match(match: re.Match[str]) -> str:
    # Punctuation that ends a sentence or closes a parenthesis is the text's, not the URL's.
    found = match.group()
    url = found.rstrip(").,;:]")
    return redact_url(url) + found[len(url) :]


def _is_url_key(key: str) -> bool:
    return key == "url" or key.endswith("_url")


class SecretRegistry:
    """Secret values to mask in logs. Slots let a rotating token replace its predecessor.

    The values are indexed by their first `_MIN_SECRET_LEN` characters, so registering one
    (every token refresh of every instance) costs O(1) and masking a string costs one dictionary
    lookup per character, whatever the number of secrets. (One regular expression of all of them
    had to be recompiled at every rotation: with thousands of instances refreshing at start-up,
    each log line compiled an alternation of thousands of values and the event loop stood still
    for minutes.) At each position the longest registered value found there is masked, leftmost
    first, as an alternation sorted longest first did.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._static: set[str] = set()
        self._slots: dict[str, tuple[str, ...]] = {}
        self._counts: dict[str, int] = {}  # value → static and slot entries holding it
        self._by_prefix: dict[str, tuple[str, ...]] = {}  # longest first

    def add(self, value: str | None, slot: str | None = None) -> None:
        if not value or len(value) < _MIN_SECRET_LEN:
            return
        with self._lock:
            if slot is None:
                if value not in self._static:
                    self._static.add(value)
                    self._hold(value)
                return
            # Keep the previous value too: it may still be in flight in a log line.
            previous = self._slots.get(slot, ())
            kept = tuple(old for old in previous[:1] if old != value)
            self._slots[slot] = (value, *kept)
            for old in previous:
                self._drop(old)
            for new in self._slots[slot]:
                self._hold(new)

    def clear(self) -> None:
        with self._lock:
            self._static.clear()
            self._slots.clear()
            self._counts.clear()
            self._by_prefix = {}

    def _hold(self, value: str) -> None:
        count = self._counts.get(value, 0)
        self._counts[value] = count + 1
        if count == 0:
            prefix = value[:_MIN_SECRET_LEN]
            values = (*self._by_prefix.get(prefix, ()), value)
            self._by_prefix[prefix] = tuple(sorted(values, key=len, reverse=True))

    def _drop(self, value: str) -> None:
        count = self._counts.get(value, 0) - 1
        if count > 0:
            self._counts[value] = count
            return
        self._counts.pop(value, None)
        prefix = value[:_MIN_SECRET_LEN]
        values = tuple(v for v in self._by_prefix.get(prefix, ()) if v != value)
        if values:
            self._by_prefix[prefix] = values
        else:
            self._by_prefix.pop(prefix, None)

    def mask(self, text: str) -> str:
        index = self._by_prefix  # one lookup at a time: atomic under the GIL, no lock needed
        if not index or len(text) < _MIN_SECRET_LEN:
            return text
        parts: list[str] = []
        start = i = 0
        last = len(text) - _MIN_SECRET_LEN
        while i <= last:
            candidates = index.get(text[i : i + _MIN_SECRET_LEN])
            found = None
            if candidates is not None:
                found = next((v for v in candidates if text.startswith(v, i)), None)
            if found is None:
                i += 1
                continue
            parts += (text[start:i], REDACTED)
            i = start = i + len(found)
        if not parts:
            return text
        parts.append(text[start:])
        return "".join(parts)


secrets = SecretRegistry()


def register_secret(value: str | None, slot: str | None = None) -> None:
    """Mask `value` in every later log line (`slot` replaces the value a slot held before)."""
    secrets.add(value, slot)


def register_secrets(values: Iterable[str | None]) -> None:
    for value in values:
        secrets.add(value)


def is_secret_key(key: str) -> bool:
    return key not in _NOT_SECRET and bool(_SECRET_KEY.search(key))


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return secrets.mask(value)
    if isinstance(value, dict):
        return {k: REDACTED if is_secret_key(str(k)) else _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    if isinstance(value, BaseException):
        return secrets.mask(f"{type(value).__name__}: {value}")
    return value


def redact(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: hide secret-named keys and every registered secret value."""
    for key in list(event_dict):
        value = event_dict[key]
        if is_secret_key(key):
            event_dict[key] = REDACTED
        elif _is_url_key(key) and isinstance(value, str):
            event_dict[key] = secrets.mask(redact_url(value))
        else:
            event_dict[key] = _scrub(value)
    return event_dict


def _mask_rendered(_logger: Any, _name: str, rendered: Any) -> str:
    # Last line of defence: tracebacks are rendered after `redact` ran. It runs after the
    # renderer, so structlog hands it the rendered line where it would pass an event dict.
    return secrets.mask(str(rendered))


def _json_dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


class _Unfailing:
    """A log stream whose failed writes are dropped, not raised: a log line that cannot be
    written (its terminal hung up, a closed pipe) is lost, never the service that logged it.
    The window matters: between a terminal's hang-up and the SIGHUP handler pointing the
    daemon's output at /dev/null (supervisor._Signals), any thread may log."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (OSError, ValueError):  # EIO, EPIPE; ValueError: a closed file
            return 0

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog (and route stdlib logging through the same pipeline)."""
    stream = cast(TextIO, _Unfailing(stream or sys.stderr))
    use_console = fmt == "console" or (fmt == "auto" and stream.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=stream.isatty())
        if use_console
        else structlog.processors.JSONRenderer(serializer=_json_dumps)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    exc = [] if use_console else [structlog.processors.format_exc_info]
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, *exc, redact, renderer, _mask_rendered],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    _route_stdlib(numeric, shared, renderer, stream)


def _route_stdlib(level: int, shared: list[Any], renderer: Any, stream: TextIO) -> None:
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, redact, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Library chatter (aiohttp access logs, asyncpg) only at warning and above.
    root.setLevel(max(level, logging.WARNING))


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name) if name else structlog.get_logger()
