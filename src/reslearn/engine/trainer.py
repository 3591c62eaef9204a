"""The training engine: plain PyTorch, iteration-based, resumable bit for bit.

``train(cfg)`` builds data, model, optimizer and LR policy from a resolved ``Config``, runs the
iterations, evaluates, logs, checkpoints atomically and returns the final metrics. Under
``torchrun`` it trains with DistributedDataParallel (gloo on CPU, nccl on CUDA).

The parts, in the order a run uses them: ``init_distributed`` (ranks and device),
``resolve_model_kwargs`` (the model's arguments from the data), ``wrap_distributed`` (SyncBN and
DDP), ``build_optimizer``; then ``Trainer.fit``, which claims the run folder (one run per folder:
``engine.rundir``), resumes or starts afresh, and runs ``Trainer._loop``: its steps
(``Trainer._steps``), the rows, evaluations and checkpoints their ``Cadence`` calls for, a stop
where a signal asked (``engine.interrupt``) and the end of the run (``Trainer._finish``).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import random
import signal
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .. import __version__
from ..checkpoint import (
    atomic_write_text,
    check_state_dict,
    find_latest_checkpoint,
    flatten_optimizer,
    load_tensors,
    save_tensors,
    tensors_to_json,
    unflatten_optimizer,
)
from ..config import Config, OptimConfig, config_to_dict, dump_config
from ..errors import Interrupted, ReslearnError
from ..models.base import ClassifierModel
from ..registry import create_model, model_info
from ..results import machine_description
from ..tasks import ClassificationTask, Task
from .data import DataBundle, build_data
from .device import auto_threads, auto_workers, resolve_amp, select_device
from .interrupt import InterruptFlag
from .logging import LogWindow, MetricLogger, Progress, RowOutput
from .rundir import check_run_dir, clear_run, lock_run_dir
from .schedule import LRPolicy

__all__ = ["train", "select_device", "git_commit", "Trainer", "NonFiniteLoss", "find_latest_checkpoint",
           "build_optimizer", "param_groups", "build_ema", "build_task", "resolve_model_kwargs",
           "init_distributed", "wrap_distributed", "default_run_dir"]


class NonFiniteLoss(ReslearnError):
    """The loss or the weights became NaN or infinite: the run stops, its checkpoints stay good."""


# Measured rows land in docs/results/ of the same checkout; a change there is data the runs wrote,
# not code, so it does not make the next run of a series "-dirty".
RESULTS_PATHSPEC = ":(exclude)docs/results"


def git_commit(root: Path | None = None) -> str:
    """HEAD's sha of the checkout at ``root`` (default: this package's), with ``-dirty`` when
    tracked files outside docs/results/ have changed."""
    try:
        root = root or Path(__file__).resolve().parents[3]
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                RESULTS_PATHSPEC], cwd=root, capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except Exception:
        return "unknown"


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover
        pass
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def cpu_channels_last_hazard(name: str, kwargs: dict[str, Any]) -> bool:
    """Whether model ``name`` has a strided 1x1 convolution with fewer than 8 input channels.

    On the CPU, PyTorch's oneDNN backward of such a convolution in channels_last memory corrupts
    the heap (measured with torch 2.14.1: 2-5 input channels abort or segfault within a few steps;
    1, 6, 8 and 12 do not), so a run would die mid-way. Only narrow test widths have such
    layers; real widths (16+ channels) do not. Checked on the meta device: no memory, no data."""
    try:
        with torch.device("meta"):
            model = create_model(name, **kwargs)
    except Exception:  # kwargs that need the data (checked properly later): no verdict here
        return False
    return any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and max(m.stride) > 1 and m.in_channels < 8
               for m in model.modules())


def _use_channels_last(cfg: Config, device: torch.device) -> bool:
    if not cfg.train.channels_last:
        return False
    if device.type == "cpu" and cpu_channels_last_hazard(cfg.model.name, cfg.model.kwargs):
        warnings.warn("train.channels_last is off for this run: on the CPU, PyTorch's backward of a strided 1x1 "
                      "convolution with fewer than 8 input channels in channels_last corrupts memory")
        return False
    return True


def init_distributed(device_name: str) -> tuple[DistInfo, torch.device]:
    """This process's rank and device: one process, or a rank of ``torchrun`` (WORLD_SIZE > 1)."""
    device = select_device(device_name)  # a device this machine lacks fails here, on every rank
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if use_cuda:
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, local), device


