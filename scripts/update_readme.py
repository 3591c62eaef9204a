"""Regenerate the generated parts of the docs (run: make readme): the README's model table from
`reslearn models --markdown`, and every `<!-- results:NAME:start -->` table in README.md and
docs/*.md from docs/results/NAME.csv (rows written by the commands that measured them)."""

import contextlib
import io
import re
from pathlib import Path

from reslearn.cli import main
from reslearn.results import update_docs

ROOT = Path(__file__).resolve().parents[1]
readme = ROOT / "README.md"
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    main(["models", "--markdown"])
for doc in [readme, *sorted((ROOT / "docs").glob("*.md"))]:
    text = doc.read_text()
    new = update_docs(text, ROOT / "docs" / "results")
    if doc == readme:
        new = re.sub(
            r"(<!-- model-table:start -->\n)(?:.*?\n)?(<!-- model-table:end -->)",
            lambda m: m.group(1) + buf.getvalue().strip() + "\n" + m.group(2),
            new,
            flags=re.S,
        )
    doc.write_text(new)
    print(f"{doc.relative_to(ROOT)}:", "updated" if new != text else "unchanged")
