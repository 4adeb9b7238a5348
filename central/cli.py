"""``shilian central …`` commands. Only typer is imported here: the rest loads on demand."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from central.accounts import AccountStore
    from central.config import CentralConfig
    from central.db import Target
    from registry import Registry

app = typer.Typer(
    help="中心汇聚服务 / central aggregator: ingest, coverage, HTTP API.", no_args_is_help=True
)


@app.command()
def run(
    config: Annotated[Path, typer.Option("--config", "-c", help="配置文件 / central.toml")],
    role: Annotated[
        str,
        typer.Option(
            "--role",
            help="all：接入与接口 / all: ingest and API (default); ingest：共享组中的一个接入进程"
            "（PostgreSQL 与 [ingest] shared_group）/ ingest: one ingest process of a shared "
            "group (PostgreSQL and [ingest] shared_group, docs/scale.md)",
        ),
    ] = "all",
) -> None:
    """运行中心服务 / run central (MQTT ingest, HTTP API and /metrics)."""
    import asyncio
    import logging

    from central.db import DatabaseUnreachable
    from central.service import serve

    cfg = _load(config)
    logging.basicConfig(
        level=cfg.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if role not in ("all", "ingest"):
        typer.echo(
            f"--role：应为 all 或 ingest / --role must be all or ingest, not {role!r}", err=True
        )
        raise typer.Exit(2)
    if role == "ingest":
        if cfg.store.url is None or cfg.ingest.shared_group is None:
            typer.echo(
                "--role ingest 需要 [store] url（PostgreSQL）与 [ingest] shared_group / "
                "--role ingest needs [store] url (PostgreSQL) and [ingest] shared_group",
                err=True,
            )
            raise typer.Exit(2)
        if cfg.broker.tls is not None:
            # The broker makes a certificate's CN the client id: one certificate for every
            # member session would have them take each other over.
            typer.echo(
                "--role ingest 暂不支持 [broker.tls]（每个成员会话需各自的证书）/ --role ingest "
                "does not run with [broker.tls] yet (each member session needs its own "
                "certificate; docs/scale.md)",
                err=True,
            )
            raise typer.Exit(2)
        from central.shared_ingest import serve_ingest

        try:
            raise typer.Exit(asyncio.run(serve_ingest(cfg)))
        except DatabaseUnreachable as e:
            typer.echo(str(e), err=True)
            raise typer.Exit(1) from None
    try:
        code = asyncio.run(serve(cfg))
    except asyncio.CancelledError:
        code = 1  # a second signal: forced exit
    except DatabaseUnreachable as e:
        typer.echo(str(e), err=True)
        code = 1
    raise typer.Exit(code)


def _load(config: Path) -> CentralConfig:
    from central.config import ConfigError, load_config

    try:
        return load_config(config)
    except ConfigError as e:
        for line in e.lines:
            typer.echo(line, err=True)
        raise typer.Exit(2) from None


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="配置文件 / central.toml ([store]: SQLite or PostgreSQL)"),
]


def _target(config: Path | None, db: Path | None) -> Target:
    """The database ``--config``'s ``[store]`` names, or the SQLite file ``--db``."""
    from central.db import target

    if (config is None) == (db is None):
        typer.echo("请给出 --config 或 --db 之一 / give one of --config or --db", err=True)
        raise typer.Exit(2)
    if db is not None:
        return db
    assert config is not None
    return target(_load(config).store)


def _shown(t: Target) -> str:
    from central.db import shown

    return shown(t)


