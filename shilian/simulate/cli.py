"""``shilian simulate``: the command line of the fleet simulator (zh / en help)."""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from typing import Annotated

import typer

from shilian.simulate.check import CentralCoverage
from shilian.simulate.plan import PlanError, Scenario, SimSpec
from shilian.simulate.runner import Simulation, default_workers


async def _restart_command(command: str) -> None:
    proc = await asyncio.create_subprocess_exec(*shlex.split(command))
    if await proc.wait() != 0:
        print(f"重启命令失败 / the restart command failed: {command}", file=sys.stderr)


def simulate(
    scope: Annotated[
        str, typer.Option(help="区划选择：市/县/乡代码 / registry selection code")
    ] = "4501",
    nodes: Annotated[int, typer.Option(min=1, help="模拟节点数 / simulated nodes")] = 2000,
    coverage: Annotated[
        float, typer.Option(min=0.0001, max=1.0, help="覆盖率 / target coverage")
    ] = 0.8,
    scenario: Annotated[Scenario, typer.Option(help="场景 / scenario")] = Scenario.STEADY,
    broker: Annotated[str, typer.Option(help="MQTT 代理 host:port / broker")] = "127.0.0.1:1883",
    check: Annotated[
        str, typer.Option(help="中心地址，核对覆盖率 / central URL to check against")
    ] = "",
    user: Annotated[
        str,
        typer.Option(
            help="中心用户（密码取自 SHILIAN_PASSWORD）/ central user (password: SHILIAN_PASSWORD)"
        ),
    ] = "",
    phase: Annotated[float, typer.Option(help="每阶段秒数 / seconds per phase")] = 60.0,
    settle: Annotated[
        float, typer.Option(help="中心的反应时间 / seconds central gets to show it")
    ] = 10.0,
    restart_seconds: Annotated[
        float, typer.Option(help="代理重启后核对秒数 / seconds checked after the broker restart")
    ] = 120.0,
    restart_command: Annotated[
        str, typer.Option(help="重启代理的命令 / command that restarts the broker (broker-restart)")
    ] = "",
    county: Annotated[
        str, typer.Option(help="停电的县 / county for county-outage (default: largest)")
    ] = "",
    flap_share: Annotated[
        float, typer.Option(help="抖动节点比例 / share of flapping nodes")
    ] = 0.05,
    flap_period: Annotated[float, typer.Option(help="抖动周期秒数 / seconds down or up")] = 10.0,
    skew_share: Annotated[
        float, typer.Option(help="时钟偏差节点比例 / share of skewed clocks")
    ] = 0.2,
    skew_minutes: Annotated[float, typer.Option(help="时钟偏差分钟 / ± minutes of skew")] = 30.0,
    health_interval: Annotated[float, typer.Option(help="健康上报间隔秒 / health interval")] = 30.0,
    event_interval: Annotated[
        float, typer.Option(help="事件平均间隔秒（0 无）/ mean event interval")
    ] = 600.0,
    workers: Annotated[int, typer.Option(help="进程数（0 自动）/ worker processes (0: auto)")] = 0,
    poll: Annotated[float, typer.Option(help="采样间隔秒 / seconds between checks")] = 1.0,
    seed: Annotated[int, typer.Option(help="随机种子 / seed")] = 1,
    tls_ca: Annotated[str, typer.Option(help="CA 文件：使用 TLS / CA file: use TLS")] = "",
    tls_cert: Annotated[str, typer.Option(help="客户端证书 / client certificate")] = "",
    tls_key: Annotated[str, typer.Option(help="客户端私钥 / client key")] = "",
) -> None:
    """模拟节点群并核对中心显示 / simulate a fleet of nodes and check what central shows.

    每个节点是一个真实的 MQTT 5 连接（出生、遗嘱、健康、事件）。退出码 1：中心显示与场景不符。
    Every node is a real MQTT 5 connection (birth, will, health, events). Exit code 1: central
    did not show what the scenario says."""
    host, _, port = broker.rpartition(":")
    try:
        spec = SimSpec(
            scope=scope,
            nodes=nodes,
            coverage=coverage,
            scenario=scenario,
            seed=seed,
            phase_s=phase,
            settle_s=settle,
            restart_s=restart_seconds,
            county=county or None,
            flap_share=flap_share,
            flap_period_s=flap_period,
            skew_share=skew_share,
            skew_minutes=skew_minutes,
            health_interval_s=health_interval,
            event_interval_s=event_interval,
            host=host or "127.0.0.1",
            port=int(port),
            tls_ca=tls_ca or None,
            tls_cert=tls_cert or None,
            tls_key=tls_key or None,
            workers=workers or default_workers(nodes),
        )
        sim = Simulation.of(spec, poll_s=poll)
    except (ValueError, PlanError) as e:
        raise typer.BadParameter(str(e)) from e
    if restart_command:
        sim.restart = lambda: _restart_command(restart_command)
    elif scenario is Scenario.BROKER_RESTART:
        print("未给出 --restart-command：请在开始后按时重启代理 / no --restart-command: restart "
              f"the broker yourself {phase:.0f} s after the start", file=sys.stderr)  # fmt: skip
    raise typer.Exit(asyncio.run(_run(sim, check, user)))


async def _run(sim: Simulation, check: str, user: str) -> int:
    if check:
        token = os.environ.get("SHILIAN_TOKEN")
        password = os.environ.get("SHILIAN_PASSWORD", "")
        async with CentralCoverage(check, token=token, user=user, password=password) as central:
            sim.central = central
            ok = await sim.run()
    else:
        ok = await sim.run()
    if sim.verdict is not None and check:
        for line in sim.verdict.report():
            print(line)
    return 0 if ok else 1
