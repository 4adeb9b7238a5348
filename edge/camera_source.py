"""The village's cameras as an edge :class:`~edge.sources.EventSource`: is each one really
working? One task per camera (and one per ONVIF-capable camera) in the source's task group.

Per camera, layered, outermost first: a TCP connection to its RTSP port (else
``unreachable``); OPTIONS and DESCRIBE with Digest auth (``auth_failed`` on a refused 401,
``no_stream`` without an H.264 track); SETUP with RTP interleaved on the same TCP connection
(RFC 2326 10.12: passes NAT and firewalls) and PLAY; then the stream is watched without decoding
(:class:`edge.rtp_h264.H264Watcher`: RTP and key-frame arrival, ``stalled`` after
``stall_s`` without), and every ``picture_interval_s`` one key frame is decoded
(:mod:`edge.picture`, in a thread) to tell ``black`` and ``frozen``. The session is kept open
(GET_PARAMETER keep-alives) so a camera costs a few packets' parsing per second, not a
reconnect per check. A dropped connection is retried at once (a stopped camera shows
``unreachable`` right away); any other failure after ``interval_s``. ONVIF (optional) adds
model, firmware and clock drift (``clock_wrong``) every ``onvif_interval_s``.

Every health change is a ``device_health`` event and a retained device state
(:class:`edge.device_health.DeviceHealth`). Passwords are never logged.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from edge.camera_health import CameraJudge, Thresholds, Verdict
from edge.device_health import DeviceHealth
from edge.keyframes import KeyframeWaiters
from edge.rtp_h264 import H264Watcher
from edge.rtsp import Interleaved, Response, RtspClient, RtspProtocolError
from edge.sdp import SdpError, h264_track
from edge.sources import EventSink
from edge.texts import reason
from wire.devices import CAMERA, CameraHealth

if TYPE_CHECKING:
    from edge.jpeg import Jpeg

log = logging.getLogger("shilian.edge.cameras")

#: Bytes read from a camera's socket at a time (dozens of RTP packets; :meth:`_Connection.drain`
#: loops until the socket is empty). Below glibc's 128 KiB mmap threshold, so the buffer is
#: reused from the heap instead of growing it.
READ_CHUNK = 64 * 1024
#: Answers to the same request: the first challenge, then (maybe) a stale nonce.
MAX_AUTH_ROUNDS = 3
#: Keep-alive at this share of the session timeout (RFC 2326 12.37: the server may drop a
#: session idle for the timeout; half leaves room for one lost keep-alive).
KEEPALIVE_SHARE = 0.5
#: A playing stream's socket is read this often (see _Connection). Arrival times are
#: needed to ~1 s against a 20 s stall window; the kernel's receive buffer (Linux autotunes to
#: MBs) holds half a second of even an 8 Mbit/s main stream.
READ_PACE_S = 0.5
#: Most bytes taken from one camera per wake-up (bounds the time spent on one camera).
MAX_DRAIN_BYTES = 4 * 1024 * 1024
DEFAULT_RTSP_PORT = 554


@dataclass(frozen=True, slots=True)
class CameraSpec:
    id: str
    name: str
    rtsp_url: str
    username: str = ""
    password: str = ""
    onvif_url: str | None = None
    zones: tuple[int, ...] = ()
    relay: int | None = None  # alarm-board relay that switches its power (edge.remediation)


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    interval_s: float = 30.0
    timeout_s: float = 5.0
    picture_interval_s: float = 60.0
    onvif_interval_s: float = 600.0
    thresholds: Thresholds = field(default_factory=Thresholds)

    @classmethod
    def from_config(cls, c: Any) -> ProbeSettings:
        return cls(
            interval_s=c.interval_s,
            timeout_s=c.timeout_s,
            picture_interval_s=c.picture_interval_s,
            onvif_interval_s=c.onvif_interval_s,
            thresholds=Thresholds(
                stall_s=c.stall_s,
                frozen_after_s=c.frozen_after_s,
                frozen_max_diff=c.frozen_max_diff,
                black_max_luma=c.black_max_luma,
                black_ratio=c.black_ratio,
                max_clock_drift_s=c.max_clock_drift_s,
            ),
        )


class _Failed(Exception):
    def __init__(self, health: CameraHealth, why: str) -> None:
        super().__init__(why)
        self.health = health
        self.why = why


class _Connection:
    """One RTSP connection on a non-blocking socket: requests and their answers; interleaved
    frames go to ``on_frame``. While a stream plays, the socket is not watched by the event
    loop: :meth:`drain` reads whatever the kernel buffered since the last call, so a camera
    costs one wake-up per :data:`READ_PACE_S` instead of one per packet."""

    def __init__(self, sock: socket.socket, client: RtspClient, timeout_s: float) -> None:
        self.sock, self.client, self.timeout_s = sock, client, timeout_s
        self.on_frame: Callable[[Interleaved], None] = lambda _f: None

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    def _feed(self, data: bytes) -> list[Response]:
        if not data:
            raise ConnectionError("the camera closed the connection")
        self.client.receive_data(data)
        out = []
        for ev in self.client.events():
            if isinstance(ev, Interleaved):
                self.on_frame(ev)
            else:
                out.append(ev)
        return out

    async def pump(self, wait_s: float) -> list[Response]:
        """Wait up to ``wait_s`` for data and take it. EOF or a reset raises ConnectionError."""
        try:
            async with asyncio.timeout(wait_s):
                data = await asyncio.get_running_loop().sock_recv(self.sock, READ_CHUNK)
        except TimeoutError:
            return []
        return self._feed(data)

    def drain(self) -> list[Response]:
        """Take what the kernel holds now (at most :data:`MAX_DRAIN_BYTES`), without waiting."""
        out: list[Response] = []
        taken = 0
        while taken < MAX_DRAIN_BYTES:
            try:
                data = self.sock.recv(READ_CHUNK)
            except (BlockingIOError, InterruptedError):
                break
            out += self._feed(data)
            taken += len(data)
        return out

    async def call(self, method: str, uri: str, headers: dict[str, str] | None = None) -> Response:
        for _ in range(MAX_AUTH_ROUNDS):
            await self.send(self.client.request(method, uri, headers))
            cseq = self.client.last_cseq
            resp = await self._answer(method, cseq)
            if resp.status == 401:
                if self.client.challenged(resp):
                    continue
                raise _Failed(CameraHealth.AUTH_FAILED, reason("auth_failed"))
            return resp
        raise _Failed(CameraHealth.AUTH_FAILED, reason("auth_failed"))

    async def _answer(self, method: str, cseq: int) -> Response:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        while (left := deadline - loop.time()) > 0:
            for resp in await self.pump(left):
                if resp.cseq in (cseq, None):
                    return resp
        raise _Failed(CameraHealth.NO_STREAM, reason("rtsp_silent", method=method))


def _literal(host: str, port: int) -> tuple[socket.AddressFamily | None, tuple[Any, ...]]:
    """The address of an IP literal (cameras are usually configured by IP), else None."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return family, (host, port)
    return None, ()


