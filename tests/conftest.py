import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RESLEARN_SHARED_DATA", ROOT.parent / "shared" / "data"))


def require_data(path: Path, what: str) -> Path:
    """Skip when real data is absent; fail instead under RESLEARN_REQUIRE_DATA=1 (CI)."""
    if not Path(path).exists():
        msg = f"{what} not found at {path}"
        if os.environ.get("RESLEARN_REQUIRE_DATA") == "1":
            pytest.fail(msg + " (RESLEARN_REQUIRE_DATA=1)")
        pytest.skip(msg)
    return Path(path)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