def wrap_distributed(model: nn.Module, *, dist_info: DistInfo, device: torch.device,
                     sync_bn: bool) -> tuple[nn.Module, nn.Module | None]:
    """``(model, ddp)``: under DDP the model (with SyncBatchNorm if asked) and its
    DistributedDataParallel wrapper; in one process the model and None."""
    if dist_info.world <= 1:
        return model, None
    if sync_bn:
        if device.type != "cuda":
            raise ReslearnError("train.sync_bn needs CUDA (SyncBatchNorm has no CPU kernel)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    find_unused = isinstance(model, ClassifierModel) and model.ddp_find_unused_parameters
    ddp = nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=find_unused)
    return model, ddp


def resolve_model_kwargs(cfg: Config, data: DataBundle) -> dict[str, Any]:
    """The model's builder arguments: ``model.kwargs`` with ``in_chans`` and ``num_classes`` from
    the data, and a one-line error where the config and the data disagree."""
    info = model_info(cfg.model.name)  # unknown names fail here with a suggestion
    kw = dict(cfg.model.kwargs)
    want = data.in_chans
    if "in_chans" in kw and kw["in_chans"] != want:
        raise ReslearnError(
            f"model.kwargs.in_chans={kw['in_chans']} but {cfg.data.name} images have {want} channels")
    accepts = inspect.signature(info.builder).parameters
    if "in_chans" in accepts:
        kw["in_chans"] = want
    elif want != info.input_size[0]:
        raise ReslearnError(f"{cfg.model.name} takes {info.input_size[0]}-channel input; "
                            f"{cfg.data.name} has {want}")
    kw.setdefault("num_classes", data.num_classes)
    if kw["num_classes"] != data.num_classes and info.task == "classification":
        raise ReslearnError(
            f"model.kwargs.num_classes={kw['num_classes']} but {cfg.data.name} has {data.num_classes} classes")
    return kw


def param_groups(model: nn.Module, o: OptimConfig) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: one, or with ``optim.no_decay_bn_bias`` the weights of
    convolutions and linear layers (decayed) and every parameter of at most one dimension (BN's
    gamma and beta, biases: weight decay 0; Jia et al. 2018, Goyal et al. 2017 Sec. 5.1)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not o.no_decay_bn_bias:
        return [{"params": params}]
    return [{"params": [p for p in params if p.ndim > 1]},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


def build_optimizer(params: Iterable[nn.Parameter] | list[dict[str, Any]], o: OptimConfig) -> torch.optim.Optimizer:
    """The optimizer ``optim.name`` names, with the config's hyper-parameters (``params``: the
    parameters, or groups from ``param_groups``; a group's own weight_decay wins)."""
    if o.name == "rmsprop":  # Szegedy et al. 2016/2017 (Inception-v4 / Inception-ResNet)
        return torch.optim.RMSprop(params, lr=o.lr, alpha=o.rmsprop_decay, eps=o.rmsprop_eps,
                                   momentum=o.momentum, weight_decay=o.weight_decay)
    if o.name == "adam":  # Kingma & Ba 2015; optim.momentum is beta1
        return torch.optim.Adam(params, lr=o.lr, betas=(o.momentum, o.adam_beta2), weight_decay=o.weight_decay)
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay)


