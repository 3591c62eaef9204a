"""Regenerate the README's model table from `reslearn models --markdown` (run: make readme)."""

import contextlib
import io
import re
from pathlib import Path

from reslearn.cli import main

readme = Path(__file__).resolve().parents[1] / "README.md"
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    main(["models", "--markdown"])
text = readme.read_text()
new = re.sub(
    r"(<!-- model-table:start -->\n)(?:.*?\n)?(<!-- model-table:end -->)",
    lambda m: m.group(1) + buf.getvalue().strip() + "\n" + m.group(2),
    text,
    flags=re.S,
)
readme.write_text(new)
print("README model table:", "updated" if new != text else "unchanged")
