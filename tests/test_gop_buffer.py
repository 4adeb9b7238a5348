"""edge.gop_buffer: what a viewer joining mid-stream is sent first (pure, no media)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.gop_buffer import GopBuffer


def test_starts_at_the_latest_key_frame_with_every_packet_after_it() -> None:
    gop: GopBuffer[str] = GopBuffer(1000)
    for name, key in (("k1", True), ("p1", False), ("k2", True), ("p2", False), ("p3", False)):
        gop.push(name, 10, key)
    assert gop.packets() == ["k2", "p2", "p3"]
    assert gop.nbytes == 30 and len(gop) == 3


def test_nothing_before_the_first_key_frame() -> None:
    gop: GopBuffer[str] = GopBuffer(1000)
    gop.push("p0", 10, False)
    gop.push("p1", 10, False)
    assert gop.packets() == []
    gop.push("k", 10, True)
    assert gop.packets() == ["k"]


def test_a_group_too_big_is_given_up_until_the_next_key_frame() -> None:
    gop: GopBuffer[str] = GopBuffer(25)
    gop.push("k1", 10, True)
    gop.push("p1", 10, False)
    gop.push("p2", 10, False)  # 30 > 25: a viewer could not start from an incomplete group
    assert gop.packets() == [] and gop.overflows == 1
    gop.push("p3", 1, False)
    assert gop.packets() == []
    gop.push("k2", 10, True)
    gop.push("p4", 10, False)
    assert gop.packets() == ["k2", "p4"] and gop.overflows == 1


def test_a_key_frame_larger_than_the_bound_is_not_kept() -> None:
    gop: GopBuffer[str] = GopBuffer(5)
    gop.push("k", 10, True)
    gop.push("p", 1, False)
    assert gop.packets() == [] and gop.nbytes == 0


def test_packets_is_a_copy_and_clear_empties() -> None:
    gop: GopBuffer[str] = GopBuffer(100)
    gop.push("k", 1, True)
    got = gop.packets()
    got.append("x")
    assert gop.packets() == ["k"]
    gop.clear()
    assert gop.packets() == [] and gop.nbytes == 0


def test_the_bound_must_be_positive() -> None:
    with pytest.raises(ValueError):
        GopBuffer(0)


@given(
    st.integers(1, 500),
    st.lists(st.tuples(st.integers(0, 200), st.booleans()), max_size=200),
)
def test_always_a_decodable_bounded_suffix(bound: int, packets: list[tuple[int, bool]]) -> None:
    """Whatever comes: empty, or the latest key frame and all after it, within the bound."""
    gop: GopBuffer[int] = GopBuffer(bound)
    for i, (size, key) in enumerate(packets):
        gop.push(i, size, key)
    kept = gop.packets()
    assert gop.nbytes <= bound
    assert sum(packets[i][0] for i in kept) == gop.nbytes
    if kept:
        assert packets[kept[0]][1]  # a key frame first
        assert kept == list(range(kept[0], len(packets)))  # nothing missing after it
        assert not any(key for _, key in packets[kept[0] + 1 :])  # and it is the latest


class _Tap:
    """What a viewer's track needs of its tap: to leave it, and to report what it gave up."""

    def __init__(self) -> None:
        self.faults: list[str] = []

    def unsubscribe(self, track: object) -> None:
        pass

    def fault(self, kind: str) -> None:
        self.faults.append(kind)


def _packet(pts: int, key: bool) -> Any:
    from fractions import Fraction

    import av

    p = av.Packet(b"\x00\x00\x00\x01" + bytes([pts % 251]))
    p.pts = p.dts = pts
    p.time_base = Fraction(1, 90000)
    p.is_keyframe = key
    return p


async def test_a_viewer_gets_the_group_at_once_then_the_live_packets() -> None:
    from edge.camera_tap import TapTrack

    group = [_packet(3600 * i, i == 0) for i in range(5)]  # 25 fps: 40 ms apart
    track = TapTrack(_Tap(), group)  # type: ignore[arg-type]
    live = _packet(3600 * 5, False)
    track._put(live)
    got = [await track.recv() for _ in range(6)]
    # the group 1 ms apart, ending where the camera is; then live times unchanged
    assert [p.pts for p in got] == [14400 - 90 * k for k in (4, 3, 2, 1, 0)] + [18000]
    assert got[0].is_keyframe and bytes(got[0]) == bytes(group[0])
    assert group[0].pts == 0  # the buffered packets are left as they came


async def test_a_viewer_without_a_group_starts_at_the_next_key_frame_and_a_lagging_one_skips() -> (
    None
):
    from edge.camera_tap import MAX_LAG_PACKETS, TapTrack

    tap = _Tap()
    track = TapTrack(tap, [])  # type: ignore[arg-type]
    track._put(_packet(0, False))  # undecodable without its key frame: not sent
    for i in range(1, MAX_LAG_PACKETS + 2):
        track._put(_packet(3600 * i, i == 1))
    # the sender never read: the queue is given up and the next key frame awaited
    assert tap.faults == ["viewer_lagged"]
    track._put(_packet(0, False))
    key = _packet(7, True)
    track._put(key)
    assert (await track.recv()).pts == 7
