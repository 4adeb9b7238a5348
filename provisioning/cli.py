"""``shilian provision …``: the technician's and the administrator's commands (Chinese first).

Only typer is imported at module level; each command loads what it needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from central.db import Db, Target

app = typer.Typer(
    help="节点入网与代理安全 / node enrolment, certificates and broker security.",
    no_args_is_help=True,
)
village_app = typer.Typer(help="查找村 / find a village.", no_args_is_help=True)
token_app = typer.Typer(help="入网令牌 / enrolment tokens.", no_args_is_help=True)
ca_app = typer.Typer(help="证书颁发机构 / certificate authority.", no_args_is_help=True)
app.add_typer(village_app, name="village")
app.add_typer(token_app, name="token")
app.add_typer(ca_app, name="ca")

WorkDir = Annotated[
    Path, typer.Option("--dir", "-d", help="节点工作目录（密钥、证书、状态）/ node work directory")
]
DEFAULT_DIR = Path("shilian-node")


def _fail(message: str, code: int = 1) -> typer.Exit:
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]✗[/] {message}", highlight=False)
    return typer.Exit(code)


def _ok(message: str) -> None:
    from rich.console import Console

    Console().print(f"[bold green]✓[/] {message}", highlight=False)


# -- village ------------------------------------------------------------------------------------


@village_app.command("search")
def village_search(
    words: Annotated[list[str], typer.Argument(help="县/乡镇/村名称或代码 / names or codes")],
    scope: Annotated[str, typer.Option(help="区划范围 / registry scope")] = "4501",
    limit: Annotated[int, typer.Option(help="最多显示 / at most")] = 10,
) -> None:
    """模糊查找村（县、乡镇、村名称或代码）/ fuzzy search by county, township, village or code."""
    from rich.console import Console
    from rich.table import Table

    from provisioning.search import search
    from registry import Registry, RegistryError

    try:
        registry = Registry.from_package(scope)
    except RegistryError as e:
        raise _fail(str(e)) from None
    matches = search(registry, " ".join(words), limit)
    if not matches:
        raise _fail("没有找到匹配的村 / no matching village")
    table = Table("代码 / code", "村 / village", "所在 / where")
    for m in matches:
        table.add_row(m.code, m.name, " › ".join(m.path[:-1]))
    Console().print(table)


# -- the node's steps ---------------------------------------------------------------------------


@app.command()
def keygen(
    node: Annotated[str, typer.Option("--node", help="节点编号 / node id, e.g. 450102001001-a")],
    workdir: WorkDir = DEFAULT_DIR,
) -> None:
    """在本机生成节点密钥（0600，不离开本机）和证书请求 / make the node key and CSR on the box."""
    from provisioning.flow import FlowError, State
    from provisioning.flow import keygen as do_keygen

    try:
        key = do_keygen(State.open(workdir), node)
    except FlowError as e:
        raise _fail(str(e)) from None
    _ok(f"密钥 / key {key}（0600）；证书请求 / CSR {workdir / 'node.csr'}")


@app.command()
def enrol(
    central: Annotated[str, typer.Option(help="中心地址 / central URL, e.g. http://10.0.0.1:8080")],
    token: Annotated[str, typer.Option(help="一次性入网令牌 / one-time enrolment token")],
    workdir: WorkDir = DEFAULT_DIR,
) -> None:
    """用令牌入网：发送证书请求，保存证书 / enrol with a token: send the CSR, save the cert."""
    from provisioning.flow import FlowError, State
    from provisioning.flow import enrol as do_enrol

    try:
        answer = do_enrol(State.open(workdir), central, token)
    except FlowError as e:
        raise _fail(str(e)) from None
    _ok(f"已入网 / enrolled {answer['node_id']}，证书有效至 / valid until {answer['not_after']}")


@app.command()
def discover(
    workdir: WorkDir = DEFAULT_DIR,
    camera: Annotated[
        list[str] | None, typer.Option(help="摄像机 IP（定向探测，可多次）/ camera IP, unicast")
    ] = None,
    no_multicast: Annotated[
        bool, typer.Option("--no-multicast", help="不做组播探测 / no multicast probe")
    ] = False,
    serial: Annotated[
        list[str] | None, typer.Option(help="串口（可多次）/ serial port to try")
    ] = None,
    no_serial_scan: Annotated[
        bool, typer.Option("--no-serial-scan", help="只试 --serial / only --serial ports")
    ] = False,
    sip: Annotated[
        list[str] | None, typer.Option(help="SIP 终端 host[:port]（可多次）/ SIP terminal")
    ] = None,
    wait: Annotated[float, typer.Option(help="组播等待秒数 / seconds to listen")] = 3.0,
    camera_port: Annotated[int, typer.Option(hidden=True)] = 3702,
    as_json: Annotated[bool, typer.Option("--json", help="输出 JSON / print JSON")] = False,
) -> None:
    """发现本地设备：ONVIF 摄像机、报警板串口、SIP 终端 / find cameras, the board, SIP terminals."""
    import asyncio
    import json

    from provisioning.discover import discover as run_discovery
    from provisioning.discover import record
    from provisioning.discovery_tables import show
    from provisioning.flow import STATE, State

    found = asyncio.run(
        run_discovery(
            camera_hosts=camera or [],
            multicast=not no_multicast,
            serial=serial or [],
            scan_serial=not no_serial_scan,
            sip=sip or [],
            wait_s=wait,
            camera_port=camera_port,
        )
    )
    record(State.open(workdir), found)
    if as_json:
        typer.echo(json.dumps(found.to_json(), ensure_ascii=False))
        return
    show(found)
    _ok(f"结果已保存 / saved in {workdir / STATE}")


def _overrides(
    outbox: Path | None, socket: Path | None, metrics_port: int | None, health: float | None
) -> dict[str, Any]:
    return {
        "outbox.path": str(outbox) if outbox else None,
        "local_socket.path": str(socket) if socket else None,
        "metrics.port": metrics_port,
        "health_interval_s": health,
    }


Outbox = Annotated[Path | None, typer.Option(help="发件箱文件 / outbox SQLite path")]
Socket = Annotated[Path | None, typer.Option(help="本地套接字 / local socket path")]
MetricsPort = Annotated[int | None, typer.Option(help="指标端口 / metrics port")]
HealthInterval = Annotated[float | None, typer.Option(help="健康报告间隔秒 / health interval")]


@app.command("write-config")
def write_config(
    workdir: WorkDir = DEFAULT_DIR,
    out: Annotated[Path | None, typer.Option(help="输出文件 / output file")] = None,
    outbox: Outbox = None,
    socket: Socket = None,
    metrics_port: MetricsPort = None,
    health_interval: HealthInterval = None,
) -> None:
    """写出并校验 edge 配置（含代理 TLS）/ write and validate the edge config (broker TLS)."""
    from provisioning.flow import FlowError, State
    from provisioning.flow import write_config as do_write

    try:
        path = do_write(
            State.open(workdir), out, **_overrides(outbox, socket, metrics_port, health_interval)
        )
    except FlowError as e:
        raise _fail(str(e)) from None
    _ok(f"配置已写入并通过校验 / config written and valid: {path}")


def _run_check(workdir: Path, central: str | None, timeout: float, technician: str = "") -> bool:
    from rich.console import Console

    from provisioning.check import (
        STEP_TITLES,
        CheckTarget,
        StepResult,
        devices_from_state,
        run_check,
    )
    from provisioning.flow import CA, CERT, CONFIG, KEY, REPORT, State

    state = State.open(workdir)
    if not state.done("enrol"):
        raise _fail("请先完成入网（enrol）/ enrol first")
    if not _agent_answers(workdir, AGENT_START_WAIT_S):
        config = workdir / CONFIG
        raise _fail(
            f"本机代理未运行，中心收不到本节点：先启动代理（systemctl start shilian-edge，或 "
            f"shilian edge run --config {config}）再检查 / the agent is not running, so central "
            f"cannot see this node: start the agent (systemctl start shilian-edge, or "
            f"shilian edge run --config {config}), then check again"
        )
    url = central or state.data["central"]
    broker = state.data["broker"]
    target = CheckTarget(
        node_id=state.data["node_id"],
        central=url,
        broker_host=broker["host"],
        broker_port=int(broker["port"]),
        ca_file=workdir / CA,
        cert_file=workdir / CERT,
        key_file=workdir / KEY,
        token=state.data.get("upload_token"),
    )
    console = Console()
    status = console.status("")

    def on_step(step: str) -> None:
        status.update(f"检查中 / checking: {STEP_TITLES[step]}")

    def on_result(r: StepResult) -> None:
        mark = "[bold green]✓[/]" if r.ok else "[bold red]✗[/]"
        console.print(f"{mark} {STEP_TITLES[r.step]}: {r.detail} ({r.seconds:.1f} s)")

    with status:
        report = run_check(
            target, timeout_s=timeout, on_step=on_step, on_result=on_result, technician=technician
        )
    report.devices = devices_from_state(state.data.get("discovered"))
    report.save(workdir / REPORT)
    _report_html_and_upload(state, report.to_json(), url)
    if report.ok:
        state.mark("check")
        console.print(
            f"[bold green]调试检查通过 / commissioning check passed[/]: {workdir / REPORT}"
        )
    else:
        console.print(
            f"[bold red]调试检查未通过 / commissioning check failed[/]: {workdir / REPORT}"
        )
    return report.ok


def _report_html_and_upload(state: Any, report: dict[str, Any], central: str | None) -> None:
    """report.html beside report.json, then the upload to central (a failure is a warning:
    ``provision node`` resumes it)."""
    from rich.console import Console

    from provisioning.flow import FlowError, upload_report, write_report_html

    console = Console()
    console.print(f"可打印报告 / printable report: {write_report_html(state, report)}")
    state.forget("upload")
    if not state.data.get("upload_token"):
        return
    try:
        rid = upload_report(state, central)
    except FlowError as e:
        console.print(f"[bold yellow]![/] {e}", highlight=False)
        return
    console.print(f"[bold green]✓[/] 报告已上传中心 / report stored at central (#{rid})")


CheckTimeout = Annotated[float, typer.Option(help="每步最长秒数 / seconds per step")]
Technician = Annotated[str, typer.Option(help="调试人员姓名 / technician's name")]


@app.command()
def check(
    workdir: WorkDir = DEFAULT_DIR,
    central: Annotated[str | None, typer.Option(help="中心地址 / central URL")] = None,
    timeout: CheckTimeout = 60.0,
    technician: Technician = "",
) -> None:
    """调试检查：代理 TLS、上线、健康、时钟 / commissioning check: TLS, birth, health, clock."""
    if not _run_check(workdir, central, timeout, technician):
        raise typer.Exit(1)


@app.command()
def node(
    node_id: Annotated[str, typer.Option("--node", help="节点编号 / node id")],
    central: Annotated[str, typer.Option(help="中心地址 / central URL")],
    token: Annotated[str | None, typer.Option(help="入网令牌 / enrolment token")] = None,
    workdir: WorkDir = DEFAULT_DIR,
    outbox: Outbox = None,
    socket: Socket = None,
    metrics_port: MetricsPort = None,
    health_interval: HealthInterval = None,
    skip_check: Annotated[bool, typer.Option(help="不做调试检查 / skip the check")] = False,
    timeout: CheckTimeout = 60.0,
    technician: Technician = "",
) -> None:
    """全流程（可中断续做）：keygen → enrol → write-config → check / the whole flow, resumable."""
    from provisioning.flow import FlowError, State
    from provisioning.flow import enrol as do_enrol
    from provisioning.flow import keygen as do_keygen
    from provisioning.flow import write_config as do_write

    state = State.open(workdir)
    try:
        if not state.done("keygen") or state.data.get("node_id") != node_id:
            do_keygen(state, node_id)
            _ok("密钥与证书请求已生成 / key and CSR made")
        if not state.done("enrol"):
            if token is None:
                raise FlowError("需要入网令牌 --token / a --token is needed to enrol")
            do_enrol(state, central, token)
            _ok("已入网 / enrolled")
        if not state.done("config"):
            do_write(state, None, **_overrides(outbox, socket, metrics_port, health_interval))
            _ok("配置已写入 / config written")
    except FlowError as e:
        raise _fail(str(e)) from None
    _resume_upload(state, central)
    if skip_check:
        return
    if not _agent_answers(workdir):
        _next_start_agent(workdir)
        return
    if not _run_check(workdir, central, timeout, technician):
        raise typer.Exit(1)


#: Seconds to wait for the local agent's status reply (it answers in milliseconds).
AGENT_PROBE_TIMEOUT_S = 3.0
#: How long the check waits for an agent that was just started to open its socket (~1 s on a
#: Pi-class box; the rest is margin).
AGENT_START_WAIT_S = 15.0


def _agent_answers(workdir: Path, wait_s: float = 0.0) -> bool:
    """Is the node's agent running on this box (its local socket answers), within ``wait_s``?
    The check can only pass once it runs; checking before would wait a minute for a node that
    cannot be online."""
    import time

    from edge.config import ConfigError, load_config
    from edge.doctor import agent_status
    from provisioning.flow import CONFIG

    try:
        path = load_config(workdir / CONFIG).local_socket.path
    except ConfigError:
        return False
    deadline = time.monotonic() + wait_s
    while True:
        try:
            agent_status(path, AGENT_PROBE_TIMEOUT_S)
            return True
        except (OSError, ValueError):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)


def _next_start_agent(workdir: Path) -> None:
    from provisioning.flow import CONFIG

    config = workdir / CONFIG
    _ok(
        f"下一步：启动代理（systemctl start shilian-edge，或 shilian edge run --config {config}），"
        f"再运行 shilian provision check --dir {workdir} / next: start the agent "
        f"(systemctl start shilian-edge, or shilian edge run --config {config}), then run "
        f"shilian provision check --dir {workdir}"
    )


def _resume_upload(state: Any, central: str) -> None:
    """A report saved while central was unreachable is uploaded now."""
    from provisioning.flow import REPORT, FlowError, upload_report

    pending = (state.dir / REPORT).exists() and not state.done("upload")
    if pending and state.data.get("upload_token"):
        try:
            rid = upload_report(state, central)
            _ok(f"已续传调试报告 / report uploaded (#{rid})")
        except FlowError as e:
            from rich.console import Console

            Console(stderr=True).print(f"[bold yellow]![/] {e}", highlight=False)


# -- administrator ------------------------------------------------------------------------------


CentralDbOption = Annotated[
    Path | None, typer.Option("--db", help="中心 SQLite 数据库 / central's SQLite database")
]
CentralConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", help="中心配置 / central.toml ([store]: SQLite or PostgreSQL), instead of --db"
    ),
]


def _central_target(db: Path | None, config: Path | None) -> Target:
    """Central's existing database: the SQLite file ``--db`` (a mistyped path is refused, never
    created: a new empty database would take tokens central never sees), or the one
    ``--config``'s ``[store]`` names."""
    from central.config import ConfigError, load_config
    from central.db import target

    if (db is None) == (config is None):
        raise _fail("请给出 --db 或 --config 之一 / give one of --db or --config", 2)
    if config is not None:
        try:
            return target(load_config(config).store)
        except ConfigError as e:
            raise _fail("\n".join(e.lines), 2) from None
    assert db is not None
    if not db.is_file():
        raise _fail(
            f"中心数据库不存在：{db}（检查路径，应为 central 配置 [store] path）/ "
            f"central's database does not exist: {db} (check the path: central's [store] path)",
            2,
        )
    return db


