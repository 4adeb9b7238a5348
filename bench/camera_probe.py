"""Camera monitoring cost: 16 real RTSP cameras watched by one ``shilian edge run`` process.

    python bench/camera_probe.py [--cameras 16] [--warmup-s 20] [--window-s 60]
        [--picture-interval-s 60] [--idle-s 10]

One gst-rtsp-server process (tests/rtsp_camera.py, system python3) serves ``--cameras`` mount
points (320x240, 10 fps, a key frame a second, Digest auth); the agent watches all of them
with the default thresholds. After the warm-up (sessions set up, first pictures judged) the
agent's own CPU time (utime + stime from /proc) is measured over the window and scaled to CPU
seconds per camera per hour of monitoring. Prints one final JSON line: cpu_s_per_camera_hour
(target <= 2), rss_mb (agent with cameras, VmRSS at the end of the window, target <= 60),
rss_peak_mb (its VmHWM: the highest it was, decodes and start-up included), idle_rss_mb (the
same agent without cameras, VmRSS after ``--idle-s``, target <= 40), cameras_ok (cameras whose
retained state said ``ok`` at the end), pss_mb (the agent's proportional set size then, shared
pages split between the processes mapping them), ffmpeg_rss_mb and ffmpeg_pss_mb (the part of
the RSS and Pss in FFmpeg's library mappings, from /proc/<pid>/smaps), and the settings used.
The RTSP server's own CPU is the cameras', not the edge's: not counted. The agent runs as
installed: the project's packages are byte-compiled first, as pip does on install
(deploy/install.sh); run from a source tree with ``PYTHONDONTWRITEBYTECODE`` set, the agent
would compile every module of its own at each start (+0.6 MB of idle RSS, measured).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from shilian.broker import Mosquitto, free_port  # noqa: E402
from tests.camera_peers import RtspCamera  # noqa: E402

NODE = "450102001001-a"
#: The project's packages the agent imports from (byte-compiled before the run, as installed).
PACKAGES = ("edge", "wire", "pki", "resilience", "firmware_bridge", "shilian")
USER, PASSWORD = "admin", "bench-pw"


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident set size now (``VmRSS``) or its peak so far (``VmHWM``), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


#: FFmpeg's libraries: the PyAV wheel's directory (libavcodec and every codec library it links),
#: or the three the agent loads from the system.
FFMPEG_DIR, FFMPEG_NAMES = "/av.libs/", ("libavcodec", "libavutil", "libswscale")


def mapping_kb(pid: int) -> dict[str, int]:
    """From /proc/<pid>/smaps: the process's Pss, and FFmpeg's libraries' Rss and Pss (kB)."""
    out = {"pss": 0, "ffmpeg_rss": 0, "ffmpeg_pss": 0}
    ffmpeg = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if not fields[0].endswith(":"):  # a mapping's header line: address range ... path
            path = fields[5] if len(fields) > 5 else ""
            name = path.rsplit("/", 1)[-1]
            ffmpeg = FFMPEG_DIR in path or name.startswith(FFMPEG_NAMES)
        elif fields[0] in ("Rss:", "Pss:"):
            kb = int(fields[1])
            if fields[0] == "Pss:":
                out["pss"] += kb
            if ffmpeg:
                out["ffmpeg_" + fields[0][:-1].lower()] += kb
    return out


def cpu_s(pid: int) -> float:
    """utime + stime of the process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_config(
    work: Path, broker: Mosquitto, cam: RtspCamera | None, n: int, pic_s: float
) -> Path:
    cfg = work / ("edge-cams.toml" if cam else "edge-idle.toml")
    text = (
        f'node_id = "{NODE}"\n'
        f"[broker]\nport = {broker.port}\n"
        f'[outbox]\npath = "{work / (cfg.stem + ".sqlite3")}"\n'
        f"[metrics]\nport = {free_port()}\n"
        f'[local_socket]\npath = "{work / (cfg.stem + ".sock")}"\n'
    )
    if cam is not None:
        text += f"[camera_probe]\npicture_interval_s = {pic_s}\n"
        for i in range(n):
            text += (
                f'[[cameras]]\nid = "cam{i}"\nrtsp_url = "{cam.url(i)}"\n'
                f'username = "{USER}"\npassword = "{PASSWORD}"\n'
            )
    cfg.write_text(text)
    return cfg


def compile_packages() -> None:
    """Write the .pyc files an installed package has (quietly; an up-to-date one is kept)."""
    for pkg in PACKAGES:
        compileall.compile_dir(ROOT / pkg, quiet=1)


def start_agent(cfg: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(cfg)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def camera_healths(port: int, wait_s: float = 3.0) -> dict[str, str]:
    """The retained device states' health, read as central would."""
    healths: dict[str, str] = {}
    lock = threading.Lock()

    def on_message(_c: object, _u: object, m: mqtt.MQTTMessage) -> None:
        if m.payload:
            with lock:
                healths[m.topic.rsplit("/", 1)[1]] = json.loads(m.payload)["detail"].get("health")

    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.subscribe(f"shilian/v1/{NODE}/device/#", qos=1)
    c.loop_start()
    time.sleep(wait_s)
    c.loop_stop()
    c.disconnect()
    return healths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cameras", type=int, default=16)
    ap.add_argument("--warmup-s", type=float, default=20.0)
    ap.add_argument("--window-s", type=float, default=60.0)
    ap.add_argument("--picture-interval-s", type=float, default=60.0)
    ap.add_argument("--idle-s", type=float, default=10.0)
    args = ap.parse_args()
    n = args.cameras
    compile_packages()
    with tempfile.TemporaryDirectory(prefix="shilian-cam-bench-") as d, Mosquitto() as broker:
        work = Path(d)
        idle = start_agent(write_config(work, broker, None, 0, args.picture_interval_s))
        try:
            time.sleep(args.idle_s)
            idle_rss = rss_mb(idle.pid)
        finally:
            stop(idle)
        with RtspCamera("ball", user=USER, password=PASSWORD, mounts=n) as cam:
            agent = start_agent(write_config(work, broker, cam, n, args.picture_interval_s))
            try:
                time.sleep(args.warmup_s)
                c0, t0 = cpu_s(agent.pid), time.monotonic()
                time.sleep(args.window_s)
                c1, t1 = cpu_s(agent.pid), time.monotonic()
                rss, peak = rss_mb(agent.pid), rss_mb(agent.pid, "VmHWM")
                kb = mapping_kb(agent.pid)
                healths = camera_healths(broker.port)
            finally:
                stop(agent)
    per_cam_hour = (c1 - c0) / (t1 - t0) * 3600 / n
    print(
        json.dumps(
            {
                "cpu_s_per_camera_hour": round(per_cam_hour, 2),
                "rss_mb": round(rss, 1),
                "rss_peak_mb": round(peak, 1),
                "idle_rss_mb": round(idle_rss, 1),
                "pss_mb": round(kb["pss"] / 1024, 1),
                "ffmpeg_rss_mb": round(kb["ffmpeg_rss"] / 1024, 1),
                "ffmpeg_pss_mb": round(kb["ffmpeg_pss"] / 1024, 1),
                "cameras": n,
                "cameras_ok": sum(1 for h in healths.values() if h == "ok"),
                "window_s": args.window_s,
                "warmup_s": args.warmup_s,
                "picture_interval_s": args.picture_interval_s,
                "stream": "320x240 10 fps H.264, key frame every 1 s, RTP interleaved over TCP",
                "targets": {"cpu_s_per_camera_hour": 2, "rss_mb": 60, "idle_rss_mb": 40},
            }
        )
    )


if __name__ == "__main__":
    main()
