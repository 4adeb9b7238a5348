"""``shilian edge``: run the agent, check a config, hand the running agent an event.

Only typer is imported at module level: the agent's modules load when a command runs, so the
CLI stays quick and an idle node small.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="edge",
    help="村级节点 agent / village node agent.",
    no_args_is_help=True,
)

#: Requests written ahead of their replies by ``emit --count`` (the agent pipelines them).
EMIT_WINDOW = 256
#: Seconds ``emit`` waits for the agent's reply.
EMIT_TIMEOUT_S = 30.0


@app.command("check-config")
def check_config(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="配置文件 / config file (TOML)")
    ] = None,
    file: Annotated[
        Path | None, typer.Argument(help="配置文件（同 --config）/ config file, as --config")
    ] = None,
) -> None:
    """检查配置文件并解释每个错误 / check a config file and explain every error."""
    from edge.config import ConfigError, load_config, missing_files
    from edge.texts import text

    file = config or file
    if file is None:
        typer.echo("请用 --config 指定配置文件 / give the config file with --config", err=True)
        raise typer.Exit(2)

    try:
        cfg = load_config(file)
        if missing := missing_files(cfg):
            raise ConfigError(missing)
    except ConfigError as e:
        typer.echo(text("config_errors", n=len(e.problems)), err=True)
        for p in e.problems:
            typer.echo(f"  {p}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        text(
            "config_ok",
            node_id=cfg.node_id,
            host=cfg.broker.host,
            port=cfg.broker.port,
            outbox=cfg.outbox.path,
        )
    )


@app.command()
def run(
    config: Annotated[Path, typer.Option("--config", "-c", help="配置文件 / config file")],
) -> None:
    """运行 agent（SIGTERM/SIGINT 干净退出）/ run the agent (SIGTERM/SIGINT: clean stop).

    Execs ``python -m edge.runner`` (same PID) so the long-running process does not carry the
    CLI's imports: an idle node must stay small.
    """
    import os
    import sys

    import edge

    pkg_root = str(Path(edge.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
    # glibc reads this at start: one malloc arena, as the agent's few threads (outbox writer,
    # name lookups) allocate little and every extra arena is resident memory. Other C
    # libraries ignore it; an operator's own value wins.
    env.setdefault("MALLOC_ARENA_MAX", "1")
    sys.stdout.flush()
    sys.stderr.flush()
    # no_debug_ranges: no per-instruction column tables (tracebacks lose only the ^^^ markers);
    # about half a megabyte less for a process that runs for months.
    argv = [sys.executable, "-X", "no_debug_ranges", "-m", "edge.runner", "--config", str(config)]
    os.execve(sys.executable, argv, env)


@app.command()
def emit(
    kind: Annotated[str, typer.Option(help="事件类型 / event kind, e.g. panic")],
    socket_path: Annotated[
        Path, typer.Option("--socket", help="agent 本地套接字 / agent's local socket")
    ] = Path("/run/shilian/edge.sock"),
    priority: Annotated[str, typer.Option(help="alarm | device | info")] = "info",
    device: Annotated[str | None, typer.Option(help="设备 id / device id")] = None,
    data: Annotated[str, typer.Option(help="JSON 对象 / JSON object")] = "{}",
    count: Annotated[int, typer.Option(min=1, help="发送 N 个事件 / send N events")] = 1,
) -> None:
    """把事件交给运行中的 agent（落盘后返回）/ hand the running agent an event (durable)."""
    import json
    import socket

    from edge.texts import text

    try:
        payload = json.loads(data)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        typer.echo(text("bad_json"), err=True)
        raise typer.Exit(2)
    line = (
        json.dumps(
            {"op": "emit", "priority": priority, "kind": kind, "device": device, "data": payload},
            ensure_ascii=False,
        ).encode()
        + b"\n"
    )
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(EMIT_TIMEOUT_S)
        sock.connect(str(socket_path))
    except OSError as e:
        typer.echo(text("agent_unreachable", path=socket_path, detail=e), err=True)
        raise typer.Exit(1) from None
    failed = 0
    with sock, sock.makefile("rb") as replies:
        left = count
        while left:
            n = min(left, EMIT_WINDOW)
            sock.sendall(line * n)
            for _ in range(n):
                reply = json.loads(replies.readline() or b'{"ok":false,"error":"closed"}')
                if reply.get("ok"):
                    if count == 1:
                        typer.echo(json.dumps(reply, ensure_ascii=False))
                else:
                    failed += 1
                    typer.echo(text("emit_failed", detail=reply.get("error")), err=True)
            left -= n
    if count > 1:
        typer.echo(json.dumps({"ok": failed == 0, "sent": count - failed, "failed": failed}))
    if failed:
        raise typer.Exit(1)


@app.command()
def doctor(
    config: Annotated[Path, typer.Option("--config", "-c", help="配置文件 / config file")],
    central: Annotated[
        str | None, typer.Option(help="中心地址（核对时钟）/ central URL (clock check)")
    ] = None,
    lang: Annotated[str, typer.Option(help="zh | en")] = "zh",
) -> None:
    """检查本机安装：配置、发件箱、证书、代理、agent、时钟、串口、systemd / check an install.

    退出码 / exit code: 0 正常 / all good, 1 警告 / warnings, 2 故障 / failures.
    """
    from rich.console import Console
    from rich.table import Table

    from edge.doctor import Doctor, exit_code, render

    findings = Doctor(config, central=central).run()
    en = lang == "en"
    table = Table("", "check" if en else "检查项", "result" if en else "结果", show_lines=False)
    for row in render(findings, lang):
        table.add_row(*row)
    Console().print(table)
    raise typer.Exit(exit_code(findings))
