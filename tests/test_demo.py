"""The first command (`make demo` / `reslearn demo`) as a new user meets it: a fresh clone with
nothing beside it, the data chain, the verdict, and logs that read as lines."""

import io
import os
import re
import shutil
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest

from conftest import ROOT, require_data
from reslearn import demo
from reslearn.engine.logging import Progress
from reslearn.errors import ReslearnError

FASHION = Path("/usr/share/datasets/fashion-mnist")
# A smoke budget with the demo's nets at a tiny width: about wiring, not about learning.
SMOKE = ["schedule.iterations=4", "schedule.milestones=[2, 3]", "schedule.warmup_max_iterations=1",
         "data.train_subset=256", "data.test_subset=64", "optim.batch_size=16", "model.kwargs.width=4",
         "train.eval_every=2", "train.log_every=1", "train.checkpoint_every=4"]


def _bare_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of a user with an empty home and no data roots of ours."""
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESLEARN_")}
    return {**env, "HOME": str(home), "OMP_NUM_THREADS": "1", **extra}


def _cli(args, *, cwd: Path, env: dict[str, str], src: Path = ROOT / "src"):
    env = {**env, "PYTHONPATH": str(src)}
    return subprocess.run([sys.executable, "-m", "reslearn.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory) -> Path:
    """`git clone` of this repository into a folder with nothing beside it (no ../shared)."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    dest = tmp_path_factory.mktemp("user") / "reslearn"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True, timeout=300)
    assert not (dest.parent / "shared").exists() and not (dest / ".data").exists()
    return dest


def test_fresh_clone_runs_the_demo_to_its_verdict(fresh_clone, tmp_path):
    require_data(FASHION, "Debian's Fashion-MNIST (apt-get install dataset-fashion-mnist)")
    env = _bare_env(tmp_path)
    r = subprocess.run(["bash", "scripts/prepare_data.sh"], cwd=fresh_clone, env={**env, "PY": sys.executable},
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    assert "../shared/data not found; only Debian's Fashion-MNIST is prepared" in r.stdout
    assert "Fashion-MNIST found in /usr/share/datasets/fashion-mnist" in r.stdout
    out = tmp_path / "demo"
    r = _cli(["demo", "--no-install", "--no-download", "--out", str(out), "--set", *SMOKE], cwd=fresh_clone,
             env=env, src=fresh_clone / "src")
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert lines[0].startswith("data: no CIFAR-10 (cifar-10-batches-py/) in ")
    assert lines[1] == f"data: Fashion-MNIST found in {FASHION}"
    assert "data.name=fashion-mnist" in lines[2]
    for net in ("plain20", "plain56", "resnet20", "resnet56"):
        assert re.search(rf"^{net}\s+\d+\.\d\d\s+\d+\.\d\d$", r.stdout, re.M), (net, r.stdout)
    assert re.search(r"^plain-56 (trains|does not train) worse than plain-20 \(\d+\.\d\d% vs \d+\.\d\d% ", r.stdout, re.M)
    assert re.search(r"^ResNet-56 (trains|does not train) better than plain-56", r.stdout, re.M)
    assert re.search(r"^verdict: (the paper's finding is reproduced|not fully reproduced at this budget)", r.stdout, re.M)
    assert f"curves: {out / 'curves.png'}" in r.stdout
    assert (out / "curves.png").stat().st_size > 10_000
    # progress went to stderr as plain lines (not a terminal): no carriage-return frames
    assert "\r" not in r.stderr and re.search(r"resnet56 it 4/4 \(100%\) \| loss \d", r.stderr)


def test_no_data_at_all_is_one_line_and_exit_2(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    env = _bare_env(tmp_path, RESLEARN_DATA_DIR=str(empty), RESLEARN_SYSTEM_DATASETS=str(empty))
    r = _cli(["demo", "--no-install", "--no-download", "--out", str(tmp_path / "d")], cwd=tmp_path, env=env)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in r.stderr, r.stderr
    assert err[0].startswith("reslearn demo: error: no data for the demo; get some in one of three ways")
    for way in ("cifar-10-batches-py/", "apt-get install dataset-fashion-mnist", "CIFAR-10 is downloaded"):
        assert way in err[0]
    assert "data: no Fashion-MNIST" in r.stdout
    assert not (tmp_path / "d").exists()


def test_chain_order_when_everything_fails(tmp_path, monkeypatch):
    """Not root / no apt and offline: each step says what it tried, then the one-line error."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("RESLEARN_DATA_DIR", str(empty))
    monkeypatch.setenv("RESLEARN_SYSTEM_DATASETS", str(empty))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo.shutil, "which", lambda name: None)

    def offline(*a, **k):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    said = []
    with pytest.raises(ReslearnError, match="no data for the demo"):
        demo.find_demo_data(say=said.append)
    assert [s.split(" (")[0].split(" in ")[0] for s in said] == [
        "data: no CIFAR-10", "data: cannot install dataset-fashion-mnist here",
        "data: no Fashion-MNIST", "data: downloading CIFAR-10", "data: could not download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    assert not list(empty.iterdir()), "a failed download left files behind"


def test_chain_prefers_cifar_then_fashion(tmp_path, monkeypatch):
    root = tmp_path / "data"
    (root / "cifar-10-batches-py").mkdir(parents=True)
    monkeypatch.setenv("RESLEARN_DATA_DIR", str(root))
    said = []
    assert demo.find_demo_data(install=False, download=False, say=said.append) == [
        "data.name=cifar10", f"data.root={root}"]
    assert said == [f"data: CIFAR-10 found in {root}"]
    monkeypatch.setenv("RESLEARN_DATA_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # not tmp_path: ~/data is a data root
    monkeypatch.chdir(tmp_path)
    fake = tmp_path / "datasets" / "fashion-mnist"
    fake.mkdir(parents=True)
    (fake / "train-images-idx3-ubyte.gz").write_bytes(b"")
    monkeypatch.setenv("RESLEARN_SYSTEM_DATASETS", str(fake.parent))
    said.clear()
    assert demo.find_demo_data(install=False, download=False, say=said.append) == ["data.name=fashion-mnist"]
    assert said[-1] == f"data: Fashion-MNIST found in {fake}"


def test_progress_is_plain_lines_off_a_terminal():
    buf = io.StringIO()
    p = Progress(total=200, initial=0, desc="resnet20", stream=buf)
    assert p.bar is None  # StringIO is not a terminal
    p.update(100)
    p.show({"train_loss": 1.85505, "train_err": 69.9375, "lr": 0.1, "images_per_s": 957.3})
    p.close()
    line = buf.getvalue()
    assert "\r" not in line
    assert re.fullmatch(r"resnet20 it 100/200 \(50%\) \| loss 1\.8551 \| err 69\.94% \| lr 0\.1 \| 957 img/s \| "
                        r"ETA \d+s\n", line), line


def test_progress_bar_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    buf = Tty()
    p = Progress(total=10, initial=0, desc="plain20", stream=buf)
    assert p.bar is not None
    p.update(5)
    p.show({"train_loss": 2.0, "train_err": 80.0, "lr": 0.1, "images_per_s": 10.0})
    p.close()
    assert "\r" in buf.getvalue() and "plain20" in buf.getvalue()
