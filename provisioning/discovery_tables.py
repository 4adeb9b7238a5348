"""The discovery result as tables for the technician (Chinese first)."""

from __future__ import annotations

from provisioning.discover import Discovery


def show(found: Discovery) -> None:
    """The result as rich tables (Chinese first)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    cams = Table("摄像机 / camera", "地址 / address", "型号 / hardware", "位置 / location")
    for c in found.cameras:
        cams.add_row(c.name or c.endpoint, " ".join(c.xaddrs), c.hardware or "", c.location or "")
    if not found.cameras:
        cams.add_row("未发现 / none found", "", "", "")
    console.print(cams)
    boards = Table("串口 / port", "报警板 / board", "固件 / firmware", "输入 / inputs")
    for b in found.boards:
        if b.found:
            boards.add_row(b.device, f"[green]{b.board_id}[/]", b.fw_version, str(b.n_inputs))
        else:
            boards.add_row(b.device, f"[red]✗[/] {b.error}", "", "")
    if not found.boards:
        boards.add_row("未发现串口 / no serial port", "", "", "")
    console.print(boards)
    if found.sip:
        sip = Table("SIP 终端 / terminal", "结果 / result", "User-Agent")
        for s in found.sip:
            mark = "[green]✓[/]" if s.reachable else "[red]✗[/]"
            detail = f"{s.status} {s.reason}" if s.status is not None else (s.error or "")
            sip.add_row(s.address, f"{mark} {detail}", s.user_agent or "")
        console.print(sip)
