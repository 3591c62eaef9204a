"""How much does the JPEG in the shared CIFAR-10 copy cost? Re-encode the copy once more and
measure what one more pass costs.

The shared copy went through one JPEG pass (quality 75, 4:2:0 chroma subsampling) that we cannot
undo, and the official files cannot be downloaded on this machine, so the cost of that pass
cannot be measured directly. What can be measured is the cost of a *second* pass of the same
kind: this script writes ``--out``/cifar-10-batches-py, every training and test image decoded,
encoded again with Pillow's libjpeg at ``--quality`` and ``--subsampling``, and decoded back.

A second pass at the same quality on the same 8x8 grid changes almost nothing (the coefficients
are already quantised by the same tables), so by default the block grid is moved: the image is
reflect-padded by ``--shift`` pixels on each side (40x40 for the default 4: the luma blocks and
the 16x16 chroma units fall half a block away from the first pass's), encoded, decoded and
cropped back to 32x32. A misaligned recompression quantises afresh, much as the first pass did
(the basis of JPEG double-compression forensics); it is an estimate of the first pass's cost,
not a measurement of it, and the docs say so.

Then train the same budget on both copies and compare (``benchmarks/peer_loop.py --engine
reslearn``; ``--data-label`` keeps the two rows apart in peer_loop.csv):

    python benchmarks/jpeg_copy.py --data .data --out .data/jpeg2-q75-s4
    python benchmarks/peer_loop.py --engine reslearn --data .data/jpeg2-q75-s4 \
        --data-label cifar10-jpeg2-q75-s4 --iterations 16000 --out runs/ours_r20_16k_jpeg2 \
        --channels-last --threads 2 --record docs/results

The script prints (and writes to ``--out``/jpeg_copy.json) what the pass did to the pixels:
PSNR against the input, and the per-channel mean and std before and after.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import pickle
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from reslearn.data.cifar import load_cifar
from reslearn.errors import ReslearnError

BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
PER_BATCH = 10000
# Pillow's subsampling codes: 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0
SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


def reencode(images: np.ndarray, *, quality: int, subsampling: str, shift: int) -> np.ndarray:
    """``images`` (N, 3, 32, 32) uint8 after one JPEG pass on a grid moved by ``shift`` pixels."""
    out = np.empty_like(images)
    for i, chw in enumerate(images):
        hwc = chw.transpose(1, 2, 0)
        if shift:
            hwc = np.pad(hwc, ((shift, shift), (shift, shift), (0, 0)), mode="reflect")
        buf = io.BytesIO()
        Image.fromarray(hwc).save(buf, format="JPEG", quality=quality, subsampling=SUBSAMPLING[subsampling])
        dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        if shift:
            dec = dec[shift:shift + 32, shift:shift + 32]
        out[i] = dec.transpose(2, 0, 1)
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def channel_stats(images: np.ndarray) -> dict[str, list[float]]:
    x = images.astype(np.float64) / 255.0
    return {"mean": [round(float(v), 5) for v in x.mean(axis=(0, 2, 3))],
            "std": [round(float(v), 5) for v in x.std(axis=(0, 2, 3))]}


def write_pickle(path: Path, obj: dict) -> None:
    """A file of the official python layout, written atomically. Our own data, read back with
    reslearn's restricted unpickler, never plain ``pickle.load``."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    os.replace(tmp, path)


def write_batch(path: Path, images: np.ndarray, labels: np.ndarray, name: str) -> None:
    """One batch: R, G and B planes per row, as the official release."""
    write_pickle(path, {"batch_label": name, "labels": [int(v) for v in labels],
                        "data": images.reshape(len(images), -1),
                        "filenames": [f"{name}_{i:05d}.png" for i in range(len(images))]})


def make_copy(data: Path, out: Path, *, quality: int, subsampling: str, shift: int,
              limit: int = 0) -> dict:
    """Write the re-encoded copy of ``data``/cifar-10-batches-py to ``out``/cifar-10-batches-py;
    ``limit`` > 0 keeps the first ``limit`` images of each split (tests). Returns the report."""
    train, test = load_cifar(data, train=True), load_cifar(data, train=False)
    folder = out / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    report: dict = {"quality": quality, "subsampling": subsampling, "shift": shift, "source": str(data)}
    for split, ds, names in (("train", train, BATCHES), ("test", test, ["test_batch"])):
        x, y = ds.images.numpy(), ds.labels.numpy()
        if limit:
            x, y = x[:limit], y[:limit]
        z = reencode(x, quality=quality, subsampling=subsampling, shift=shift)
        size = math.ceil(len(z) / len(names))
        for k, name in enumerate(names):
            write_batch(folder / name, z[k * size:(k + 1) * size], y[k * size:(k + 1) * size], name)
        report[split] = {"images": len(z), "psnr_db": round(psnr(x, z), 2), "before": channel_stats(x),
                         "after": channel_stats(z)}
    write_pickle(folder / "batches.meta", {"label_names": list(train.classes), "num_cases_per_batch": PER_BATCH,
                                           "num_vis": 3072})
    (out / "jpeg_copy.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(".data"), help="folder holding cifar-10-batches-py/")
    ap.add_argument("--out", type=Path, required=True, help="writes OUT/cifar-10-batches-py/ and OUT/jpeg_copy.json")
    ap.add_argument("--quality", type=int, default=75, help="JPEG quality, 1-95 (the shared copy's: 75)")
    ap.add_argument("--subsampling", choices=sorted(SUBSAMPLING), default="4:2:0",
                    help="chroma subsampling (the shared copy's: 4:2:0)")
    ap.add_argument("--shift", type=int, default=4, help="move the block grid by this many pixels (0-8)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N images of each split (0: all)")
    args = ap.parse_args()
    if not 1 <= args.quality <= 95:
        sys.exit(f"jpeg_copy: --quality must be in 1..95, got {args.quality}")
    if not 0 <= args.shift <= 8:
        sys.exit(f"jpeg_copy: --shift must be in 0..8, got {args.shift}")
    if args.out.resolve() == args.data.resolve():
        sys.exit("jpeg_copy: --out must differ from --data (the copy would overwrite its source)")
    try:
        report = make_copy(args.data, args.out, quality=args.quality, subsampling=args.subsampling,
                           shift=args.shift, limit=args.limit)
    except (ReslearnError, OSError) as e:
        sys.exit(f"jpeg_copy: {e}")
    for split in ("train", "test"):
        r = report[split]
        print(f"{split}: {r['images']} images, PSNR {r['psnr_db']:.2f} dB against the input; "
              f"mean {r['before']['mean']} -> {r['after']['mean']}, std {r['before']['std']} -> {r['after']['std']}")
    print(f"wrote {args.out / 'cifar-10-batches-py'}")


if __name__ == "__main__":
    main()
