"""A camera's health from its probes' findings, pure (time passed in).

The shell (:mod:`edge.camera_source`) reports what it saw: a connection or RTSP failure
(:meth:`CameraJudge.failed`), a stream that started playing (:meth:`~CameraJudge.playing`),
RTP and key-frame arrival times (from :class:`edge.rtp_h264.H264Watcher`), a sampled picture's
thumbnail (:meth:`~CameraJudge.picture`) and the ONVIF clock drift. :meth:`~CameraJudge.verdict`
answers the health, the outermost fault first (unreachable, auth_failed, no_stream, stalled,
black, frozen, clock_wrong), with its reason; ``None`` while a fresh stream has shown no
picture yet, so a reconnect does not flap the published health. A picture that is not black
is ``ok`` at once; ``frozen`` needs it unchanged for ``frozen_after_s``.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.picture import difference, is_black
from edge.texts import reason
from wire.devices import CameraHealth


@dataclass(frozen=True, slots=True)
class Thresholds:
    stall_s: float = 20.0
    frozen_after_s: float = 300.0
    frozen_max_diff: float = 0.5
    black_max_luma: int = 38
    black_ratio: float = 0.98
    max_clock_drift_s: float = 10.0


@dataclass(frozen=True, slots=True)
class Verdict:
    health: CameraHealth
    reason: str


class CameraJudge:
    def __init__(self, t: Thresholds) -> None:
        self.t = t
        self._failure: Verdict | None = None
        self._playing_since: float | None = None
        self.last_rtp: float | None = None
        self.last_keyframe: float | None = None
        self._picture: Verdict | None = None  # black / frozen / ok / no_stream (undecodable)
        self._thumb: bytes | None = None
        self._unchanged_since: float | None = None
        self.clock_drift_s: float | None = None

    def failed(self, health: CameraHealth, why: str) -> None:
        """The connection or the RTSP exchange failed (unreachable, auth_failed, no_stream)."""
        self._failure = Verdict(health, why)
        self._playing_since = None

    def playing(self, now: float) -> None:
        """PLAY succeeded: the stall window starts now; the picture is judged afresh."""
        self._failure = None
        self._playing_since = now
        self.last_rtp = self.last_keyframe = None
        self._picture = None
        self._thumb = None
        self._unchanged_since = None

    def picture(self, thumb: bytes, now: float) -> None:
        """A sampled key frame's thumbnail (:func:`edge.picture.thumbnail`)."""
        t = self.t
        if is_black(thumb, t.black_max_luma, t.black_ratio):
            self._picture = Verdict(CameraHealth.BLACK, reason("black"))
            self._unchanged_since = None
        elif self._thumb is not None and difference(thumb, self._thumb) <= t.frozen_max_diff:
            if self._unchanged_since is None:
                self._unchanged_since = self._thumb_at
            held = now - self._unchanged_since
            if held >= t.frozen_after_s:
                self._picture = Verdict(CameraHealth.FROZEN, reason("frozen", seconds=round(held)))
            elif self._picture is None:
                self._picture = Verdict(CameraHealth.OK, reason("ok"))
        else:  # the first picture of a stream, or one that changed: a working camera
            self._picture = Verdict(CameraHealth.OK, reason("ok"))
            self._unchanged_since = None
        self._thumb, self._thumb_at = thumb, now

    def undecodable(self, why: str) -> None:
        self._picture = Verdict(CameraHealth.NO_STREAM, reason("undecodable", detail=why))

    def stalled(self, now: float) -> Verdict | None:
        """Stalled when the stream played for the stall window without RTP or a key frame."""
        if self._playing_since is None:
            return None
        for last, key in ((self.last_rtp, "no_rtp"), (self.last_keyframe, "no_keyframe")):
            since = self._playing_since if last is None else max(last, self._playing_since)
            if now - since >= self.t.stall_s:
                return Verdict(CameraHealth.STALLED, reason(key, seconds=round(now - since)))
        return None

    def next_stall_check(self) -> float | None:
        """When :meth:`stalled` may next change to stalled (None: not playing)."""
        if self._playing_since is None:
            return None
        a = max(self.last_rtp or self._playing_since, self._playing_since)
        b = max(self.last_keyframe or self._playing_since, self._playing_since)
        return min(a, b) + self.t.stall_s

    def verdict(self, now: float) -> Verdict | None:
        if self._failure is not None:
            return self._failure
        stall = self.stalled(now)
        if stall is not None:
            return stall
        if self._picture is None:
            return None
        if self._picture.health is not CameraHealth.OK:
            return self._picture
        drift = self.clock_drift_s
        if drift is not None and abs(drift) > self.t.max_clock_drift_s:
            return Verdict(CameraHealth.CLOCK_WRONG, reason("clock_wrong", drift=round(drift, 1)))
        return self._picture

    _thumb_at = 0.0
