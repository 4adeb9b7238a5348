"""CoverageIndex: unit tests on Nanning, and hypothesis against a brute-force recount."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from central.coverage import CoverageIndex, UnitCoverage
from registry import Registry

NANNING = Registry.from_package("4501")

# A small tree with an uneven shape and one county recorded under a parent of another prefix.
SMALL_UNITS = [
    ("45", "省", None),
    ("4501", "甲市", "45"),
    ("4502", "乙市", "45"),
    ("450101", "一区", "4501"),
    ("450102", "二区", "4501"),
    ("450201", "三区", "4501"),  # prefix says 4502
    ("450101001", "一镇", "450101"),
    ("450101002", "二镇", "450101"),
    ("450102001", "三镇", "450102"),
    ("450201001", "四镇", "450201"),
    ("450101001001", "村一", "450101001"),
    ("450101001002", "村二", "450101001"),
    ("450101002001", "村三", "450101002"),
    ("450102001001", "村四", "450102001"),
    ("450201001001", "村五", "450201001"),
    ("450201001002", "村六", "450201001"),
]
SMALL = Registry("45", SMALL_UNITS)
SMALL_VILLAGES = [code for code, _, _ in SMALL_UNITS if len(code) == 12]


def test_one_node_moves_every_level_by_exactly_one_village() -> None:
    index = CoverageIndex(NANNING)
    city = index.summary("4501")
    assert (city.villages, city.provisioned, city.covered, city.ratio) == (1856, 0, 0, 0.0)
    village = next(iter(NANNING.villages()))
    node = f"{village.code}-a"
    index.set_node(node, online=True)
    for unit in [*NANNING.ancestors(village.code), village]:
        s = index.summary(unit.code)
        assert (s.provisioned, s.covered) == (1, 1), unit
    assert index.summary("4501").ratio == pytest.approx(1 / 1856)
    county = village.code[:6]
    before = index.summary(county)
    # A second node in the same village changes nothing; its going offline neither.
    index.set_node(f"{village.code}-b", online=True)
    index.set_node(f"{village.code}-b", online=False)
    assert index.summary(county) == before
    # The first going offline uncovers the village, but it stays provisioned.
    index.set_node(node, online=False)
    s = index.summary(county)
    assert (s.provisioned, s.covered) == (1, 0)
    assert (index.known_nodes(), index.online_nodes()) == (2, 0)
    index.remove_node(node)
    index.remove_node(f"{village.code}-b")
    index.remove_node("unknown-node")
    assert index.summary("4501") == city
    assert index.known_nodes() == 0


def test_children_and_errors() -> None:
    index = CoverageIndex(NANNING)
    counties = index.children("4501")
    assert len(counties) == 12
    assert sum(c.villages for c in counties) == 1856
    assert counties[0] == UnitCoverage("450102", "兴宁区", 3, counties[0].villages, 0, 0)
    with pytest.raises(KeyError):
        index.summary("4502")
    with pytest.raises(KeyError):
        index.children("45")
    with pytest.raises(KeyError):
        index.set_node("450201001001-a", online=True)  # 柳州: outside the registry
    with pytest.raises(KeyError):
        index.set_node("not-a-node", online=True)
    assert index.known_nodes() == 0
    assert UnitCoverage("x", "x", 3, 0, 0, 0).ratio == 0.0


def test_all_villages_with_nodes() -> None:
    index = CoverageIndex(NANNING)
    for i, v in enumerate(NANNING.villages()):
        index.set_node(f"{v.code}-n", online=i % 4 != 0)
    city = index.summary("4501")
    assert city.provisioned == 1856
    assert city.covered == sum(c.covered for c in index.children("4501"))
    assert city.covered == sum(1 for i in range(1856) if i % 4 != 0)


node_ids = st.builds(
    lambda v, n: f"{v}-{n}", st.sampled_from(SMALL_VILLAGES), st.sampled_from(["a", "b", "c"])
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("set"), node_ids, st.booleans()),
        st.tuples(st.just("remove"), node_ids, st.just(False)),
    ),
    max_size=60,
)


def _all_codes(registry: Registry) -> list[str]:
    codes, stack = [], [registry.root().code]
    while stack:
        code = stack.pop()
        codes.append(code)
        stack.extend(registry.child_codes(code))
    return codes


def _villages_under(registry: Registry, code: str) -> list[str]:
    if len(code) == 12:
        return [code]
    return [v for c in registry.child_codes(code) for v in _villages_under(registry, c)]


@given(ops)
def test_counts_equal_a_brute_force_recount(sequence: list[tuple[str, str, bool]]) -> None:
    index = CoverageIndex(SMALL)
    model: dict[str, bool] = {}
    for op, node, online in sequence:
        if op == "set":
            index.set_node(node, online)
            model[node] = online
        else:
            index.remove_node(node)
            model.pop(node, None)
    assert index.known_nodes() == len(model)
    assert index.online_nodes() == sum(model.values())
    for code in _all_codes(SMALL):
        villages = _villages_under(SMALL, code)
        s = index.summary(code)
        assert s.villages == len(villages)
        assert s.provisioned == sum(1 for v in villages if any(n[:12] == v for n in model))
        assert s.covered == sum(
            1 for v in villages if any(n[:12] == v and on for n, on in model.items())
        )
        kids = index.children(code)
        if kids:
            assert s.villages == sum(k.villages for k in kids)
            assert s.provisioned == sum(k.provisioned for k in kids)
            assert s.covered == sum(k.covered for k in kids)
