"""Typed run configuration. Precedence: dataclass defaults < recipe YAML < ``key=value`` CLI
overrides (dotted keys, e.g. ``optim.lr=0.05``). Unknown keys and values of the wrong type are
errors that name the key. Every run writes the resolved config into its run folder."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ReslearnError

__all__ = [
    "ModelConfig",
    "DataConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TrainConfig",
    "Config",
    "load_config",
    "apply_overrides",
    "config_to_dict",
    "config_from_dict",
    "find_recipe",
    "list_recipes",
]


class _Loader(yaml.SafeLoader):
    """YAML 1.2 scalars: only true/false are booleans (keyword lists such as [yes, no, on, off]
    stay strings), and 1e-3 is a float (YAML 1.1 wants a dot)."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


@dataclass
class ModelConfig:
    name: str = "resnet20"
    # Extra builder arguments (e.g. {"shortcut": "B"}); validated by the builder itself.
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    # cifar10 | cifar100 | fashion-mnist | mnist | imagefolder | imagefolder-memory
    name: str = "cifar10"
    # Folder holding the data set; "" searches $RESLEARN_DATA_DIR, ./.data, ~/.cache/reslearn.
    root: str = ""
    download: bool = False
    # The split vocabulary of every data set (reslearn.data.datasets; a field a data set cannot
    # use is an error naming it). val_size: validation images held out of the training data (the
    # paper's CIFAR split: 5000), a count or a share 0 < x < 1. test_size: the same for the test
    # split of data sets without one of their own (stego, utkface). Both drawn by split_seed.
    val_size: int | float = 0
    test_size: int | float = 0
    split_seed: int = 0
    # Use only N training / test images (0 = all): CPU budgets. The first N of CIFAR/IDX files
    # (already in random order); a fixed random N (split_seed) of image folders (class-sorted)
    # and of the speech and application sets. test_subset cuts each evaluation split (val, test).
    train_subset: int = 0
    test_subset: int = 0
    augment: str = "standard"  # standard (the paper's for the data set) | none
    normalize: str = "per_pixel"  # per_pixel (He et al. 2016) | per_channel
    image_size: int = 0  # imagefolder-memory: resize to this square size (0 = keep)
    # imagefolder: DataLoader worker processes (imagefolder-memory: decoding threads); "auto":
    # as many as this process's CPU cores allow beside training (engine.device.auto_workers).
    workers: int | str = 2
    on_bad_file: str = "skip"  # imagefolder: skip (with a count) | raise
    # Image folders: val/ may lack some of train/'s classes or have others; evaluate on the
    # classes both have (with a warning) instead of refusing. Labels are matched by class name.
    shared_classes: bool = False
    # Samples per evaluation batch (0: max(optim.batch_size, reslearn.data.bundle.EVAL_BATCH_SIZE)).
    eval_batch_size: int = 0
    # Keyword arguments of an application data set's builder (speech-commands, digit-strings,
    # stego, utkface); each builder validates its own and names unknown ones.
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | rmsprop | adam
    lr: float = 0.1
    momentum: float = 0.9  # sgd's momentum, rmsprop's momentum term, or adam's beta1
    nesterov: bool = False  # sgd only
    weight_decay: float = 1e-4
    # No weight decay on BN scales/shifts and on biases (every parameter with <= 1 dimension):
    # Jia et al. 2018 ("no bias decay"), Goyal et al. 2017 Sec. 5.1 (none on BN's gamma, beta).
    no_decay_bn_bias: bool = False
    # Softmax targets (1 - e) on the label and e / K on every class (Szegedy et al. 2016, Sec. 7);
    # training loss only: the eval loss stays the plain cross-entropy. 0 = off.
    label_smoothing: float = 0.0
    # rmsprop (Szegedy et al. 2016/2017: decay 0.9, epsilon 1.0). PyTorch adds eps after the
    # square root, TensorFlow inside it: g / (sqrt(v) + eps) vs g / sqrt(v + eps).
    rmsprop_decay: float = 0.9
    rmsprop_eps: float = 1.0
    adam_beta2: float = 0.999
    # > 0: rescale the gradient to at most this global L2 norm before each step (recurrent
    # networks; Pascanu et al. 2013). 0: no clipping.
    clip_grad_norm: float = 0.0
    batch_size: int = 128  # global batch (all ranks together)
    accum_steps: int = 1  # micro-batches per optimizer step (per rank)


