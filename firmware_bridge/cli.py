"""``shilian firmware-sim``: the simulated village alarm board on a pty.

Only typer is imported at module level (the simulator loads when the command runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="firmware-sim",
    help="模拟报警板（串口 pty）/ simulated alarm board on a pty.",
    no_args_is_help=True,
)


@app.callback()
def _group() -> None:
    """模拟报警板 / simulated village alarm board (``sim``; firmware update tools later)."""


@app.command()
def sim(
    link_path: Annotated[
        Path,
        typer.Option(help="指向 pty 从端的符号链接 / symlink created to the slave pty"),
    ] = Path("/tmp/shilian-board"),
    inputs: Annotated[int, typer.Option(help="输入路数 / number of inputs")] = 8,
    board_id: Annotated[str, typer.Option(help="板卡编号 / board id")] = "SIM-0001",
    fw_version: Annotated[str, typer.Option(help="固件版本 / firmware version")] = "1.0.0",
    baud: Annotated[int, typer.Option(help="波特率 / baud rate (8N1)")] = 115200,
    noise: Annotated[float, typer.Option(help="每字节误码率 / bit errors per byte")] = 0.0,
    seed: Annotated[int | None, typer.Option(help="随机种子 / RNG seed")] = None,
) -> None:
    """运行模拟报警板，从标准输入读取脚本 / run the simulated board, script on stdin.

    Script commands: press N, open N, close N, pir N, tamper N, restore N, cid DIGITS,
    cut SECONDS, replug, noise RATE, reboot [lose], sleep SECONDS, status, quit."""
    import asyncio

    from firmware_bridge.simulator import main

    try:
        asyncio.run(
            main(
                link_path=link_path,
                n_inputs=inputs,
                board_id=board_id,
                fw_version=fw_version,
                baudrate=baud,
                noise=noise,
                seed=seed,
            )
        )
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
