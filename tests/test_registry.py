"""The packaged village registry: counts, scopes, quirks, and the database round trip."""

from __future__ import annotations

import pytest

from central.coverage import CoverageIndex
from registry import COUNTRY_NAME, Registry, RegistryError, Unit


def _count_levels(registry: Registry) -> dict[int, int]:
    counts: dict[int, int] = {}
    stack = [registry.root()]
    while stack:
        unit = stack.pop()
        counts[unit.level] = counts.get(unit.level, 0) + 1
        stack.extend(registry.children(unit.code))
    return counts


def test_nanning_counts() -> None:
    reg = Registry.from_package("4501")
    root = reg.root()
    assert (root.code, root.name, root.level) == ("4501", "南宁市", 2)
    assert _count_levels(reg) == {2: 1, 3: 12, 4: 138, 5: 1856}
    assert sum(1 for _ in reg.villages()) == 1856
    counties = reg.children("4501")
    assert [c.code for c in counties][:3] == ["450102", "450103", "450105"]
    assert reg.unit("450181") == Unit("450181", "横州市", 3, "4501")
    assert reg.unit("4502") is None  # 柳州 is outside the scope
    assert reg.unit("45") is None


def test_ancestors_and_villages() -> None:
    reg = Registry.from_package("4501")
    village = next(iter(reg.villages()))
    assert reg.has_village(village.code)
    assert not reg.has_village(village.code[:9])
    assert not reg.has_village("450201001001")
    chain = reg.ancestors(village.code)
    assert [u.level for u in chain] == [2, 3, 4]
    assert chain[0] == reg.root()
    assert reg.ancestors("4501") == []
    assert reg.children(village.code) == []
    assert reg.children("999") == []


def test_whole_province_load() -> None:
    reg = Registry.from_package("45")
    assert reg.root().name == "广西壮族自治区"
    levels = _count_levels(reg)
    assert levels[1] == 1 and levels[2] == 14
    assert levels[5] == sum(1 for _ in reg.villages()) == 16681
    assert len(reg.children("4501")) == 12


@pytest.mark.slow
def test_whole_country_load() -> None:
    reg = Registry.from_package("")
    root = reg.root()
    assert (root.code, root.name, root.level, root.parent) == ("", COUNTRY_NAME, 0, None)
    provinces = reg.children("")
    assert len(provinces) == 31 and provinces[0] == Unit("11", "北京市", 1, None)
    assert sum(1 for _ in reg.villages()) == 620573
    assert len(reg) == 31 + 342 + 2978 + 41352 + 620573
    assert reg.ancestors("450102001001")[0] == root
    # Coverage over the whole country: counts per level, one node moves every ancestor.
    index = CoverageIndex(reg)
    assert index.summary("").villages == 620573
    assert sum(c.villages for c in index.children("")) == 620573
    index.set_node("450102001003-a", online=True)
    assert [index.summary(c).covered for c in ("", "45", "4501", "450102")] == [1, 1, 1, 1]


def test_data_quirks_are_kept() -> None:
    # Municipalities: a city-level 市辖区; Henan: 省直辖县级行政区划 holding 济源市.
    bj = Registry.from_package("11")
    assert [c.name for c in bj.children("11")] == ["市辖区"]
    henan = Registry.from_package("4190")
    assert henan.root().name == "省直辖县级行政区划"
    assert any(c.name == "济源市" for c in henan.children("4190"))
    # Dongguan has no counties: one county-level unit repeating the city.
    dg = Registry.from_package("4419")
    assert [(c.code, c.name) for c in dg.children("4419")] == [("441900", "东莞市")]
    assert len(dg.children("441900")) > 20


def test_scope_at_county_and_township() -> None:
    county = Registry.from_package("450102")
    assert county.root().level == 3
    township = Registry.from_package(county.children("450102")[0].code)
    assert township.root().level == 4
    assert all(c.level == 5 for c in township.children(township.root().code))


@pytest.mark.parametrize("scope", ["4", "45012", "abc", "450102001001", "4599", "99"])
def test_bad_scope_is_refused(scope: str) -> None:
    with pytest.raises(RegistryError):
        Registry.from_package(scope)


def test_parent_that_breaks_the_prefix_rule() -> None:
    # A county recorded under another city than its code prefix says (a refresh may bring one).
    units = [
        ("45", "省", None),
        ("4501", "甲市", "45"),
        ("4502", "乙市", "45"),
        ("450201", "区", "4501"),
        ("450201001", "镇", "450201"),
        ("450201001001", "村", "450201001"),
    ]
    reg = Registry("45", units)
    assert [c.code for c in reg.children("4501")] == ["450201"]
    assert reg.children("4502") == []
    assert reg.unit("450201") == Unit("450201", "区", 3, "4501")
    assert [u.code for u in reg.ancestors("450201001001")] == ["45", "4501", "450201", "450201001"]
    with pytest.raises(RegistryError):
        Registry("45", [("45", "省", None), ("450101", "区", "4509")])