@dataclass
class ScheduleConfig:
    kind: str = "step"  # step | plateau | cosine | exponential | onecycle
    iterations: int = 64000
    milestones: list[int] = field(default_factory=lambda: [32000, 48000])
    gamma: float = 0.1
    # exponential: lr x gamma every `decay_every` iterations (staircase), e.g. x0.94 every 2 epochs.
    decay_every: int = 0
    # He et al. 2016 Sec. 4.2 (110 layers): lr 0.01 until training error < 80%, then back to lr.
    warmup_lr: float = 0.0  # 0 = no warm-up
    warmup_until_error: float = 80.0
    warmup_max_iterations: int = 2000
    # constant: the paper's (warmup_lr, then lr). linear: warmup_lr rising linearly to lr over
    # warmup_max_iterations (Goyal et al. 2017, "gradual warmup"), warmup_until_error unused.
    warmup_kind: str = "constant"
    # plateau: divide by 1/gamma when the eval error has not improved for `patience` evaluations.
    patience: int = 5
    min_lr: float = 0.0
    # onecycle (Smith & Topin 2018; torch.optim.lr_scheduler.OneCycleLR's values, per iteration):
    # lr / div_factor rising to lr over the first pct_start of the iterations, then falling to
    # lr / div_factor / final_div_factor at the last; anneal: cos | linear (linear with
    # final_div_factor large: Page 2018's triangle). The momentum is not cycled.
    onecycle_pct_start: float = 0.3
    onecycle_div_factor: float = 25.0
    onecycle_final_div_factor: float = 1e4
    onecycle_anneal: str = "cos"


@dataclass
class TrainConfig:
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    channels_last: bool = False
    # none | bf16 | fp16 | auto (bf16 where the device computes bf16 natively, else none:
    # engine.device.resolve_amp; run.json records the precision that ran)
    amp: str = "none"
    compile: bool = False
    # torch.compile's mode: reduce-overhead replays CUDA graphs (one launch for a small net's
    # hundreds of kernels: launch-bound GPUs); on the CPU every mode is inductor's C++ code.
    compile_mode: str = "default"
    sync_bn: bool = False  # SyncBatchNorm under DDP (CUDA only)
    eval_every: int = 1000  # iterations; the final iteration is always evaluated
    log_every: int = 50
    checkpoint_every: int = 1000
    keep_last: int = 2
    out_dir: str = "runs"
    run_name: str = ""  # "" = <model>-<data>-seed<seed>
    progress: bool = True  # a bar (terminal) or a line per logged row; false: a line per evaluation only
    tensorboard: bool = True
    # torch CPU threads (0 = PyTorch's default, one per core); "auto": the cores left beside the
    # data workers (engine.device.auto_threads), which a loaded machine needs (2 threads spinning
    # on 2 busy cores ran 9x slower than 1).
    threads: int | str = 0
    # > 0: evaluate (and save as model/best.safetensors) an exponential moving average of the
    # weights, updated after every optimizer step with this decay (BN statistics averaged too:
    # engine.trainer.build_ema). 0 = off.
    ema_decay: float = 0.0
    # Evaluate on each image and its horizontal mirror, averaging the two softmax outputs
    # (flip test-time augmentation; image classification only).
    eval_flip: bool = False


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    recipe: str = ""  # where the recipe came from (informational)


_CHOICES = {
    "data.augment": ("standard", "none"),
    "data.normalize": ("per_pixel", "per_channel"),
    "data.on_bad_file": ("skip", "raise"),
    "optim.name": ("sgd", "rmsprop", "adam"),
    "schedule.kind": ("step", "plateau", "cosine", "exponential", "onecycle"),
    "schedule.onecycle_anneal": ("cos", "linear"),
    "schedule.warmup_kind": ("constant", "linear"),
    "train.amp": ("none", "bf16", "fp16", "auto"),
    "train.compile_mode": ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
}