def _central_db(t: Target) -> Db:
    from central.db import open_db

    try:
        return open_db(t)
    except Exception as e:  # the database's own error (locked, unreachable, not ours)
        shown = t if isinstance(t, Path) else t.split("@")[-1]
        raise _fail(
            f"无法打开中心数据库 {shown}：{e} / cannot open central's database {shown}", 2
        ) from None


def _when(ts: float | None) -> str:
    import time

    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


@token_app.command("create")
def token_create(
    db: CentralDbOption = None,
    config: CentralConfigOption = None,
    node_id: Annotated[str | None, typer.Option("--node", help="节点编号 / node id")] = None,
    village: Annotated[str | None, typer.Option(help="12 位村代码 / village code")] = None,
    ttl: Annotated[
        str, typer.Option(help="有效期，10 分钟到 30 天 / time to live: 30m, 24h, 7d")
    ] = "24h",
) -> None:
    """签发一次性入网令牌 / create a one-time enrolment token.

    令牌单独输出在标准输出，用途与有效期输出在标准错误 / the token alone on stdout; its target
    and expiry on stderr."""
    import time

    from rich.console import Console

    from central import registry_store
    from central.tokens import TokenStore, parse_ttl
    from registry import village_in_package

    if (node_id is None) == (village is None):
        raise _fail("请指定 --node 或 --village 之一 / give exactly one of --node, --village", 2)
    target = node_id or village or ""
    try:
        seconds = parse_ttl(ttl)
    except ValueError as e:
        raise _fail(str(e), 2) from None
    where = _central_target(db, config)
    conn = _central_db(where)
    try:
        code = target[:12]
        unit = registry_store.village(conn, code)
        if unit is False:  # central has not imported its registry yet: the packaged table
            unit = village_in_package(code)
        if not unit:
            raise _fail(
                f"村代码 {code} 不在中心的村级登记表中（国家统计局区划代码）：核对代码 / "
                f"village code {code} is unknown to central's registry (NBS codes): check it",
                2,
            )
        tok = TokenStore(conn).create(target, seconds)
    except ValueError as e:
        raise _fail(str(e), 2) from None
    finally:
        conn.close()
    from central.accounts import record_local

    record_local(where, "token_create", target, "created", ttl_s=seconds)
    until = _when(time.time() + seconds)
    name = unit.name if not isinstance(unit, bool) else ""
    Console(stderr=True).print(
        f"[bold green]✓[/] 入网令牌：{target} {name}，有效至 {until}，仅可使用一次 / "
        f"enrolment token for {target} {name}, valid until {until}, works once",
        highlight=False,
    )
    typer.echo(tok)


