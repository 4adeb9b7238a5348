"""``shilian firmware-sim``: the simulated village alarm board on a pty; ``shilian firmware``:
signing keys, signed images, flashing a board (via the agent, or directly on a port).

Only typer is imported at module level (the simulator, cryptography, rich load when a command
runs)."""

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
    public_key: Annotated[
        Path | None,
        typer.Option(help="引导程序持有的公钥 / public key held by the bootloader"),
    ] = None,
    board_model: Annotated[str, typer.Option(help="板卡型号 / board model")] = "SIM-BOARD",
    flash_dir: Annotated[
        Path | None,
        typer.Option(help="模拟闪存目录（槽位与断点续传）/ simulated flash (slots, partial image)"),
    ] = None,
    trial_s: Annotated[
        float, typer.Option(help="试运行看门狗秒数 / trial watchdog seconds")
    ] = 30.0,
) -> None:
    """运行模拟报警板，从标准输入读取脚本 / run the simulated board, script on stdin.

    Script commands: press N, open N, close N, pir N, tamper N, restore N, cid DIGITS,
    cut SECONDS, replug, noise RATE, reboot [lose], firmware, sleep SECONDS, status, quit."""
    import asyncio

    from firmware_bridge.image import load_key
    from firmware_bridge.simulator import main

    key = load_key(public_key, 32) if public_key is not None else None

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
                public_key=key,
                board_model=board_model,
                flash_dir=flash_dir,
                trial_s=trial_s,
            )
        )
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


# -- shilian firmware: signed images and flashing ------------------------------------------------

firmware_app = typer.Typer(
    name="firmware",
    help="报警板固件：密钥、签名、检查、烧录 / alarm board firmware: keys, signing, flashing.",
    no_args_is_help=True,
)

#: Exit codes of ``firmware flash`` (documented in docs/edge.md).
EXIT_OK = 0
EXIT_ERROR = 1  # cannot reach the agent / open the port, bad arguments
EXIT_BAD_IMAGE = 2  # refused on the host: bad signature, tampered, wrong model
EXIT_REFUSED = 3  # the board refused the image
EXIT_ROLLED_BACK = 4  # the new image failed its trial; the board runs the old one
EXIT_STALLED = 5  # no progress (line down, board silent) or the board cannot update

#: ``result`` -> (exit code, zh, en)
RESULTS: dict[str, tuple[int, str, str]] = {
    "success": (EXIT_OK, "升级成功，新固件已确认", "updated; the new firmware is confirmed"),
    "already_running": (EXIT_OK, "板卡已运行该版本", "the board already runs this version"),
    "refused": (EXIT_REFUSED, "板卡拒绝了镜像", "the board refused the image"),
    "rolled_back": (
        EXIT_ROLLED_BACK,
        "新固件试运行失败，已回滚到旧版本",
        "the new firmware failed its trial and was rolled back",
    ),
    "unsupported": (EXIT_STALLED, "板卡不支持固件升级", "the board cannot be updated"),
    "stalled": (
        EXIT_STALLED,
        "传输无进展，已放弃（可重试续传）",
        "no progress; gave up (retry resumes)",
    ),
    "bad_signature": (EXIT_BAD_IMAGE, "镜像签名无效", "bad image signature"),
}
#: Update phases as shown while flashing.
PHASES = {
    "waiting_link": "等待串口链路 / waiting for the link",
    "begin": "开始 / starting",
    "sending": "传输 / sending",
    "verifying": "板卡校验 / board verifying",
    "rebooting": "重启进入新固件 / rebooting into it",
    "trial": "试运行 / on trial",
    "confirming": "确认 / confirming",
    "downloading": "下载 / downloading",
    "done": "完成 / done",
}


def _fail(code: int, message: str) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code)


