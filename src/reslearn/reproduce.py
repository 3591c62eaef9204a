"""One command per experiment of He et al. 2016, "Deep Residual Learning for Image Recognition".

- ``degradation``: plain vs residual nets of 20/32/44/56 layers on CIFAR-10 (Fig. 6), and
  plain-18/34 vs ResNet-18/34 on an ImageFolder data set (Fig. 4).
- ``fig4``: Fig. 4 on its own, with no CIFAR-10 (e.g. Tiny ImageNet with the imagenet64 recipe).
- ``cifar_table``: the Table 6 ladder (20 ... 1202 layers) with the paper's errors beside ours.
- ``shortcuts``: ResNet-34's shortcut options A, B and C on an ImageFolder set (Table 3).

Every net of an experiment is trained with the same recipe and seed; budgets (iterations, data
subset) scale the paper's schedule, keeping its shape (lr /10 at 50% and 75% of the iterations,
as 32k and 48k of 64k). Runs are resumable and nets already finished are skipped.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .errors import ReslearnError
from .experiments import compare, format_table, plan_runs, run_one
from .models.cifar_resnet import TABLE6_ERROR
from .results import record_runs, run_row

__all__ = ["budget_overrides", "degradation", "fig4", "cifar_table", "shortcuts", "PAPER_TABLE3", "PAPER_TABLE6_PARAMS", "degradation_finding",
           "result_rows", "record_rows", "two_panel_figure", "format_finding"]

# Table 6's parameter column (millions), the paper's figures.
PAPER_TABLE6_PARAMS = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7, 1202: 19.4}


# Budgets evaluate 16 times a run, but never more often than every EVAL_FLOOR iterations (the
# final iteration is always evaluated): one pass over CIFAR-10's 10k test images costs about 26
# training iterations of batch 128 (forward only, ~1/3 of forward + backward: 10000 / (3 x 128)),
# so at a 6-iteration budget an evaluation per iteration was most of the run; at 50 the
# evaluations stay at most about half of the training time even on a full test set.
EVAL_FLOOR = 50


def budget_overrides(iterations: int | None, train_subset: int = 0, test_subset: int = 0) -> list[str]:
    """Overrides that shrink the paper's schedule to ``iterations`` keeping its shape."""
    o = []
    if iterations:
        o += [f"schedule.iterations={iterations}",
              f"schedule.milestones=[{max(1, iterations // 2)}, {max(2, iterations * 3 // 4)}]",
              f"train.eval_every={max(EVAL_FLOOR, iterations // 16)}",
              f"train.log_every={max(1, min(50, iterations // 32))}",
              f"train.checkpoint_every={max(1, iterations // 8)}"]
    if train_subset:
        o.append(f"data.train_subset={train_subset}")
    if test_subset:
        o.append(f"data.test_subset={test_subset}")
    return o


def record_rows(rows: list[dict[str, Any]], out: Path, record: str | Path | None) -> None:
    """Results rows into the run folder's CSV and, with ``record``, that folder's too (e.g. docs/results)."""
    for folder in [out] + ([Path(record)] if record else []):
        record_runs(rows, folder)


def result_rows(names: Sequence[str], res: dict[str, Any], out: Path, seed: int) -> list[dict[str, Any]]:
    """One row per net: training error over the last tenth of the run, final test error."""
    return [{"net": n, "depth": int(n.lstrip("plainresnet")),
             "train_err": train_error_window(out / f"{n}-seed{seed}"),
             "test_err": float(res[n][0].get("test", {}).get("top1_err", float("nan")))} for n in names]