@token_app.command("list")
def token_list(db: CentralDbOption = None, config: CentralConfigOption = None) -> None:
    """列出入网令牌（不显示令牌本身）/ list enrolment tokens (never the tokens themselves)."""
    import time

    from central.tokens import TokenStore

    labels = {"unused": "未使用/unused", "used": "已使用/used", "expired": "已过期/expired"}
    labels["revoked"] = "已吊销/revoked"
    conn = _central_db(_central_target(db, config))
    try:
        infos = TokenStore(conn).tokens()
    finally:
        conn.close()
    now = time.time()
    typer.echo(
        "编号/id    对象/target          状态/status      签发/created      "
        "有效至/expires   使用者/used by"
    )
    for t in infos:
        typer.echo(
            f"{t.token_id} {t.target:<20} {labels[t.status(now)]:<15} {_when(t.created_at)} "
            f"{_when(t.expires_at)} {t.used_by or '-'}"
        )


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="令牌编号（见 token list）/ token id")],
    db: CentralDbOption = None,
    config: CentralConfigOption = None,
) -> None:
    """吊销未使用的入网令牌 / revoke an unused enrolment token."""
    from central.accounts import record_local
    from central.tokens import TokenStore

    where = _central_target(db, config)
    conn = _central_db(where)
    try:
        info = TokenStore(conn).revoke(token_id.strip().lower())
    except ValueError as e:
        raise _fail(str(e), 2) from None
    finally:
        conn.close()
    record_local(where, "token_revoke", info.target, "revoked", token_id=info.token_id)
    _ok(f"已吊销令牌 {info.token_id}（{info.target}）/ token {info.token_id} revoked")


