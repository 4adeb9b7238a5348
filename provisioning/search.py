"""Fuzzy village search over the registry (``shilian provision village search 兴宁 三塘``).

Every word of the query must match the village's path (county, township or village name, or
the code): a digit word matches a code prefix (or, weaker, any part of it); other words match a
name exactly, as a substring, or as a subsequence of characters (``兴宁区`` ~ ``兴宁``,
``三塘`` ~ ``三塘镇``, ``XNQ`` never). A renamed unit's former name matches too (``横县`` finds
the villages of 横州市). A match on the village's own name weighs more than on its
township, which weighs more than on its county. Pure: the registry is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

from registry import VILLAGE_LEVEL, Registry, former_names

#: Results shown by default: a technician picks from a screenful.
DEFAULT_LIMIT = 10
#: Weights by level of the unit a word matched (village first).
_LEVEL_WEIGHT = {5: 4, 4: 3, 3: 2, 2: 1, 1: 1, 0: 0}


@dataclass(frozen=True, slots=True)
class VillageMatch:
    code: str
    name: str
    path: tuple[str, ...]  # names from the province (or the scope) down to the village
    score: int

    @property
    def label(self) -> str:
        return " › ".join(self.path)


def _subsequence(word: str, name: str) -> bool:
    it = iter(name)
    return all(ch in it for ch in word)


def _word_score(word: str, code: str, names: list[tuple[int, str]]) -> int:
    if word.isdigit():
        if code.startswith(word):
            return 10 + len(word)
        return 3 if word in code else 0
    best = 0
    lw = word.lower()
    for level, name in names:
        w = _LEVEL_WEIGHT[level]
        n = name.lower()
        if lw == n:
            s = 10 * w
        elif lw in n:
            s = 6 * w
        elif _subsequence(lw, n):
            s = 2 * w
        else:
            continue
        best = max(best, s)
    return best


def search(registry: Registry, query: str, limit: int = DEFAULT_LIMIT) -> list[VillageMatch]:
    """Villages matching every word of ``query``, best first (ties by code)."""
    words = query.split()
    if not words:
        return []
    found: list[VillageMatch] = []
    path_cache: dict[str, tuple[list[tuple[int, str]], list[tuple[int, str]]]] = {}
    former = former_names()
    for village in registry.villages():
        parent = village.parent or ""
        cached = path_cache.get(parent)
        if cached is None:
            chain = [u for u in registry.ancestors(village.code) if u.level]
            shown = [(u.level, u.name) for u in chain]
            also = [(u.level, old) for u in chain for old in former.get(u.code, ())]
            cached = path_cache[parent] = (shown, shown + also)
        shown, matched = cached
        own = (VILLAGE_LEVEL, village.name)
        names = [*matched, own]
        total = 0
        for word in words:
            s = _word_score(word, village.code, names)
            if s == 0:
                break
            total += s
        else:
            path = tuple(n for _, n in (*shown, own))
            found.append(VillageMatch(village.code, village.name, path, total))
    found.sort(key=lambda m: (-m.score, m.code))
    return found[:limit]
