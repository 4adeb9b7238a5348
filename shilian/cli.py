"""``shilian``: one command for every part (edge, central, provisioning, the board simulator,
the demo)."""

from __future__ import annotations

import typer

from central.cli import app as central_app
from edge.cli import app as edge_app
from firmware_bridge.cli import firmware_app
from firmware_bridge.cli import sim as firmware_sim
from provisioning.cli import app as provision_app
from shilian.simulate.cli import simulate

app = typer.Typer(
    name="shilian",
    help="视联 shilian — 综治视联网 village nodes and central aggregator / village node agent and "
    "central aggregator for the comprehensive-governance video network.",
    no_args_is_help=True,
)
app.add_typer(edge_app, name="edge")
app.add_typer(central_app, name="central")
app.add_typer(provision_app, name="provision")
app.command("firmware-sim")(firmware_sim)
app.add_typer(firmware_app, name="firmware")
app.command("simulate")(simulate)


@app.command()
def demo(
    online_share: float = typer.Option(0.7688, help="在线比例 / share of villages online"),
    city: str = typer.Option("4501", help="市代码 / city code (default Nanning)"),
) -> None:
    """演示：自带 broker、central 与模拟节点群 / demo: own broker, central, simulated fleet."""
    from shilian.demo import run_demo

    raise typer.Exit(run_demo(city=city, online_share=online_share))


def main() -> None:
    app()