async def _connect(host: str, port: int, timeout_s: float) -> socket.socket:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout_s):
        family, addr = _literal(host, port)
        if family is None:  # a name: resolved in the loop's executor (threads cost RSS)
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, addr)
        except BaseException:
            sock.close()
            raise
    return sock


class CameraSource:
    """An :class:`~edge.sources.EventSource` watching ``cameras``."""

    name = "cameras"

    def __init__(
        self,
        node: str,
        cameras: Sequence[CameraSpec],
        settings: ProbeSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self.cameras = list(cameras)
        self.settings = settings
        self.clock = clock
        self.wall = wall
        self.judges: dict[str, CameraJudge] = {}
        self.reports: dict[str, DeviceHealth] = {}
        #: Decodes of sampled key frames and RTP packets seen, for the bench and operators.
        self.stats: dict[str, int] = {"decodes": 0, "sessions": 0}
        #: Per camera, callers of :meth:`keyframe` waiting for its next key frame.
        #: Callers of :meth:`snapshot` waiting for a camera's next key frame.
        self.keyframes = KeyframeWaiters()

    @classmethod
    def from_config(cls, cfg: Any) -> CameraSource:
        """From ``edge.config.EdgeConfig`` (its ``cameras`` and ``camera_probe``)."""
        specs = [
            CameraSpec(
                c.id,
                c.name,
                c.rtsp_url,
                c.username,
                c.password,
                c.onvif_url,
                tuple(c.zones),
                c.relay,
            )
            for c in cfg.cameras
        ]
        return cls(cfg.node_id, specs, ProbeSettings.from_config(cfg.camera_probe))

    async def snapshot(self, camera_id: str, timeout_s: float, max_bytes: int) -> Jpeg:
        """The camera's next key frame from its open session as a JPEG of at most
        ``max_bytes`` (edge.keyframes); ``TimeoutError`` or ``edge.picture.PictureError``."""
        return await self.keyframes.jpeg(camera_id, timeout_s, max_bytes, self._decoder)

    def health_reports(self) -> list[DeviceHealth]:
        return list(self.reports.values())

    async def run(self, sink: EventSink) -> None:
        # One decoding thread for all cameras: samples are rare, and one thread keeps FFmpeg's
        # buffers and glibc's per-thread malloc arenas to one set (RSS).
        self._decoder = ThreadPoolExecutor(1, thread_name_prefix="camera_picture")
        try:
            await self._run(sink)
        finally:
            self._decoder.shutdown(wait=False, cancel_futures=True)

    async def _run(self, sink: EventSink) -> None:
        async with asyncio.TaskGroup() as tg:
            for cam in self.cameras:
                judge = CameraJudge(self.settings.thresholds)
                zones = list(cam.zones) if cam.zones else None
                extra: dict[str, Any] = {"zones": zones}
                if cam.relay is not None:
                    extra["relay"] = cam.relay  # operators may power-cycle it (dashboard)
                report = DeviceHealth(self.node, cam.id, CAMERA, cam.name, extra)
                self.judges[cam.id], self.reports[cam.id] = judge, report
                tg.create_task(self._watch(cam, judge, report, sink), name=f"camera:{cam.id}")
                if cam.onvif_url is not None:
                    tg.create_task(
                        self._onvif(cam, judge, report, sink), name=f"camera_onvif:{cam.id}"
                    )

    async def _report(self, judge: CameraJudge, report: DeviceHealth, sink: EventSink) -> None:
        v: Verdict | None = judge.verdict(self.clock())
        if v is not None:
            report.set(v.health.value, v.reason, self.wall())
        await report.publish(sink)

    async def _watch(
        self, cam: CameraSpec, judge: CameraJudge, report: DeviceHealth, sink: EventSink
    ) -> None:
        retried = False
        while True:
            retry_now = False
            try:
                await self._session(cam, judge, report, sink)
            except _Failed as f:
                judge.failed(f.health, f.why)
            except OSError as e:  # reset, EOF (ConnectionError) or another socket error
                log.debug("camera %s: connection lost (%s)", cam.id, e)
                # reconnect at once (a stopped camera shows unreachable now), but only once in a
                # row: a camera that keeps dropping connections is retried at the interval
                retry_now = not retried
            except RtspProtocolError as e:
                judge.failed(CameraHealth.NO_STREAM, reason("rtsp_protocol", detail=str(e)[:120]))
            await self._report(judge, report, sink)
            retried = retry_now
            if not retry_now:
                await asyncio.sleep(self.settings.interval_s)

    async def _session(
        self, cam: CameraSpec, judge: CameraJudge, report: DeviceHealth, sink: EventSink
    ) -> None:
        s = self.settings
        u = urlsplit(cam.rtsp_url)
        host, port = u.hostname or "", u.port or DEFAULT_RTSP_PORT
        try:
            sock = await _connect(host, port, s.timeout_s)
        except (OSError, TimeoutError) as e:
            detail = "timeout" if isinstance(e, TimeoutError) else (e.strerror or str(e))
            raise _Failed(
                CameraHealth.UNREACHABLE, reason("tcp_failed", addr=f"{host}:{port}", detail=detail)
            ) from None
        self.stats["sessions"] += 1
        conn = _Connection(sock, RtspClient(cam.username, cam.password), s.timeout_s)
        try:
            await self._play(cam, conn, judge, report, sink)
        finally:
            sock.close()

    async def _play(
        self,
        cam: CameraSpec,
        conn: _Connection,
        judge: CameraJudge,
        report: DeviceHealth,
        sink: EventSink,
    ) -> None:
        url = cam.rtsp_url
        await conn.call("OPTIONS", url)
        desc = await conn.call("DESCRIBE", url, {"Accept": "application/sdp"})
        _ok(desc, "DESCRIBE")
        base = desc.header("Content-Base") or desc.header("Content-Location") or url
        try:
            track = h264_track(desc.body, base)
        except SdpError as e:
            raise _Failed(CameraHealth.NO_STREAM, reason("no_h264", detail=str(e))) from None
        setup = await conn.call(
            "SETUP", track.control, {"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1"}
        )
        _ok(setup, "SETUP")
        conn.client.took_session(setup)
        _ok(await conn.call("PLAY", base, {"Range": "npt=0.000-"}), "PLAY")
        watcher = H264Watcher(track.payload_type, track.parameter_sets)
        conn.on_frame = lambda f: watcher.feed(f.payload, self.clock()) if f.channel == 0 else None
        now = self.clock()
        judge.playing(now)
        await self._report(judge, report, sink)
        keepalive_every = conn.client.session_timeout_s * KEEPALIVE_SHARE
        next_keepalive = now + keepalive_every
        next_sample = now  # the first picture is judged as soon as a key frame comes
        decoding: asyncio.Future[bytes] | None = None
        loop = asyncio.get_running_loop()
        try:
            while True:
                now = self.clock()
                judge.last_rtp, judge.last_keyframe = watcher.last_rtp, watcher.last_keyframe
                if judge.stalled(now) is not None:
                    await self._report(judge, report, sink)
                    return  # reconnect after the interval: a fresh session may recover it
                if now >= next_keepalive:
                    await conn.send(conn.client.request("GET_PARAMETER", base))
                    next_keepalive = now + keepalive_every
                grabs = self.keyframes.wanted(cam.id)
                if grabs:
                    watcher.want_sample()  # a snapshot on alarm waits for the next key frame
                if decoding is None or grabs:
                    sample = watcher.take_sample()
                    if sample is not None and grabs:
                        self.keyframes.give(cam.id, sample)
                    if sample is not None and decoding is None:
                        decoding = asyncio.ensure_future(
                            loop.run_in_executor(self._decoder, _thumbnail, sample)
                        )
                    elif decoding is None and now >= next_sample:
                        watcher.want_sample()
                        next_sample = now + self.settings.picture_interval_s
                if decoding is not None and decoding.done():
                    self._judge_picture(decoding, judge, now)
                    decoding = None
                    await self._report(judge, report, sink)
                stall_at = judge.next_stall_check()
                wait = READ_PACE_S if stall_at is None else min(READ_PACE_S, stall_at - now)
                await asyncio.sleep(max(0.01, wait))
                conn.drain()
        finally:
            if decoding is not None:
                decoding.cancel()

    def _judge_picture(self, task: asyncio.Future[bytes], judge: CameraJudge, now: float) -> None:
        from edge.picture import PictureError

        self.stats["decodes"] += 1
        try:
            judge.picture(task.result(), now)
        except PictureError as e:
            judge.undecodable(str(e)[:120])

    async def _onvif(
        self, cam: CameraSpec, judge: CameraJudge, report: DeviceHealth, sink: EventSink
    ) -> None:
        from edge.onvif import OnvifError, device_info

        assert cam.onvif_url is not None
        failing = False
        while True:
            try:
                info = await device_info(
                    cam.onvif_url,
                    cam.username,
                    cam.password,
                    timeout_s=self.settings.timeout_s,
                    wall=self.wall,
                )
            except OnvifError as e:
                if not failing:  # logged once per failure spell
                    log.warning("camera %s: ONVIF check failed (%s)", cam.id, e)
                failing = True
            else:
                if failing:
                    log.info("camera %s: ONVIF answers again", cam.id)
                failing = False
                judge.clock_drift_s = info.clock_drift_s
                report.update_extra(
                    model=info.model,
                    firmware=info.firmware,
                    clock_drift_s=None
                    if info.clock_drift_s is None
                    else round(info.clock_drift_s, 1),
                )
                await self._report(judge, report, sink)
            await asyncio.sleep(self.settings.onvif_interval_s)


def _thumbnail(sample: bytes) -> bytes:
    from edge.picture import thumbnail

    return thumbnail(sample)


def _ok(resp: Response, method: str) -> None:
    if not 200 <= resp.status < 300:
        raise _Failed(
            CameraHealth.NO_STREAM, reason("rtsp_status", method=method, status=resp.status)
        )
