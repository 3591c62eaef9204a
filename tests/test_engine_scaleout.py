"""Scale-out and resumption on real CIFAR-10: a run killed with SIGKILL resumes bit for bit from
its last checkpoint, and 2 gloo DDP ranks (with and without gradient accumulation, and resumed)
match one process with the same global batch."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

from conftest import ROOT
from reslearn import create_model
from reslearn.checkpoint import load_tensors
from reslearn.engine.trainer import find_latest_checkpoint
from test_engine import cifar_root, tiny  # noqa: F401  (fixture)


def _cli(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "reslearn.cli", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _checkpoint_iteration(run_dir):
    ck = find_latest_checkpoint(run_dir)
    return None if ck is None else int(ck.stem.split("-")[1])


def _logged_iterations(run_dir):
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:  # a row being appended may be cut short: skip it
        return [int(r["iteration"]) for r in csv.DictReader(f) if r.get("elapsed_s")]


def _kill_past_a_checkpoint(proc, run_dir, timeout=300):
    """SIGKILL ``proc`` once it has logged iterations past its last checkpoint (so that resuming
    must rewind both the weights and metrics.csv). The check runs while the process is stopped
    (SIGSTOP), so what it saw is what the kill leaves."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
        proc.send_signal(signal.SIGSTOP)
        ck, logged = _checkpoint_iteration(run_dir), _logged_iterations(run_dir)
        if ck is not None and logged and max(logged) > ck:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            return ck, max(logged)
        proc.send_signal(signal.SIGCONT)
    raise AssertionError("the run finished (or stalled) before it logged past a checkpoint")


def test_resume_after_sigkill_is_bit_identical(cifar_root, tmp_path):
    args = ["train", "--recipe", "cifar10_quick", *tiny(cifar_root, "schedule.iterations=200",
            "schedule.milestones=[100]", "train.checkpoint_every=10", "train.eval_every=50",
            "train.log_every=1")]
    ref = _cli(args + ["--run-dir", str(tmp_path / "ref")])
    out, err = ref.communicate(timeout=600)
    assert ref.returncode == 0, err
    victim = _cli(args + ["--run-dir", str(tmp_path / "victim")])
    ck, logged = _kill_past_a_checkpoint(victim, tmp_path / "victim")
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "victim" / "model.safetensors").exists()
    assert 0 < ck < logged < 200, (ck, logged)
    resumed = _cli(args + ["--run-dir", str(tmp_path / "victim"), "--resume"])
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    # it continued from the last checkpoint, not from iteration 0 (nor from where it was killed)
    assert json.loads((tmp_path / "victim" / "run.json").read_text())["resumed_from"] == ck
    a = load_file(tmp_path / "ref" / "model.safetensors")
    b = load_file(tmp_path / "victim" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    # the metrics file of the resumed run matches the uninterrupted one row for row (but timings):
    # the rows the killed attempt logged past the checkpoint were dropped and logged again once
    strip = lambda p: [r.rsplit(",", 2)[0] for r in (p / "metrics.csv").read_text().splitlines()]  # noqa: E731
    assert strip(tmp_path / "ref") == strip(tmp_path / "victim")
    assert _logged_iterations(tmp_path / "victim") == list(range(1, 201))


def _torchrun(args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "reslearn.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=env)


def _params(run_dir, iteration=4):
    """Parameters (not BN statistics) at ``iteration``, from the run's training checkpoint."""
    tensors, _ = load_tensors(run_dir / "checkpoints" / f"iter-{iteration:08d}.safetensors")
    return {k[6:]: v for k, v in tensors.items()
            if k.startswith("model.") and "running_" not in k and "num_batches" not in k}


def _max_diff(a, b):
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _initial_params(run_dir):
    """The weights the run started from: the trainer seeds with train.seed (0) right before it
    builds the model, the same on every rank."""
    torch.manual_seed(0)
    model = create_model("resnet20", **json.loads((run_dir / "run.json").read_text())["model_kwargs"])
    return {k: v for k, v in model.state_dict().items() if "running_" not in k and "num_batches" not in k}


def _ddp_common(cifar_root, *extra):
    return ["train", "--recipe", "cifar10_quick", *tiny(cifar_root, "schedule.iterations=6",
            "train.eval_every=6", "train.checkpoint_every=2", "train.deterministic=false", *extra)]


# DDP and one process add the same gradients in another order, so they agree only up to
# rounding, and these tiny nets amplify rounding chaotically after a few steps. Measured (width 4,
# lr 0.1, 16-image shards): one process on 1 and on 2 threads (the same sums reordered) stays
# within 3e-7 for 4 steps, then drifts 5e-4 apart by step 6 and 3e-2 by step 12 (8-image shards,
# even without momentum and augmentation: 2e-4 at step 3, 1e-3 at step 4). So the runs are
# compared at the iteration-4 checkpoint, within 1e-5 (measured: 0 and 9e-8), while training has
# moved the weights by more than 0.05.
TOL = 1e-5


def _assert_same_training(single, ddp):
    a, b = _params(single), _params(ddp)
    assert _max_diff(a, b) < TOL, _max_diff(a, b)
    assert _max_diff(b, _initial_params(ddp)) > 0.05  # the weights really moved (measured 0.2)
    assert json.loads((ddp / "run.json").read_text())["world_size"] == 2


def test_ddp_two_gloo_ranks_match_single_process(cifar_root, tmp_path):
    """2 processes x 16 images (DDP, gloo) == 1 process accumulating 2 x 16 (same global batch
    of 32, and BN sees the same 16-image shards)."""
    common = _ddp_common(cifar_root)
    single = _cli(common + ["optim.accum_steps=2", "--run-dir", str(tmp_path / "single")])
    _, err = single.communicate(timeout=600)
    assert single.returncode == 0, err
    ddp = _torchrun(common + ["--run-dir", str(tmp_path / "ddp")])
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    _assert_same_training(tmp_path / "single", tmp_path / "ddp")


def test_ddp_with_accumulation_and_resume(cifar_root, tmp_path):
    """2 ranks x 2 accumulation steps x 16 images == 1 process x 4 x 16 (global batch 64, BN on
    the same 16-image shards; 8-image shards are chaotic from the third step). Then the DDP run,
    cut back to its iteration-4 checkpoint as a crash would leave it and resumed under DDP, ends
    bit for bit where the uninterrupted run ended."""
    common = _ddp_common(cifar_root, "optim.batch_size=64")
    single = _cli(common + ["optim.accum_steps=4", "--run-dir", str(tmp_path / "single")])
    _, err = single.communicate(timeout=600)
    assert single.returncode == 0, err
    ddp = _torchrun(common + ["optim.accum_steps=2", "--run-dir", str(tmp_path / "ddp")])
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    _assert_same_training(tmp_path / "single", tmp_path / "ddp")
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "ddp", cut)
    for name in ("model.safetensors", "best.safetensors", "final.json", "checkpoints/iter-00000006.safetensors"):
        (cut / name).unlink()
    assert _checkpoint_iteration(cut) == 4
    resumed = _torchrun(common + ["optim.accum_steps=2", "--run-dir", str(cut), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run = json.loads((cut / "run.json").read_text())
    assert (run["resumed_from"], run["world_size"]) == (4, 2)
    full, again = load_file(tmp_path / "ddp" / "model.safetensors"), load_file(cut / "model.safetensors")
    assert all(torch.equal(full[k], again[k]) for k in full), "the resumed DDP run differs"
