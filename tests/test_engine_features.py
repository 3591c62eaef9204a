"""The trainer's advertised options, each against the plain fp32 eager run: train.amp (bf16 and
fp16, the GradScaler state through checkpoints; auto from the CPU flags, recorded in run.json and
kept on resume), train.compile, train.channels_last, the cosine
schedule and train.keep_last. Tiny and CPU-sized: resnet20 at width 4 on 8x8 random images,
a few steps, one thread; no data set needed."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from reslearn.checkpoint import load_tensors
from reslearn.config import load_config
from reslearn.data.source import InMemorySource
from reslearn.engine import device as device_mod
from reslearn.engine.data import DataBundle
from reslearn.engine.device import native_bf16, resolve_amp
from reslearn.engine.logging import read_metrics
from reslearn.engine.schedule import LRPolicy
from reslearn.engine.trainer import Trainer
from reslearn.errors import ReslearnError

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, CUDA])]


def _bundle(device="cpu", channels_last=False, n=64, size=8):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    norm = lambda x: x.float().div(255).sub(0.5)  # noqa: E731
    kw = dict(normalize=norm, device=device, channels_last=channels_last)
    return DataBundle(
        train=InMemorySource(images, labels, batch_size=16, shuffle=True, drop_last=True, seed=0, **kw),
        evals={"test": InMemorySource(images[:32], labels[:32], batch_size=32, **kw)},
        num_classes=10, in_chans=3, image_size=(size, size), classes=[str(i) for i in range(10)],
        train_size=n, info={"name": "random"})


def _trainer(run_dir, *overrides, device="cpu", channels_last=False):
    cfg = load_config(None, ["model.kwargs.width=4", f"train.device={device}", "train.progress=false",
                             "train.tensorboard=false", "train.threads=1", "optim.batch_size=16",
                             "schedule.iterations=3", "schedule.milestones=[100]", "train.eval_every=100",
                             "train.log_every=1", "train.checkpoint_every=100",
                             f"train.channels_last={str(channels_last).lower()}", *overrides])
    return Trainer(cfg, run_dir=run_dir, data=_bundle(device, channels_last))


def _params(model):
    return torch.cat([p.detach().float().flatten().cpu() for p in model.parameters()])


def _run(run_dir, *overrides, **kw):
    """Train; return the run's initial and final parameters, the trainer, the dtypes conv1
    computed in, and the training loss of every step (metrics.csv, one row per step)."""
    t = _trainer(run_dir, *overrides, **kw)
    start, dtypes = _params(t.model), set()
    t.model.conv1.register_forward_hook(lambda m, i, out: dtypes.add(out.dtype))
    t.fit()
    losses = [float(r["train_loss"]) for r in read_metrics(run_dir / "metrics.csv")]
    return SimpleNamespace(start=start, end=_params(t.model), trainer=t, dtypes=dtypes, losses=losses)


def _relative_gap(run, ref):
    """|run - ref| of the final weights relative to how far training moved them (ref - start)."""
    return float((run.end - ref.end).norm() / (ref.end - ref.start).norm())


@pytest.fixture(scope="module")
def eager(tmp_path_factory):
    """The reference: fp32, eager, contiguous, 3 SGD steps."""
    ref = _run(tmp_path_factory.mktemp("eager"))
    assert ref.dtypes == {torch.float32} and (ref.end - ref.start).norm() > 0.01  # the weights moved
    return ref


# Mixed precision changes the arithmetic, so only closeness can be asked. Measured (torch 2.14,
# CPU) over the 3 steps: each step's loss within 0.38% (bf16) and 0.09% (fp16) of fp32's, and
# the 3-step weight update pointing the same way (cosine 0.94 and 0.97). The weights themselves
# differ by 34% and 23% of the update: on 4-channel layers right before BN the weight gradient is
# a sum of terms that nearly cancel, where 8- and 11-bit mantissas leave large relative errors.
# We require losses within 1% (bf16) and 0.3% (fp16) and a cosine above 0.9. A run that ignored
# train.amp would match exactly, and fails the dtype check instead.
@pytest.mark.parametrize("amp,dtype,loss_tol", [("bf16", torch.bfloat16, 0.01), ("fp16", torch.float16, 0.003)])
def test_amp_matches_fp32(tmp_path, eager, amp, dtype, loss_tol):
    run = _run(tmp_path, f"train.amp={amp}")
    assert torch.equal(run.start, eager.start)
    assert run.dtypes == {dtype}, "autocast did not reach the convolutions"
    assert run.trainer.scaler.is_enabled() == (amp == "fp16")
    assert len(run.losses) == len(eager.losses) == 3
    assert run.losses == pytest.approx(eager.losses, rel=loss_tol)
    cos = torch.nn.functional.cosine_similarity(run.end - run.start, eager.end - eager.start, dim=0)
    assert cos > 0.9


# A /proc/cpuinfo excerpt (one logical CPU); the flags line is what native_bf16 reads.
CPUINFO = ("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni {}\n"
           "bugs\t\t: spectre_v1\n\nprocessor\t: 1\n")


@pytest.mark.parametrize("flags,native", [("", False), ("avx512_fp16 amx_int8", False), ("avx512_bf16", True),
                                          ("amx_tile amx_bf16", True)])
def test_native_bf16_reads_the_cpu_flags(flags, native):
    text = CPUINFO.format(flags)
    cpu = torch.device("cpu")
    assert native_bf16(cpu, cpuinfo=text) is native
    assert resolve_amp("auto", cpu, cpuinfo=text) == ("bf16" if native else "none")
    assert resolve_amp("none", cpu, cpuinfo=text) == "none" and resolve_amp("fp16", cpu, cpuinfo=text) == "fp16"


def test_native_bf16_is_false_without_flags_and_on_mps():
    assert not native_bf16(torch.device("cpu"), cpuinfo="processor\t: 0\n")  # no flags line (not x86 Linux)
    assert not native_bf16(torch.device("mps"), cpuinfo=CPUINFO.format("avx512_bf16"))


def _flags(monkeypatch, *flags):
    """This machine's CPU, as the trainer's train.amp=auto sees it, has ``flags``."""
    monkeypatch.setattr(device_mod, "cpu_flags", lambda cpuinfo=None: set(flags))


@pytest.mark.parametrize("flags,amp,dtype", [(("avx2", "avx512_bf16"), "bf16", torch.bfloat16),
                                             (("avx2",), "none", torch.float32)])
def test_amp_auto_runs_and_records_the_resolved_precision(tmp_path, monkeypatch, flags, amp, dtype):
    _flags(monkeypatch, *flags)
    run = _run(tmp_path, "train.amp=auto")
    assert run.trainer.amp == amp and run.dtypes == {dtype}  # what ran is what is recorded
    assert json.loads((tmp_path / "run.json").read_text())["amp"] == amp


def test_resume_refuses_another_resolved_precision(tmp_path, monkeypatch):
    _flags(monkeypatch, "avx2")  # the first machine: fp32
    _trainer(tmp_path, "train.amp=auto").fit()
    _flags(monkeypatch, "avx2", "amx_bf16")  # the second: native bf16
    t = _trainer(tmp_path, "train.amp=auto", "schedule.iterations=6")
    with pytest.raises(ReslearnError, match=r"trained in precision 'none' \(its run.json\), but train.amp "
                                            r"resolves to 'bf16' on this device; a run must not mix precisions"):
        t.fit(resume=True)
    assert t.iteration == 0 and json.loads((tmp_path / "run.json").read_text())["amp"] == "none"
    _flags(monkeypatch, "avx2")  # back on a machine like the first, it resumes
    t = _trainer(tmp_path, "train.amp=auto", "schedule.iterations=6")
    t.fit(resume=True)
    assert t.iteration == 6


@pytest.mark.parametrize("device", DEVICES)
def test_fp16_grad_scaler_state_is_checkpointed_and_restored(tmp_path, device):
    """fp16 on the CPU works with torch >= 2.3 (autocast and GradScaler("cpu")); on CUDA the same
    path runs when a GPU is present."""
    full = _trainer(tmp_path / "full", "train.amp=fp16", "schedule.iterations=6", "train.checkpoint_every=3",
                    device=device)
    full.fit()
    _, meta = load_tensors(tmp_path / "full" / "checkpoints" / "iter-00000003.safetensors")
    # the scaler's state at iteration 3 is in the checkpoint: 3 steps without overflow since the start
    assert meta["scaler"]["_growth_tracker"] == 3 and meta["scaler"]["scale"] == 2.0**16
    # stop at 3, then resume to 6: the scaler continues from the checkpoint, not from scratch
    _trainer(tmp_path / "cut", "train.amp=fp16", "schedule.iterations=3", device=device).fit()
    resumed = _trainer(tmp_path / "cut", "train.amp=fp16", "schedule.iterations=6", device=device)
    resumed.fit(resume=True)
    assert resumed.scaler.state_dict() == full.scaler.state_dict()
    assert resumed.scaler.state_dict()["_growth_tracker"] == 6
    assert torch.equal(_params(resumed.model), _params(full.model))


def test_channels_last_matches_contiguous(tmp_path, eager):
    seen = []
    hook = lambda m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))  # noqa: E731
    t = _trainer(tmp_path, channels_last=True)
    t.model.conv1.register_forward_pre_hook(hook)
    assert torch.equal(_params(t.model), eager.start)
    t.fit()
    assert seen and all(seen), "the batches did not arrive in channels_last"
    assert t.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    # The same arithmetic in another memory order; only the order of float sums differs.
    # Measured: 1.5e-6 of the update; we allow 1e-4.
    run = SimpleNamespace(end=_params(t.model))
    assert _relative_gap(run, eager) < 1e-4


@pytest.mark.slow  # measured: 59 s wall (30 s CPU) with a cold inductor cache, one thread
def test_compile_matches_eager(tmp_path, eager):
    """torch.compile (inductor on the CPU, mostly compilation time) gives the
    eager losses (to the 6 digits metrics.csv keeps) and weights after 3 steps within 1e-4 of
    the update (fused kernels reorder float sums)."""
    run = _run(tmp_path, "train.compile=true")
    assert torch.equal(run.start, eager.start)
    assert hasattr(run.trainer.forward_model, "_orig_mod")  # the trainer really compiled it
    assert run.losses == pytest.approx(eager.losses, rel=1e-4)
    assert _relative_gap(run, eager) < 1e-4


def test_cosine_schedule_values():
    """lr(i) = min_lr + (lr - min_lr) (1 + cos(pi i / T)) / 2 (half a cosine over T iterations)."""
    cfg = load_config(None, ["schedule.kind=cosine", "schedule.iterations=1000", "schedule.min_lr=0.001",
                             "optim.lr=0.1"])
    pol = LRPolicy(cfg.schedule, cfg.optim.lr)
    assert pol.lr(0) == pytest.approx(0.1)
    assert pol.lr(250) == pytest.approx(0.001 + 0.099 * (1 + math.sqrt(0.5)) / 2)  # cos(pi/4)
    assert pol.lr(500) == pytest.approx(0.0505)  # half way: the mean of lr and min_lr
    assert pol.lr(750) == pytest.approx(0.001 + 0.099 * (1 - math.sqrt(0.5)) / 2)
    assert pol.lr(1000) == pytest.approx(0.001)
    lrs = [pol.lr(i) for i in range(1001)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))  # strictly decreasing, no steps


def test_cosine_schedule_drives_the_optimizer(tmp_path):
    t = _trainer(tmp_path, "schedule.kind=cosine", "schedule.iterations=4", "optim.lr=0.2")
    t.fit()
    rows = read_metrics(tmp_path / "metrics.csv")
    # the row of iteration k logs the lr of its step, k - 1: 0.2 (1 + cos(pi (k - 1) / 4)) / 2
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.2, 0.1 * (1 + math.sqrt(0.5)), 0.1,
                                                            0.1 * (1 - math.sqrt(0.5))], rel=1e-5)
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(float(rows[-1]["lr"]), rel=1e-5)


@pytest.mark.parametrize("keep", [1, 3])
def test_keep_last_prunes_to_exactly_n_checkpoints(tmp_path, keep):
    _trainer(tmp_path, "schedule.iterations=5", "train.checkpoint_every=1", f"train.keep_last={keep}").fit()
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == [f"iter-{i:08d}.safetensors" for i in range(6 - keep, 6)]