def two_panel_figure(run_sets: dict[str, list[tuple[str, Path]]], out: Path, title: str) -> Path:
    """Fig. 4 / Fig. 6 style: one panel per family (plain | ResNet), thin train, bold test."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .engine.logging import read_metrics

    fig, axes = plt.subplots(1, len(run_sets), figsize=(5.2 * len(run_sets), 3.8), dpi=120, sharey=True)
    axes = axes if len(run_sets) > 1 else [axes]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (panel, runs) in zip(axes, run_sets.items()):
        for i, (label, run_dir) in enumerate(runs):
            rows = read_metrics(run_dir / "metrics.csv")
            c = colors[i % len(colors)]
            tr = [(int(r["iteration"]), float(r["train_err"])) for r in rows if r["train_err"]]
            te = [(int(r["iteration"]), float(r["test_err"])) for r in rows if r["test_err"]]
            if tr:  # the legend names the bold test line, or the thin one when a run has no test
                ax.plot(*zip(*tr), color=c, lw=0.8, alpha=0.8, label=None if te else label)
            if te:
                ax.plot(*zip(*te), color=c, lw=2.2, label=label)
        ax.set_title(panel)
        ax.set_xlabel("iterations")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("error (%)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def _deepest_first(depths: Sequence[int]) -> list[str]:
    """Run order: deepest nets first, so that with --jobs the long runs start together and the
    short ones fill in after them."""
    return [f"{kind}{d}" for d in sorted(depths, reverse=True) for kind in ("plain", "resnet")]


@dataclass(frozen=True)
class _Half:
    """One figure's runs: Fig. 6 (``cifar10``) or Fig. 4 (``imagefolder``), the result keys too."""

    key: str
    experiment: str
    depths: tuple[int, ...]
    recipe: str
    overrides: list[str]
    title: str

    def plan(self, out: Path, seed: int) -> None:
        plan_runs(_deepest_first(self.depths), recipe=self.recipe, overrides=self.overrides,
                  out_dir=out / self.key, seeds=[seed])

    def run(self, out: Path, seed: int, jobs: int, record: str | Path | None) -> dict[str, Any]:
        """Train (or skip finished) nets; record rows; draw the figure; rows, verdict, figure path."""
        runs = out / self.key
        res = compare(_deepest_first(self.depths), recipe=self.recipe, overrides=self.overrides, out_dir=runs,
                      seeds=[seed], jobs=jobs, figure=False)  # the two-panel figure below is this one's
        rows = result_rows([f"{k}{d}" for k in ("plain", "resnet") for d in self.depths], res, runs, seed)
        record_rows([run_row(runs / f"{r['net']}-seed{seed}", experiment=self.experiment, recipe=self.recipe,
                         train_err=r["train_err"]) for r in rows], out, record)
        figure = two_panel_figure(
            {"plain": [(_label(f"plain{d}"), runs / f"plain{d}-seed{seed}") for d in self.depths],
             "ResNet": [(_label(f"resnet{d}"), runs / f"resnet{d}-seed{seed}") for d in self.depths]},
            out / f"{self.experiment}_{self.key}.png", self.title)
        return {"rows": rows, "finding": degradation_finding(rows, self.depths), "figure": str(figure)}


def _check_imagefolder(imagefolder: str) -> None:
    if not Path(imagefolder).expanduser().is_dir():  # before any net trains, as plan_runs' checks
        raise ReslearnError(f"--imagefolder {imagefolder}: no such folder (expected DIR/train/<class>/*, "
                            "DIR/val/<class>/*)")


def _fig4_half(imagefolder: str, recipe: str, overrides: Sequence[str]) -> _Half:
    _check_imagefolder(imagefolder)
    return _Half("imagefolder", "fig4", (18, 34), recipe, list(overrides),
                 "ImageFolder (He et al. 2016, Fig. 4): thin = training error, bold = val error")


def _run_halves(halves: Sequence[_Half], out: Path, *, seed: int, jobs: int,
                record: str | Path | None, name: str) -> dict[str, Any]:
    """Check every config of every half, then train them in order; ``out/<name>.json``."""
    for h in halves:  # every config checked before the first net trains
        h.plan(out, seed)
    result: dict[str, Any] = {"figures": []}
    for h in halves:
        r = h.run(out, seed, jobs, record)
        result[h.key] = r["rows"]
        result["finding" if h.key == "cifar10" else f"{h.key}_finding"] = r["finding"]
        result["budget" if h is halves[0] else f"{h.key}_budget"] = h.overrides
        result["figures"].append(r["figure"])
    result["figure"] = result["figures"][0]
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))
    return result


