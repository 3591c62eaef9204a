"""The training engine on real CIFAR-10: learning, resume after SIGKILL (bit for bit), DDP
equivalence, checkpoints, NaN loss."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, require_data
from reslearn.checkpoint import load_tensors, save_tensors
from reslearn.config import load_config
from reslearn.engine.schedule import LRPolicy
from reslearn.engine.trainer import Trainer, train
from reslearn.errors import ReslearnError



@pytest.fixture(scope="module")
def cifar_root():
    import pathlib

    root = pathlib.Path(os.environ.get("RESLEARN_DATA_DIR", ROOT / ".data"))
    require_data(root / "cifar-10-batches-py", "CIFAR-10 (scripts/prepare_data.sh)")
    return root


def tiny(root, *extra):
    """A small deterministic CPU run: resnet20 at width 4 on 1024 CIFAR-10 images."""
    return [f"data.root={root}", "data.train_subset=1024", "data.test_subset=512",
            "model.kwargs.width=4", "optim.batch_size=32", "schedule.iterations=24",
            "schedule.milestones=[16]", "train.eval_every=12", "train.log_every=4",
            "train.checkpoint_every=6", "train.progress=false", "train.tensorboard=false",
            "train.deterministic=true", "train.threads=1", *extra]


def test_short_training_learns_real_cifar(cifar_root, tmp_path):
    """300 iterations of resnet20 (width 8) on 10k CIFAR-10 images must beat chance (90% error)
    by a wide margin: we require test error below 70%."""
    cfg = load_config("cifar10_quick", [f"data.root={cifar_root}", "data.train_subset=10000",
                                        "data.test_subset=2000", "model.kwargs.width=8",
                                        "schedule.iterations=300", "schedule.milestones=[200, 260]",
                                        "train.eval_every=150", "train.progress=false",
                                        "train.tensorboard=false", "optim.batch_size=64"])
    final = train(cfg, run_dir=tmp_path / "run")
    assert final["test"]["top1_err"] < 70.0, final
    assert final["test"]["top5_err"] < final["test"]["top1_err"]
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("iteration,") and len(rows) > 5
    assert (tmp_path / "run" / "best.safetensors").is_file() and (tmp_path / "run" / "config.yaml").is_file()
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["git_commit"] and run["reslearn_version"]


# Four samples over six classes; the target's rank (1 = highest logit) is 1, 2, 6 and 5.
TOPK_LOGITS = torch.tensor([[0.1, 0.9, 0.3, 0.2, 0.5, 0.4],   # target 1: rank 1
                            [0.8, 0.1, 0.7, 0.0, 0.2, 0.3],   # target 2: rank 2
                            [0.5, 0.4, 0.3, 0.2, 0.1, 0.6],   # target 4: rank 6 (last)
                            [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]])  # target 4: rank 5 (just inside top-5)
TOPK_TARGETS = torch.tensor([1, 2, 4, 4])


class _Batches:
    """A BatchSource over fixed (inputs, targets) batches."""

    def __init__(self, *batches):
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def iter_epoch(self, epoch, start=0):
        yield from self.batches[start:]


def test_top1_top5_error_hand_worked():
    from reslearn.engine.evaluate import errors_from_probs
    from reslearn.tasks import ClassificationTask, topk_wrong

    # top-1 misses samples 1, 2, 3; top-5 misses only sample 2 (its target is last of six)
    assert topk_wrong(TOPK_LOGITS, TOPK_TARGETS, 1) == 3
    assert topk_wrong(TOPK_LOGITS, TOPK_TARGETS, 5) == 1
    assert topk_wrong(TOPK_LOGITS, TOPK_TARGETS, 6) == 0
    assert topk_wrong(TOPK_LOGITS[:, :3], torch.tensor([0, 2, 1, 0]), 5) == 0  # k > classes: all hit
    # the engine's evaluation over two batches (identity "model": the inputs are the logits)
    src = _Batches((TOPK_LOGITS[:2], TOPK_TARGETS[:2]), (TOPK_LOGITS[2:], TOPK_TARGETS[2:]))
    ev = ClassificationTask().evaluate(torch.nn.Identity(), src)
    assert (ev["top1_err"], ev["top5_err"], ev["n"]) == (75.0, 25.0, 4)
    # cross-entropy by hand: log(sum(exp(z))) - z_target, averaged over the four samples
    nll = [math.log(sum(math.exp(v) for v in row)) - row[t] for row, t in
           zip(TOPK_LOGITS.tolist(), TOPK_TARGETS.tolist())]
    assert ev["loss"] == pytest.approx(sum(nll) / 4, rel=1e-6)
    # `reslearn eval` and `ensemble` score softmax outputs: same ranks, same errors, same loss
    probs = TOPK_LOGITS.softmax(-1)
    assert errors_from_probs(probs, TOPK_TARGETS) == pytest.approx(
        {"loss": sum(nll) / 4, "top1_err": 75.0, "top5_err": 25.0, "n": 4}, rel=1e-6)


def _cli(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "reslearn.cli", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(cifar_root, tmp_path):
    p = _cli(["train", "--recipe", "cifar10_quick", *tiny(cifar_root, "optim.lr=1e12", "train.checkpoint_every=1",
              "optim.momentum=0.0", "schedule.milestones=[1000]", "schedule.iterations=200"),
              "--run-dir", str(tmp_path / "nan")])
    _, err = p.communicate(timeout=600)
    assert p.returncode == 2
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("reslearn") and "warning:" not in ln]
    assert len(lines) == 1 and "became" in lines[0] and "last good checkpoint" in lines[0]
    ckpts = sorted((tmp_path / "nan" / "checkpoints").glob("*.safetensors"))
    assert ckpts
    tensors, meta = load_tensors(ckpts[-1])
    assert all(torch.isfinite(v).all() for k, v in tensors.items() if k.startswith("model.") and v.is_floating_point())


def test_checkpoint_corruption_and_truncation(tmp_path):
    p = tmp_path / "c.safetensors"
    save_tensors(p, {"w": torch.arange(100, dtype=torch.float32)}, {"kind": "weights"})
    t, meta = load_tensors(p)
    assert torch.equal(t["w"], torch.arange(100, dtype=torch.float32)) and meta["kind"] == "weights"
    raw = p.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(raw[: len(raw) - 37])
    with pytest.raises(ReslearnError, match="truncated or corrupted"):
        load_tensors(tmp_path / "trunc.safetensors")
    flipped = bytearray(raw)
    flipped[-5] ^= 0xFF
    (tmp_path / "flip.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(ReslearnError, match="corrupted \\(tensor checksum mismatch\\)"):
        load_tensors(tmp_path / "flip.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ReslearnError, match="truncated or corrupted"):
        load_tensors(tmp_path / "junk.safetensors")
    with pytest.raises(ReslearnError, match="not found"):
        load_tensors(tmp_path / "missing.safetensors")
    # no temp files left behind by the atomic writer
    assert not list(tmp_path.glob(".*.tmp"))


def test_resume_refuses_corrupted_checkpoint(cifar_root, tmp_path):
    cfg = load_config("cifar10_quick", tiny(cifar_root, "schedule.iterations=6"))
    train(cfg, run_dir=tmp_path / "r")
    ck = sorted((tmp_path / "r" / "checkpoints").glob("*.safetensors"))[-1]
    ck.write_bytes(ck.read_bytes()[:-100])
    with pytest.raises(ReslearnError, match="truncated or corrupted"):
        Trainer(load_config("cifar10_quick", tiny(cifar_root, "schedule.iterations=12")), run_dir=tmp_path / "r").fit(resume=True)
    with pytest.raises(ReslearnError, match="already holds a run"):
        Trainer(cfg, run_dir=tmp_path / "r").fit()


def test_cpu_channels_last_hazard_is_found_on_the_meta_device():
    # A strided 1x1 conv with < 8 input channels (resnet18 at width 4: layer2's shortcut) corrupts
    # the heap in PyTorch's CPU channels_last backward; the trainer turns channels_last off then.
    from reslearn.engine.trainer import cpu_channels_last_hazard

    assert cpu_channels_last_hazard("resnet18", {"width": 4})
    assert not cpu_channels_last_hazard("resnet18", {})  # paper width 64
    assert not cpu_channels_last_hazard("resnet50", {"width": 4})  # its strided 1x1 convs see 16+
    assert not cpu_channels_last_hazard("resnet20", {"width": 4})  # option A: no 1x1 convs
    assert not cpu_channels_last_hazard("resnet18", {"no_such_kwarg": 1})  # left to the real build


def test_lr_policies():
    cfg = load_config("cifar10").schedule
    p = LRPolicy(cfg, 0.1)
    assert [p.lr(i) for i in (0, 31999, 32000, 48000, 63999)] == pytest.approx([0.1, 0.1, 0.01, 0.001, 0.001])
    w = LRPolicy(load_config("cifar10_deep").schedule, 0.1)
    assert w.lr(0) == 0.01
    for i in range(60):  # 90% error: still warming up
        w.after_step(i, 9, 10)
    assert w.warming and w.lr(60) == 0.01
    for i in range(60, 120):  # 70% error over the window: warm-up ends, back to 0.1
        w.after_step(i, 7, 10)
    assert not w.warming and w.lr(120) == pytest.approx(0.1)
    pl = LRPolicy(load_config(None, ["schedule.kind=plateau", "schedule.patience=2"]).schedule, 0.1)
    for e in (50, 40, 41, 42):
        pl.after_eval(e)
    assert pl.lr(0) == pytest.approx(0.01)
    state = pl.state_dict()
    pl2 = LRPolicy(pl.cfg, 0.1)
    pl2.load_state_dict(json.loads(json.dumps(state)))
    assert pl2.lr(0) == pl.lr(0)


def test_git_commit_ignores_measured_rows_but_not_code(tmp_path):
    """A series of runs from one clean checkout writes its rows into docs/results/; the later runs
    must still name the clean commit, while a changed source file marks the run -dirty."""
    import subprocess

    from reslearn.engine.trainer import git_commit

    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "docs" / "results" / "rows.csv").write_text("a\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "init"], check=True)
    clean = git_commit(tmp_path)
    assert len(clean) == 40 and not clean.endswith("-dirty")
    (tmp_path / "docs" / "results" / "rows.csv").write_text("a\nb\n")
    assert git_commit(tmp_path) == clean
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == clean + "-dirty"
