"""End-to-end training throughput: reslearn's in-memory pipeline vs the torchvision reference.

Both train resnet20 (He et al. 2016, Sec. 4.2) on CIFAR-10 with the same augmentation (4-pixel
zero padding, random 32x32 crop, horizontal flip), the same optimizer and batch size, for the
same number of iterations, in one process, one after the other (alternating order over repeats):
- reference: torchvision.datasets.CIFAR10 + transforms (RandomCrop, RandomHorizontalFlip,
  ToTensor, Normalize) + torch.utils.data.DataLoader(num_workers=W, shuffle=True);
- reslearn: reslearn.data.source.InMemorySource (whole set as one uint8 tensor, batch
  augmentation with tensor ops on the training device).
Prints images/s for each and the ratio, end to end (with the training step) and for the data
pipeline alone (the same batches, no model: what each pipeline can feed at most).

``--ours-step`` picks reslearn's training step: ``fp32`` (the reference's eager NCHW step, so the
ratio is the data path's alone), ``channels_last`` (exact fp32, the layout oneDNN's convolutions
prefer; ``train.channels_last=true``), or ``bf16`` (channels_last + bf16 autocast,
``train.amp=bf16``: reduced precision, worth it only where the CPU has native bf16). The
reference always runs what a plain torchvision loop runs: eager fp32, NCHW. Usage:
    python benchmarks/pipeline.py --data .data --iters 200 [--ours-step channels_last] [--device cuda]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from reslearn.results import machine_description


def step_fn(model, opt, amp=None):
    def step(x, y):
        with torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step


def make_model(device, channels_last=False):
    import reslearn

    torch.manual_seed(0)
    model = reslearn.create_model("resnet20").to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    return model, opt


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(batches, step, iters, warmup, device):
    """Images/s of ``step`` over ``iters`` batches after ``warmup`` untimed ones."""
    it, t0 = 0, None
    for x, y in batches:
        if it == warmup:
            sync(device)
            t0 = time.perf_counter()
        step(x, y)
        it += 1
        if it == warmup + iters:
            sync(device)
            return iters * x.shape[0] / (time.perf_counter() - t0)
    raise RuntimeError("the pipeline ran out of batches")


def no_step(x, y):
    # Data only: touch the batch so lazy work (device copies) is not skipped. One element by
    # index: a view(-1) fails on channels_last batches (--ours-step channels_last / bf16).
    return x[(0,) * x.dim()]


MEAN_STD = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))  # the usual per-channel statistics


def torchvision_cifar10(root, *, train: bool, transform):
    """torchvision's own CIFAR10 class on ``root``'s python batches. The shared copy is JPEG
    re-encoded, so torchvision's md5 check would refuse it: only that check is skipped."""
    import torchvision

    torchvision.datasets.CIFAR10._check_integrity = lambda self: True
    torchvision.datasets.cifar.check_integrity = lambda *a, **k: True  # the meta file's md5
    return torchvision.datasets.CIFAR10(str(root), train=train, transform=transform, download=False)


def run_reference(root, iters, batch, workers, device, warmup, data_only=False):
    import torchvision.transforms as T

    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(*MEAN_STD)])
    ds = torchvision_cifar10(root, train=True, transform=tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                                         drop_last=True, pin_memory=device.type == "cuda",
                                         persistent_workers=workers > 0)
    step = no_step if data_only else step_fn(*make_model(device))

    def batches():
        while True:
            for x, y in loader:
                yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    return timed(batches(), step, iters, warmup, device)


def run_reslearn(root, iters, batch, device, warmup, data_only=False, ours_step="fp32"):
    from reslearn.data.augment import Normalizer, random_crop_flip
    from reslearn.data.cifar import load_cifar
    from reslearn.data.source import InMemorySource

    ds = load_cifar(root, name="cifar10", train=True)
    norm = Normalizer.fit(ds.images, mode="per_channel").to(device)
    cl = ours_step in ("channels_last", "bf16")
    src = InMemorySource(ds.images, ds.labels, batch_size=batch, normalize=norm, shuffle=True, drop_last=True,
                         augment=lambda x, g: random_crop_flip(x, g, padding=4, flip=True), device=device,
                         channels_last=cl)
    amp = torch.bfloat16 if ours_step == "bf16" else None
    step = no_step if data_only else step_fn(*make_model(device, channels_last=cl), amp=amp)

    def batches():
        epoch = 0
        while True:
            yield from src.iter_epoch(epoch)
            epoch += 1

    return timed(batches(), step, iters, warmup, device)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=".data", help="folder holding cifar-10-batches-py/")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-training", action="store_true", help="measure the data pipelines alone only")
    ap.add_argument("--ours-step", choices=("fp32", "channels_last", "bf16"), default="fp32",
                    help="reslearn's training step (the reference's is always eager fp32 NCHW)")
    args = ap.parse_args()
    device = torch.device(args.device)
    import reslearn
    import torchvision

    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"device {device}{' (' + torch.cuda.get_device_name() + ')' if device.type == 'cuda' else ''}")
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, reslearn {reslearn.__version__}")
    print(f"cpu: {machine_description('cpu')}; reslearn step: {args.ours_step}, reference step: fp32 NCHW eager")
    modes = ([] if args.skip_training else [("end to end (resnet20 training step)", False)]) + \
        [("data pipeline alone (no model)", True)]
    for title, data_only in modes:
        ref, ours = [], []
        for r in range(args.repeats):
            order = ("ref", "ours") if r % 2 == 0 else ("ours", "ref")
            for which in order:
                if which == "ref":
                    ref.append(run_reference(args.data, args.iters, args.batch, args.workers, device, args.warmup,
                                             data_only))
                else:
                    ours.append(run_reslearn(args.data, args.iters, args.batch, device, args.warmup, data_only,
                                             args.ours_step))
                print(f"  {title}, repeat {r}: {which:4s} {(ref if which == 'ref' else ours)[-1]:8.1f} img/s",
                      flush=True)
        m_ref, m_ours = statistics.median(ref), statistics.median(ours)
        print(f"{title}: CIFAR-10, batch {args.batch}, {args.iters} iterations, median of {args.repeats}:")
        print(f"  torchvision DataLoader+transforms (workers={args.workers}): {m_ref:8.1f} img/s")
        print(f"  reslearn in-memory batch augmentation ({args.ours_step} step): {m_ours:8.1f} img/s")
        print(f"  ratio reslearn / reference: {m_ours / m_ref:.2f}x", flush=True)

if __name__ == "__main__":
    main()
