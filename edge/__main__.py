"""``python -m edge`` = ``shilian edge`` (the same typer app, without the central import)."""

from edge.cli import app

app(prog_name="shilian edge")
