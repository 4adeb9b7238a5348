"""``shilian edge doctor``: check a running install, one line per check, saying what is wrong and
what to do (zh-CN first; ``--lang en``).

Checks: config valid; state directory writable with free space; outbox readable (pending, oldest
pending age, integrity, dead letters); certificate files (key mode 0600, certificate matches key
and CA, days to expiry); broker reachable (TCP, TLS handshake with the node's certificate);
agent answering on its local socket (connected, pending, alarm-board link); clock vs central's
``Date`` (when central's URL is known); serial port of the alarm board; the systemd unit.

A separate command, not the agent: ``cryptography`` is imported here, inside the certificate
check, never by the agent. Exit code: 0 all good, 1 warnings, 2 failures.
"""

from __future__ import annotations

import email.utils
import json
import os
import shutil
import socket
import sqlite3
import stat
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edge.config import ConfigError, EdgeConfig, load_config

Level = Literal["ok", "warn", "fail", "skip"]

#: Free space below which the outbox may soon refuse events (warning) / cannot grow (failure).
WARN_FREE_BYTES = 200 * 1024 * 1024
FAIL_FREE_BYTES = 20 * 1024 * 1024
#: A pending event older than this means the agent is not getting events out.
WARN_PENDING_AGE_S = 600.0
#: Certificate renewal is due within this many days (provisioning renews before expiry).
WARN_CERT_DAYS = 30
#: Largest clock difference accepted (same as the commissioning check).
MAX_CLOCK_SKEW_S = 10.0
#: Timeout of each network operation and of the agent's status reply.
IO_TIMEOUT_S = 5.0
#: The unit installed by deploy/install.sh.
UNIT = "shilian-edge.service"