def degradation(*, depths: Sequence[int] = (20, 32, 44, 56), recipe: str = "cifar10",
                iterations: int | None = None, train_subset: int = 0, test_subset: int = 0,
                seed: int = 0, out: str | Path = "runs/degradation", imagefolder: str | None = None,
                imagenet_recipe: str = "imagenet", imagenet_iterations: int | None = None,
                overrides: Sequence[str] = (), imagefolder_overrides: Sequence[str] = (),
                jobs: int = 1, record: str | Path | None = None) -> dict[str, Any]:
    """Train plain-d and ResNet-d for each depth; figure + table; check the paper's finding.
    With ``imagefolder``, Fig. 4 after Fig. 6 (for Fig. 4 alone: :func:`fig4`);
    ``imagefolder_overrides`` apply to the Fig. 4 runs only (after ``overrides``). Results rows
    go to ``out/fig6.csv`` / ``out/fig4.csv`` (and into ``record`` with ``record``)."""
    budget = budget_overrides(iterations, train_subset, test_subset) + list(overrides)
    halves = [_Half("cifar10", "fig6", tuple(sorted(depths)), recipe, budget,
                    "CIFAR-10 (He et al. 2016, Fig. 6): thin = training error, bold = test error")]
    if imagefolder:
        # --imagefolder names the data of these runs even when --set gives a data.root for CIFAR.
        halves.append(_fig4_half(imagefolder, imagenet_recipe, [*budget_overrides(imagenet_iterations), *overrides,
                                                   f"data.root={imagefolder}", *imagefolder_overrides]))
    return _run_halves(halves, Path(out), seed=seed, jobs=jobs, record=record, name="degradation")


def fig4(imagefolder: str, *, recipe: str = "imagenet", iterations: int | None = None, train_subset: int = 0,
         test_subset: int = 0, seed: int = 0, out: str | Path = "runs/fig4", overrides: Sequence[str] = (),
         jobs: int = 1, record: str | Path | None = None) -> dict[str, Any]:
    """Fig. 4 on its own: plain-18/34 and ResNet-18/34 on the ImageFolder set ``imagefolder``
    with ``recipe``, the same budget as :func:`degradation` gives Fig. 6; no CIFAR-10. Writes
    ``out/fig4_imagefolder.png`` and ``out/fig4.json``; rows to ``out/fig4.csv``."""
    budget = budget_overrides(iterations, train_subset, test_subset) + list(overrides) + [f"data.root={imagefolder}"]
    return _run_halves([_fig4_half(imagefolder, recipe, budget)], Path(out), seed=seed, jobs=jobs, record=record,
                       name="fig4")


# He et al. 2016 Table 3: ResNet-34 with each shortcut option, 10-crop top-1 / top-5 validation
# error (%) on ImageNet. A: zero-padding shortcuts for increasing dimensions, all parameter-free;
# B: projections for increasing dimensions, identity elsewhere; C: projections everywhere.
PAPER_TABLE3 = {"A": (25.03, 7.76), "B": (24.52, 7.46), "C": (24.19, 7.40)}


def shortcuts(imagefolder: str, *, recipe: str = "imagenet", iterations: int | None = None, train_subset: int = 0,
              test_subset: int = 0, seed: int = 0, out: str | Path = "runs/fig4", overrides: Sequence[str] = (),
              record: str | Path | None = None) -> list[dict[str, Any]]:
    """Table 3: ResNet-34 with shortcut options A, B and C (Sec. 3.3), one recipe, seed and budget
    (as :func:`fig4`), on the ImageFolder set ``imagefolder``; the paper's errors beside ours.

    B is the ImageNet ResNets' default, so its run is the one :func:`fig4` trains for its ResNet-34:
    it lives in ``out/imagefolder/``, and with fig4's ``out`` and budget the two experiments share
    it (trained once, skipped by whichever comes second). A and C train in ``out/shortcut-A/`` and
    ``out/shortcut-C/``, one after the other. Results rows (experiment ``table3``, recipe
    ``<recipe> shortcut <option>``) go to ``out/table3.csv`` (and ``record``)."""
    from .summary import summarize

    _check_imagefolder(imagefolder)
    out = Path(out)
    budget = budget_overrides(iterations, train_subset, test_subset) + list(overrides) + [f"data.root={imagefolder}"]
    folders = {"A": out / "shortcut-A", "B": out / "imagefolder", "C": out / "shortcut-C"}
    plans = {o: plan_runs(["resnet34"], recipe=recipe, overrides=budget + ([] if o == "B" else
                          [f"model.kwargs.shortcut={o}"]), out_dir=folders[o], seeds=[seed])[0] for o in folders}
    rows, records = [], []
    for option, run in plans.items():  # every config was checked above, before the first trains
        final = run_one(run.cfg, run.run_dir)
        train_err = train_error_window(run.run_dir)
        records.append(run_row(run.run_dir, experiment="table3", recipe=f"{Path(recipe).stem} shortcut {option}",
                               train_err=train_err))
        rows.append({"shortcut": option, "params": summarize("resnet34", shortcut=option).params,
                     "train_err": train_err, "val_err": float(final.get("test", {}).get("top1_err", float("nan"))),
                     "val_top5_err": float(final.get("test", {}).get("top5_err", float("nan"))),
                     "paper_top1": PAPER_TABLE3[option][0], "paper_top5": PAPER_TABLE3[option][1],
                     "run": str(run.run_dir)})
    record_rows(records, out, record)
    (out / "table3.json").write_text(json.dumps({"rows": rows, "budget": budget}, indent=2))
    return rows


