"""JSON from untrusted peers, parsed with a bounded nesting depth.

``json.loads`` recurses once per nesting level: a few kilobytes of ``[[[[…`` (about 2,000
levels) raise ``RecursionError``, which is not a ``ValueError`` and so escapes the usual
``except ValueError`` of a request handler as a 500 with a traceback, or drops a socket
connection. :func:`loads` counts the depth first, outside any string, and refuses a document
nested deeper than :data:`MAX_JSON_DEPTH` before the parser sees it. It also refuses what is not
JSON but Python's parser accepts (``NaN``, ``Infinity``) and integers too long to convert.

Every JSON entry point of central's HTTP API and of the edge's local socket parses with it.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: Deepest nesting accepted (objects and arrays). Our own documents nest at most five levels (an
#: alert rule inside the rule list inside the body); 64 leaves room for a command's free-form
#: ``args`` while staying far below CPython's recursion limit (1,000 frames), which the parser
#: shares with the request handler's own stack.
MAX_JSON_DEPTH = 64

# A complete JSON string (escapes included): brackets inside it are text, not nesting.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")


class JsonError(ValueError):
    """The text is not a JSON document we accept; ``reason`` is a short English phrase."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def depth(raw: bytes) -> int:
    """The deepest nesting of objects and arrays in ``raw``, strings skipped. An unterminated
    string counts its brackets too, which only errs towards refusing a document that is not
    JSON anyway. Stops counting once past :data:`MAX_JSON_DEPTH`."""
    level = deepest = 0
    for m in _BRACKETS.finditer(_STRING.sub(b"", raw)):
        if m.group() in (b"[", b"{"):
            level += 1
            if level > deepest:
                deepest = level
                if deepest > MAX_JSON_DEPTH:
                    return deepest
        else:
            level = max(0, level - 1)
    return deepest


def _no_constant(name: str) -> Any:
    raise JsonError(f"{name} is not JSON")


def loads(raw: bytes | str) -> Any:
    """Parse ``raw`` (UTF-8 bytes or text) or raise :class:`JsonError` (a ``ValueError``): bad
    UTF-8, bad syntax, nesting deeper than :data:`MAX_JSON_DEPTH`, ``NaN``/``Infinity``, an
    integer longer than Python converts. Never ``RecursionError``."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    if depth(data) > MAX_JSON_DEPTH:
        raise JsonError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise JsonError(f"not UTF-8 at byte {e.start}") from None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except JsonError:
        raise
    except RecursionError:  # not reachable past the depth check; kept so no caller ever sees it
        raise JsonError(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as e:
        raise JsonError(str(e)[:200]) from None