@firmware_app.command()
def keygen(
    out: Annotated[Path, typer.Argument(help="私钥文件（公钥写到 .pub）/ private key file")],
) -> None:
    """生成 Ed25519 签名密钥对 / create an Ed25519 signing key pair (hex files)."""
    import os

    from firmware_bridge.image import keygen as make_keys

    if out.exists():
        raise _fail(EXIT_ERROR, f"{out} 已存在，不覆盖 / exists, not overwritten")
    private, public = make_keys()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(private.hex() + "\n")
    pub = out.with_name(out.name + ".pub")
    pub.write_text(public.hex() + "\n")
    typer.echo(f"私钥 / private key: {out} (0600)\n公钥 / public key: {pub}")


@firmware_app.command("sign")
def sign_cmd(
    key: Annotated[Path, typer.Option(help="私钥文件 / private key file")],
    version: Annotated[str, typer.Option(help="版本号 / version, e.g. 2.0.0")],
    out: Annotated[Path, typer.Option(help="输出镜像 / signed image to write")],
    board_model: Annotated[str, typer.Option(help="板卡型号 / board model")] = "SIM-BOARD",
    sim_behaviour: Annotated[
        str | None,
        typer.Option(
            help="模拟器固件：生成 SIZE 字节的模拟固件代替 PAYLOAD（ok / no-heartbeat / crash）"
            " / build a simulator firmware of --sim-size bytes instead of reading PAYLOAD",
        ),
    ] = None,
    sim_size: Annotated[int, typer.Option(help="模拟固件大小 / simulator firmware size")] = 65536,
    payload: Annotated[Path | None, typer.Argument(help="固件二进制 / firmware binary")] = None,
) -> None:
    """用私钥签名固件，生成镜像 / build a signed image from a payload file."""
    from firmware_bridge.image import SimBehaviour, load_key, sign, sim_payload

    try:
        private = load_key(key, 32)
        if sim_behaviour is not None:
            data = sim_payload(version, sim_size, SimBehaviour(sim_behaviour))
        elif payload is not None:
            data = payload.read_bytes()
        else:
            raise ValueError("需要 PAYLOAD 或 --sim-behaviour / PAYLOAD or --sim-behaviour needed")
        img = sign(data, board_model=board_model, version=version, private_key=private)
    except (OSError, ValueError) as e:
        raise _fail(EXIT_ERROR, f"签名失败 / cannot sign: {e}") from None
    out.write_bytes(img.to_bytes())
    typer.echo(f"{out}: {img.board_model} {img.version} {len(img.payload)} B sha256 {img.image_id}")


@firmware_app.command()
def inspect(
    image: Annotated[Path, typer.Argument(help="固件镜像 / signed image")],
    public_key: Annotated[
        Path | None, typer.Option(help="公钥文件：同时验证签名 / public key: verify too")
    ] = None,
) -> None:
    """显示镜像信息（并验证签名）/ show an image's header (and verify its signature)."""
    import json

    from firmware_bridge.image import ImageError, load_key, parse_image, verify

    try:
        data = image.read_bytes()
        img = parse_image(data)
        if public_key is not None:
            verify(data, load_key(public_key, 32))
    except ImageError as e:
        raise _fail(EXIT_BAD_IMAGE, str(e)) from None
    except (OSError, ValueError) as e:
        raise _fail(EXIT_ERROR, str(e)) from None
    info = {
        "board_model": img.board_model,
        "version": img.version,
        "payload_size": len(img.payload),
        "sha256": img.image_id,
        "signature": "verified" if public_key is not None else "not checked",
    }
    typer.echo(json.dumps(info, ensure_ascii=False, indent=2))


