"""Central's broker-link status as the dashboard receives it (central.freshness through the
live hub): a change is published at once, repeats are not, node traffic is stamped."""

from __future__ import annotations

from central.coverage import CoverageIndex
from central.live import LiveHub, Message
from registry import Registry

NANNING = Registry.from_package("4501")


def test_link_changes_are_published_once_with_since_and_last_traffic() -> None:
    clock = [1000.0]
    hub = LiveHub(CoverageIndex(NANNING), lambda v: (), lambda: clock[0])
    sub = hub.subscribe()
    assert hub.link.as_json() == {"broker_connected": False, "since": None, "last_traffic": None}
    hub.link_changed(True)
    hub.link.heard(1001.0)
    hub.link_changed(True)  # not a change: nothing sent
    clock[0] = 1010.0
    hub.link_changed(False)
    assert sub.take() == [
        Message("link", {"broker_connected": True, "since": 1000.0, "last_traffic": None}),
        Message("link", {"broker_connected": False, "since": 1010.0, "last_traffic": 1001.0}),
    ]
    assert hub.link_message().data["last_traffic"] == 1001.0