# ----------------------------------------------------------------------------- (de)serialising
def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are due."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(tp):
            try:
                return _coerce(key, value, arm)
            except ReslearnError:
                pass
        raise ReslearnError(f"config key {key!r} expects {tp}, got {value!r}")
    if tp is Any:
        return value
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ReslearnError(f"config key {key!r} expects a list, got {value!r}")
        return [_coerce(key, v, inner) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ReslearnError(f"config key {key!r} expects a mapping, got {value!r}")
        return dict(value)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        # YAML 1.1 reads "1e-3" (no dot) as a string; accept what float() accepts.
        try:
            return float(value)
        except ValueError:
            pass
    if tp is type(None) and value is None:
        return None
    if isinstance(tp, type) and isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise ReslearnError(f"config key {key!r} expects {_type_name(tp)}, got {value!r}")


def _unknown(key: str, known: list[str]) -> ReslearnError:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ReslearnError(f"unknown config key {key!r}{hint}")


def _set(cfg: Any, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    obj: Any = cfg
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(obj)}
        if part not in fields:
            raise _unknown(dotted, list(fields))
        f = fields[part]
        last = i == len(parts) - 1
        if dataclasses.is_dataclass(getattr(obj, part)):
            if last:
                if not isinstance(value, dict):
                    raise ReslearnError(f"config key {dotted!r} is a section; give a mapping")
                for k, v in value.items():
                    _set(cfg, f"{dotted}.{k}", v)
                return
            obj = getattr(obj, part)
            continue
        if part in ("kwargs", "options") and not last:  # model.kwargs.shortcut=B
            getattr(obj, part)[".".join(parts[i + 1 :])] = value
            return
        if not last:
            raise _unknown(dotted, list(fields))
        hints = typing.get_type_hints(type(obj))
        value = _coerce(dotted, value, hints[part])
        allowed = _CHOICES.get(dotted)
        if allowed and value not in allowed:
            raise ReslearnError(
                f"config key {dotted!r} must be one of {', '.join(allowed)}; got {value!r}"
            )
        setattr(obj, part, value)
        return


def config_from_dict(d: dict[str, Any], base: Config | None = None) -> Config:
    cfg = base if base is not None else Config()
    if not isinstance(d, dict):
        raise ReslearnError("a recipe must be a YAML mapping of sections (model, data, ...)")
    for k, v in d.items():
        _set(cfg, k, v)
    return cfg


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``key=value`` strings; values are parsed as YAML scalars (``0.1``, ``true``, ``[1,2]``)."""
    for item in overrides:
        if "=" not in item:
            raise ReslearnError(f"override {item!r} is not key=value (e.g. optim.lr=0.05)")
        key, raw = item.split("=", 1)
        try:
            value = yaml_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _set(cfg, key.strip(), value)
    return cfg


# ----------------------------------------------------------------------------- recipes
RECIPE_DIR = Path(__file__).resolve().parent / "recipes"


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def find_recipe(recipe: str) -> Path:
    """A recipe by path, or by name among the packaged recipes (``reslearn/recipes/*.yaml``)."""
    p = Path(recipe)
    # A bare name is a packaged recipe even when a folder of that name is in the working
    # directory (experiments write e.g. ./cifar10/); only a file path or a .yaml name is a path.
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise ReslearnError(f"recipe file {recipe} not found")
        return p
    cand = RECIPE_DIR / f"{recipe}.yaml"
    if cand.is_file():
        return cand
    close = difflib.get_close_matches(recipe, list_recipes(), n=2)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(list_recipes())}"
    raise ReslearnError(f"unknown recipe {recipe!r}{hint}")


def load_config(recipe: str | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults < recipe YAML < overrides."""
    cfg = Config()
    if recipe:
        path = find_recipe(recipe)
        try:
            data = yaml_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ReslearnError(f"recipe {path} is not valid YAML: {str(e).splitlines()[0]}") from None
        config_from_dict(data, cfg)
        cfg.recipe = str(path)
    apply_overrides(cfg, overrides or [])
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Cross-field checks that no single type can express."""
    o, s, t = cfg.optim, cfg.schedule, cfg.train
    if o.batch_size < 1 or o.accum_steps < 1:
        raise ReslearnError("optim.batch_size and optim.accum_steps must be >= 1")
    if o.lr <= 0:
        raise ReslearnError(f"optim.lr must be > 0; got {o.lr}")
    if s.iterations < 1:
        raise ReslearnError(f"schedule.iterations must be >= 1; got {s.iterations}")
    if any(m < 1 for m in s.milestones) or sorted(s.milestones) != list(s.milestones):
        raise ReslearnError(f"schedule.milestones must be increasing positive iterations; got {s.milestones}")
    late = [m for m in s.milestones if m >= s.iterations]
    if s.kind == "step" and late:
        # A warning, not an error: a recipe shortened with schedule.iterations alone (a quick try,
        # a test) legitimately keeps a constant lr; the warning says that it does.
        warnings.warn(f"schedule.milestones {late} are at or after schedule.iterations={s.iterations}: the lr will "
                      f"never drop there (set schedule.milestones to drop it within the run)", stacklevel=2)
    if not 0 < s.gamma <= 1:
        raise ReslearnError(f"schedule.gamma must be in (0, 1]; got {s.gamma}")
    if s.kind == "exponential" and s.decay_every < 1:
        raise ReslearnError(f"schedule.kind=exponential needs schedule.decay_every >= 1 (iterations); got {s.decay_every}")
    if o.name != "sgd" and o.nesterov:
        raise ReslearnError(f"optim.nesterov applies to sgd only, not {o.name}")
    if o.nesterov and o.momentum <= 0:
        raise ReslearnError(f"optim.nesterov needs optim.momentum > 0; got {o.momentum}")
    if not 0 <= o.label_smoothing < 1:
        raise ReslearnError(f"optim.label_smoothing must be in [0, 1); got {o.label_smoothing}")
    if not 0 <= t.ema_decay < 1:
        raise ReslearnError(f"train.ema_decay must be in [0, 1) (0: off); got {t.ema_decay}")
    _validate_onecycle(s)
    if o.name == "adam" and not (0 <= o.momentum < 1 and 0 <= o.adam_beta2 < 1):
        raise ReslearnError(f"adam needs optim.momentum (beta1) and optim.adam_beta2 in [0, 1); "
                            f"got {o.momentum}, {o.adam_beta2}")
    if not (o.clip_grad_norm >= 0 and math.isfinite(o.clip_grad_norm)):
        raise ReslearnError(f"optim.clip_grad_norm must be >= 0 (0: off); got {o.clip_grad_norm}")
    if o.name == "rmsprop" and not (0 <= o.rmsprop_decay < 1 and o.rmsprop_eps > 0):
        raise ReslearnError(f"optim.rmsprop_decay must be in [0, 1) and optim.rmsprop_eps > 0; "
                            f"got {o.rmsprop_decay}, {o.rmsprop_eps}")
    for k in ("eval_every", "log_every", "checkpoint_every", "keep_last"):
        if getattr(t, k) < 1:
            raise ReslearnError(f"train.{k} must be >= 1; got {getattr(t, k)}")
    _validate_data(cfg.data)
    for key, v in (("data.workers", cfg.data.workers), ("train.threads", t.threads)):
        if v != "auto" and (isinstance(v, str) or v < 0):
            raise ReslearnError(f"{key} must be a count >= 0 or auto; got {v!r}")


def _validate_data(d: DataConfig) -> None:
    for k in ("val_size", "test_size", "train_subset", "test_subset", "image_size", "eval_batch_size"):
        if getattr(d, k) < 0:
            raise ReslearnError(f"data.{k} must be >= 0; got {getattr(d, k)}")
    for k in ("val_size", "test_size"):
        if isinstance(getattr(d, k), float) and getattr(d, k) >= 1:
            raise ReslearnError(f"data.{k} must be a count (a whole number) or a share 0 < x < 1; got {getattr(d, k)}")


def _validate_onecycle(s: ScheduleConfig) -> None:
    if s.kind != "onecycle":
        return
    if not 0 < s.onecycle_pct_start < 1:
        raise ReslearnError(f"schedule.onecycle_pct_start must be in (0, 1); got {s.onecycle_pct_start}")
    if s.onecycle_div_factor <= 0 or s.onecycle_final_div_factor <= 0:
        raise ReslearnError(f"schedule.onecycle_div_factor and onecycle_final_div_factor must be > 0; "
                            f"got {s.onecycle_div_factor}, {s.onecycle_final_div_factor}")
    if s.warmup_lr > 0:
        raise ReslearnError("schedule.kind=onecycle warms up by itself (onecycle_pct_start); "
                            "set schedule.warmup_lr=0")
    if s.onecycle_pct_start * s.iterations <= 1:  # the rise would end at iteration 0 (OneCycleLR divides by 0)
        raise ReslearnError(f"schedule.onecycle_pct_start x schedule.iterations must be > 1 iteration; "
                            f"got {s.onecycle_pct_start} x {s.iterations}")


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