TITLES: dict[str, tuple[str, str]] = {
    "config": ("配置文件", "config"),
    "state_dir": ("状态目录", "state directory"),
    "outbox": ("发件箱", "outbox"),
    "certificate": ("证书与密钥", "certificate and key"),
    "broker": ("代理连接", "broker"),
    "agent": ("agent 进程", "agent"),
    "clock": ("时钟", "clock"),
    "serial": ("报警板串口", "alarm board serial port"),
    "systemd": ("systemd 服务", "systemd unit"),
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's result: level and a (zh, en) line saying what is wrong and what to do."""

    check: str
    level: Level
    zh: str
    en: str

    def text(self, lang: str) -> str:
        return self.en if lang == "en" else self.zh


def _f(check: str, level: Level, zh: str, en: str) -> Finding:
    return Finding(check, level, zh, en)


@dataclass
class Doctor:
    """Runs the checks for one config file; ``central`` (URL) enables the clock check."""

    config_path: Path
    central: str | None = None
    socket_timeout: float = IO_TIMEOUT_S
    clock: Callable[[], float] = time.time
    cfg: EdgeConfig | None = None
    status: dict[str, Any] | None = field(default=None, repr=False)

    def run(self) -> list[Finding]:
        out = [self.check_config()]
        if self.cfg is None:
            return out
        checks = (
            self.check_state_dir,
            self.check_outbox,
            self.check_certificate,
            self.check_broker,
            self.check_agent,
            self.check_clock,
            self.check_serial,
            self.check_systemd,
        )
        for check in checks:
            try:
                out.append(check())
            except Exception as e:  # a check that crashes is a failed check, not a crash
                name = check.__name__.removeprefix("check_")
                out.append(_f(name, "fail", f"检查出错：{e!r}", f"check crashed: {e!r}"))
        return out

    # -- checks -------------------------------------------------------------------------------

    def check_config(self) -> Finding:
        try:
            self.cfg = load_config(self.config_path)
        except ConfigError as e:
            first = e.problems[0]
            n = len(e.problems)
            return _f(
                "config",
                "fail",
                f"{n} 处错误，首个：{first.said('zh')}；运行 shilian edge check-config 查看全部",
                f"{n} error(s), first: {first.said('en')}; run shilian edge check-config for all",
            )
        return _f(
            "config", "ok", f"有效：节点 {self.cfg.node_id}", f"valid: node {self.cfg.node_id}"
        )

    def check_state_dir(self) -> Finding:
        cfg = self._cfg
        d = cfg.outbox.path.parent
        if not d.is_dir():
            return _f(
                "state_dir",
                "fail",
                f"{d} 不存在：重新运行 deploy/install.sh 或创建该目录",
                f"{d} is missing: rerun deploy/install.sh or create it",
            )
        try:
            probe = d / f".doctor-{os.getpid()}"
            probe.write_bytes(b"x")
            probe.unlink()
        except OSError as e:
            return _f(
                "state_dir",
                "fail",
                f"{d} 不可写（{e.strerror}）：chown shilian: {d}",
                f"{d} is not writable ({e.strerror}): chown shilian: {d}",
            )
        st = os.statvfs(d)
        free = st.f_bavail * st.f_frsize
        mb = free // (1024 * 1024)
        if free < FAIL_FREE_BYTES:
            return _f("state_dir", "fail", f"剩余空间仅 {mb} MB：清理磁盘", f"only {mb} MB free")
        if free < WARN_FREE_BYTES:
            return _f(
                "state_dir", "warn", f"剩余空间 {mb} MB，偏少：清理磁盘", f"{mb} MB free: low"
            )
        return _f("state_dir", "ok", f"{d} 可写，剩余 {mb} MB", f"{d} writable, {mb} MB free")

    def check_outbox(self) -> Finding:
        path = self._cfg.outbox.path
        if not path.exists():
            return _f(
                "outbox",
                "warn",
                f"{path} 尚不存在：agent 从未启动过",
                f"{path} does not exist yet: the agent never ran",
            )
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=IO_TIMEOUT_S)
            try:
                check = conn.execute("PRAGMA quick_check").fetchone()[0]
                pending, oldest = conn.execute(
                    "SELECT count(*), min(accepted) FROM events"
                ).fetchone()
                dead = conn.execute("SELECT count(*) FROM dead").fetchone()[0]
            finally:
                conn.close()
        except sqlite3.Error as e:
            return _f(
                "outbox",
                "fail",
                f"无法读取 {path}（{e}）：停止 agent，备份后删除该文件（未发送事件将丢失）",
                f"cannot read {path} ({e}): stop the agent, back it up and remove it",
            )
        if check != "ok":
            return _f(
                "outbox",
                "fail",
                f"完整性检查失败（{check}）：停止 agent 并备份 {path}",
                f"integrity check failed ({check}): stop the agent and back up {path}",
            )
        age = self.clock() - oldest if oldest is not None else 0.0
        zh = (
            f"待发 {pending} 条"
            + (f"，最早 {age:.0f} 秒前" if pending else "")
            + f"；死信 {dead} 条"
        )
        en = f"{pending} pending" + (f", oldest {age:.0f} s" if pending else "") + f"; {dead} dead"
        if pending and age > WARN_PENDING_AGE_S:
            return _f(
                "outbox", "warn", zh + "：事件发不出去，检查代理连接", en + ": not getting out"
            )
        if dead:
            return _f(
                "outbox", "warn", zh + "：代理拒收过事件，检查 ACL/证书", en + ": broker refused"
            )
        return _f("outbox", "ok", zh, en)

    def check_certificate(self) -> Finding:
        tls = self._cfg.broker.tls
        if tls is None:
            return _f("certificate", "skip", "未配置 TLS（明文连接）", "no TLS configured")
        for p in (tls.ca_file, tls.cert_file, tls.key_file):
            if not p.is_file():
                return _f(
                    "certificate",
                    "fail",
                    f"缺少 {p}：重新运行 shilian provision node",
                    f"{p} is missing: rerun shilian provision node",
                )
        mode = stat.S_IMODE(tls.key_file.stat().st_mode)
        if mode & 0o077:
            return _f(
                "certificate",
                "fail",
                f"私钥 {tls.key_file} 权限为 {mode:04o}：chmod 600 {tls.key_file}",
                f"key {tls.key_file} has mode {mode:04o}: chmod 600 {tls.key_file}",
            )
        return _certificate_finding(tls.ca_file, tls.cert_file, tls.key_file, self._cfg.node_id)

    def check_broker(self) -> Finding:
        cfg = self._cfg
        host, port = cfg.broker.host, cfg.broker.port
        try:
            socket.create_connection((host, port), IO_TIMEOUT_S).close()
        except OSError as e:
            return _f(
                "broker",
                "fail",
                f"无法连接 {host}:{port}（{e}）：检查网络、防火墙与代理",
                f"cannot connect to {host}:{port} ({e}): check network, firewall, broker",
            )
        if cfg.broker.tls is None:
            return _f("broker", "ok", f"{host}:{port} TCP 可达", f"{host}:{port} reachable (TCP)")
        from edge.tls_probe import HandshakeFailed, tls_handshake

        t = cfg.broker.tls
        try:
            detail = tls_handshake(host, port, t.ca_file, t.cert_file, t.key_file)
        except HandshakeFailed as e:
            return _f(
                "broker",
                "fail",
                f"TLS 握手失败：{e}；证书可能已吊销或过期，联系管理员",
                f"TLS handshake failed: {e}; certificate revoked or expired? call the admin",
            )
        return _f("broker", "ok", f"TLS 握手成功 {detail}", f"TLS handshake ok {detail}")

    def check_agent(self) -> Finding:
        path = self._cfg.local_socket.path
        try:
            self.status = agent_status(path, self.socket_timeout)
        except (OSError, ValueError) as e:
            return _f(
                "agent",
                "fail",
                f"本地套接字 {path} 无应答（{e}）：systemctl restart shilian-edge",
                f"no answer on {path} ({e}): systemctl restart shilian-edge",
            )
        st = self.status
        depth = st.get("outbox_depth")
        board = _board_text(st) if self._cfg.alarm_board is not None else None
        zh = f"运行中，{'已连接' if st.get('connected') else '未连接'}代理，待发 {depth}"
        en = f"running, {'connected' if st.get('connected') else 'not connected'}, {depth} pending"
        if board is not None:
            zh += f"，报警板 {board}"
            en += f", alarm board {board}"
        if not st.get("connected"):
            return _f("agent", "warn", zh + "：看代理一行", en + ": see the broker line")
        if board not in (None, "up", "unknown"):  # "unknown": this agent does not report it
            return _f("agent", "warn", zh + "：检查报警板接线", en + ": check the board's cable")
        return _f("agent", "ok", zh, en)

    def check_clock(self) -> Finding:
        central = self.central or _central_from_state(self.config_path)
        if not central:
            return _f(
                "clock", "skip", "未知中心地址（--central）", "central URL unknown (--central)"
            )
        url = f"{central.rstrip('/')}/healthz"
        before = self.clock()
        try:
            with urllib.request.urlopen(url, timeout=IO_TIMEOUT_S) as r:
                date = r.headers.get("Date")
        except (OSError, urllib.error.URLError) as e:
            return _f("clock", "warn", f"无法访问中心 {url}（{e}）", f"cannot reach {url} ({e})")
        after = self.clock()
        if not date:
            return _f("clock", "warn", "中心未返回 Date 头", "central sent no Date header")
        skew = (before + after) / 2 - (email.utils.parsedate_to_datetime(date).timestamp() + 0.5)
        if abs(skew) > MAX_CLOCK_SKEW_S:
            return _f(
                "clock",
                "fail",
                f"与中心相差 {skew:+.0f} 秒：检查 NTP（timedatectl）",
                f"{skew:+.0f} s off central's clock: fix NTP (timedatectl)",
            )
        return _f("clock", "ok", f"与中心相差 {skew:+.1f} 秒", f"{skew:+.1f} s from central")

    def check_serial(self) -> Finding:
        board = self._cfg.alarm_board
        if board is None:
            return _f("serial", "skip", "未配置报警板", "no alarm board configured")
        dev = Path(board.device)
        if not dev.exists():
            return _f(
                "serial",
                "fail",
                f"{dev} 不存在：检查 USB 串口线，或运行 shilian provision discover",
                f"{dev} does not exist: check the USB cable or run shilian provision discover",
            )
        if not stat.S_ISCHR(dev.stat().st_mode):
            return _f("serial", "fail", f"{dev} 不是串口设备", f"{dev} is not a character device")
        if not os.access(dev, os.R_OK | os.W_OK):
            return _f(
                "serial",
                "fail",
                f"无权访问 {dev}：usermod -aG dialout shilian",
                f"no access to {dev}: usermod -aG dialout shilian",
            )
        return _f("serial", "ok", f"{dev} 存在且可读写", f"{dev} present and accessible")

    def check_systemd(self) -> Finding:
        if shutil.which("systemctl") is None or not Path("/run/systemd/system").is_dir():
            return _f("systemd", "skip", "本机未由 systemd 管理", "not running under systemd")
        r = subprocess.run(
            ["systemctl", "is-active", UNIT], capture_output=True, text=True, timeout=10
        )
        state = r.stdout.strip() or r.stderr.strip()
        if state == "active":
            return _f("systemd", "ok", f"{UNIT} 运行中", f"{UNIT} active")
        return _f(
            "systemd",
            "fail",
            f"{UNIT} 状态 {state}：journalctl -u shilian-edge 查看原因",
            f"{UNIT} is {state}: see journalctl -u shilian-edge",
        )

    @property
    def _cfg(self) -> EdgeConfig:
        assert self.cfg is not None
        return self.cfg


