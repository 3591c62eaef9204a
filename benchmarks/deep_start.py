"""Why deep CIFAR ResNets sometimes sit at chance for hundreds of iterations at lr 0.1 (issue:
"the deep-net start"), measured with a seeded study.

Each run trains one registered CIFAR net with the paper's optimiser (SGD, momentum 0.9, weight
decay 1e-4, batch 128, pad-crop-flip, He et al. 2016 Sec. 4.2) on the 45k training split for a
few hundred iterations and records, at every iteration: the loss, the training error, the
largest |logit|, the RMS of the pooled features that enter the classifier, the share of those
features that are exactly zero (dead ReLUs of the last block), and the gradient norm of each
stage. Settings (``--settings``):

- ``paper``: lr 0.1 from the first iteration, per-pixel mean (the paper's CIFAR setting);
- ``per_channel``: the same with per-channel mean/std (the common PyTorch convention);
- ``warmup``: the paper's 110-layer remedy, lr 0.01 for the first ``--warmup-iters`` iterations;
- ``linear_warmup``: lr rising linearly from 0.01 to 0.1 over ``--warmup-iters`` (Goyal et al. 2017);
- ``zero_init``: lr 0.1 with each block's last BN scale zeroed (Goyal et al. 2017).

A run "collapsed" when, after iteration 20, the share of the classifier's input features that
are exactly zero rises by more than 0.5 over its value at initialisation (the signature found
with this script: see docs/reproduction.md); it is "at chance" when its training error over
the last 20 iterations is 85% or more.
Outputs: ``OUT/traces.csv`` (one row per run and iteration), ``OUT/summary.csv`` (one row per
run) and ``OUT/deep_start.png``. Plain PyTorch loop on reslearn's data path and models, so that
the engine is not a suspect.

    python benchmarks/deep_start.py --models resnet56 --seeds 0 1 2 3 4 --iterations 120 \
        --settings paper per_channel warmup zero_init --out runs/deep_start
"""

from __future__ import annotations

import argparse
import csv
import math
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import reslearn
from reslearn.data.augment import Normalizer, random_crop_flip
from reslearn.data.cifar import load_cifar

SETTINGS = ("paper", "per_channel", "warmup", "linear_warmup", "zero_init")
STAGES = ("conv1", "layer1", "layer2", "layer3", "fc")
COLLAPSE_DEAD_RISE = 0.5  # rise of the share of zero classifier inputs that marks a collapse
CHANCE_ERR = 85.0  # % training error (10 classes: chance is 90%)
COLLAPSE_AFTER = 20  # ignore the first iterations, where the features are still the init's


def cpu_flags() -> str:
    try:
        flags = Path("/proc/cpuinfo").read_text().split("flags")[1].split("\n")[0].split()
    except (OSError, IndexError):
        return platform.processor() or "unknown"
    return " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags) or "no avx2"


def run(model_name: str, setting: str, seed: int, *, images: torch.Tensor, labels: torch.Tensor,
        iterations: int, warmup_iters: int, lr: float = 0.1) -> list[dict[str, float]]:
    """Train ``model_name`` for ``iterations`` steps; one trace row per iteration."""
    norm = Normalizer.fit(images, mode="per_channel" if setting == "per_channel" else "per_pixel")
    torch.manual_seed(seed)
    model = reslearn.create_model(model_name, **({"zero_init_residual": True} if setting == "zero_init" else {}))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    feats: dict[str, torch.Tensor] = {}
    model.fc.register_forward_hook(lambda mod, inp, out: feats.__setitem__("f", inp[0].detach()))
    order = torch.randperm(len(images), generator=gen)
    per_epoch = len(images) // 128
    rows = []
    for it in range(iterations):
        pos = (it % per_epoch) * 128
        idx = order[pos:pos + 128]
        x, y = norm(random_crop_flip(images[idx], gen)), labels[idx]
        step_lr = lr
        if setting == "warmup" and it < warmup_iters:
            step_lr = lr / 10
        elif setting == "linear_warmup" and it < warmup_iters:
            step_lr = lr / 10 + (lr - lr / 10) * it / warmup_iters  # as engine/schedule.py
        for g in opt.param_groups:
            g["lr"] = step_lr
        out = model(x)
        loss = F.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grads = {s: math.sqrt(sum(float(p.grad.square().sum()) for n, p in model.named_parameters()
                                  if n.startswith(s) and p.grad is not None)) for s in STAGES}
        opt.step()
        f = feats["f"]
        rows.append({"model": model_name, "setting": setting, "seed": seed, "iteration": it, "lr": step_lr,
                     "loss": float(loss.detach()), "train_err": float((out.detach().argmax(1) != y).float().mean() * 100),
                     "logit_absmax": float(out.detach().abs().max()), "feature_rms": float(f.square().mean().sqrt()),
                     "dead_share": float((f == 0).float().mean()),
                     **{f"grad_{s}": v for s, v in grads.items()}})
    return rows


