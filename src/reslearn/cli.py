"""The ``reslearn`` command line. Each subcommand is a small function over the library;
a user's mistake (``ValueError``, ``ReslearnError``, an ``OSError`` such as a full disk) prints one
line and exits 2; Ctrl-C (or SIGTERM) during training saves a checkpoint, prints the command that
resumes it and exits 130 (143)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Callable, Sequence

from . import __version__
from .errors import Interrupted, ReslearnError

Command = Callable[[argparse.Namespace], int | None]
_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def subcommand(add: Callable[[argparse._SubParsersAction], None]):
    """Register a function that adds one subparser (and sets ``func``)."""
    _SUBCOMMANDS.append(add)
    return add


# --------------------------------------------------------------------------- models / summary
@subcommand
def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list the registered models",
        description="List registered models with their parameters and multiply-adds at the "
        "paper's input size.",
    )
    p.add_argument("pattern", nargs="?", help="glob filter, e.g. 'resnet*' or '*plain*'")
    p.add_argument("--family", help="only this family (e.g. resnet, cifar_resnet)")
    p.add_argument("--markdown", action="store_true", help="print the README's model (or pretrained) table")
    p.add_argument("--names", action="store_true", help="print the names only, one per line")
    p.add_argument("--pretrained", action="store_true",
                   help="list the pretrained weights from reslearn's own runs (use as pretrained:MODEL[/TAG])")
    p.set_defaults(func=_cmd_models)


def _print_pretrained(names: list[str], *, markdown: bool) -> int:
    from .results import markdown_table
    from .weights import list_pretrained

    rows = [{"ref": w.ref, "data": w.data, "recipe": w.recipe, "iterations": f"{w.iterations:,}", "seed": w.seed,
             "test_err": f"{w.test_err:.2f}", "paper": "-" if w.paper_test_err is None else f"{w.paper_test_err:.2f}",
             "commit": w.commit[:7], "results": w.results}
            for w in list_pretrained() if w.model in names]
    if markdown:
        print(markdown_table(rows, [("weights", "ref"), ("data", "data"), ("recipe", "recipe"),
                                    ("iterations", "iterations"), ("seed", "seed"), ("test err %", "test_err"),
                                    ("paper %", "paper"), ("commit", "commit"), ("row in", "results")]))
        return 0
    print(f"{'weights':<34} {'data':<10} {'recipe':<10} {'iterations':>10} {'seed':>4} {'test err %':>10} "
          f"{'paper %':>7}  commit")
    for r in rows:
        print(f"{r['ref']:<34} {r['data']:<10} {r['recipe']:<10} {r['iterations']:>10} {r['seed']:>4} "
              f"{r['test_err']:>10} {r['paper']:>7}  {r['commit']}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from .registry import list_models
    from .summary import human, summarize

    names = list_models(args.pattern, family=args.family)
    if args.pretrained:
        return _print_pretrained(names, markdown=args.markdown)
    if args.names:
        print("\n".join(names))
        return 0
    if args.markdown:
        print("| model | family | input | params | mult-adds | paper |")
        print("|---|---|---|---:|---:|---|")
    for name in names:
        s = summarize(name)
        size = "x".join(map(str, s.input_size))
        if args.markdown:
            print(f"| `{name}` | {s.family} | {size} | {s.params:,} | {human(s.macs)} | {s.paper} |")
        else:
            print(f"{name:<24} {s.family:<16} {size:<12} {s.params:>14,} {human(s.macs):>9}")
    return 0


@subcommand
def _add_summary(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "summary",
        help="paper-style layer table, parameters and multiply-adds of a model",
        description="Print the layer table of MODEL (stage, output size, blocks x count), its "
        "parameters and its multiply-adds (the papers' 'FLOPs'), counted by "
        "torch.utils.flop_counter.",
    )
    p.add_argument("model")
    p.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"))
    p.add_argument("--shortcut", choices=["A", "B", "C"], help="shortcut option (Sec. 3.3)")
    p.add_argument("--variant", help="e.g. 'paper' or 'v1.5' for ImageNet bottlenecks")
    p.add_argument("--num-classes", type=int)
    p.add_argument("--in-chans", type=int)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_summary)


def _cmd_summary(args: argparse.Namespace) -> int:
    from .summary import format_summary, summarize

    kwargs = {
        k: v
        for k, v in (
            ("shortcut", args.shortcut),
            ("variant", args.variant),
            ("num_classes", args.num_classes),
            ("in_chans", args.in_chans),
        )
        if v is not None
    }
    s = summarize(args.model, input_size=args.input_size, **kwargs)
    print(json.dumps(s.to_dict(), indent=2) if args.json else format_summary(s))
    return 0


# --------------------------------------------------------------------------- training
def _add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. optim.lr=0.05 schedule.iterations=2000")


@subcommand
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a model with a recipe",
        description="Train MODEL with RECIPE (a packaged recipe name or a YAML file). Precedence: "
        "defaults < recipe < key=value overrides. The run folder gets config.yaml, run.json, "
        "metrics.csv, TensorBoard events, checkpoints/, best.safetensors, model.safetensors "
        "and curves.png. Under torchrun it trains with DistributedDataParallel.",
        epilog="example: reslearn train --recipe cifar10_quick --model plain20 train.run_name=p20")
    p.add_argument("--recipe", "-r", help="recipe name (see `reslearn recipes`) or YAML path")
    p.add_argument("--model", "-m", help="registered model name (overrides model.name)")
    p.add_argument("--run-dir", help="run folder (default: train.out_dir/train.run_name)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the run folder's last checkpoint (same config; schedule.iterations may grow)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run the folder holds (its checkpoints, weights and logs are deleted)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    _add_overrides(p)
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import dump_config, load_config

    overrides = list(args.overrides) + ([f"model.name={args.model}"] if args.model else [])
    cfg = load_config(args.recipe, overrides)
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
    from .engine.rundir import check_run_dir
    from .engine.trainer import Trainer, default_run_dir
    from .plotting import plot_runs

    # A folder that cannot take this run fails now, before the data is read (fit checks again).
    check_run_dir(cfg, Path(args.run_dir) if args.run_dir else default_run_dir(cfg), resume=args.resume,
                  overwrite=args.overwrite)
    trainer = Trainer(cfg, run_dir=args.run_dir)
    final = trainer.fit(resume=args.resume, overwrite=args.overwrite)
    if trainer.dist.main:
        plot_runs([trainer.run_dir], trainer.run_dir / "curves.png", labels=[cfg.model.name])
        key = trainer.task.primary  # top1_err for classification; wer, mae, pe for the applications
        label = "error" if key == "top1_err" else key
        errs = "  ".join(f"{s} {label} {m[key]:.2f}" + ("%" if key.endswith("err") else "")
                         for s, m in final.items() if isinstance(m, dict) and key in m)
        print(f"{cfg.model.name}: {errs}  ->  {trainer.run_dir}")
    return 0


@subcommand
def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="list the data sets, or the settings one reads",
                       description="Without NAME: the data sets (data.name). With NAME: the settings it reads, "
                       "as typed on the command line, with their types and defaults; any other data.* setting "
                       "is an error for it.")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=_cmd_data)


def _cmd_data(args: argparse.Namespace) -> int:
    from .data.datasets import DATA_SETS, describe

    if not args.name:
        print("\n".join(f"{n:<20} {s.kind}" for n, s in DATA_SETS.items()))
        return 0
    for key, tp, default in describe(args.name):
        print(f"{key:<32} {tp:<28} {default}")
    return 0


@subcommand
def _add_recipes(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recipes", help="list the packaged training recipes")
    p.set_defaults(func=_cmd_recipes)


def _cmd_recipes(args: argparse.Namespace) -> int:
    from .config import RECIPE_DIR, list_recipes

    for name in list_recipes():
        head = (RECIPE_DIR / f"{name}.yaml").read_text().splitlines()[0].lstrip("# ")
        print(f"{name:<22} {head}")
    return 0


def _add_shared_classes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shared-classes", action="store_true",
                   help="evaluate on the classes the data shares with the checkpoint (with a warning saying how "
                   "many) instead of refusing data whose classes differ; labels are always matched by class name")


def _add_no_fast(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-fast", action="store_true",
                   help="run the model as trained, not the fast path (BN folded into the convolutions, "
                   "channels_last: the same function in fp32)")


@subcommand
def _add_eval(sub: argparse._SubParsersAction) -> None:
    from .data.bundle import EVAL_BATCH_SIZE

    p = sub.add_parser("eval", help="evaluate a checkpoint (top-1/top-5 error)",
                       description="Evaluate a weights file or training checkpoint on the test (or "
                       "val) split of its data set, or of --dataset/--data.")
    p.add_argument("checkpoint")
    p.add_argument("--data", help="data root (default: the run's)")
    p.add_argument("--dataset", help="data set name (default: the run's)")
    p.add_argument("--split", default="test", choices=["test", "val"])
    p.add_argument("--ten-crop", action="store_true", help="the paper's 10-crop testing (ImageFolder data)")
    p.add_argument("--multi-scale", action="store_true",
                   help="fully-convolutional multi-scale testing (ImageFolder data), at the paper's "
                   "{224,256,384,480,640} for 224 crops, the same ratios to the model's crop for others "
                   "({56,64,96,120,160} for imagenet64's 56)")
    p.add_argument("--scales", type=int, nargs="+", metavar="S",
                   help="multi-scale testing at these shorter sides instead (implies --multi-scale)")
    p.add_argument("--batch-size", type=int, default=EVAL_BATCH_SIZE, help="images per batch (default: %(default)s)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--limit", type=int, default=0,
                   help="evaluate only N images (the first N; a fixed random N of an image folder)")
    p.add_argument("--json", action="store_true")
    _add_shared_classes(p)
    _add_no_fast(p)
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    from .engine.evaluate import evaluate_checkpoint

    r = evaluate_checkpoint(args.checkpoint, root=args.data, dataset=args.dataset, split=args.split,
                            ten_crop=args.ten_crop, multi_scale=args.multi_scale or bool(args.scales),
                            scales=args.scales, batch_size=args.batch_size, device=args.device, limit=args.limit,
                            fast=not args.no_fast, shared_classes=args.shared_classes)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        views = f" at {','.join(map(str, r['scales']))}" if "scales" in r else f" {r['crop']}" if "crop" in r else ""
        print(f"{r['model']} on {r['data']} {r['split']} ({r['mode']}{views}, {r['n']} images): "
              f"top-1 error {r['top1_err']:.2f}%  top-5 error {r['top5_err']:.2f}%  loss {r['loss']:.4f}")
    return 0


@subcommand
def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="top-5 classes of image files")
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--json", action="store_true")
    _add_no_fast(p)
    p.set_defaults(func=_cmd_predict)


def _cmd_predict(args: argparse.Namespace) -> int:
    from .engine.evaluate import predict_images

    res = predict_images(args.checkpoint, args.images, topk=args.topk, fast=not args.no_fast)
    if args.json:
        print(json.dumps(res, indent=2))
    for r in [] if args.json else res:
        print(r["image"])
        for cls, p in r["top"]:
            print(f"  {p:7.2%}  {cls}")
    return 0


@subcommand
def _add_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="overlay the error curves of run folders",
                       description="Training error thin, test error bold, per iteration (the paper's style).")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", "-o", default="curves.png", help="the PNG to write (default: curves.png)")
    p.add_argument("--split", default="test", choices=["test", "val"], help="the evaluation split drawn bold")
    p.add_argument("--title")
    p.add_argument("--labels", nargs="+", metavar="LABEL",
                   help="one legend label per RUN_DIR (default: each folder's name)")
    p.add_argument("--ylim", nargs=2, type=float, metavar=("LOW", "HIGH"), help="the error axis's range, in %%")
    p.set_defaults(func=_cmd_plot)


def _cmd_plot(args: argparse.Namespace) -> int:
    from .plotting import plot_runs

    if args.labels and len(args.labels) != len(args.runs):
        raise ReslearnError(f"--labels gives {len(args.labels)} labels for {len(args.runs)} run folders; "
                            "give one per folder")
    print(plot_runs(args.runs, args.out, labels=args.labels, eval_split=args.split, title=args.title,
                    ylim=tuple(args.ylim) if args.ylim else None))
    return 0


@subcommand
def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="train several models with one recipe, errors side by side",
                       epilog="example: reslearn compare resnet20 plain20 --recipe cifar10_quick")
    p.add_argument("models", nargs="+", help="registered model names (reslearn models lists them)")
    p.add_argument("--recipe", "-r", default="cifar10_quick", help="recipe name or YAML file (default: cifar10_quick)")
    p.add_argument("--out", "-o", default="runs/compare", help="one run folder per model and seed under OUT; "
                   "finished runs are skipped and interrupted ones resumed (default: runs/compare)")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per model (mean +- std)")
    p.add_argument("--jobs", "-j", type=int, default=1, help="train this many models at once")
    p.add_argument("--record", metavar="DIR", help="also add one results row per run to DIR/<recipe>.csv "
                   "(e.g. docs/results)")
    p.add_argument("--data-label", metavar="NAME", help="the rows' data column (default: data.name); name another "
                   "copy of the data (data.root=...) so its rows do not replace the default copy's")
    p.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="key=value",
                   help="config overrides, after the recipe (e.g. train.amp=bf16)")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    from .experiments import compare, format_table, summarize_runs

    res = compare(args.models, recipe=args.recipe, overrides=args.overrides, out_dir=args.out,
                  seeds=range(args.seeds), jobs=args.jobs, record=args.record,
                  data_label=args.data_label)
    rows = summarize_runs(res)
    print(format_table(rows, [("model", "model"), ("test error %", "err_mean"), ("std", "err_std"), ("seeds", "seeds")]))
    print(f"curves: {Path(args.out) / 'curves.png'}")
    return 0


@subcommand
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the first command: the degradation problem (Fig. 6) at a CPU budget",
                       description="Train plain-20, plain-56, ResNet-20 and ResNet-56 with the short 'demo' recipe "
                       "on the image data this machine has (CIFAR-10 when found, else Debian's Fashion-MNIST, "
                       "installed with apt-get when run as root, else a checksum-verified CIFAR-10 download), "
                       "print their training and test errors, the paper's finding as this run shows it, and "
                       "write the curves PNG.")
    p.add_argument("--out", "-o", default="runs/demo")
    p.add_argument("--no-install", action="store_true", help="never run apt-get for Fashion-MNIST")
    p.add_argument("--no-download", action="store_true", help="never download CIFAR-10")
    p.add_argument("--jobs", "-j", type=int, default=1, help="train this many nets at once")
    p.add_argument("--record", metavar="DIR", help="also add the results rows to DIR/demo.csv (e.g. docs/results)")
    p.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="key=value",
                   help="config overrides after the demo recipe (e.g. schedule.iterations=20 for a smoke run)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DEMO_NETS, DEMO_RECIPE, find_demo_data, format_demo, run_demo

    data = find_demo_data(install=not args.no_install, download=not args.no_download)
    print(f"demo: {', '.join(DEMO_NETS)} with recipe {DEMO_RECIPE}, {data[0]}, seed 0", flush=True)
    print(format_demo(run_demo(out=args.out, overrides=args.overrides, data=data, jobs=args.jobs,
                             record=args.record)))
    return 0


# --------------------------------------------------------------------------- experiments
def _add_budget(p: argparse.ArgumentParser, full: str = "the paper's full 64k") -> None:
    p.add_argument("--iterations", type=int, help="shrink the paper's schedule to N iterations "
                   f"(lr /10 at 50%% and 75%%, evaluated every N/16, at least 50); default: {full}")
    p.add_argument("--train-subset", type=int, default=0,
                   help="train on N images only (the first N of CIFAR; a fixed random N of an image folder)")
    p.add_argument("--test-subset", type=int, default=0, help="test on N images only (as --train-subset)")
    p.add_argument("--out", "-o")
    p.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="key=value",
                   help="further config overrides for every run (e.g. data.root=DIR train.device=cuda)")
    p.add_argument("--jobs", "-j", type=int, default=1,
                   help="train this many nets at once (subprocesses; small nets share one GPU well)")
    p.add_argument("--record", metavar="DIR", help="also add one results row per run to DIR/<experiment>.csv "
                   "(docs/results holds the rows the docs cite)")


def _add_imagefolder_experiment(p: argparse.ArgumentParser) -> None:
    """The flags of the ImageNet experiments (fig4, shortcuts): data, recipe, seed, budget."""
    p.add_argument("--imagefolder", required=True, metavar="DIR", help="the ImageFolder root")
    p.add_argument("--recipe", default="imagenet", help="imagenet (the paper's 224 crops) or imagenet64 "
                   "(56 crops of 64x64 images, e.g. Tiny ImageNet); default: %(default)s")
    p.add_argument("--seed", type=int, default=0)
    _add_budget(p, full="the recipe's (imagenet: 600k, imagenet64: 11,719)")


@subcommand
def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", help="re-run an experiment of He et al. 2016",
                       description="Regenerate a figure or table of He et al. 2016 from real runs.")
    ex = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    d = ex.add_parser("degradation", help="plain vs ResNet, 20-56 layers on CIFAR-10 (Fig. 6), 18/34 on "
                      "an ImageFolder set (Fig. 4)")
    d.add_argument("--depths", type=int, nargs="+", default=[20, 32, 44, 56])
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--imagefolder", help="also run plain/ResNet-18/34 on this ImageFolder root (Fig. 4; "
                   "for Fig. 4 without CIFAR-10: reproduce fig4)")
    d.add_argument("--imagenet-recipe", default="imagenet", help="recipe of the Fig. 4 runs (imagenet64 for "
                   "64x64 images)")
    d.add_argument("--imagenet-iterations", type=int, help="shrink the Fig. 4 recipe's schedule to N iterations")
    d.add_argument("--imagefolder-set", dest="imagefolder_overrides", nargs="*", default=[], metavar="key=value",
                   help="overrides for the Fig. 4 runs only, after --set (e.g. for small images held in "
                        "memory: data.name=imagefolder-memory data.image_size=0 schedule.kind=step)")
    _add_budget(d)
    d.set_defaults(func=_cmd_degradation)
    f = ex.add_parser("fig4", help="plain vs ResNet, 18/34 layers on an ImageFolder set (Fig. 4) alone, no CIFAR-10",
                      description="Train plain-18/34 and ResNet-18/34 with one recipe on an ImageFolder set "
                      "(DIR/train/<class>/*, DIR/val/<class>/*); print their training and val errors and the "
                      "paper's finding (Sec. 3.4), write the two-panel figure. The budget flags shrink the "
                      "schedule as for Fig. 6 (their lr drops apply to step schedules such as imagenet64's; "
                      "imagenet divides on plateaus).",
                      epilog="example: reslearn reproduce fig4 --imagefolder .data/tiny-imagenet-50 "
                      "--recipe imagenet64 --iterations 400")
    _add_imagefolder_experiment(f)
    f.set_defaults(func=_cmd_fig4)
    sc = ex.add_parser("shortcuts", help="ResNet-34's shortcut options A/B/C on an ImageFolder set (Table 3)",
                       description="Train ResNet-34 with shortcut option A (zero-padding), B (projections where "
                       "the dimensions increase; the default) and C (projections everywhere) with one recipe, "
                       "seed and budget; print their errors beside the paper's Table 3. B's run is the one "
                       "`reproduce fig4` trains: with the same --out and budget the two share it.",
                       epilog="example: reslearn reproduce shortcuts --imagefolder .data/tiny-imagenet-50 "
                       "--recipe imagenet64 --iterations 400 --out runs/fig4")
    _add_imagefolder_experiment(sc)
    sc.set_defaults(func=_cmd_shortcuts)
    t = ex.add_parser("cifar-table", help="the Table 6 ladder, 20-1202 layers, errors beside the paper's")
    t.add_argument("--depths", type=int, nargs="+", default=[20, 32, 44, 56, 110, 1202])
    t.add_argument("--seeds", type=int, default=1, help="runs per depth: mean +- std (the paper: best of 5 for 110)")
    _add_budget(t)
    t.set_defaults(func=_cmd_cifar_table)


def _cmd_degradation(args: argparse.Namespace) -> int:
    from .reproduce import degradation, format_degradation

    r = degradation(depths=args.depths, iterations=args.iterations, train_subset=args.train_subset,
                    test_subset=args.test_subset, seed=args.seed, out=args.out or "runs/degradation",
                    imagefolder=args.imagefolder, imagenet_recipe=args.imagenet_recipe,
                    imagenet_iterations=args.imagenet_iterations, overrides=args.overrides,
                    imagefolder_overrides=args.imagefolder_overrides, jobs=args.jobs, record=args.record)
    print(format_degradation(r))
    print("\n".join(f"figure: {f}" for f in r["figures"]))
    return 0


def _cmd_fig4(args: argparse.Namespace) -> int:
    from .reproduce import fig4, format_degradation

    r = fig4(args.imagefolder, recipe=args.recipe, iterations=args.iterations, train_subset=args.train_subset,
             test_subset=args.test_subset, seed=args.seed, out=args.out or "runs/fig4", overrides=args.overrides,
             jobs=args.jobs, record=args.record)
    print(format_degradation(r))
    print(f"figure: {r['figure']}")
    return 0


def _cmd_shortcuts(args: argparse.Namespace) -> int:
    from .reproduce import format_shortcuts, shortcuts

    if args.jobs != 1:
        raise ReslearnError("reproduce shortcuts trains its nets one after the other: give train.threads "
                            "with --set instead of --jobs")
    rows = shortcuts(args.imagefolder, recipe=args.recipe, iterations=args.iterations,
                     train_subset=args.train_subset, test_subset=args.test_subset, seed=args.seed,
                     out=args.out or "runs/fig4", overrides=args.overrides, record=args.record)
    print(format_shortcuts(rows))
    return 0


def _cmd_cifar_table(args: argparse.Namespace) -> int:
    from .reproduce import cifar_table, format_cifar_table

    rows = cifar_table(depths=args.depths, seeds=args.seeds, iterations=args.iterations,
                       train_subset=args.train_subset, test_subset=args.test_subset,
                       out=args.out or "runs/cifar_table", overrides=args.overrides, jobs=args.jobs,
                       record=args.record)
    print(format_cifar_table(rows))
    return 0


@subcommand
def _add_analyze(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="analyses of trained models")
    ex = p.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)
    r = ex.add_parser("responses", help="std of 3x3 layer responses, plain vs ResNet (Fig. 7)")
    r.add_argument("checkpoints", nargs="+")
    r.add_argument("--data", help="data root (default: the run's)")
    r.add_argument("--limit", type=int, default=0,
                   help="use N test images (the first N; a fixed random N of an image folder)")
    r.add_argument("--out", "-o", default="responses.png")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_cmd_responses)
    c = ex.add_parser("roc", help="keyword-spotting ROC (false alarm vs false reject) of KWS checkpoints")
    c.add_argument("checkpoints", nargs="+")
    c.add_argument("--data", help="Speech Commands folder (default: the run's)")
    c.add_argument("--split", default="test", choices=["test", "val"])
    c.add_argument("--max-far", type=float, help="x-axis limit, e.g. 0.2")
    c.add_argument("--device", default="cpu")
    c.add_argument("--out", "-o", default="roc.png")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_cmd_roc)


def _cmd_roc(args: argparse.Namespace) -> int:
    from .speech.roc import kws_roc

    r = kws_roc(args.checkpoints, out=args.out, root=args.data, split=args.split, device=args.device,
                max_far=args.max_far)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    for c in r["curves"]:
        print(f"{c['label']:<24} accuracy {c['accuracy']:6.2f}%  false rejects at 1% / 5% false alarms "
              f"{100 * c['frr_at_far_1pct']:.1f}% / {100 * c['frr_at_far_5pct']:.1f}%  ({c['n']} clips)")
    print(f"figure: {r['png']}")
    return 0


def _cmd_responses(args: argparse.Namespace) -> int:
    from .analysis import analyze_responses

    r = analyze_responses(args.checkpoints, root=args.data, limit=args.limit, out=args.out)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        for label, layers in r["layers"].items():
            stds = [s for _, s in layers]
            print(f"{label:<24} {len(stds)} layers  mean std {sum(stds) / len(stds):.3f}  "
                  f"max {max(stds):.3f}  min {min(stds):.3f}")
        print(f"figure: {r['png']}")
    return 0


@subcommand
def _add_ensemble(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ensemble", help="average the softmax of several models; members and ensemble errors")
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--data")
    p.add_argument("--dataset")
    p.add_argument("--split", default="test", choices=["test", "val"])
    p.add_argument("--ten-crop", action="store_true")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    _add_shared_classes(p)
    p.set_defaults(func=_cmd_ensemble)


def _cmd_ensemble(args: argparse.Namespace) -> int:
    from .engine.evaluate import ensemble_checkpoints

    r = ensemble_checkpoints(args.checkpoints, root=args.data, dataset=args.dataset, split=args.split,
                             ten_crop=args.ten_crop, limit=args.limit, device=args.device,
                             shared_classes=args.shared_classes)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    for m in r["members"]:
        print(f"{m['model']:<16} top-1 {m['top1_err']:6.2f}%  top-5 {m['top5_err']:6.2f}%  {m['checkpoint']}")
    e = r["ensemble"]
    print(f"{'ensemble':<16} top-1 {e['top1_err']:6.2f}%  top-5 {e['top5_err']:6.2f}%  ({len(r['members'])} models, {e['n']} images)")
    return 0


@subcommand
def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint or model to ONNX or OpenVINO, fp32 or int8",
                       description="Export SOURCE (a .safetensors checkpoint or a registered model name) "
                       "with a dynamic batch axis, to ONNX (OUT.onnx) or OpenVINO IR (OUT.xml + OUT.bin), "
                       "with OUT.json stating the input preprocessing, size and classes. The exported model "
                       "is then run in its runtime on real images (the checkpoint's test split, or --images) "
                       "and compared with PyTorch before success is reported.",
                       epilog="example: reslearn export runs/r20/model.safetensors -o r20.xml --int8")
    p.add_argument("source")
    p.add_argument("--out", "-o", required=True, help="OUT.onnx or OUT.xml")
    p.add_argument("--format", choices=["onnx", "openvino"], help="default: from the suffix of --out")
    p.add_argument("--int8", action="store_true", help="post-training int8 quantisation (ONNX Runtime QDQ; NNCF for OpenVINO)")
    p.add_argument("--calibration", type=int, default=300, metavar="N", help="int8: calibrate on N training images")
    p.add_argument("--check-images", type=int, default=500, metavar="N", help="compare on N test images")
    p.add_argument("--max-drop", type=float, default=1.0, metavar="POINTS",
                   help="int8: fail when top-1 error rises (or, unlabelled, agreement falls) by more than this")
    p.add_argument("--images", nargs="+", metavar="FILE", help="image files to calibrate and check on instead of the data set")
    p.add_argument("--data", help="data root of the checkpoint's data set (default: the run's)")
    p.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"))
    p.add_argument("--no-check", action="store_true")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_model

    r = export_model(args.source, args.out, fmt=args.format, int8=args.int8, calibration=args.calibration,
                     check_images=args.check_images, max_drop=args.max_drop, images=args.images,
                     data_root=args.data, input_size=args.input_size, check=not args.no_check)
    print(f"wrote {r['path']} ({r['format']}, {r['precision']}, input {r['input']}), preprocessing in {r['sidecar']}")
    if "max_abs_diff" in r:
        errs = (f", top-1 error {r['top1_err_exported']:.2f}% vs PyTorch {r['top1_err_pytorch']:.2f}%"
                if "top1_err_pytorch" in r else "")
        print(f"checked on {r['checked_on']}: top-1 agreement {r['top1_agreement']:.2f}%{errs}; "
              f"max abs diff {r['max_abs_diff']:.2e}")
    return 0


@subcommand
def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert", help="turn a published CIFAR ResNet checkpoint (.th/.pt) into a reslearn weights file",
        description="Convert CHECKPOINT, a trained option-A CIFAR ResNet of the pytorch_resnet_cifar10 layout "
        "(github.com/akamaster/pytorch_resnet_cifar10: a torch.save'd {'state_dict': {'module.conv1.weight': ...}, "
        "'best_prec1': ...}), into a reslearn weights file that computes the same logits. It is read with "
        "torch.load(weights_only=True), which refuses pickled code; the depth comes from the file; the channels "
        "of the zero-padding shortcut are reordered onto ours; the file records the checkpoint's input "
        "normalisation (x/255, then per-channel mean 0.485/0.456/0.406, std 0.229/0.224/0.225), which "
        "`reslearn eval` and `reslearn predict` then apply.",
        epilog="example: reslearn convert resnet56-4bfd9763.th -o resnet56.safetensors && "
        "reslearn eval resnet56.safetensors")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="the .th/.pt file (nothing is downloaded)")
    p.add_argument("--out", "-o", required=True, help="the reslearn weights file to write (.safetensors)")
    p.add_argument("--model", "-m", help="check that the file holds this model (e.g. resnet56); default: "
                   "resnet<depth> from the file")
    p.set_defaults(func=_cmd_convert)


def _cmd_convert(args: argparse.Namespace) -> int:
    from .convert import LAYOUT, convert_checkpoint

    r = convert_checkpoint(args.checkpoint, args.out, model=args.model)
    note = f"; its best test error {100 - r['best_prec1']:.2f}%" if "best_prec1" in r else ""
    print(f"wrote {r['out']}: {r['model']} ({r['num_classes']} classes) from the {LAYOUT} checkpoint "
          f"{args.checkpoint}{note}")
    return 0


# --------------------------------------------------------------------------- entry point
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reslearn",
        description="Deep residual learning in PyTorch: models, recipes and the papers' "
        "experiments.",
    )
    parser.add_argument("--version", action="version", version=f"reslearn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    return f"reslearn: warning: {message}\n"


def resume_command(argv: Sequence[str]) -> str:
    """The command line as typed, made to resume: ``train`` gets ``--resume`` (and loses
    ``--overwrite``, which would delete the run); experiments resume by running again. A rank of
    ``torchrun`` gives the torchrun command that starts as many ranks again."""
    launcher = torchrun_launcher()
    if launcher:
        prog = shlex.join([*launcher, "-m", "reslearn.cli"])
    elif Path(sys.argv[0]).name == "reslearn":
        prog = "reslearn"
    else:
        prog = f"{shlex.quote(sys.executable)} -m reslearn.cli"
    args = [a for a in argv if a != "--overwrite"]
    if args[:1] == ["train"] and "--resume" not in args:
        args.append("--resume")
    return f"{prog} {shlex.join(args)}"


def torchrun_launcher() -> list[str]:
    """In a worker that torchrun started (its environment says so), the torchrun command
    (``python -m torch.distributed.run``: through this Python, never another install's) and the
    options that start as many ranks: ``--standalone`` on one node, ``--nnodes`` on several (where
    each node also needs the rendezvous options it was started with). Empty in any other process."""
    env = os.environ
    if "TORCHELASTIC_RUN_ID" not in env or int(env.get("WORLD_SIZE", "1")) <= 1:
        return []
    nodes = int(env.get("GROUP_WORLD_SIZE", "1"))
    where = ["--standalone"] if nodes == 1 else [f"--nnodes={nodes}"]
    per_node = env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"])
    return [sys.executable, "-m", "torch.distributed.run", *where, f"--nproc_per_node={per_node}"]


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"  # the path and the reason, without "[Errno 28]"
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    warnings.formatwarning = _one_line_warning  # one line per warning, no source excerpt
    # reslearn.data.folder refuses images over Pillow's pixel limit with an error of its own.
    warnings.filterwarnings("ignore", message="Image size .* could be decompression bomb")
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except Interrupted as e:
        if int(os.environ.get("RANK", "0")) == 0:  # every rank stops; the one that wrote the checkpoint says so
            nodes = int(os.environ.get("GROUP_WORLD_SIZE", "1"))
            where = f" (on each of the {nodes} nodes, with its rendezvous options)" if nodes > 1 else ""
            print(f"reslearn {args.command}: {e}; resume with: {resume_command(argv)}{where}", file=sys.stderr)
        return e.exit_code
    except (ReslearnError, ValueError, OSError) as e:
        print(f"reslearn {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except KeyboardInterrupt:
        print(f"reslearn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
