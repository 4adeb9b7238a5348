"""The demo fleet's behaviour, as a pure plan: which simulated nodes exist, which are up, what
cameras, conference terminal and information-system link each has and in which health, and what
happens next (dropouts, recoveries, events, device health changes). No I/O, no clock of its own:
the fleet runner asks ``step(now)`` and carries the actions out on real edge agents."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum

from wire.devices import CAMERA, CONFERENCE_TERMINAL, INFO_SYSTEM, CameraHealth, TerminalHealth

#: Share of the villages that are not covered but still have a (provisioned, offline) node: the
#: rest never had one. Realistic for a network being rolled out; tunable for the demo.
PROVISIONED_OFFLINE_SHARE = 0.5
#: Mean seconds between dropouts across the fleet (each followed by a recovery elsewhere, so the
#: covered share stays near the target while individual villages come and go).
MEAN_DROPOUT_INTERVAL_S = 4.0
#: Mean seconds between events across the whole fleet.
MEAN_EVENT_INTERVAL_S = 1.0
#: Share of dropouts that are crashes (power cut: the broker publishes the last will) rather than
#: clean stops (the agent publishes "stopped").
CRASH_SHARE = 0.7
#: Mean seconds between device health changes across the fleet (a camera going black, a
#: terminal answering 503, one recovering): enough to see the figure move in a demo.
MEAN_DEVICE_CHANGE_INTERVAL_S = 2.0
#: Cameras per village: a village committee's gate, square and roads (the contract allows more).
CAMERAS_PER_NODE = (2, 8)
#: Shares of the simulated devices that are not ok, and of villages without a terminal or an
#: information-system link: a network being rolled out, not a perfect one.
CAMERA_FAULT_SHARE = 0.15
TERMINAL_FAULT_SHARE = 0.12
NO_TERMINAL_SHARE = 0.08
INFO_SYSTEM_DOWN_SHARE = 0.1
NO_INFO_SYSTEM_SHARE = 0.15
#: Camera faults by how often the demo shows them (black and stalled pictures are the usual).
CAMERA_FAULTS = (
    (CameraHealth.BLACK, 4),
    (CameraHealth.STALLED, 4),
    (CameraHealth.FROZEN, 2),
    (CameraHealth.UNREACHABLE, 3),
    (CameraHealth.NO_STREAM, 1),
    (CameraHealth.AUTH_FAILED, 1),
    (CameraHealth.CLOCK_WRONG, 1),
)
#: What an operator reads for each health (zh / en), as a probe would say it.
REASONS = {
    "ok": "正常 / ok",
    "black": "画面全黑 / picture is black",
    "stalled": "超过 10 秒未收到视频 / no video for over 10 s",
    "frozen": "画面长时间无变化 / picture has not changed",
    "unreachable": "无法连接 / cannot connect",
    "no_stream": "无可用 H.264 视频流 / no usable H.264 stream",
    "auth_failed": "用户名或密码错误 / wrong credentials (RTSP 401)",
    "clock_wrong": "设备时钟偏差过大 / device clock is off",
    "unavailable": "终端忙或不可用（SIP 503）/ terminal unavailable (SIP 503)",
    "down": "综治信息系统无法访问 / information system not reachable",
}


class Action(Enum):
    START = "start"
    CRASH = "crash"
    STOP = "stop"
    EVENT = "event"
    DEVICE = "device"


@dataclass(frozen=True, slots=True)
class Step:
    action: Action
    node_id: str
    priority: str = "info"
    kind: str = ""
    device: SimDevice | None = None


@dataclass(frozen=True, slots=True)
class SimDevice:
    """A simulated device and its health as the node would report it (wire/devices.py)."""

    device_id: str
    kind: str
    name: str
    health: str
    since: float  # Unix time the health began
    model: str = ""

    def detail(self) -> dict[str, object]:
        d: dict[str, object] = {
            "health": self.health,
            "reason": REASONS.get(self.health, self.health),
            "since": self.since,
        }
        if self.model:
            d["model"] = self.model
        return d


def _camera_health(rng: random.Random) -> str:
    if rng.random() >= CAMERA_FAULT_SHARE:
        return CameraHealth.OK.value
    faults, weights = zip(*CAMERA_FAULTS, strict=True)
    return str(rng.choices(faults, weights)[0])


def _terminal_health(rng: random.Random) -> str:
    if rng.random() >= TERMINAL_FAULT_SHARE:
        return TerminalHealth.OK.value
    return rng.choice((TerminalHealth.UNAVAILABLE, TerminalHealth.UNREACHABLE)).value


def node_devices(rng: random.Random, now: float) -> list[SimDevice]:
    """Cameras, usually a conference terminal and an information-system link for one node."""
    out = [
        SimDevice(
            f"cam{i + 1}",
            CAMERA,
            f"摄像机 {i + 1}",
            _camera_health(rng),
            now - rng.uniform(60, 3 * 86400),
            rng.choice(("DS-2CD2T47", "IPC-HFW2431", "DS-2DE4425")),
        )
        for i in range(rng.randint(*CAMERAS_PER_NODE))
    ]
    if rng.random() >= NO_TERMINAL_SHARE:
        since = now - rng.uniform(60, 86400)
        out.append(
            SimDevice("terminal", CONFERENCE_TERMINAL, "会议终端", _terminal_health(rng), since)
        )
    if rng.random() >= NO_INFO_SYSTEM_SHARE:
        health = "down" if rng.random() < INFO_SYSTEM_DOWN_SHARE else "ok"
        since = now - rng.uniform(60, 86400)
        out.append(SimDevice("infosys", INFO_SYSTEM, "综治信息系统", health, since))
    return out


def change_health(rng: random.Random, d: SimDevice, now: float) -> SimDevice:
    """``d`` with a new health: a faulty device recovers, a working one fails."""
    if d.health != "ok":
        health = "ok"
    elif d.kind == CAMERA:
        faults, weights = zip(*CAMERA_FAULTS, strict=True)
        health = str(rng.choices(faults, weights)[0])
    elif d.kind == CONFERENCE_TERMINAL:
        health = rng.choice((TerminalHealth.UNAVAILABLE, TerminalHealth.UNREACHABLE)).value
    else:
        health = "down"
    return SimDevice(d.device_id, d.kind, d.name, health, now, d.model)


@dataclass
class ChurnPlan:
    """Nodes for ``villages``: ``online_share`` of the villages get an online node; of the rest,
    :data:`PROVISIONED_OFFLINE_SHARE` get a node that stays offline until a recovery picks it."""

    villages: list[str]
    online_share: float
    rng: random.Random = field(default_factory=random.Random)
    nodes: list[str] = field(init=False)
    up: set[str] = field(init=False)
    _next_drop: float = field(init=False, default=0.0)
    _next_event: float = field(init=False, default=0.0)
    _next_device: float = field(init=False, default=0.0)
    _t0: float = field(init=False, default=0.0)  # the first ``now`` (monotonic) seen by step
    #: node id -> its devices, current health (what a restarted agent publishes again).
    devices: dict[str, list[SimDevice]] = field(init=False)
    #: The demo's wall clock at creation: the devices' "since" times lie before it.
    start_time: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.online_share <= 1.0:
            raise ValueError("online_share must be within 0..1")
        order = sorted(self.villages)
        self.rng.shuffle(order)
        n_online = round(len(order) * self.online_share)
        rest = order[n_online:]
        n_idle = round(len(rest) * PROVISIONED_OFFLINE_SHARE)
        self.nodes = sorted(f"{v}-a" for v in order[: n_online + n_idle])
        self.up = {f"{v}-a" for v in order[:n_online]}
        # Its own generator, so the devices do not change the fleet's churn for a given seed.
        drng = random.Random(self.rng.random())
        self.devices = {n: node_devices(drng, self.start_time) for n in self.nodes}

    def initial(self) -> list[Step]:
        return [Step(Action.START, n) for n in sorted(self.up)]

    def step(self, now: float) -> list[Step]:
        """Actions due at ``now`` (call about once a second)."""
        out: list[Step] = []
        if self._next_drop == 0.0:
            self._t0 = now
            self._next_drop = now + self.rng.expovariate(1 / MEAN_DROPOUT_INTERVAL_S)
            self._next_event = now + self.rng.expovariate(1 / MEAN_EVENT_INTERVAL_S)
            self._next_device = now + self.rng.expovariate(1 / MEAN_DEVICE_CHANGE_INTERVAL_S)
        while now >= self._next_drop:
            self._next_drop += self.rng.expovariate(1 / MEAN_DROPOUT_INTERVAL_S)
            down = sorted(set(self.nodes) - self.up)
            if self.up and down:
                victim = self.rng.choice(sorted(self.up))
                back = self.rng.choice(down)
                self.up.discard(victim)
                self.up.add(back)
                how = Action.CRASH if self.rng.random() < CRASH_SHARE else Action.STOP
                out += [Step(how, victim), Step(Action.START, back)]
        while now >= self._next_event:
            self._next_event += self.rng.expovariate(1 / MEAN_EVENT_INTERVAL_S)
            if self.up:
                node = self.rng.choice(sorted(self.up))
                r = self.rng.random()
                if r < 0.02:
                    out.append(Step(Action.EVENT, node, "alarm", "panic"))
                elif r < 0.2:
                    out.append(Step(Action.EVENT, node, "device", "camera_offline"))
                else:
                    out.append(Step(Action.EVENT, node, "info", "patrol_checkin"))
        while now >= self._next_device:
            self._next_device += self.rng.expovariate(1 / MEAN_DEVICE_CHANGE_INTERVAL_S)
            owner = self.rng.choice(self.nodes) if self.nodes else ""
            devs = self.devices.get(owner, [])
            if devs:
                i = self.rng.randrange(len(devs))
                devs[i] = change_health(self.rng, devs[i], self.start_time + now - self._t0)
                if owner in self.up:  # an offline node publishes it when it is back
                    out.append(Step(Action.DEVICE, owner, "device", "device_health", devs[i]))
        return out
