"""The printable commissioning report (A4, zh-CN by default, English with ``lang="en"``): one
pure function from a report (the JSON of :mod:`provisioning.check`) and the village's place names
to an HTML page. Used by central (``GET /dashboard/commissioning/{node_id}``) and by
``shilian provision check`` (``report.html`` beside ``report.json``, offline)."""

from __future__ import annotations

import html
import re
import time
from dataclasses import dataclass
from importlib import resources
from string import Template
from typing import Any

TEMPLATE = "commissioning.html"

STEP_NAMES = {
    "zh": {"tls": "代理 TLS 可达", "birth": "中心收到上线消息", "health": "健康报告到达",
           "clock": "时钟与中心同步"},
    "en": {"tls": "Broker reachable over TLS", "birth": "Birth seen by central",
           "health": "Health arriving", "clock": "Clock in sync with central"},
}  # fmt: skip

LABELS = {
    "zh": {
        "title": "视联网节点调试报告",
        "print": "打印",
        "other_lang": "English",
        "l_node": "节点编号",
        "l_village": "村（社区）",
        "l_county": "县（市、区）",
        "l_township": "乡镇（街道）",
        "l_central": "中心",
        "l_technician": "调试人员",
        "l_date": "调试日期",
        "l_result": "结论",
        "l_step": "检查项",
        "l_outcome": "结果",
        "l_detail": "说明",
        "l_seconds": "用时（秒）",
        "colon": "：",
        "l_devices": "本地设备",
        "l_kind": "类别",
        "l_name": "名称",
        "l_address": "地址",
        "no_devices": "未发现本地设备（未运行 provision discover）",
        "later_failed": "此后有 {n} 次复检未通过（最近一次 {when}）；本报告为最近一次通过的调试。",
        "l_sign_tech": "调试人员签字",
        "l_sign_village": "村（社区）确认签字",
        "pass": "通过",
        "fail": "未通过",
        "not_run": "未执行",
    },
    "en": {
        "title": "Village node commissioning report",
        "print": "Print",
        "other_lang": "中文",
        "l_node": "Node",
        "l_village": "Village",
        "l_county": "County",
        "l_township": "Township",
        "l_central": "Central",
        "l_technician": "Technician",
        "l_date": "Date",
        "l_result": "Result",
        "l_step": "Step",
        "l_outcome": "Outcome",
        "l_detail": "Detail",
        "l_seconds": "Seconds",
        "colon": ": ",
        "l_devices": "Local devices",
        "l_kind": "Kind",
        "l_name": "Name",
        "l_address": "Address",
        "no_devices": "No local devices found (provision discover was not run)",
        "later_failed": "{n} later re-check(s) failed (last {when}); this is the newest passing "
        "commissioning.",
        "l_sign_tech": "Technician's signature",
        "l_sign_village": "Village's signature",
        "pass": "PASSED",
        "fail": "FAILED",
        "not_run": "not run",
    },
}

ORDER = ("tls", "birth", "health", "clock")

KINDS = {
    "zh": {"camera": "摄像机", "alarm_board": "报警板", "conference_terminal": "视频会议终端"},
    "en": {"camera": "Camera", "alarm_board": "Alarm board", "conference_terminal": "Terminal"},
}

#: A passed step's detail as the check writes it (machine text), in words per language.
_PASSED: dict[str, tuple[re.Pattern[str], str, str]] = {
    "tls": (re.compile(r"^(\S+) (TLSv[\d.]+)$"), "TLS 握手成功（{1}，{0}）", "TLS ok ({1}, {0})"),
    "birth": (re.compile(r"^online$"), "节点在线", "node online"),
    "health": (re.compile(r"^(\d+) report\(s\)$"), "已收到 {0} 份健康报告", "{0} report(s)"),
    "clock": (re.compile(r"^skew ([+-][\d.]+) s$"), "与中心相差 {0} 秒", "{0} s from central"),
}


def step_detail(step: str, ok: bool, detail: str, lang: str) -> str:
    """The step's detail in the page's language: a passed step's machine text in words, a
    failure's ``中文 / English`` message cut to its half."""
    if ok and step in _PASSED:
        pattern, zh, en = _PASSED[step]
        m = pattern.match(detail)
        if m:
            return (zh if lang == "zh" else en).format(*m.groups())
    if " / " in detail:
        zh_part, _, en_part = detail.partition(" / ")
        return zh_part if lang == "zh" else en_part
    return detail


