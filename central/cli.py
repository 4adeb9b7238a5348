"""``shilian central …`` commands. Only typer is imported here: the rest loads on demand."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="中心汇聚服务 / central aggregator: ingest, coverage, HTTP API.", no_args_is_help=True
)


@app.command()
def run(
    config: Annotated[Path, typer.Option("--config", "-c", help="配置文件 / central.toml")],
) -> None:
    """运行中心服务 / run central (MQTT ingest, HTTP API and /metrics)."""
    import asyncio
    import logging

    from central.config import ConfigError, load_config
    from central.service import serve

    try:
        cfg = load_config(config)
    except ConfigError as e:
        for line in e.lines:
            typer.echo(line, err=True)
        raise typer.Exit(2) from None
    logging.basicConfig(
        level=cfg.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        code = asyncio.run(serve(cfg))
    except asyncio.CancelledError:
        code = 1  # a second signal: forced exit
    raise typer.Exit(code)


@app.command("check-config")
def check_config(
    file: Annotated[Path, typer.Argument(help="配置文件 / central.toml")],
) -> None:
    """检查配置文件 / validate a config file and explain every error."""
    from central.config import ConfigError, load_config

    try:
        load_config(file)
    except ConfigError as e:
        typer.echo(f"{file}: 配置无效 / invalid configuration", err=True)
        for line in e.lines:
            typer.echo(f"  {line}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{file}: 配置有效 / configuration OK")


@app.command("import-registry")
def import_registry_cmd(
    db: Annotated[Path, typer.Option("--db", help="中心数据库 / central's SQLite database")],
    scope: Annotated[
        str,
        typer.Option(
            "--scope", help='省/市/县代码，"" 或 all 为全国 / province, city or county code, or all'
        ),
    ],
) -> None:
    """导入行政区划 / import the village registry for a province, city, county or the country."""
    from central.registry import RegistryError, import_registry
    from central.store import SqliteStore

    code = "" if scope.strip().lower() in ("", "all") else scope.strip()
    store = SqliteStore(db)
    try:
        count = import_registry(store.conn, code)
    except RegistryError as e:
        typer.echo(f"导入失败 / import failed: {e}", err=True)
        raise typer.Exit(1) from None
    finally:
        store.close()
    typer.echo(f"已导入 {count} 个村级单位 / imported {count} villages (scope {code or 'all'})")