def format_shortcuts(rows: list[dict[str, Any]]) -> str:
    view = [{**r, "params_s": f"{r['params']:,}", "train": f"{r['train_err']:.2f}", "val": f"{r['val_err']:.2f}",
             "top5": f"{r['val_top5_err']:.2f}", "paper": f"{r['paper_top1']:.2f} / {r['paper_top5']:.2f}"}
            for r in rows]
    return ("ResNet-34 shortcut options (He et al. 2016, Table 3); training error over the last "
            f"{WINDOW_FRACTION:.0%} of the iterations, final val error (centre crop), %\n"
            + format_table(view, [("shortcut", "shortcut"), ("params", "params_s"), ("train err", "train"),
                                  ("val top-1", "val"), ("val top-5", "top5"),
                                  ("paper top-1 / top-5 (10-crop, ImageNet)", "paper")]))


# The verdicts compare training error (the thin curves of Fig. 4 and Fig. 6, where the paper
# states its finding) averaged over the last tenth of each run's iterations: one logged window is
# a few batches and too noisy to order nets by.
WINDOW_FRACTION = 0.1


def train_error_window(run_dir: str | Path, *, fraction: float = WINDOW_FRACTION) -> float:
    """Mean training error (%) over the logged rows of the last ``fraction`` of a run's iterations
    (at least its last logged row), from ``run_dir/metrics.csv``."""
    from .engine.logging import read_metrics

    rows = [r for r in read_metrics(Path(run_dir) / "metrics.csv") if r.get("train_err")]
    if not rows:
        return float("nan")
    last = int(rows[-1]["iteration"])
    start = last - max(1, round(fraction * last))
    window = [float(r["train_err"]) for r in rows if int(r["iteration"]) > start]
    return statistics.fmean(window)


def _label(net: str) -> str:
    kind, depth = ("ResNet", net[6:]) if net.startswith("resnet") else ("plain", net[5:])
    return f"{kind}-{depth}"


def degradation_finding(rows: list[dict[str, Any]], depths: Sequence[int]) -> dict[str, Any]:
    """The paper's finding (Sec. 4.1, 4.2): the deepest plain net has a HIGHER training error than
    the shallowest (degradation); the deepest ResNet's is LOWER than the deepest plain net's and
    lower than (or equal to) the shallowest ResNet's. ``lines`` says each in words, with numbers."""
    by = {r["net"]: r["train_err"] for r in rows}
    lo, hi = min(depths), max(depths)
    # (key, net a, net b, holds?, what a does when it holds / when not, meaning when it holds / when not)
    checks = [
        ("plain_deeper_higher_train_error", f"plain{hi}", f"plain{lo}", by[f"plain{hi}"] > by[f"plain{lo}"],
         ("trains worse than", "does not train worse than"), ("degradation", "no degradation at this budget")),
        ("resnet_beats_plain", f"resnet{hi}", f"plain{hi}", by[f"resnet{hi}"] < by[f"plain{hi}"],
         ("trains better than", "does not train better than"),
         ("the shortcuts remove the degradation", "the shortcuts do not help yet at this budget")),
        ("resnet_deeper_lower_or_equal_train_error", f"resnet{hi}", f"resnet{lo}",
         by[f"resnet{hi}"] <= by[f"resnet{lo}"], ("trains as well as or better than", "trains worse than"),
         ("with shortcuts, deeper is better", "this half of the figure needs a longer budget")),
    ]
    out: dict[str, Any] = {"lines": []}
    for key, a, b, ok, verbs, meanings in checks:
        out[key] = ok
        out["lines"].append(f"{_label(a)} {verbs[not ok]} {_label(b)} ({by[a]:.2f}% vs {by[b]:.2f}% training "
                            f"error): {meanings[not ok]}")
    out["reproduced"] = all(out[k] for k, *_ in checks)
    return out