def build_ema(model: nn.Module, decay: float) -> AveragedModel | None:
    """The exponential moving average of ``model``'s weights (None when ``decay`` is 0), updated
    by ``update_parameters(model)`` after each optimizer step.

    BN's running mean and variance are averaged with the same decay (``use_buffers=True``, as
    timm's ModelEmaV2): each is then an average over the same window of iterations as the
    averaged weights; the raw model's statistics describe its own, different weights, and
    recomputing them (``swa_utils.update_bn``) would cost a pass over the training set at every
    evaluation. (The integer batch counter is averaged too, and unused: BN has a momentum.)"""
    if decay <= 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def build_task(cfg: Config, data_task: Task | None) -> Task:
    """The data set's own task, or softmax classification with the config's label smoothing and
    flip test-time augmentation (which a data set's own task does not take)."""
    if data_task is None:
        return ClassificationTask(label_smoothing=cfg.optim.label_smoothing, eval_flip=cfg.train.eval_flip)
    if cfg.optim.label_smoothing or cfg.train.eval_flip:
        raise ReslearnError(f"optim.label_smoothing and train.eval_flip are for image classification; "
                            f"{cfg.data.name} trains its own task ({type(data_task).__name__})")
    return data_task


def default_run_dir(cfg: Config) -> Path:
    """``train.out_dir/train.run_name``, the run name defaulting to ``<model>-<data>-seed<seed>``."""
    t = cfg.train
    return Path(t.out_dir) / (t.run_name or f"{cfg.model.name}-{cfg.data.name}-seed{t.seed}")


@dataclass(frozen=True)
class Cadence:
    """When the loop writes a metrics row, evaluates and checkpoints (``train.log_every``,
    ``eval_every``, ``checkpoint_every``, counted in iterations done): every evaluation comes with
    a row, and the last iteration does all three, so a finished run has its final numbers."""

    total: int
    log_every: int
    eval_every: int
    checkpoint_every: int

    @classmethod
    def of(cls, cfg: Config) -> Cadence:
        t = cfg.train
        return cls(cfg.schedule.iterations, t.log_every, t.eval_every, t.checkpoint_every)

    def logs(self, done: int) -> bool:
        return done % self.log_every == 0 or self.evaluates(done)

    def evaluates(self, done: int) -> bool:
        return done % self.eval_every == 0 or done == self.total

    def checkpoints(self, done: int) -> bool:
        return done % self.checkpoint_every == 0 or done == self.total


