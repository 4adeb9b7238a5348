"""Every event kind a node sends has a name for the operators: the kinds each producer uses are
listed in wire.event_kinds, and each listed kind has a zh-CN and an English name in the
dashboard's catalogue (strings.toml ``event_<kind>``), so no page shows a bare code like
``panic`` or ``camera_offline``."""

from __future__ import annotations

import re
from pathlib import Path

from central import dashboard, i18n
from edge.device_health import EVENT_KIND as DEVICE_HEALTH_KIND
from firmware_bridge.alarms import PRIORITY, AlarmKind
from firmware_bridge.contact_id import PANEL_EVENT_KIND
from wire import Priority
from wire.event_kinds import EVENT_KINDS
from wire.snapshots import POWER_CYCLE_KIND, SNAPSHOT_KIND

ROOT = Path(__file__).resolve().parent.parent


def test_every_kind_a_producer_sends_is_listed_with_its_priority() -> None:
    for kind in AlarmKind:
        assert EVENT_KINDS[kind.value] == PRIORITY[kind], kind
    assert PANEL_EVENT_KIND in EVENT_KINDS
    assert DEVICE_HEALTH_KIND in EVENT_KINDS
    assert EVENT_KINDS[SNAPSHOT_KIND] == Priority.INFO  # edge.snapshots
    assert EVENT_KINDS[POWER_CYCLE_KIND] == Priority.DEVICE  # edge.remediation
    updater = (ROOT / "edge" / "firmware_updater.py").read_text(encoding="utf-8")
    assert re.search(r'emit_waiting_for_room\(sink, "device", "(\w+)"', updater)
    for m in re.finditer(r'emit_waiting_for_room\(sink, "\w+", "(\w+)"', updater):
        assert m.group(1) in EVENT_KINDS
    # The demo fleet's kinds (shilian.churn) and the test fleet's (tests.dashboard_client).
    for path in (ROOT / "shilian" / "churn.py", ROOT / "tests" / "dashboard_client.py"):
        text = path.read_text(encoding="utf-8")
        kinds = re.findall(r'"(?:alarm|device|info)", "([a-z_]+)"', text)
        assert kinds, path
        assert set(kinds) <= set(EVENT_KINDS) | {"device_health"}, path


def test_every_listed_kind_has_a_chinese_and_an_english_name() -> None:
    cat = i18n.catalogue()
    missing = [k for k in EVENT_KINDS if f"event_{k}" not in cat]
    assert missing == []
    for k in EVENT_KINDS:
        zh = cat[f"event_{k}"]["zh-CN"]
        assert re.search(r"[\u4e00-\u9fff]", zh), (k, zh)  # Chinese, not the code again
        assert k not in zh and cat[f"event_{k}"]["en"]


def test_every_string_any_page_script_uses_is_in_the_catalogue() -> None:
    cat = i18n.catalogue()
    used: set[str] = set()
    for js in sorted(Path(dashboard.ASSETS).glob("*.js")):
        used |= set(re.findall(r"\bt\(\"([a-z_0-9]+)\"", js.read_text(encoding="utf-8")))
    used |= {f"alarm_state_{s}" for s in ("open", "acked", "closed", "all")}
    used |= {f"alarm_{s}_by" for s in ("ack", "close")}
    used |= {f"alarm_already_{s}" for s in ("acked", "closed")}
    assert used - set(cat) == set()


def test_alert_texts_name_the_alarm_kind_and_the_device_health() -> None:
    from central.alerts import AlertRule, observe_alarms, observe_devices

    node = "450102001003-a"
    names = {"450102001003": "兴宁社区居委会"}
    rule = AlertRule(id="unacked", kind="alarm_unacked", minutes=5)
    (alarm,) = observe_alarms(rule, [(7, node, "panic", 100.0)], names, 500.0)
    assert alarm.zh.startswith("紧急求助报警（兴宁社区居委会") and "panic" not in alarm.zh
    assert alarm.en.startswith("Panic alarm (")
    rule = AlertRule(id="cams", kind="device_down", minutes=5)
    (down,) = observe_devices(
        rule, [(node, "cam1", "camera", "no_stream", 100.0, False)], names, 500.0
    )
    assert "无视频流超过 5 分钟" in down.zh and "no_stream" not in down.zh
    assert "no stream for more than" in down.en
