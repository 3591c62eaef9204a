"""Regenerate the generated parts of the docs (run: make readme): the README's model table from
`reslearn models --markdown` and its pretrained-weights table from `reslearn models --pretrained
--markdown`, and every `<!-- results:NAME:start -->` table in README.md and
docs/*.md from docs/results/NAME.csv (rows written by the commands that measured them)."""

import contextlib
import io
import re
from pathlib import Path

from reslearn.cli import main
from reslearn.results import update_docs

ROOT = Path(__file__).resolve().parents[1]
readme = ROOT / "README.md"


def printed(*argv: str) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        main(list(argv))
    return buf.getvalue().strip()


# <!-- NAME:start --> ... <!-- NAME:end --> blocks of the README and what fills them
TABLES = {"model-table": printed("models", "--markdown"),
          "pretrained-table": printed("models", "--pretrained", "--markdown")}
for doc in [readme, *sorted((ROOT / "docs").glob("*.md"))]:
    text = doc.read_text()
    new = update_docs(text, ROOT / "docs" / "results")
    for name, table in TABLES.items() if doc == readme else ():
        new = re.sub(
            rf"(<!-- {name}:start -->\n)(?:.*?\n)?(<!-- {name}:end -->)",
            lambda m, table=table: m.group(1) + table + "\n" + m.group(2),
            new,
            flags=re.S,
        )
    doc.write_text(new)
    print(f"{doc.relative_to(ROOT)}:", "updated" if new != text else "unchanged")