@firmware_app.command("flash")
def flash_cmd(
    image: Annotated[Path, typer.Argument(help="固件镜像 / signed image")],
    public_key: Annotated[Path, typer.Option(help="公钥文件 / trusted public key file")],
    port: Annotated[
        str | None,
        typer.Option("--port", help="直接使用串口（无 agent 运行时）/ serial port, no agent"),
    ] = None,
    socket_path: Annotated[
        Path, typer.Option("--socket", help="agent 本地套接字 / agent's local socket")
    ] = Path("/run/shilian/edge.sock"),
    baud: Annotated[int, typer.Option(help="波特率 / baud rate (with --port)")] = 115200,
    board_model: Annotated[
        str | None, typer.Option(help="要求的板卡型号 / required board model")
    ] = None,
    confirm_after: Annotated[
        float, typer.Option(help="确认前试运行秒数 / seconds of trial before confirming")
    ] = 3.0,
) -> None:
    """烧录固件：默认经运行中的 agent，或 --port 直连 / flash via the agent, or --port.

    Exit codes: 0 done, 1 error, 2 bad image, 3 board refused, 4 rolled back, 5 stalled."""
    from firmware_bridge.image import ImageError, load_key, verify

    try:
        data = image.read_bytes()
        img = verify(data, load_key(public_key, 32), board_model=board_model)
    except ImageError as e:
        raise _fail(EXIT_BAD_IMAGE, f"镜像被拒绝 / image refused: {e}") from None
    except (OSError, ValueError) as e:
        raise _fail(EXIT_ERROR, str(e)) from None
    typer.echo(f"{img.board_model} {img.version} sha256 {img.image_id[:16]}…")
    if port is not None:
        result, detail = _flash_port(port, baud, img, confirm_after)
    else:
        result, detail = _flash_agent(socket_path, image.resolve())
    code, zh, en = RESULTS.get(result, (EXIT_ERROR, result, result))
    line = f"{zh} / {en}" + (f": {detail}" if detail else "")
    if code:
        raise _fail(code, line)
    typer.echo(line)


def _flash_port(device: str, baud: int, img: object, confirm_after: float) -> tuple[str, str]:
    import asyncio
    import logging

    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    from firmware_bridge.flasher import flash_device
    from firmware_bridge.image import Image
    from firmware_bridge.transport import PortError
    from firmware_bridge.update import Progress as UpdateProgress

    assert isinstance(img, Image)
    # Link state changes go to the progress bar; only errors to the log (stderr).
    logging.getLogger("shilian.firmware_bridge").setLevel(logging.ERROR)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeElapsedColumn()
    ) as bar:
        task = bar.add_task(PHASES["waiting_link"], total=len(img.signed))

        def show(p: UpdateProgress) -> None:
            bar.update(task, completed=p.sent, description=PHASES.get(p.phase.value, p.phase))

        try:
            final = asyncio.run(
                flash_device(
                    device, img, baudrate=baud, on_progress=show, confirm_after_s=confirm_after
                )
            )
        except PortError as e:
            raise _fail(EXIT_ERROR, str(e)) from None
        except KeyboardInterrupt:
            raise _fail(130, "已中断，可重试续传 / interrupted; a retry resumes") from None
    assert final.result is not None
    return final.result.value, final.detail


def _flash_agent(socket_path: Path, image: Path) -> tuple[str, str]:
    """Ask the running agent (it owns the port) to flash, then poll its progress."""
    import json
    import socket
    import time

    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(str(socket_path))
    except OSError as e:
        raise _fail(
            EXIT_ERROR,
            f"无法连接 agent（{socket_path}）；没有 agent 时用 --port / "
            f"cannot reach the agent ({e}); use --port when no agent runs",
        ) from None
    with sock, sock.makefile("rb") as replies:

        def ask(req: dict[str, object]) -> dict[str, object]:
            sock.sendall(json.dumps(req).encode() + b"\n")
            reply = json.loads(replies.readline() or b'{"ok":false,"error":"closed"}')
            assert isinstance(reply, dict)
            return reply

        started = ask({"op": "firmware-update", "path": str(image)})
        if not started.get("ok"):
            raise _fail(EXIT_ERROR, f"agent 拒绝 / agent refused: {started.get('error')}")
        with Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeElapsedColumn()
        ) as bar:
            task = bar.add_task(PHASES["waiting_link"], total=None)
            while True:
                st = ask({"op": "firmware-status"})
                upd = st.get("update")
                if isinstance(upd, dict):
                    phase = str(upd.get("state", ""))
                    bar.update(
                        task,
                        completed=int(upd.get("bytes") or 0),
                        total=int(upd.get("total") or 0) or None,
                        description=PHASES.get(phase, phase),
                    )
                    if phase == "done":
                        return str(upd.get("result")), str(upd.get("detail") or "")
                time.sleep(0.3)