def _certificate_finding(ca_file: Path, cert_file: Path, key_file: Path, node_id: str) -> Finding:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID

    try:
        ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), None)
    except (ValueError, TypeError, OSError) as e:
        return _f("certificate", "fail", f"无法解析证书或密钥：{e}", f"cannot parse: {e}")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        return _f(
            "certificate",
            "fail",
            f"证书与私钥不匹配：重新运行 shilian provision enrol（{cert_file}）",
            f"certificate does not match the key: re-enrol ({cert_file})",
        )
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as e:
        return _f(
            "certificate",
            "fail",
            f"证书不是由 {ca_file} 签发：重新入网（{e or 'signature'}）",
            f"certificate not issued by {ca_file}: re-enrol ({e or 'signature'})",
        )
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(cns[0].value) if cns else ""
    if cn != node_id:
        return _f(
            "certificate",
            "fail",
            f"证书属于 {cn}，不是 {node_id}：配置与证书不符",
            f"certificate is for {cn}, not {node_id}",
        )
    days = (cert.not_valid_after_utc.timestamp() - time.time()) / 86400
    if days < 0:
        return _f(
            "certificate",
            "fail",
            f"证书已过期 {-days:.0f} 天：申请新令牌重新入网",
            f"certificate expired {-days:.0f} days ago: re-enrol with a new token",
        )
    if days < WARN_CERT_DAYS:
        return _f(
            "certificate",
            "warn",
            f"证书 {days:.0f} 天后过期：尽快续期",
            f"certificate expires in {days:.0f} days: renew",
        )
    return _f("certificate", "ok", f"有效，{days:.0f} 天后过期", f"valid, expires in {days:.0f} d")