@app.command()
def migrate(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="配置文件 / central.toml ([store])")
    ] = None,
    db: Annotated[
        Path | None, typer.Option("--db", help="中心 SQLite 数据库 / central's SQLite database")
    ] = None,
    status_only: Annotated[
        bool, typer.Option("--status", help="只显示版本，不升级 / show versions, change nothing")
    ] = False,
) -> None:
    """数据库结构版本与升级 / show the database's schema version and upgrade it to the newest
    (central does this itself at start)."""
    from central import migrate as migrations

    target = _target(config, db)
    shown = _shown(target)
    try:
        before = migrations.status(target)
        after = before if status_only else migrations.upgrade(target)
    except Exception as e:  # the database's own error (unreachable, locked, not ours) for the user
        typer.echo(f"数据库错误 / database error ({shown}): {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"数据库 / database: {shown}")
    typer.echo(f"当前版本 / current: {before.current or '无 / none'}")
    typer.echo(f"最新版本 / head: {after.head}")
    if not status_only and after.current != before.current:
        typer.echo(f"已升级到 / upgraded to: {after.current}")
    elif before.up_to_date:
        typer.echo("已是最新 / up to date")


@app.command("check-config")
def check_config(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="配置文件 / central.toml")
    ] = None,
    file: Annotated[
        Path | None, typer.Argument(help="配置文件（同 --config）/ central.toml, as --config")
    ] = None,
) -> None:
    """检查配置文件 / validate a config file and explain every error."""
    from central.config import ConfigError, load_config

    file = config or file
    if file is None:
        typer.echo("请用 --config 指定配置文件 / give the config file with --config", err=True)
        raise typer.Exit(2)

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
    scope: Annotated[
        str,
        typer.Option(
            "--scope", help='省/市/县代码，"" 或 all 为全国 / province, city or county code, or all'
        ),
    ],
    config: ConfigOption = None,
    db: Annotated[
        Path | None, typer.Option("--db", help="中心 SQLite 数据库 / central's SQLite database")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="新版区划数据目录（与 registry/data 同结构），默认用软件包自带的 / "
            "folder of a newer edition laid out like registry/data (default: the packaged one)",
        ),
    ] = None,
) -> None:
    """导入或更新行政区划 / import or update the village registry.

    新增、改名、撤销的代码都会报告；撤销的村保留，其节点被标记而不丢失 / added, renamed and
    retired codes are reported; retired villages are kept and their nodes flagged."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from central import registry_store
    from central.db import open_db
    from registry import RegistryError

    code = "" if scope.strip().lower() in ("", "all") else scope.strip()
    target = _target(config, db)
    try:
        conn = open_db(target)
    except Exception as e:  # the database's own error (unreachable, not ours) for the user
        typer.echo(f"数据库错误 / database error ({_shown(target)}): {e}", err=True)
        raise typer.Exit(1) from None
    try:
        with Progress(
            TextColumn("导入 / importing"),
            BarColumn(),
            MofNCompleteColumn(),
            transient=True,
            console=_stderr_console(),
        ) as bar:
            task = bar.add_task("units", total=None)
            report = registry_store.import_edition(
                conn,
                code,
                data,
                lambda done, total: bar.update(task, completed=done, total=total),
            )
        flagged = [
            str(row[0])
            for retired in report.retired
            for row in conn.fetchall("SELECT node_id FROM nodes WHERE village = ?", (retired,))
        ]
    except (RegistryError, OSError) as e:
        typer.echo(f"导入失败 / import failed: {e}", err=True)
        raise typer.Exit(1) from None
    finally:
        conn.close()
    typer.echo(
        f"已导入 {report.villages} 个村级单位（新增 {report.added}，改名 {report.renamed}，"
        f"撤销 {len(report.retired)}）/ imported {report.villages} villages (added "
        f"{report.added}, renamed {report.renamed}, retired {len(report.retired)}; "
        f"scope {code or 'all'})"
    )
    for node in flagged:
        typer.echo(
            f"注意：节点 {node} 所在村代码已被撤销，节点保留并标记 / "
            f"note: node {node} is bound to a retired village code; kept and flagged"
        )


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


user_app = typer.Typer(
    help="登录用户 / operator accounts: add, list, passwd, disable, enable.", no_args_is_help=True
)
app.add_typer(user_app, name="user")

DbOption = Annotated[
    Path | None,
    typer.Option("--db", help="中心 SQLite 数据库 / central's SQLite database ([store] path)"),
]
UserName = Annotated[str, typer.Argument(help="用户名 / user name")]
PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="从标准输入读密码 / read it from stdin")
]


def _password(stdin: bool) -> str:
    import sys

    if stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(typer.prompt("密码 / password", hide_input=True, confirmation_prompt=True))


def _registry(t: Target) -> Registry | None:
    from central import registry_store
    from central.db import open_db

    conn = open_db(t)
    try:
        return registry_store.load(conn)
    finally:
        conn.close()


def _fail(e: Exception) -> typer.Exit:
    typer.echo(f"失败 / failed: {e}", err=True)
    return typer.Exit(1)


def _audit(store: AccountStore, action: str, name: str, detail: dict[str, Any]) -> None:
    """Record a successful account change made here, as the local login user."""
    import time

    from central import audit

    store.audit(
        audit.Entry(
            time.time(), f"cli:{audit.local_login()}", None, "local", action, name, "ok", detail
        )
    )


@user_app.command("add")
def user_add(
    name: UserName,
    config: ConfigOption = None,
    db: DbOption = None,
    role: Annotated[
        str, typer.Option("--role", help="viewer | operator | admin（查看/值班/管理）")
    ] = "viewer",
    scope: Annotated[
        str,
        typer.Option("--scope", help='管辖范围：区划代码，"" 为全部 / division code, "" for all'),
    ] = "",
    password_stdin: PasswordStdin = False,
) -> None:
    """新增用户 / add a user (the password is prompted for, or read from stdin)."""
    import time

    from central.accounts import AccountError, AccountStore, parse_role

    t = _target(config, db)
    store = AccountStore(t)
    try:
        r = parse_role(role)
        registry = _registry(t)
        if scope and registry is not None and registry.unit(scope) is None:
            raise AccountError(
                "unknown_unit",
                f"区划代码 {scope} 不在本中心的登记范围内",
                f"{scope} is not a unit of this central's registry",
            )
        user = store.add(name, r, scope, _password(password_stdin), time.time())
        _audit(store, "user_add", name, {"role": r.name, "scope": scope})
    except AccountError as e:
        raise _fail(e) from None
    finally:
        store.close()
    typer.echo(
        f"已添加用户 {user.name}（{user.role.name}，范围 {user.scope or '全部'}）"
        f" / added {user.name} ({user.role.name}, scope {user.scope or 'all'})"
    )


@user_app.command("list")
def user_list(config: ConfigOption = None, db: DbOption = None) -> None:
    """列出用户 / list users."""
    from central.accounts import AccountStore

    store = AccountStore(_target(config, db))
    try:
        users = store.users()
    finally:
        store.close()
    if not users:
        typer.echo("尚无用户 / no users")
    for u in users:
        state = "停用 disabled" if u.disabled else "启用 enabled"
        typer.echo(f"{u.name}\t{u.role.name}\t{u.scope or '*'}\t{state}")


def _change(
    db: Target, name: str, action: str, *, password: str | None = None, disable: bool = False
) -> None:
    """Set ``password``, or disable/enable ``name``; audited as ``action``."""
    import time

    from central.accounts import AccountError, AccountStore

    store = AccountStore(db)
    try:
        if password is not None:
            store.set_password(name, password, time.time())
        else:
            store.set_disabled(name, disable, time.time())
        _audit(store, action, name, {})
    except AccountError as e:
        raise _fail(e) from None
    finally:
        store.close()


@user_app.command("passwd")
def user_passwd(
    name: UserName,
    config: ConfigOption = None,
    db: DbOption = None,
    password_stdin: PasswordStdin = False,
) -> None:
    """修改密码（并注销其会话）/ set a new password (ends the user's sessions)."""
    _change(_target(config, db), name, "user_passwd", password=_password(password_stdin))
    typer.echo(f"已修改 {name} 的密码 / password of {name} changed")


@user_app.command("disable")
def user_disable(name: UserName, config: ConfigOption = None, db: DbOption = None) -> None:
    """停用用户（立即注销其会话）/ disable a user (ends their sessions at once)."""
    _change(_target(config, db), name, "user_disable", disable=True)
    typer.echo(f"已停用 {name} / {name} disabled")


@user_app.command("enable")
def user_enable(name: UserName, config: ConfigOption = None, db: DbOption = None) -> None:
    """启用用户 / enable a user."""
    _change(_target(config, db), name, "user_enable", disable=False)
    typer.echo(f"已启用 {name} / {name} enabled")


def parse_since(text: str) -> float:
    """``2026-12-01``, ``2026-12-01 08:00[:00]`` (local time) or Unix seconds → Unix seconds."""
    import datetime as dt

    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    for fmt in ("%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"):
        try:
            return dt.datetime.strptime(text, fmt).timestamp()
        except ValueError:
            continue
    raise ValueError(
        f"无法识别的时间 {text[:40]!r}：应为 2026-12-01、2026-12-01 08:00 或 Unix 秒 / "
        f"unknown time {text[:40]!r}: use 2026-12-01, 2026-12-01 08:00 or Unix seconds"
    )


@app.command("audit")
def audit_cmd(
    config: ConfigOption = None,
    db: DbOption = None,
    user: Annotated[str | None, typer.Option("--user", help="按用户 / by user")] = None,
    action: Annotated[str | None, typer.Option("--action", help="按操作 / by action")] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="起始时间：2026-12-01、2026-12-01 08:00 或 Unix 秒 / since: a date, a date and "
            "time (local) or Unix seconds",
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100_000)] = 100,
) -> None:
    """审计日志（最新在前）/ the audit log, newest first."""
    import json
    import time

    from central import audit
    from central.accounts import AccountStore

    if since is not None:
        try:
            parse_since(since)
        except ValueError as e:
            typer.echo(str(e), err=True)
            raise typer.Exit(2) from None
    store = AccountStore(_target(config, db))  # migrates it if central never ran: an empty log
    try:
        start = None if since is None else parse_since(since)
        _, rows = audit.list_audit(store.db, audit.AuditFilter(user, action, start), limit, 0)
    finally:
        store.close()
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["ts"]))
        detail = json.dumps(r["detail"], ensure_ascii=False) if r["detail"] else ""
        typer.echo(
            f"{when}\t{r['user'] or '-'}\t{r['role'] or '-'}\t{r['address']}\t{r['action']}"
            f"\t{r['target']}\t{r['outcome']}\t{detail}".rstrip()
        )
