"""A snapshot from a real camera attached to its alarm, end to end: gst-rtsp-server test camera,
``shilian edge run`` watching it (zone 1), a real mosquitto, ``shilian central run``, and
Debian's headless Chromium showing the picture in the node's open-alarm list. The API serves
the JPEG only to users whose scope holds the alarm's village."""

from __future__ import annotations

import urllib.error
from collections.abc import Iterator
from typing import Any

import pytest

from shilian.broker import Mosquitto
from tests.camera_peers import RtspCamera
from tests.processes import Central, Edge, add_user, wait_for
from tests.test_dashboard import chromium, open_dashboard, screenshot, watched
from tests.video_scenario import NANNING

pytestmark = pytest.mark.slow

VILLAGE = next(u.code for u in NANNING.villages() if u.code.startswith("450102"))
NODE = f"{VILLAGE}-a"
OTHER_COUNTY = "450103"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Central, int]]:
    work = tmp_path_factory.mktemp("snapshots")
    (work / "mosquitto").mkdir()
    broker = Mosquitto(workdir=work / "mosquitto")
    broker.start()
    camera = RtspCamera("ball").start()
    central = Central(work / "central", broker.port)
    edge = Edge(work / "edge", NODE, broker.port)
    conf = work / "edge" / "edge.toml"
    conf.write_text(
        conf.read_text(encoding="utf-8")
        + f'[[cameras]]\nid = "cam-gate"\nname = "村口"\nrtsp_url = "{camera.url(0)}"\n'
        "zones = [1]\n[camera_probe]\ninterval_s = 1.0\n",
        encoding="utf-8",
    )
    try:
        central.start()
        edge.start()
        wait_for(
            lambda: any(
                d["device_id"] == "cam-gate" and d["health"] == "ok"
                for d in central.get(f"/api/v1/devices?code={NODE[:12]}")["devices"]
            ),
            what="camera ok at central",
        )
        reply = edge.request(
            {"op": "emit", "priority": "alarm", "kind": "panic", "data": {"zone": 1}}
        )
        assert reply["ok"], reply
        alarm = wait_for(
            lambda: next(iter(central.get(f"/api/v1/alarms?node={NODE}")["alarms"]), None),
            what="the alarm at central",
        )
        wait_for(
            lambda: central.get(f"/api/v1/alarms/{alarm['id']}/snapshots")["snapshots"],
            what="its snapshot at central",
        )
        yield central, int(alarm["id"])
    finally:
        edge.close()
        central.close()
        camera.stop()
        broker.stop()


def test_the_alarm_has_the_cameras_jpeg_scoped_like_the_alarm(site: tuple[Central, int]) -> None:
    central, alarm_id = site
    shots = central.get(f"/api/v1/alarms/{alarm_id}/snapshots")["snapshots"]
    assert [s["camera"] for s in shots] == ["cam-gate"]
    assert shots[0]["zone"] == 1 and shots[0]["width"] <= 640
    with central.open(shots[0]["url"]) as r:
        assert r.headers["Content-Type"] == "image/jpeg"
        jpeg = r.read()
    assert jpeg.startswith(b"\xff\xd8") and len(jpeg) == shots[0]["bytes"]
    # the event row keeps the snapshot's metadata, not the picture
    snap_events = [e for e in central.events(NODE) if e["kind"] == "snapshot"]
    assert len(snap_events) == 1 and "jpeg_b64" not in snap_events[0]["data"]
    # a user of another county sees neither the list nor the picture
    pw = add_user(central.db, "snap-other", "viewer", OTHER_COUNTY)
    token = central.login("snap-other", pw)["token"]
    for path in (f"/api/v1/alarms/{alarm_id}/snapshots", shots[0]["url"]):
        with pytest.raises(urllib.error.HTTPError) as e:
            central.call("GET", path, token=token)
        assert e.value.code == 403
    with pytest.raises(urllib.error.HTTPError) as e:
        central.call("GET", f"/api/v1/alarms/{alarm_id}/snapshots/cam-none")
    assert e.value.code == 404


def test_the_dashboards_alarm_view_shows_the_snapshot(site: tuple[Central, int]) -> None:
    central, alarm_id = site
    with chromium() as browser:
        ctx = browser.new_context(viewport={"width": 1366, "height": 900}, locale="zh-CN")
        token = central.login("admin", "e2e-admin-password")["token"]
        ctx.add_cookies([{"name": "shilian_session", "value": token, "url": central.api}])
        page: Any = watched(ctx.new_page())
        try:
            open_dashboard(page, central, f"/dashboard/#/n/{NODE}")
            img = f"li[data-alarm='{alarm_id}'] img[data-test=alarm-snapshot]"
            page.wait_for_selector(img)
            page.wait_for_function(
                f'() => document.querySelector("{img}").complete'
                f' && document.querySelector("{img}").naturalWidth > 0'
            )
            assert page.get_attribute(img, "data-camera") == "cam-gate"
            screenshot(page, "alarm-snapshot")
            # the alarm console lists it with the same picture beside its kind
            page.goto(f"{central.api}/dashboard/#/alarms")
            thumb = f"tr[data-alarm='{alarm_id}'] img[data-test=console-snapshot]"
            page.wait_for_selector(thumb)
            page.wait_for_function(
                f'() => document.querySelector("{thumb}").complete'
                f' && document.querySelector("{thumb}").naturalWidth > 0'
            )
            screenshot(page, "alarm-console-snapshot")
        finally:
            ctx.close()
        page.rec.check()