@dataclass(frozen=True, slots=True)
class Place:
    """Names of the node's village and of its county and township ("" when unknown)."""

    village: str = ""
    county: str = ""
    township: str = ""


def chinese_date(ts: float) -> str:
    """``2026年11月25日 21:40`` in this machine's local time."""
    t = time.localtime(ts)
    return f"{t.tm_year}年{t.tm_mon}月{t.tm_mday}日 {t.tm_hour:02d}:{t.tm_min:02d}"


def english_date(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def render(report: dict[str, Any], place: Place, lang: str = "zh", href: str = "") -> str:
    """The HTML page. Every value from the report is escaped (the report comes from a box)."""
    lang = "en" if lang == "en" else "zh"
    lab = LABELS[lang]
    e = html.escape
    steps = {s.get("step"): s for s in report.get("steps", []) if isinstance(s, dict)}
    rows = []
    for step in ORDER:
        s = steps.get(step)
        if s is None:
            outcome, cls, detail, secs = lab["not_run"], "", "", ""
        else:
            ok = bool(s.get("ok"))
            outcome, cls = (lab["pass"], "ok") if ok else (lab["fail"], "fail")
            detail = step_detail(step, ok, str(s.get("detail", "")), lang)
            secs = f"{float(s.get('seconds', 0.0)):.1f}"
        rows.append(
            f'<tr><td>{e(STEP_NAMES[lang][step])}</td><td class="{cls}">{e(outcome)}</td>'
            f"<td>{e(detail)}</td><td>{e(secs)}</td></tr>"
        )
    devices = [d for d in report.get("devices") or [] if isinstance(d, dict)]
    device_rows = [
        f"<tr><td>{e(KINDS[lang].get(str(d.get('kind')), str(d.get('kind', ''))))}</td>"
        f"<td>{e(str(d.get('name', '')))}</td><td>{e(str(d.get('address', '')))}</td>"
        f"<td>{e(str(d.get('detail', '')))}</td></tr>"
        for d in devices
    ] or [f'<tr><td colspan="4">{e(lab["no_devices"])}</td></tr>']
    later = int(report.get("failed_since") or 0)
    last = report.get("last_attempt_at")
    note = ""
    if later and isinstance(last, int | float):
        when = chinese_date(last) if lang == "zh" else english_date(last)
        note = lab["later_failed"].format(n=later, when=when)
    ok = bool(report.get("ok"))
    started = float(report.get("started_at", 0.0))
    other = "zh" if lang == "en" else "en"
    values = {
        **{k: e(v) for k, v in lab.items()},
        "lang": "en" if lang == "en" else "zh-CN",
        "node_id": e(str(report.get("node_id", ""))),
        "village": e(place.village or str(report.get("node_id", ""))[:12]),
        "county": e(place.county),
        "township": e(place.township),
        "central": e(str(report.get("central", ""))),
        "technician": e(str(report.get("technician", "") or "")),
        "date": e(chinese_date(started) if lang == "zh" else english_date(started)),
        "verdict": e(lab["pass"] if ok else lab["fail"]),
        "verdict_class": "ok" if ok else "fail",
        "rows": "\n".join(rows),
        "device_rows": "\n".join(device_rows),
        "later_note": f'<p class="note">{e(note)}</p>' if note else "",
        "other_lang_href": e(f"{href}?lang={other}" if other == "en" else href or "?lang=zh"),
    }
    text = (resources.files("central") / "dashboard" / TEMPLATE).read_text("utf-8")
    return Template(text).substitute(values)


def place_from_registry(registry: Any, node_id: str) -> Place:
    """Names from a :class:`registry.Registry` (unknown codes give empty names)."""
    code = node_id[:12]
    unit = registry.unit(code)
    if unit is None:
        return Place()
    names = {u.level: u.name for u in registry.ancestors(code)}
    return Place(village=unit.name, county=names.get(3, ""), township=names.get(4, ""))
