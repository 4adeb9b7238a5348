"""JSON Schema (draft 2020-12) of every payload of the contract, generated from the pydantic models
in :mod:`wire.messages`, so that an independent client can validate what it sends and receives
against exactly what this code accepts.

    python -m wire.schema            # (re)write docs/schemas/<kind>.json
    python -m wire.schema --check    # exit 1 if a committed file differs from the models

``tests/test_wire_schema.py`` runs the check, so the committed files cannot drift from the code.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from wire.codec import SCHEMAS
from wire.limits import TOPIC_ROOT
from wire.messages import CentralCaps
from wire.topics import CENTRAL_CAPS_TOPIC, Kind

#: Where the committed schemas live, relative to the repository root.
SCHEMA_DIR = Path("docs") / "schemas"
_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def file_name(kind: Kind) -> str:
    """``cmd/req`` -> ``cmd-req.json``."""
    return kind.value.replace("/", "-") + ".json"


def schema(kind: Kind) -> dict[str, Any]:
    """The JSON Schema of the payload on a node's ``kind`` topic."""
    model = SCHEMAS[kind]
    topic = f"{TOPIC_ROOT}/<node>/{'device/<device>' if kind is Kind.DEVICE else kind.value}"
    doc: dict[str, Any] = {"$schema": _DIALECT, "$comment": f"payload of {topic}"}
    doc.update(model.model_json_schema(mode="validation"))
    return doc


#: Payloads on topics that are not a node's: file name, topic, model.
CENTRAL_FILES = (("central-caps.json", CENTRAL_CAPS_TOPIC, CentralCaps),)


def render(kind: Kind) -> str:
    return _dump(schema(kind))


def render_central(topic: str, model: type[CentralCaps]) -> str:
    doc: dict[str, Any] = {"$schema": _DIALECT, "$comment": f"payload of {topic}"}
    doc.update(model.model_json_schema(mode="validation"))
    return _dump(doc)


def _dump(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def file_names() -> list[str]:
    """Every schema file the contract has."""
    return [file_name(k) for k in Kind] + [name for name, _, _ in CENTRAL_FILES]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="wire JSON Schemas / 线协议 JSON Schema")
    p.add_argument("--dir", type=Path, default=SCHEMA_DIR, help="output directory")
    p.add_argument("--check", action="store_true", help="compare instead of writing")
    args = p.parse_args(argv)
    stale = []
    files = [(file_name(k), render(k)) for k in Kind]
    files += [(name, render_central(topic, model)) for name, topic, model in CENTRAL_FILES]
    for name, text in files:
        path = args.dir / name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
        else:
            args.dir.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        print(
            "模式文件与代码不一致，请运行 python -m wire.schema / schema files differ from the "
            f"wire models, run python -m wire.schema: {', '.join(stale)}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
