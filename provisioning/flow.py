"""The technician's steps on the box, each resumable: a small state file (``state.json`` in the
work directory) records what is done, so re-running picks up where the last run stopped.

    keygen        node.key (EC P-256, 0600, never leaves the box) + node.csr       offline
    enrol         POST the CSR with a one-time token → node.pem, ca.pem, broker    needs central
    write-config  edge.toml with broker TLS paths, validated by edge.config         offline
    check         the commissioning check → report.json + report.html              needs both
    upload        report.json to central with the enrolment token                  needs central
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pki.ca import CaError, key_pem, make_csr, new_key, write_private, write_public
from provisioning.check import central_refusal
from wire import valid_node_id

#: Seconds the enrol request may take (a CSR and a certificate over a poor uplink).
ENROL_TIMEOUT_S = 30.0

KEY, CSR, CERT, CA, CONFIG, STATE, REPORT, REPORT_HTML = (
    "node.key",
    "node.csr",
    "node.pem",
    "ca.pem",
    "edge.toml",
    "state.json",
    "report.json",
    "report.html",
)


class FlowError(Exception):
    """A step cannot be done; the message says what to do (zh / en)."""


@dataclass
class State:
    path: Path
    data: dict[str, Any]

    @classmethod
    def open(cls, workdir: Path) -> State:
        workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(workdir, 0o700)  # holds the node's private key
        path = workdir / STATE
        data: dict[str, Any] = {}
        if path.exists():
            try:
                data = json.loads(path.read_text("utf-8"))
            except ValueError:
                data = {}
        data.setdefault("done", {})
        return cls(path, data)

    @property
    def dir(self) -> Path:
        return self.path.parent

    def done(self, step: str) -> bool:
        return step in self.data["done"]

    def mark(self, step: str, **values: Any) -> None:
        self.data.update(values)
        self.data["done"][step] = time.time()
        self.save()

    def forget(self, *steps: str) -> None:
        for s in steps:
            self.data["done"].pop(s, None)
        self.save()

    def save(self) -> None:
        tmp = self.path.with_name(STATE + ".tmp")
        tmp.write_text(json.dumps(self.data, ensure_ascii=False, indent=2), "utf-8")
        os.replace(tmp, self.path)


def keygen(state: State, node_id: str) -> Path:
    """Make the node key (kept if it exists: re-running never replaces the box's identity) and a
    CSR for ``node_id``."""
    if state.data.get("node_id") not in (None, node_id) and state.done("enrol"):
        raise FlowError(
            f"此目录已为节点 {state.data['node_id']} 入网；换节点请用新目录 / "
            f"this directory is enrolled as {state.data['node_id']}; use a new directory"
        )
    from registry import village_in_package

    if valid_node_id(node_id) and village_in_package(node_id[:12]) is None:
        raise FlowError(
            f"节点编号 {node_id} 中的村代码 {node_id[:12]} 不在国家统计局区划代码中："
            "核对节点编号 / "
            f"village code {node_id[:12]} of node {node_id} is not an NBS village code: "
            "check the node id"
        )
    key_path = state.dir / KEY
    if key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise FlowError(f"{key_path} 不是 EC 私钥 / is not an EC private key")
    else:
        key = new_key()
        write_private(key_path, key_pem(key))
    try:
        csr = make_csr(key, node_id)
    except CaError as e:
        raise FlowError(str(e)) from None
    write_public(state.dir / CSR, csr)
    state.mark("keygen", node_id=node_id)
    return key_path


def central_url(url: str) -> str:
    """Central's base URL as typed by a technician, or :class:`FlowError` saying how to write
    it (``10.0.0.1:8080`` without a scheme would otherwise fail as a network error)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FlowError(
            f"中心地址应写成 http://主机:端口，例如 http://10.0.0.1:8080：{url[:80]!r} / "
            f"central's address must look like http://host:port, e.g. http://10.0.0.1:8080: "
            f"{url[:80]!r}"
        )
    return url.strip().rstrip("/")


def enrol(state: State, central: str, token: str) -> dict[str, Any]:
    """Send the CSR with the token; save the certificate, the CA and the broker address."""
    central = central_url(central)
    if not state.done("keygen"):
        raise FlowError("请先运行 keygen / run keygen first")
    body = json.dumps(
        {"token": token.strip(), "csr_pem": (state.dir / CSR).read_text("utf-8")}
    ).encode()
    req = urllib.request.Request(
        f"{central.rstrip('/')}/api/v1/enrol",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=ENROL_TIMEOUT_S) as r:
            answer: dict[str, Any] = json.load(r)
    except urllib.error.HTTPError as e:
        raise FlowError(f"入网被拒绝 / enrolment refused ({central_refusal(e)})") from None
    except (OSError, ValueError) as e:
        raise FlowError(
            f"无法连接中心 {central}，请检查网络后重试 / cannot reach central: {e}"
        ) from None
    if answer.get("node_id") != state.data["node_id"]:
        raise FlowError("中心返回的节点编号不符 / central answered for another node")
    write_public(state.dir / CERT, answer["cert_pem"].encode())
    write_public(state.dir / CA, answer["ca_pem"].encode())
    # The token stays (in this 0700 directory) to upload commissioning reports: central accepts
    # it for that alone, and only for a week after the enrolment.
    state.mark(
        "enrol",
        central=central,
        broker=answer["broker"],
        not_after=answer["not_after"],
        upload_token=token.strip(),
    )
    state.forget("config", "check", "upload")
    return answer


def edge_config_data(state: State, **overrides: Any) -> dict[str, Any]:
    broker = state.data["broker"]
    d = state.dir.resolve()
    data: dict[str, Any] = {
        "node_id": state.data["node_id"],
        "broker": {
            "host": broker["host"],
            "port": broker["port"],
            "tls": {
                "ca_file": str(d / CA),
                "cert_file": str(d / CERT),
                "key_file": str(d / KEY),
            },
        },
    }
    board = (state.data.get("discovered") or {}).get("board")
    if board:  # found by ``provision discover``
        data["alarm_board"] = {"device": board["device"]}
    for key, value in overrides.items():
        if value is not None:
            section, _, field = key.partition(".")
            if field:
                data.setdefault(section, {})[field] = value
            else:
                data[section] = value
    return data


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return json.dumps(str(v), ensure_ascii=False)  # a JSON string is a valid TOML basic string


def to_toml(data: dict[str, Any]) -> str:
    """TOML for a two-level dict of scalars and tables (all the edge config needs)."""
    lines: list[str] = ["# generated by shilian provision write-config"]
    tables: list[tuple[str, dict[str, Any]]] = []

    def emit(prefix: str, table: dict[str, Any]) -> None:
        for k, v in table.items():
            if isinstance(v, dict):
                tables.append((f"{prefix}{k}", v))
            else:
                lines.append(f"{k} = {_toml_value(v)}")

    emit("", data)
    while tables:
        name, table = tables.pop(0)
        lines.append(f"\n[{name}]")
        emit(f"{name}.", table)
    return "\n".join(lines) + "\n"


def write_config(state: State, out: Path | None = None, **overrides: Any) -> Path:
    """Write the edge config (validated by ``edge.config`` before it is written)."""
    from edge.config import ConfigError, parse_config

    if not state.done("enrol"):
        raise FlowError("请先完成入网（enrol）/ enrol first")
    data = edge_config_data(state, **overrides)
    try:
        parse_config(data)
    except ConfigError as e:
        raise FlowError(f"生成的配置无效 / generated config is invalid:\n{e}") from None
    path = out or state.dir / CONFIG
    write_public(path, to_toml(data).encode("utf-8"))
    state.mark("config", config=str(path))
    return path


def write_report_html(state: State, report: dict[str, Any]) -> Path:
    """``report.html``: the printable page, made offline (place names from the packaged
    registry when it has the village)."""
    from central.commissioning_page import Place, place_from_registry, render
    from registry import Registry, RegistryError

    try:
        place = place_from_registry(Registry.from_package(report["node_id"][:4]), report["node_id"])
    except (RegistryError, OSError, ValueError, KeyError):
        place = Place()
    path = state.dir / REPORT_HTML
    write_public(path, render(report, place).encode("utf-8"))
    return path


def upload_report(state: State, central: str | None = None) -> int:
    """POST ``report.json`` to central with the enrolment token; the upload's id. Marks the step
    done; :class:`FlowError` when central refuses or cannot be reached (re-run to resume)."""
    token = state.data.get("upload_token")
    if not token:
        raise FlowError("没有入网令牌，无法上传报告 / no enrolment token to upload the report")
    url = (central or state.data["central"]).rstrip("/")
    body = (state.dir / REPORT).read_bytes()
    req = urllib.request.Request(
        f"{url}/api/v1/nodes/{state.data['node_id']}/commissioning",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=ENROL_TIMEOUT_S) as r:
            rid = int(json.load(r)["id"])
    except urllib.error.HTTPError as e:
        raise FlowError(f"报告上传被拒绝 / report upload refused ({central_refusal(e)})") from None
    except (OSError, ValueError, KeyError) as e:
        raise FlowError(
            f"无法连接中心，报告未上传；重新运行 provision node 会续传 / "
            f"cannot reach central, report not uploaded (provision node resumes it): {e}"
        ) from None
    state.mark("upload", report_id=rid)
    return rid
