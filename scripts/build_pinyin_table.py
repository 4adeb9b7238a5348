"""Build ``registry/data/pinyin.tsv.xz``: the toneless pinyin readings of every character
used in the registry's unit names, for the dashboard's pinyin search (central.pinyin).

    python scripts/build_pinyin_table.py   # needs pypinyin (pip install pypinyin): dev only

Central reads the small table instead of importing pypinyin at run time: pypinyin's dictionary
adds ~57 MB to the process (measured) for ~6,000 characters central ever needs. Each line is
``<char>\\t<reading>[,<reading>...]``, the most common reading first (heteronyms kept, so that a
polyphonic character such as 长 matches both chang and zhang).
"""

from __future__ import annotations

import lzma
from pathlib import Path

from pypinyin import Style, pinyin

DATA = Path(__file__).resolve().parent.parent / "registry" / "data"


def main() -> None:
    chars: set[str] = set()
    for f in sorted(DATA.glob("[0-9][0-9].tsv.xz")):
        with lzma.open(f, "rt", encoding="utf-8") as fh:
            for line in fh:
                parts = line.rstrip("\n").split("\t")
                if len(parts) >= 2:
                    chars.update(c for c in parts[1] if "\u3400" <= c <= "\u9fff")
    lines = []
    for c in sorted(chars):
        readings = pinyin(c, style=Style.NORMAL, heteronym=True)[0]
        clean = []
        for r in readings:
            r = r.replace("ü", "v").lower()
            if r.isascii() and r.isalpha() and r not in clean:
                clean.append(r)
        if clean:
            lines.append(f"{c}\t{','.join(clean)}\n")
    out = DATA / "pinyin.tsv.xz"
    with lzma.open(out, "wt", encoding="utf-8", preset=9) as fh:
        fh.writelines(lines)
    print(f"{out}: {len(lines)} characters, {out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
