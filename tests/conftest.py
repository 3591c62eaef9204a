import importlib
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
        if _required():
            pytest.fail(msg + " (RESLEARN_REQUIRE_DATA=1)")
        pytest.skip(msg)
    return Path(path)


@pytest.fixture(scope="module")
def data_root() -> Path:
    """The prepared data folder ($RESLEARN_DATA_DIR or .data) with CIFAR-10's python batches and
    its JPEG copy (scripts/prepare_data.sh)."""
    root = Path(os.environ.get("RESLEARN_DATA_DIR", ROOT / ".data"))
    require_data(root / "cifar-10-batches-py", "CIFAR-10 (scripts/prepare_data.sh)")
    require_data(root / "cifar10-jpeg", "CIFAR-10 JPEG copy")
    return root


def _required() -> bool:
    return os.environ.get("RESLEARN_REQUIRE_DATA") == "1"


def require_module(name: str):
    """Import an optional dependency (the ``dev`` extra installs them all): skip when it is
    missing, but fail under RESLEARN_REQUIRE_DATA=1 (CI), where a broken install must not pass
    silently as hundreds of skipped tests. At module level it skips or fails the whole module."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        msg = f"optional dependency {name} is not importable ({e}); pip install -e '.[dev]'"
        if _required():
            pytest.fail(msg + " (RESLEARN_REQUIRE_DATA=1)", pytrace=False)
        pytest.skip(msg, allow_module_level=True)


# Under `pytest -n 2` on 2 cores, torch's default of one intra-op thread per core gives 4 busy
# threads on 2 cores; they spin against each other and small-model tests run many times slower.
# Subprocesses the tests start (CLI runs) inherit OMP_NUM_THREADS=1 too.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