@ca_app.command("init")
def ca_init(
    ca_dir: Annotated[
        Path, typer.Option("--ca-dir", "--dir", help="CA 目录 / CA directory (--dir: old name)")
    ],
    name: Annotated[str, typer.Option(help="CA 名称 / CA name")] = "shilian CA",
) -> None:
    """新建 CA（EC P-256，私钥 0600）与空吊销列表 / create the CA and an empty CRL."""
    from pki.ca import CaError, CertificateAuthority

    try:
        CertificateAuthority.create(ca_dir, name=name)
    except CaError as e:
        raise _fail(str(e)) from None
    _ok(f"CA 已创建 / CA created in {ca_dir}")


@ca_app.command("client-cert")
def ca_client_cert(
    ca_dir: Annotated[
        Path, typer.Option("--ca-dir", "--dir", help="CA 目录 / CA directory (--dir: old name)")
    ],
    out: Annotated[Path, typer.Option(help="输出目录 / output directory")],
    cn: Annotated[str, typer.Option(help="账户名 / account")] = "shilian-central",
) -> None:
    """为中心或操作员签发客户端证书 / issue central's or an operator's client certificate."""
    from pki.ca import CaError, CertificateAuthority, write_private, write_public

    try:
        ca = CertificateAuthority.load(ca_dir)
        key, cert = ca.issue_client(cn)
    except CaError as e:
        raise _fail(str(e)) from None
    write_private(out / f"{cn}.key", key)
    write_public(out / f"{cn}.pem", cert)
    write_public(out / "ca.pem", ca.ca_pem)
    _ok(f"{out / (cn + '.pem')}, {out / (cn + '.key')}")