def format_finding(f: dict[str, Any]) -> str:
    """The verdict lines, then the overall conclusion."""
    end = ("verdict: the paper's finding is reproduced" if f["reproduced"]
           else "verdict: not fully reproduced at this budget (see above which half shows)")
    return "\n".join([*f["lines"], end])


def format_degradation(result: dict[str, Any]) -> str:
    parts = []
    for key in ("cifar10", "imagefolder"):
        if key in result:
            parts.append(f"{key}: training error (mean over the last {WINDOW_FRACTION:.0%} of the iterations) "
                         "and final test error, %")
            parts.append(format_table(result[key], [("net", "net"), ("train error %", "train_err"),
                                                    ("test error %", "test_err")]))
            parts.append(format_finding(result["finding" if key == "cifar10" else "imagefolder_finding"]))
    return "\n".join(parts)


def cifar_table(*, depths: Sequence[int] = (20, 32, 44, 56, 110, 1202), seeds: int = 1,
                iterations: int | None = None, train_subset: int = 0, test_subset: int = 0,
                out: str | Path = "runs/cifar_table", overrides: Sequence[str] = (),
                jobs: int = 1, record: str | Path | None = None) -> list[dict[str, Any]]:
    """Table 6: ResNets of each depth on CIFAR-10, ``seeds`` runs each (mean +- std), with the
    110+-layer warm-up (recipe cifar10_deep) and the paper's numbers beside ours. One results row
    per run goes to ``out/table6.csv`` (and ``record/table6.csv`` with ``record``)."""
    from .summary import summarize

    out = Path(out)
    budget = budget_overrides(iterations, train_subset, test_subset) + list(overrides)
    runs = {d: {"recipe": "cifar10_deep" if d >= 110 else "cifar10", "overrides": budget, "out_dir": out,
                "seeds": range(seeds)} for d in depths}
    for d in depths:  # every config checked before the first net trains
        plan_runs([f"resnet{d}"], **runs[d])
    rows = []
    for d in depths:
        res = compare([f"resnet{d}"], **runs[d], jobs=jobs)
        errs = [r["test"]["top1_err"] for r in res[f"resnet{d}"]]
        record_rows([run_row(out / f"resnet{d}-seed{k}", experiment="table6", recipe=runs[d]["recipe"])
                 for k in range(seeds)], out, record)
        rows.append({
            "depth": d, "params": summarize(f"resnet{d}").params,
            "paper_params_M": PAPER_TABLE6_PARAMS.get(d), "paper_err": TABLE6_ERROR.get(d),
            "err_mean": statistics.fmean(errs), "err_std": statistics.stdev(errs) if len(errs) > 1 else 0.0,
            "err_best": min(errs), "seeds": len(errs),
        })
    (out / "table6.json").write_text(json.dumps({"rows": rows, "budget": budget}, indent=2))
    return rows


def format_cifar_table(rows: list[dict[str, Any]]) -> str:
    view = [{**r, "ours": f"{r['err_mean']:.2f} +- {r['err_std']:.2f}" if r["seeds"] > 1 else f"{r['err_mean']:.2f}",
             "params_s": f"{r['params']:,}", "paper_params": f"{r['paper_params_M']}M",
             "paper": f"{r['paper_err']:.2f}"} for r in rows]
    return format_table(view, [("layers", "depth"), ("params (ours)", "params_s"), ("params (paper)", "paper_params"),
                               ("test error % (ours)", "ours"), ("best", "err_best"), ("seeds", "seeds"),
                               ("test error % (paper)", "paper")])
