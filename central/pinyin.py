"""Pinyin matching of unit names for the dashboard's search: initials (``xnq`` → 兴宁区), full
pinyin (``xingning``) and any mix (``xingnq``), toneless, without pypinyin at run time.

The readings come from ``registry/data/pinyin.tsv.xz`` (built by scripts/build_pinyin_table.py
from pypinyin for every character of the registry's names: ~5,000 characters, 19 KB). Importing
pypinyin itself would add ~57 MB to central's memory (measured). Polyphonic characters keep all
their readings, so 长 matches ``c``/``chang`` and ``z``/``zhang``: a wrong reading never hides a
unit, at worst a search finds an extra one.

Pure: no I/O beyond loading the table once.
"""

from __future__ import annotations

import functools
import lzma
from importlib import resources

#: Longest pinyin query considered (a village name of 10 characters is ~60 letters).
MAX_QUERY = 64


@functools.cache
def table() -> dict[str, tuple[str, ...]]:
    """``{character: (reading, ...)}``, the most common reading first."""
    raw = (resources.files("registry") / "data" / "pinyin.tsv.xz").read_bytes()
    out: dict[str, tuple[str, ...]] = {}
    for line in lzma.decompress(raw).decode("utf-8").splitlines():
        char, _, readings = line.partition("\t")
        if char and readings:
            out[char] = tuple(readings.split(","))
    return out


def readings(name: str) -> tuple[tuple[str, ...], ...]:
    """Per character of ``name``, its readings; a character without one (a digit, a letter, a
    rare character) stands for itself, lower-cased."""
    t = table()
    return tuple(t.get(c) or (c.lower(),) for c in name)


def is_pinyin_query(query: str) -> bool:
    """Only ASCII letters (spaces and apostrophes ignored): worth a pinyin match."""
    q = normalise(query)
    return bool(q) and q.isascii() and q.isalpha()


def normalise(query: str) -> str:
    return query.strip().lower().replace(" ", "").replace("'", "")[:MAX_QUERY]


def match(query: str, chars: tuple[tuple[str, ...], ...]) -> int | None:
    """Where ``query`` (normalised letters) matches the name's pinyin, as the index of the first
    character it matches, or None. Each character is matched by its initial letter or by a whole
    reading (a last character may be matched by a prefix of its reading: the user is still
    typing). Matches may start at any character; callers rank a start at 0 first."""
    if not query:
        return None
    head = query[0]
    for start, options in enumerate(chars):
        # Cheap first-letter check before the search: most starts fail here.
        for r in options:
            if r[0] == head:
                break
        else:
            continue
        if _match_from(query, 0, chars, start):
            return start
    return None


def _match_from(q: str, qi: int, chars: tuple[tuple[str, ...], ...], ci: int) -> bool:
    # Iterative depth-first search over (query position, character); names are short (≤ ~30
    # characters) and each character offers at most a few readings, so this stays tiny.
    stack = [(qi, ci)]
    seen: set[tuple[int, int]] = set()
    while stack:
        qi, ci = stack.pop()
        if qi == len(q):
            return True
        if ci == len(chars) or (qi, ci) in seen:
            continue
        seen.add((qi, ci))
        rest = q[qi:]
        for r in chars[ci]:
            if rest.startswith(r):
                stack.append((qi + len(r), ci + 1))
            elif r.startswith(rest):
                stack.append((len(q), ci + 1))  # a partly typed last syllable
            if rest[0] == r[0]:
                stack.append((qi + 1, ci + 1))  # the initial letter
                if r[:2] in ("zh", "ch", "sh") and rest.startswith(r[:2]):
                    stack.append((qi + 2, ci + 1))  # zh/ch/sh typed as an initial
    return False
