"""The peer check for a CIFAR-10 training result: the same network trained by a plain torchvision
loop, with nothing of reslearn's engine or data path, so a number that surprises can be told
apart from the engine that produced it.

The loop is what a PyTorch user writes from the paper (He et al. 2016, Sec. 4.2):
``torchvision.datasets.CIFAR10`` + ``transforms`` (RandomCrop(32, padding=4),
RandomHorizontalFlip, ToTensor, Normalize) + ``DataLoader(shuffle=True)``; SGD (momentum 0.9,
weight decay 1e-4, batch 128), lr 0.1 divided by 10 at 50% and 75% of the iterations
(32k/48k of the paper's 64k); the training images minus a seeded ``--val-size`` hold-out (the
paper's 45k/5k split); the error of the final weights on the 10,000 test images. The network is
reslearn's registered model (``--model``), whose equivalence with a peer's definition is tested
elsewhere (``reslearn convert``): what differs from ``reslearn train`` is the loop and the data.

Checkpoints every ``--checkpoint-every`` iterations in ``--out`` (weights, optimizer, iteration;
read back with ``torch.load(weights_only=True)``), so ``--resume`` continues an interrupted run
(the data order after a resume is a fresh shuffle: close, not bit-identical). One results row
(experiment ``peer_loop``) goes to ``--record``/peer_loop.csv.

``--engine reslearn`` trains the same budget with ``reslearn train --recipe cifar10`` (the paper's
schedule shrunk to ``--iterations`` as ``reslearn reproduce cifar-table --iterations`` does: lr
/10 at 50% and 75%) in ``--out``, and records its row in the same file (recipe ``cifar10``), so
the two loops' errors at one budget sit side by side in one table. ``--data-label`` names the
copy in the row's ``data`` column, for a run on another copy of the images (benchmarks/jpeg_copy.py).

    python benchmarks/peer_loop.py --data .data --iterations 64000 --out runs/peer_r20 \
        --record docs/results
    python benchmarks/peer_loop.py --engine reslearn --iterations 16000 --out runs/ours_r20_16k \
        --channels-last --threads 2 --record docs/results
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline import MEAN_STD, torchvision_cifar10  # benchmarks/pipeline.py: the same reference data path
from reslearn.engine.trainer import git_commit
from reslearn.results import machine_description, record_runs


def loaders(args):
    import torchvision.transforms as T

    train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(*MEAN_STD)])
    test_tf = T.Compose([T.ToTensor(), T.Normalize(*MEAN_STD)])
    train = torchvision_cifar10(args.data, train=True, transform=train_tf)
    keep = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.split_seed))
    keep = keep[args.val_size:] if args.train_subset == 0 else keep[args.val_size:args.val_size + args.train_subset]
    train = torch.utils.data.Subset(train, keep.tolist())
    test = torchvision_cifar10(args.data, train=False, transform=test_tf)
    if args.test_subset:
        test = torch.utils.data.Subset(test, range(args.test_subset))
    mk = dict(num_workers=args.workers, persistent_workers=args.workers > 0)
    return (torch.utils.data.DataLoader(train, batch_size=args.batch, shuffle=True, drop_last=True, **mk),
            torch.utils.data.DataLoader(test, batch_size=500, **mk))


@torch.no_grad()
def test_error(model, loader) -> float:
    model.eval()
    wrong = n = 0
    for x, y in loader:
        wrong += int((model(x).argmax(1) != y).sum())
        n += len(y)
    model.train()
    return 100 * wrong / n


def reslearn_engine(args) -> dict:
    """The same budget through reslearn's own engine and data path: its results row."""
    from reslearn.experiments import compare
    from reslearn.reproduce import budget_overrides
    from reslearn.results import run_row

    overrides = budget_overrides(args.iterations) + [
        f"data.root={args.data}", f"data.val_size={args.val_size}", f"data.train_subset={args.train_subset}", f"data.test_subset={args.test_subset}",
        f"optim.batch_size={args.batch}", f"train.threads={args.threads}",
        f"train.channels_last={str(args.channels_last).lower()}", f"train.eval_every={args.eval_every}",
        f"train.checkpoint_every={args.checkpoint_every}"]
    compare([args.model], recipe="cifar10", overrides=overrides, out_dir=args.out, seeds=[args.seed], figure=False)
    row = run_row(args.out / f"{args.model}-seed{args.seed}", experiment="peer_loop", recipe="cifar10")
    return {**row, "data": args.data_label}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=".data", help="folder holding cifar-10-batches-py/")
    ap.add_argument("--data-label", default="cifar10",
                    help="the row's data column: name another copy (e.g. benchmarks/jpeg_copy.py's) so its row "
                         "does not replace the shared copy's")
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--iterations", type=int, default=64000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--val-size", type=int, default=5000)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--train-subset", type=int, default=0, help="0: all training images but the hold-out")
    ap.add_argument("--test-subset", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--channels-last", action="store_true",
                    help="model and batches in channels_last memory format (the same fp32 arithmetic, faster on CPU)")
    ap.add_argument("--eval-every", type=int, default=2000)
    ap.add_argument("--checkpoint-every", type=int, default=2000)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--record", help="also write the results row into this folder's peer_loop.csv")
    ap.add_argument("--engine", choices=["torchvision", "reslearn"], default="torchvision",
                    help="torchvision: the plain loop (the peer); reslearn: the same budget through `reslearn train`")
    args = ap.parse_args()
    if args.engine == "reslearn":
        from reslearn.errors import ReslearnError

        try:
            row = reslearn_engine(args)
        except ReslearnError as e:
            raise SystemExit(f"peer_loop: {e}") from None
        for folder in [args.out] + ([args.record] if args.record else []):
            record_runs([row], folder)
        print(f"final test error {row['test_err']:.2f}% after {row['iterations']} iterations", flush=True)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    import reslearn

    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    model = reslearn.create_model(args.model)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    milestones = [args.iterations // 2, args.iterations * 3 // 4]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=0.1)  # stepped per iteration
    it, spent, ckpt = 0, 0.0, args.out / "checkpoint.pt"
    if args.resume and ckpt.is_file():
        state = torch.load(ckpt, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        sched.load_state_dict(state["sched"])
        sched.milestones = Counter(milestones)  # this run's length decides the lr drops (a lengthened run)
        it, spent = state["iteration"], state["elapsed_s"]
    train_loader, test_loader = loaders(args)
    log = open(args.out / "metrics.csv", "a", newline="")
    w = csv.writer(log)
    if log.tell() == 0:
        w.writerow(["iteration", "lr", "train_err", "test_err", "elapsed_s"])
    print(f"{args.model}, plain torchvision loop, {len(train_loader.dataset)} training images, cpu: "
          f"{machine_description('cpu')}, {torch.get_num_threads()} threads", flush=True)
    t0, wrong, seen, window = time.perf_counter() - spent, 0, 0, (0, 0)
    while it < args.iterations:
        for x, y in train_loader:
            out = model(x.contiguous(memory_format=fmt))
            loss = F.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            it += 1
            wrong, seen = wrong + int((out.argmax(1) != y).sum()), seen + len(y)
            if it % args.eval_every == 0 or it == args.iterations:
                window = (100 * wrong / seen, test_error(model, test_loader))
                w.writerow([it, sched.get_last_lr()[0], f"{window[0]:.4f}", f"{window[1]:.2f}",
                            f"{time.perf_counter() - t0:.1f}"])
                log.flush()
                print(f"it {it}: train err {window[0]:.2f}% (since the last row), test err {window[1]:.2f}%", flush=True)
                wrong = seen = 0
            if it % args.checkpoint_every == 0 or it == args.iterations:
                tmp = ckpt.with_suffix(".tmp")
                torch.save({"model": model.state_dict(), "optim": opt.state_dict(), "sched": sched.state_dict(),
                            "iteration": it, "elapsed_s": time.perf_counter() - t0}, tmp)
                os.replace(tmp, ckpt)
            if it >= args.iterations:
                break
    log.close()
    row = {"experiment": "peer_loop", "model": args.model, "recipe": "torchvision-loop", "data": args.data_label,
           "iterations": it, "epochs": round(it * args.batch / len(train_loader.dataset), 3), "seed": args.seed,
           "train_err": round(window[0], 2), "test_err": round(window[1], 2), "device": "cpu",
           "machine": machine_description("cpu"), "commit": git_commit(), "wall_s": round(time.perf_counter() - t0)}
    for folder in [args.out] + ([args.record] if args.record else []):
        record_runs([row], folder)
    print(f"final test error {row['test_err']:.2f}% after {it} iterations", flush=True)


if __name__ == "__main__":
    main()