class Trainer:
    """Holds one run's state; ``fit()`` runs it. Build with ``Trainer(cfg, run_dir=...)``."""

    def __init__(self, cfg: Config, *, run_dir: Path | None = None, task: Task | None = None,
                 data: DataBundle | None = None) -> None:
        self.cfg = cfg
        t = cfg.train
        # DataLoader workers (imagefolder) share the cores with the training threads
        workers = auto_workers(cfg.data.workers) if cfg.data.name == "imagefolder" else 0
        threads = auto_threads(t.threads, workers=workers)
        if threads:
            torch.set_num_threads(threads)
        model_info(cfg.model.name)  # an unknown name fails now, before any data is read
        self.dist, self.device = init_distributed(t.device)
        seed_everything(t.seed, t.deterministic)
        channels_last = _use_channels_last(cfg, self.device)
        self.data = data or build_data(
            cfg.data, batch_size=cfg.optim.batch_size, seed=t.seed, device=self.device,
            rank=self.dist.rank, world_size=self.dist.world, accum_steps=cfg.optim.accum_steps,
            channels_last=channels_last,
        )
        self.task = task or build_task(cfg, self.data.task)
        self.model_kwargs = resolve_model_kwargs(cfg, self.data)
        torch.manual_seed(t.seed)  # same initial weights on every rank and every run
        model = create_model(cfg.model.name, **self.model_kwargs).to(self.device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model, self.ddp = wrap_distributed(model, dist_info=self.dist, device=self.device, sync_bn=t.sync_bn)
        self.forward_model: nn.Module = self.ddp or self.model
        if t.compile:
            self.forward_model = torch.compile(self.forward_model, mode=t.compile_mode)
        self.optimizer = build_optimizer(param_groups(self.model, cfg.optim), cfg.optim)
        self.ema = build_ema(self.model, t.ema_decay)
        # what evaluation sees and model/best.safetensors hold: the averaged weights when there are any
        self.eval_model: nn.Module = self.ema.module if self.ema is not None else self.model
        self.policy = LRPolicy(cfg.schedule, cfg.optim.lr)
        self.amp = resolve_amp(t.amp, self.device)  # the precision that runs (run.json records it)
        self.amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.amp]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")
        self.iteration = 0
        self.best: float | None = None
        self.window = LogWindow()  # the training numbers behind the next metrics row
        self.run_dir = Path(run_dir) if run_dir else self.default_run_dir()
        self.final: dict[str, Any] = {}
        self.commit = git_commit()  # checkpoints and run.json record it
        self.interrupt = InterruptFlag(enabled=False)  # fit() installs a live one

    def default_run_dir(self) -> Path:
        return default_run_dir(self.cfg)

    # ------------------------------------------------------------------ checkpoints
    def _doc(self) -> dict[str, Any]:
        return {
            "model": self.cfg.model.name,
            "model_kwargs": self.model_kwargs,
            "classes": self.data.classes,
            "image_size": list(self.data.image_size),
            "in_chans": self.data.in_chans,
            "data": self.cfg.data.name,
            "normalizer": tensors_to_json(self.data.normalizer_state),
            "reslearn_version": __version__,
            "git_commit": self.commit,
            "config": config_to_dict(self.cfg),  # eval/predict find the data set and its root here
        }

    def _kept(self) -> str:
        """What a stopped run leaves, for its error line."""
        last = find_latest_checkpoint(self.run_dir)
        if last is None:
            return (f"nothing was saved (no checkpoint yet; the first is due at iteration "
                    f"{self.cfg.train.checkpoint_every})")
        return f"the last good checkpoint is kept: {last}"

    def save_checkpoint(self) -> Path:
        # A finite loss can still come with an update that overflowed the weights: never let
        # such weights replace the last good checkpoint.
        if not all(bool(torch.isfinite(v).all()) for v in self.model.state_dict().values()
                   if v.is_floating_point()):  # parameters and BN statistics
            raise NonFiniteLoss(f"weights became non-finite at iteration {self.iteration}; {self._kept()}")
        opt_tensors, opt_meta = flatten_optimizer(self.optimizer)
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors.update(opt_tensors)
        if self.ema is not None:  # its weights, BN statistics and update count
            tensors.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        meta = {
            **self._doc(),
            "kind": "training",
            "iteration": self.iteration,
            "optimizer": opt_meta,
            "policy": self.policy.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "best": self.best,
            "log_acc": list(self.window.sums),
            "elapsed_s": self.window.elapsed(),  # a resumed run's elapsed_s continues from here
            "final": self.final,  # the last evaluation: a run resumed at its end reports it again
        }
        ckdir = self.run_dir / "checkpoints"
        path = ckdir / f"iter-{self.iteration:08d}.safetensors"
        save_tensors(path, tensors, meta)
        for old in sorted(ckdir.glob("iter-*.safetensors"))[: -self.cfg.train.keep_last]:
            old.unlink(missing_ok=True)
        return path

    def save_weights(self, name: str, metrics: dict[str, Any] | None = None) -> Path:
        path = self.run_dir / name
        save_tensors(path, dict(self.eval_model.state_dict()),
                     {**self._doc(), "kind": "weights", "iteration": self.iteration, "metrics": metrics or {}})
        return path

    def load_checkpoint(self, path: Path) -> None:
        tensors, meta = load_tensors(path)
        if meta.get("kind") != "training":
            raise ReslearnError(f"{path} is not a training checkpoint (kind={meta.get('kind')})")
        if meta["model"] != self.cfg.model.name:
            raise ReslearnError(f"{path} holds {meta['model']}, but the config trains {self.cfg.model.name}")
        state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        check_state_dict(self.model, state, str(path), hint="is the data (its channels, classes) the run's?")
        self.model.load_state_dict(state)
        self.optimizer.load_state_dict(unflatten_optimizer(tensors, meta["optimizer"]))
        self._load_ema(tensors, path)
        self.policy.load_state_dict(meta["policy"])
        if meta.get("scaler"):
            self.scaler.load_state_dict(meta["scaler"])
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        self.iteration, self.best = meta["iteration"], meta.get("best")
        self.window.sums = [float(x) for x in meta.get("log_acc", [0.0] * 4)]
        self.window.before = float(meta.get("elapsed_s", 0.0))
        self.final = meta.get("final", {})

    def _load_ema(self, tensors: dict[str, torch.Tensor], path: Path) -> None:
        if self.ema is None:
            return
        ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
        if not ema:
            raise ReslearnError(f"{path} holds no weight average, but the config has train.ema_decay="
                                f"{self.cfg.train.ema_decay}")
        check_state_dict(self.ema, ema, str(path), hint="the weight average (train.ema_decay)")
        self.ema.load_state_dict(ema)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        if self.dist.main:
            self.eval_model.eval()
            with self._autocast():
                for split, src in self.data.evals.items():
                    out[split] = self.task.evaluate(self.eval_model, src)
            self.eval_model.train()
        if self.dist.world > 1:  # every rank needs the numbers (plateau LR, best checkpoint)
            box = [out]
            dist.broadcast_object_list(box, src=0)
            out = box[0]
        return out

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # ------------------------------------------------------------------ the run folder
    def _claim_run_dir(self) -> contextlib.AbstractContextManager:
        """The run folder's lock, held by the rank that writes (rank 0; the others only read)."""
        if not self.dist.main:
            return contextlib.nullcontext()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        return lock_run_dir(self.run_dir)

    def _begin(self, *, resume: bool, overwrite: bool) -> MetricLogger | None:
        """Under the folder's lock: resume from its checkpoint or start afresh (deleting the run
        that ``overwrite`` replaces); rank 0 writes config.yaml and run.json and opens the log."""
        # checked again under the lock: what counts is what the folder holds once it is ours
        ck = check_run_dir(self.cfg, self.run_dir, resume=resume, overwrite=overwrite, amp=self.amp)
        if ck is not None:
            self.load_checkpoint(ck)
        elif overwrite and self.dist.main:
            clear_run(self.run_dir)
        return self._write_run_files(self.iteration if ck else None) if self.dist.main else None

    def _write_run_files(self, resumed_from: int | None) -> MetricLogger:
        atomic_write_text(self.run_dir / "config.yaml", dump_config(self.cfg))
        atomic_write_text(self.run_dir / "run.json", json.dumps({
            "reslearn_version": __version__, "git_commit": self.commit, "torch": torch.__version__,
            "device": str(self.device), "machine": machine_description(str(self.device)),
            "world_size": self.dist.world, "data": self.data.info,
            "model_kwargs": self.model_kwargs, "amp": self.amp, "resumed_from": resumed_from,
        }, indent=2))
        return MetricLogger(self.run_dir, tensorboard=self.cfg.train.tensorboard, resume_from=resumed_from)

    def _stop_at_interrupt(self, signum: int) -> None:
        """Stop where signal ``signum`` asked: rank 0 checkpoints this iteration (unless the cadence
        just did), the other ranks wait for it, and every rank raises ``Interrupted``."""
        path = self.run_dir / "checkpoints" / f"iter-{self.iteration:08d}.safetensors"
        if self.dist.main and not path.is_file():
            path = self.save_checkpoint()
        if self.dist.world > 1:  # torchrun stops every worker once one exits: not before the checkpoint is whole
            dist.barrier()
        raise Interrupted(f"interrupted at iteration {self.iteration} of {self.cfg.schedule.iterations} by "
                          f"{signal.Signals(signum).name}; checkpoint {path}", signum=signum)

    # ------------------------------------------------------------------ the loop
    def fit(self, *, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
        """Train (or, with ``resume``, continue) the run in ``run_dir``; ``overwrite`` replaces a
        run the folder already holds. Returns the final metrics."""
        # before creating the folder
        check_run_dir(self.cfg, self.run_dir, resume=resume, overwrite=overwrite, amp=self.amp)
        try:
            with self._claim_run_dir():
                logger = self._begin(resume=resume, overwrite=overwrite)
                try:
                    with InterruptFlag(announce=self.dist.main) as self.interrupt:
                        self._loop(logger)
                finally:
                    if logger:
                        logger.close()
        except OSError as e:  # e.g. a full disk; a write error without a file name names the run folder
            if e.filename is None and e.errno is not None:
                raise OSError(e.errno, e.strerror, str(self.run_dir)) from e
            raise
        return self.final

    def _loop(self, logger: MetricLogger | None) -> None:
        """The iterations from ``self.iteration`` to the end: each a step, then the row (with an
        evaluation) and the checkpoint its number calls for, and a stop where a signal asked."""
        per_epoch = self._steps_per_epoch()
        cadence = Cadence.of(self.cfg)
        out = self._row_output(logger)
        self.model.train()
        self.window.start()
        while self.iteration < cadence.total:
            epoch, pos = divmod(self.iteration, per_epoch)
            for lr in self._steps(epoch, pos):
                done = self.iteration
                out.advance()
                if cadence.logs(done):
                    self._write_row(out, lr=lr, epoch=round(done / per_epoch, 3), evaluate=cadence.evaluates(done))
                if cadence.checkpoints(done) and self.dist.main:
                    self.save_checkpoint()
                if signum := self.interrupt.agreed(world=self.dist.world, device=self.device):
                    self._stop_at_interrupt(signum)
                if done >= cadence.total:
                    break
        out.close()
        self._finish()

    def _steps_per_epoch(self) -> int:
        n = len(self.data.train) // self.cfg.optim.accum_steps
        if n < 1:
            raise ReslearnError(f"the training set is smaller than one batch of {self.cfg.optim.batch_size}")
        return n

    def _row_output(self, logger: MetricLogger | None) -> RowOutput:
        """Rank 0's rows go to ``logger`` and the progress display; train.progress=false shows plain
        lines at evaluations only (Progress), never a bar."""
        if not self.dist.main:
            return RowOutput()
        progress = self.cfg.train.progress
        bar = Progress(total=self.cfg.schedule.iterations, initial=self.iteration, desc=self.cfg.model.name,
                       tty=None if progress else False)
        return RowOutput(logger, bar, every_row=progress)

    def _steps(self, epoch: int, pos: int) -> Iterator[float]:
        """The optimizer steps of ``epoch`` from its ``pos``-th on. Each sets the lr, runs the step's
        micro-batches, stops the run on a non-finite loss, counts the step (``self.iteration``, the
        LR policy, the log window) and yields the lr it used."""
        accum = self.cfg.optim.accum_steps
        for m, batch in enumerate(self.data.train.iter_epoch(epoch, start=pos * accum)):
            it = self.iteration
            lr = self.policy.lr(it)
            for g in self.optimizer.param_groups:
                g["lr"] = lr
            stats = self._micro_step(batch, m, accum)
            if stats is None:
                continue
            loss_sum, wrong, den, n = stats
            if not math.isfinite(loss_sum):
                raise NonFiniteLoss(f"loss became {loss_sum} at iteration {it} (lr {lr:g}); {self._kept()}")
            self.iteration += 1
            self.policy.after_step(it, wrong, den)
            self.window.add(loss_sum, wrong, den, n)
            yield lr

    def _write_row(self, out: RowOutput, *, lr: float, epoch: float, evaluate: bool) -> None:
        """Write the log window's row, with an evaluation when ``evaluate``, and start a new window."""
        row = self.window.row(iteration=self.iteration, epoch=epoch, lr=lr)
        if evaluate:
            row.update(self._eval_and_track())
            # training error of the last logged window, beside the eval numbers
            self.final["train_err"], self.final["train_loss"] = row["train_err"], row["train_loss"]
        out.write(row, evaluated=evaluate)
        self.window.reset()

    def _finish(self) -> None:
        """The end of the run: rank 0 writes model.safetensors and final.json (after an evaluation
        when the run has none: resumed at its last iteration from a checkpoint that predates
        "final"), and every rank waits for it."""
        if not self.final:
            self._eval_and_track()
        if self.dist.main:
            self.save_weights("model.safetensors", self.final)
            atomic_write_text(self.run_dir / "final.json", json.dumps(self.final, indent=2))
        if self.dist.world > 1:
            dist.barrier()

    def _micro_step(self, batch, m: int, accum: int):
        """Forward/backward one micro-batch; steps the optimizer every ``accum`` of them.
        Returns the step's (loss sum, wrong, n) over all ranks after a step, else None."""
        if m % accum == 0:
            self.optimizer.zero_grad(set_to_none=True)
            self._step_stats = torch.zeros(4, dtype=torch.float64)
        last = m % accum == accum - 1
        sync = contextlib.nullcontext()
        if self.ddp is not None and not last:
            sync = self.ddp.no_sync()
        with sync:
            with self._autocast():
                loss, sums = self.task.loss(self.forward_model, batch)
            self.scaler.scale(loss / accum).backward()
        n = float(sums.get("n", 1))
        # training error = sums[num] / sums[den]; a task may name its own pair (CTC: word
        # errors over reference words), else the primary metric's count over samples
        num, den = self.task.train_error_keys
        self._step_stats += torch.tensor([float(loss.detach()) * n, float(sums.get(num, 0)),
                                          float(sums.get(den, n)), n], dtype=torch.float64)
        if not last:
            return None
        stats = self._step_stats
        if self.dist.world > 1:  # on the training device: nccl reduces CUDA tensors only (gloo: a no-op move)
            stats = stats.to(self.device)
            dist.all_reduce(stats)
            stats = stats.cpu()
        if math.isfinite(float(stats[0])):
            if self.cfg.optim.clip_grad_norm > 0:
                self.scaler.unscale_(self.optimizer)  # clip the true gradients, not fp16-scaled ones
                nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.clip_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
        # The loss is a *sum* over the step's samples, so logging can average it exactly.
        return float(stats[0]), float(stats[1]), float(stats[2]), float(stats[3])

    def _eval_and_track(self) -> dict[str, Any]:
        ev = self.evaluate()
        row: dict[str, Any] = {}
        for split, metrics in ev.items():
            row[f"{split}_loss"] = metrics.get("loss")
            row[f"{split}_err"] = metrics.get(self.task.primary)
        row["test_top5_err"] = ev.get("test", {}).get("top5_err")
        pick = ev.get("val") or ev.get("test") or {}
        score = pick.get(self.task.primary)
        if score is not None:
            self.policy.after_eval(score)
            if self.dist.main and (self.best is None or score < self.best):
                self.best = score
                self.save_weights("best.safetensors", {"selected_on": "val" if "val" in ev else "test", **ev})
        self.final = {"iteration": self.iteration, **{s: m for s, m in ev.items()},
                      "best_" + self.task.primary: self.best}
        return row


def train(cfg: Config, *, resume: bool = False, overwrite: bool = False, run_dir: str | Path | None = None,
          task: Task | None = None) -> dict[str, Any]:
    """Train according to ``cfg``; returns the final evaluation metrics."""
    trainer = Trainer(cfg, run_dir=Path(run_dir) if run_dir else None, task=task)
    return trainer.fit(resume=resume, overwrite=overwrite)
