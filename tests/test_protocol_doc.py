"""docs/protocol.md stays true: every example in it decodes with the contract's codec."""

from __future__ import annotations

import re
from pathlib import Path

from wire import Kind, decode
from wire.codec import SCHEMAS

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
BLOCK = re.compile(r"```json ([a-z/]+)\n(.*?)```", re.S)


def test_every_example_decodes() -> None:
    blocks = BLOCK.findall(DOC.read_text(encoding="utf-8"))
    kinds = {Kind(k) for k, _ in blocks}
    assert kinds == set(Kind), f"protocol.md lacks examples for {set(Kind) - kinds}"
    for kind, body in blocks:
        msg = decode(SCHEMAS[Kind(kind)], body.encode())
        assert msg.v == 1