def summarize(trace: list[dict[str, float]]) -> dict[str, float]:
    late = trace[COLLAPSE_AFTER:]
    last = trace[-20:]
    return {k: trace[0][k] for k in ("model", "setting", "seed")} | {
        "iterations": len(trace),
        "collapsed": int(any(r["dead_share"] - trace[0]["dead_share"] > COLLAPSE_DEAD_RISE for r in late)),
        "at_chance": int(sum(r["train_err"] for r in last) / len(last) >= CHANCE_ERR),
        "max_dead_share": round(max(r["dead_share"] for r in late), 4),
        "max_logit": round(max(r["logit_absmax"] for r in trace), 1),
        "init_feature_rms": round(trace[0]["feature_rms"], 3),
        "train_err_last20": round(sum(r["train_err"] for r in last) / len(last), 2),
    }


def plot(traces: list[list[dict[str, float]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("logit_absmax", "largest |logit|", True), ("dead_share", "zero classifier inputs (share)", False),
            ("train_err", "training error % (per batch)", False)]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), dpi=110)
    labels = list(dict.fromkeys(f"{tr[0]['model']} {tr[0]['setting']}" for tr in traces))
    colors = dict(zip(labels, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3))
    for tr in traces:
        label = f"{tr[0]['model']} {tr[0]['setting']}"
        for ax, (k, title, log) in zip(axes, keys):
            ax.plot([r["iteration"] for r in tr], [r[k] for r in tr], color=colors[label], lw=0.8, alpha=0.7,
                    label=label)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("iteration")
            if log:
                ax.set_yscale("log")
    handles, labels = axes[0].get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    axes[0].legend(uniq.values(), uniq.keys(), fontsize=7)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def aggregate(summary: list[dict]) -> list[dict]:
    """One row per model and setting: runs, collapsed starts, and the mean +- std training error
    of the last 20 iterations."""
    import statistics

    out = []
    for key in dict.fromkeys((r["model"], r["setting"]) for r in summary):
        rs = [r for r in summary if (r["model"], r["setting"]) == key]
        errs = [float(r["train_err_last20"]) for r in rs]
        out.append({"model": key[0], "setting": key[1], "seeds": " ".join(str(r["seed"]) for r in rs),
                    "iterations": rs[0]["iterations"],
                    "collapsed": f"{sum(int(r['collapsed']) for r in rs)}/{len(rs)}",
                    "at_chance": f"{sum(int(r['at_chance']) for r in rs)}/{len(rs)}",
                    "largest_logit_median": f"{statistics.median(float(r['max_logit']) for r in rs):.0f}",
                    "train_err_last20": f"{statistics.fmean(errs):.1f} +- {statistics.stdev(errs) if len(errs) > 1 else 0:.1f}"})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet56"])
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--iterations", type=int, default=120)
    ap.add_argument("--warmup-iters", type=int, default=100)
    ap.add_argument("--data", default=".data", help="folder holding cifar-10-batches-py/")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/deep_start")
    ap.add_argument("--record", metavar="DIR", help="also write DIR/deep_start.csv (per run) and "
                    "DIR/deep_start_summary.csv (per setting), e.g. docs/results")
    ap.add_argument("--from-out", action="store_true", help="train nothing: rebuild the summary, figure and "
                    "records from OUT/traces.csv (e.g. after an interrupted study)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.from_out:
        return _finish(_read_traces(out / "traces.csv"), out, args.record)
    ds = load_cifar(args.data, train=True)
    images, labels = ds.images[:45000], ds.labels[:45000]  # the paper's 45k/5k split
    print(f"# torch {torch.__version__}, CPU flags: {cpu_flags()}, {args.threads} thread(s)", flush=True)
    traces, summary = [], []
    for model_name in args.models:
        for setting in args.settings:
            for seed in args.seeds:
                t0 = time.perf_counter()
                tr = run(model_name, setting, seed, images=images, labels=labels,
                         iterations=args.iterations, warmup_iters=args.warmup_iters)
                s = summarize(tr) | {"wall_s": round(time.perf_counter() - t0, 1)}
                print(" ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in s.items()), flush=True)
                traces.append(tr)
                summary.append(s)
                _write(out / "traces.csv", [r for t in traces for r in t])
                _write(out / "summary.csv", summary)
    _finish(traces, out, args.record)


def _read_traces(path: Path) -> list[list[dict]]:
    with open(path, newline="") as f:
        rows = [{k: (v if k in ("model", "setting") else float(v)) for k, v in r.items()} for r in csv.DictReader(f)]
    for r in rows:
        r["seed"], r["iteration"] = int(r["seed"]), int(r["iteration"])
    runs: dict[tuple, list[dict]] = {}
    for r in rows:
        runs.setdefault((r["model"], r["setting"], r["seed"]), []).append(r)
    return list(runs.values())


def _finish(traces: list[list[dict]], out: Path, record: str | None) -> None:
    summary = [summarize(t) for t in traces]
    _write(out / "summary.csv", summary)
    _write(out / "summary_by_setting.csv", aggregate(summary))
    plot(traces, out / "deep_start.png")
    if record:
        Path(record).mkdir(parents=True, exist_ok=True)
        _write(Path(record) / "deep_start.csv", summary)
        _write(Path(record) / "deep_start_summary.csv", aggregate(summary))
    print(f"wrote {out / 'summary.csv'}, {out / 'summary_by_setting.csv'}, {out / 'deep_start.png'}")


def _write(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