@app.command("broker-config")
def broker_config(
    ca_dir: Annotated[Path, typer.Option(help="CA 目录 / CA directory")],
    out: Annotated[Path, typer.Option(help="输出目录 / output directory")],
    name: Annotated[
        list[str] | None, typer.Option(help="代理主机名或 IP（可多次）/ broker names")
    ] = None,
    port: Annotated[int, typer.Option(help="TLS 端口 / TLS port")] = 8883,
    bind: Annotated[str, typer.Option(help="监听地址 / listen address")] = "",
    user: Annotated[str, typer.Option(help="mosquitto 运行用户 / user")] = "mosquitto",
    log_file: Annotated[bool, typer.Option(help="日志写入文件 / log to a file")] = False,
) -> None:
    """生成 mosquitto 配置：TLS、证书身份、ACL、CRL / write the mosquitto config."""
    from pki.ca import CaError, CertificateAuthority
    from provisioning.broker_config import write_broker_config

    try:
        ca = CertificateAuthority.load(ca_dir)
    except CaError as e:
        raise _fail(str(e)) from None
    files = write_broker_config(
        ca, out, names=name or [], port=port, bind=bind, user=user, log_file=log_file
    )
    _ok(f"mosquitto -c {files.conf}")


#: Seconds the broker reload command may take (systemctl reload returns in well under one).
RELOAD_TIMEOUT_S = 30.0