def agent_status(path: Path, timeout: float) -> dict[str, Any]:
    """The running agent's status over its local socket; OSError / ValueError when none answers
    (the technician's tools ask it too before checking a node)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(b'{"op":"status"}\n')
        with s.makefile("rb") as f:
            reply = json.loads(f.readline() or b"null")
    if not isinstance(reply, dict) or not reply.get("ok"):
        raise ValueError(f"unexpected reply {reply!r}")
    return reply


def _board_text(status: dict[str, Any]) -> str:
    """The board's link state as the agent reports it, if it does."""
    board = status.get("alarm_board")
    if isinstance(board, dict):
        return str(board.get("state", board.get("link", "unknown")))
    if isinstance(board, str):
        return board
    return "unknown"


def _central_from_state(config_path: Path) -> str | None:
    """Central's URL from the provisioning state next to the config (``provision node``)."""
    try:
        data = json.loads((config_path.parent / "state.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    url = data.get("central") if isinstance(data, dict) else None
    return url if isinstance(url, str) else None


def exit_code(findings: list[Finding]) -> int:
    levels = {f.level for f in findings}
    return 2 if "fail" in levels else 1 if "warn" in levels else 0


MARKS: dict[Level, str] = {
    "ok": "[green]✓[/]",
    "warn": "[yellow]![/]",
    "fail": "[bold red]✗[/]",
    "skip": "[dim]-[/]",
}


def render(findings: list[Finding], lang: str) -> Iterator[tuple[str, str, str]]:
    """Rows of the report: mark, check title, line."""
    for f in findings:
        zh, en = TITLES[f.check]
        yield MARKS[f.level], en if lang == "en" else zh, f.text(lang)
