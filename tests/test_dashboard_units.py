"""The dashboard's pure parts: the string catalogue, the live hub, search and the CSV rows."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import prometheus_client
import pytest

from central import dashboard, i18n, pinyin
from central.coverage import CoverageIndex
from central.http import ApiContext
from central.live import MAX_EVENTS_PER_BATCH, MAX_QUEUE, LiveHub, Message
from central.store import EventRow
from registry import Registry

NANNING = Registry.from_package("4501")
COUNTY = "450102"
VILLAGE = next(u.code for u in NANNING.villages() if u.code.startswith(COUNTY))
APP_JS = Path(dashboard.ASSETS / "app.js").read_text(encoding="utf-8")


def _hub(clock: float = 1000.0) -> tuple[LiveHub, CoverageIndex]:
    cov = CoverageIndex(NANNING)
    hub = LiveHub(cov, lambda v: (u.code for u in NANNING.ancestors(v)), lambda: clock)
    return hub, cov


def test_catalogue_has_every_key_in_both_languages_and_every_key_the_page_uses() -> None:
    cat = i18n.catalogue()
    assert cat["headline"]["zh-CN"] == "综治视联网覆盖率"
    assert all(set(texts) == {"zh-CN", "en"} for texts in cat.values())
    used = set(re.findall(r"\bt\(\"([a-z_0-9]+)\"", APP_JS))
    used |= {f"filter_{f}" for f in ("all", "partial", "uncovered", "never")}
    used |= {f"state_{s}" for s in ("online", "offline")}
    used |= {f"priority_{p}" for p in ("alarm", "device", "info")}
    used |= {f"device_{d}" for d in ("up", "down", "degraded", "unknown")}
    used |= {f"reason_{r}" for r in ("connect", "will", "stopped", "health_timeout", "health")}
    used |= {f"seen_{s}" for s in ("any", "1h", "24h", "7d")}
    used |= {f"severity_{s}" for s in ("warning", "critical")}
    used |= {"action_ping", "action_get_config"}
    used |= {f"source_{s}" for s in ("snapshot", "derived", "live")}  # the report page
    assert used - set(cat) == set()
    assert len(used) > 40  # the regex still finds the page's keys


def test_language_defaults_to_chinese() -> None:
    assert i18n.language(None) == "zh-CN"
    assert i18n.language("fr") == "zh-CN"
    assert i18n.language("en") == "en"
    assert i18n.language("en-GB") == "en"
    assert i18n.strings("en")["headline"] == "Video network coverage"


def test_page_boot_config_cannot_end_its_script_element() -> None:
    boot = dashboard.boot_config(NANNING, "zh-CN", wall=False, alarms=True)
    boot["scope_name"] = "</script><script>alert(1)</script>"
    html = dashboard.render_page(boot)
    assert html.count("</script>") == html.count("<script")
    assert "<script>alert" not in html
    inline = html.split('type="application/json">')[1].split("</script>")[0]
    assert json.loads(inline)["scope_name"] == boot["scope_name"]
    assert boot["maps"] == ["4501"]
    assert '<html lang="zh-CN">' in html


def test_node_change_publishes_node_and_coverage_of_every_ancestor() -> None:
    hub, cov = _hub()
    sub = hub.subscribe()
    node = f"{VILLAGE}-a"
    cov.set_node(node, True)
    hub.committed([], [(node, True)])
    msgs = sub.take()
    assert msgs[0] == Message(
        "node", {"node_id": node, "village": VILLAGE, "state": "online", "at": 1000.0}
    )
    coverage = {m.data["code"]: m.data for m in msgs if m.kind == "coverage"}
    assert set(coverage) == {"4501", COUNTY, VILLAGE[:9], VILLAGE}
    assert coverage["4501"]["covered"] == 1
    assert coverage[VILLAGE]["ratio"] == 1.0
    assert not sub.wake.is_set()


def test_events_are_forwarded_newest_batch_tail_only() -> None:
    hub, _ = _hub()
    sub = hub.subscribe()
    node = f"{VILLAGE}-a"
    rows = [
        EventRow(node, VILLAGE, "b" * 32, i, 1.0, 2.0, "info", "test", None, "{}")
        for i in range(1, 101)
    ]
    hub.committed(rows, [])
    events = [m for m in sub.take() if m.kind == "event"]
    assert len(events) == MAX_EVENTS_PER_BATCH
    assert events[-1].data["seq"] == 100


def test_a_stalled_subscriber_gets_one_resync_instead_of_unbounded_memory() -> None:
    hub, _ = _hub()
    slow, fast = hub.subscribe(), hub.subscribe()
    for i in range(MAX_QUEUE + 5):
        hub.publish([Message("node", {"i": i})])
        fast.take()
    queued = slow.take()
    assert len(queued) <= MAX_QUEUE
    assert queued[0].kind == "resync"
    assert slow.dropped > 0


def test_nobody_listening_costs_nothing_and_close_ends_streams() -> None:
    hub, _ = _hub()
    hub.committed([], [(f"{VILLAGE}-a", True)])
    assert hub.published == 0
    sub = hub.subscribe()
    hub.close()
    assert sub.closed and sub.wake.is_set()
    assert len(hub) == 0


def test_search_by_name_and_by_code() -> None:
    index = dashboard.search_index(NANNING)
    assert len(index) == len(NANNING) - 1  # every unit but the scope itself
    village = NANNING.unit(VILLAGE)
    assert village is not None
    hits = dashboard.find(index, village.name)
    assert VILLAGE in [h.code for h in hits]
    assert dashboard.find(index, "横州")[0].code == "450181"
    (renamed,) = dashboard.find(index, "横县")  # the former name, still on documents and maps
    assert (renamed.code, renamed.former) == ("450181", ("横县",))
    by_code = dashboard.find(index, COUNTY)
    assert by_code[0].code == COUNTY and all(h.code.startswith(COUNTY) for h in by_code)
    assert dashboard.find(index, "  ") == []
    assert len(dashboard.find(index, "村")) == dashboard.MAX_RESULTS


@pytest.mark.parametrize("code", ["4501", COUNTY])
def test_csv_rows_match_the_coverage_index(code: str) -> None:
    cov = CoverageIndex(NANNING)
    cov.set_node(f"{VILLAGE}-a", True)
    ctx = ApiContext(
        Path("unused.sqlite3"), NANNING, cov, prometheus_client.CollectorRegistry(), None, time.time
    )
    rows = dashboard.coverage_rows(ctx, code)
    assert rows[0][0] == code
    assert rows[0][5] == "1"
    assert sum(int(r[3]) for r in rows[1:]) == int(rows[0][3])


def test_search_by_pinyin_initials_full_pinyin_and_a_mix() -> None:
    index = dashboard.search_index(NANNING)
    assert dashboard.find(index, "xnq")[0].code == COUNTY  # 兴宁区
    assert dashboard.find(index, "xingningqu")[0].code == COUNTY
    assert dashboard.find(index, "XingNing Q")[0].code == COUNTY  # case and spaces ignored
    assert dashboard.find(index, "xingnq")[0].code == COUNTY
    assert dashboard.find(index, "hzs")[0].code == "450181"  # 横州市
    assert dashboard.find(index, "hengxian")[0].code == "450181"  # its former name, 横县
    village = NANNING.unit(VILLAGE)
    assert village is not None
    initials = "".join(r[0][0] for r in pinyin.readings(village.name))
    assert VILLAGE in [h.code for h in dashboard.find(index, initials)]
    assert dashboard.find(index, "qqqqqqqq") == []


def test_pinyin_keeps_every_reading_of_a_polyphonic_character() -> None:
    chars = pinyin.readings("长安村")
    assert {"chang", "zhang"} <= set(chars[0])
    assert pinyin.match("zac", chars) == 0 and pinyin.match("changan", chars) == 0
    assert pinyin.match("ancun", chars) == 1  # from the second character
    assert pinyin.match("chan", chars) == 0  # a syllable still being typed
    assert pinyin.match("x", chars) is None
    assert not pinyin.is_pinyin_query("长安") and not pinyin.is_pinyin_query("4501")


def test_a_node_id_finds_its_village() -> None:
    """A technician reads the node id off the box's label: searching it lands on the node's
    village (whose page lists its nodes), whatever the local name after the dash."""
    index = dashboard.search_index(NANNING)
    for query in (f"{VILLAGE}-a", f" {VILLAGE}-gate2 ", f"{VILLAGE}-"):
        assert [h.code for h in dashboard.find(index, query)] == [VILLAGE], query
    assert dashboard.find(index, "999999999999-a") == []
