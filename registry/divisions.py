"""The official village registry that coverage is measured against.

The NBS 统计用区划代码 (2023) ship inside the package (``registry/data``, see its
README); a *scope* selects the part central serves: ``""`` (the whole country), a province
(``"45"``), a city (``"4501"``), a county (``"450102"``) or a township (9 digits). Levels:
1 province (2 digits), 2 city (4), 3 county (6), 4 township (9), 5 village (12). A unit's
parent follows the code prefix unless the data names another (the build script records such
exceptions; the 2023 table has none, but a refresh may).

Data quirks kept as published (so codes and names match what local governments use):
municipalities have city-level units named 市辖区 / 县 (e.g. 1101 北京市 › 市辖区); provinces have
省直辖县级行政区划 city-level groups (e.g. 4190 济源市 under it); cities without counties
(东莞 4419, 中山 4420, 儋州 4604, 嘉峪关 6202) have one county-level unit that repeats the city.

Central keeps the imported scope in its database (``central.registry_store``: table ``units``,
the scope in ``registry_meta``); this module knows no database.

Editions: the NBS republishes the table every year; importing a newer edition (``data_dir``, a
folder laid out like ``registry/data``) updates names, adds codes and *retires* the codes of the
scope it no longer has. A retired unit keeps its row (``retired = 1``) and its last name, so a
node bound to a village that disappeared is still known and can be flagged, never dropped;
retired units are not part of the tree, so coverage counts only current villages.
"""

from __future__ import annotations

import io
import lzma
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

#: Level number by code length.
LEVEL_BY_LEN = {2: 1, 4: 2, 6: 3, 9: 4, 12: 5}
#: Code length by level (0 is the synthetic whole-country root).
LEN_BY_LEVEL = {0: 0, 1: 2, 2: 4, 3: 6, 4: 9, 5: 12}
VILLAGE_LEVEL = 5
COUNTRY_NAME = "全国"


class RegistryError(ValueError):
    """A scope that is not a code of the registry (the caller's mistake: say so, in zh and en)."""


@dataclass(frozen=True, slots=True)
class Unit:
    code: str
    name: str
    level: int
    parent: str | None


def _prefix_parent(code: str) -> str | None:
    n = len(code)
    if n == 2:
        return None
    return code[: {4: 2, 6: 4, 9: 6, 12: 9}[n]]