@app.command()
def revoke(
    node_id: Annotated[str, typer.Option("--node", help="节点编号或账户 / node id or account")],
    ca_dir: Annotated[Path, typer.Option(help="CA 目录 / CA directory")],
    db: Annotated[
        Path | None,
        typer.Option(
            help="中心 SQLite 数据库：写入审计日志 / central's SQLite database, for the audit log"
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="中心配置：审计日志写入其 [store] 数据库 / central.toml: the audit log goes to "
            "its [store] database (SQLite or PostgreSQL), instead of --db",
        ),
    ] = None,
    broker_dir: Annotated[
        Path | None,
        typer.Option(help="broker-config 输出目录：重写其 ACL / broker-config's output directory"),
    ] = None,
    reload: Annotated[
        str | None,
        typer.Option(
            help="使代理重读 CRL 与 ACL 的命令 / command that makes the broker reread them, "
            'e.g. "systemctl reload mosquitto"'
        ),
    ] = None,
) -> None:
    """吊销节点证书，更新 CRL 与代理 ACL / revoke a node's certificates, rewrite CRL and ACL.

    代理重读后（SIGHUP），新连接被拒绝，已连接的会话收发全部被拒 / once the broker rereads
    them (SIGHUP), new connections are refused and an open session can neither publish nor
    receive."""
    import shlex
    import subprocess

    from pki.ca import CaError, CertificateAuthority
    from provisioning.broker_config import write_acl

    audit_db = _central_target(db, config) if db is not None or config is not None else None
    try:
        serials = CertificateAuthority.load(ca_dir).revoke(node_id)
    except CaError as e:
        raise _fail(str(e)) from None
    if audit_db is not None:
        from central.accounts import record_local

        record_local(audit_db, "revoke", node_id, "revoked", serials=[str(n) for n in serials])
    _ok(f"已吊销 / revoked {len(serials)} 张证书 / certificate(s) of {node_id}")
    if broker_dir is not None:
        write_acl(ca_dir, broker_dir / "acl")
        _ok(f"代理 ACL 已更新 / broker ACL rewritten: {broker_dir / 'acl'}")
    if reload is not None:
        try:
            done = subprocess.run(
                shlex.split(reload), capture_output=True, text=True, timeout=RELOAD_TIMEOUT_S
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise _fail(f"代理重载命令失败 / the reload command failed: {reload}: {e}") from None
        if done.returncode != 0:
            raise _fail(
                f"代理重载命令失败 / the reload command failed ({done.returncode}): {reload}: "
                f"{done.stderr.strip()[:300]}"
            )
        _ok(f"代理已重载 / broker reloaded: {reload}")
        return
    typer.echo(
        "请让代理重读 CRL 与 ACL（systemctl reload mosquitto，即 SIGHUP）：之后新连接被拒绝，"
        "已连接的会话收发全部被拒（需 --broker-dir 更新 ACL）。\n"
        "Make the broker reread its CRL and ACL (systemctl reload mosquitto, i.e. SIGHUP): then "
        "new connections are refused and an open session can neither publish nor receive "
        "(with the ACL rewritten by --broker-dir)."
    )