class Registry:
    """An immutable tree of units under one scope.

    Memory: names and child lists only (``Unit`` objects are made on demand); the whole country
    (~665k units) takes about 125 MB and loads in about 3 s.
    """

    __slots__ = ("_children", "_names", "_parents", "_retired", "_root", "scope")

    def __init__(
        self,
        scope: str,
        units: Iterable[tuple[str, str, str | None]],
        retired: Mapping[str, str] | None = None,
    ) -> None:
        """``units``: (code, name, parent) with every parent before its children; the scope's
        own unit first (omitted for the whole country). A unit whose parent is not already
        there is refused, so the tree is always whole. ``retired``: village codes an imported
        edition no longer has, with their last names (not part of the tree)."""
        self.scope = scope
        #: Retired village codes (absent from the imported edition) and their last names.
        self._retired: dict[str, str] = dict(retired or {})
        self._names: dict[str, str] = {}
        # Only parents that differ from the prefix rule are stored.
        self._parents: dict[str, str | None] = {}
        self._children: dict[str, list[str]] = {"": []}
        names, children, parents = self._names, self._children, self._parents
        # Village names repeat a lot (和平村委会 274 times): share one string per distinct name,
        # ~40% fewer name objects for the whole country.
        distinct: dict[str, str] = {}
        for code, name, parent in units:
            if code == scope:
                parent_key = ""
            else:
                parent_key = "" if parent is None else parent
                if parent_key not in children:
                    raise RegistryError(f"单位 {code} 的上级 {parent} 未知 / unknown parent")
            if parent != _prefix_parent(code):
                parents[code] = parent
            names[code] = distinct.setdefault(name, name)
            children[parent_key].append(code)
            if len(code) < 12:
                children[code] = []
        if scope and scope not in names:
            raise RegistryError(
                f"区划代码 {scope!r} 不存在 / no unit with code {scope!r} in the registry"
            )
        self._root = Unit(
            code=scope,
            name=names[scope] if scope else COUNTRY_NAME,
            level=LEVEL_BY_LEN[len(scope)] if scope else 0,
            parent=(self._parent(scope) if scope else None),
        )

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_package(cls, scope: str, data_dir: Path | None = None) -> Registry:
        """Load ``scope`` from the packaged data (stream-decompressed, one province file each),
        or from ``data_dir``, another edition laid out the same way."""
        _check_scope(scope)
        return cls(scope, _package_units(scope, data_dir))

    # -- queries ------------------------------------------------------------------------------

    def root(self) -> Unit:
        """The scope's own unit; for the whole country a synthetic 全国 unit, code "" level 0."""
        return self._root

    def unit(self, code: str) -> Unit | None:
        if code == self.scope:
            return self._root
        name = self._names.get(code)
        if name is None:
            return None
        return Unit(code, name, LEVEL_BY_LEN[len(code)], self._parent(code))

    def children(self, code: str) -> list[Unit]:
        kids = self._children.get(code)
        if kids is None:
            return []
        names = self._names
        return [Unit(c, names[c], LEVEL_BY_LEN[len(c)], self._parent(c)) for c in kids]

    def child_codes(self, code: str) -> list[str]:
        """Codes of the children of ``code`` (no copies of names; for hot paths)."""
        return self._children.get(code, [])

    def parent_code(self, code: str) -> str | None:
        """The parent of an in-scope unit inside the scope (None for the root)."""
        if code == self.scope:
            return None
        return self._parent(code) or ""

    def ancestors(self, code: str) -> list[Unit]:
        """The units from the scope's root down to the parent of ``code`` (empty for the root)."""
        chain: list[Unit] = []
        parent = self.parent_code(code)
        while parent is not None:
            unit = self.unit(parent)
            assert unit is not None
            chain.append(unit)
            parent = self.parent_code(parent)
        chain.reverse()
        return chain

    def has_village(self, code: str) -> bool:
        return len(code) == 12 and code in self._names

    def retired_village(self, code: str) -> str | None:
        """The last name of a village the imported edition no longer has, else None."""
        return self._retired.get(code)

    def knows_village(self, code: str) -> bool:
        """A current or retired village: a node bound to either is accepted (and a retired
        one flagged), so a new edition never cuts a node off."""
        return self.has_village(code) or code in self._retired

    def villages(self) -> Iterator[Unit]:
        for code, name in self._names.items():
            if len(code) == 12:
                yield Unit(code, name, VILLAGE_LEVEL, self._parent(code))

    def village_count(self) -> int:
        return sum(1 for code in self._names if len(code) == LEN_BY_LEVEL[VILLAGE_LEVEL])

    def rows(self) -> Iterator[tuple[str, str, int, str | None]]:
        """Every unit as (code, name, level, parent), each parent before its children (the
        scope's own unit first, with its parent outside the scope)."""
        for code, name in self._names.items():
            yield code, name, LEVEL_BY_LEN[len(code)], self._parent(code)

    def __len__(self) -> int:
        """Number of units (the root included, the synthetic 全国 excluded)."""
        return len(self._names)

    def _parent(self, code: str) -> str | None:
        if code in self._parents:
            return self._parents[code]
        return _prefix_parent(code)


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import changed, in villages (the units coverage counts)."""

    scope: str
    villages: int  # current villages after the import
    added: int  # villages new to this database
    renamed: int  # villages whose name changed
    retired: list[str]  # village codes of the scope the edition no longer has


def former_names() -> dict[str, tuple[str, ...]]:
    """Names people still use for renamed units (code → former names), from the shipped table
    ``data/former_names.tsv``; searches match them too (横县 finds 横州市)."""
    text = (resources.files("registry") / "data" / "former_names.tsv").read_text("utf-8")
    out: dict[str, tuple[str, ...]] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            code, _, names = line.partition("\t")
            out[code] = tuple(n.strip() for n in names.split(",") if n.strip())
    return out


def village_in_package(code: str) -> Unit | None:
    """The village-level unit ``code`` in the packaged NBS table, or None (a mistyped or
    retired code). Loads only the village's city (a few ms)."""
    if len(code) != LEN_BY_LEVEL[VILLAGE_LEVEL] or not code.isdigit():
        return None
    try:
        unit = Registry.from_package(code[:4]).unit(code)
    except RegistryError:
        return None
    return unit if unit is not None and unit.level == VILLAGE_LEVEL else None


def _check_scope(scope: str) -> None:
    if scope and (not scope.isdigit() or len(scope) not in LEVEL_BY_LEN or len(scope) == 12):
        raise RegistryError(
            f"范围 {scope!r} 应为空（全国）或 2/4/6/9 位区划代码 / scope {scope!r} must be empty "
            "(whole country) or a 2, 4, 6 or 9-digit division code"
        )


def _package_units(
    scope: str, data_dir: Path | None = None
) -> Iterator[tuple[str, str, str | None]]:
    data: Traversable | Path = (
        data_dir if data_dir is not None else resources.files("registry") / "data"
    )
    provinces = [
        line.split("\t", 1)[0]
        for line in (data / "index.tsv").read_text(encoding="utf-8").splitlines()
        if line
    ]
    wanted = [p for p in provinces if p.startswith(scope[:2])] if scope else provinces
    if not wanted:
        raise RegistryError(f"区划代码 {scope!r} 不存在 / no unit with code {scope!r}")
    for prov in wanted:
        with (
            (data / f"{prov}.tsv.xz").open("rb") as raw,
            io.TextIOWrapper(lzma.LZMAFile(raw), encoding="utf-8") as f,
        ):
            yield from _parse(f, scope)


def _parse(f: Iterable[str], scope: str) -> Iterator[tuple[str, str, str | None]]:
    """Units of one province file that belong to ``scope``. Membership follows parents, not
    code prefixes, so a unit recorded under a parent with another prefix is kept."""
    inside: set[str] = set()
    for line in f:
        fields = line.rstrip("\n").split("\t")
        code = fields[0]
        parent = fields[2] if len(fields) > 2 else _prefix_parent(code)
        if scope:
            if code == scope:
                parent = None
            elif parent not in inside:
                continue
            if len(code) < 12:
                inside.add(code)
        yield code, fields[1], parent
