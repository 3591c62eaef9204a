"""Inference speed and agreement, side by side in one process: torchvision's eager fp32 ResNet-50
(the reference) / reslearn eager with the same weights / reslearn's fast fp32 path (BN folded,
channels_last, torch.compile with freezing) / ONNX Runtime / OpenVINO (f32, and bf16 where the CPU
has it) / int8 (OpenVINO + NNCF, ONNX Runtime static QDQ).

Cases: ResNet-50 at 224 px, batch 1 and 16; ResNet-20 at 32 px, batch 1 and 256. torchvision has
no CIFAR ResNet-20, so there the reference is reslearn's own eager fp32 model. Each line: latency
(median over repeats of the per-batch time, warm-up and compilation excluded), images/s, the ratio
to the reference's images/s at the same batch, max abs logit difference and top-1 agreement with
the reference's outputs on real images, top-1 error where the images are labelled and the weights
trained, and the precision the runtime reports its convolutions ran in. Runtimes are timed round
robin (one repeat of each in turn) so that drift on the machine spreads over all of them.

Weights: no pretrained weights can be downloaded here, so by default ResNet-50 is torchvision's
random init with its BN statistics re-estimated on real images (He init with unit running
variance lets activations grow with depth; real statistics give logits of realistic scale);
``--weights resnet50.pth`` loads a torchvision state_dict instead. ResNet-20 uses ``--checkpoint``
(a trained reslearn CIFAR-10 checkpoint; then the agreement set is the whole test set, and the
top-1 error column is each runtime's test error) or, without it, random init treated likewise.

Usage:
    python benchmarks/inference.py --data .data --checkpoint RUN/model.safetensors [--json out.json] [--markdown]
    python benchmarks/inference.py --quick      # smoke run: small inputs, 2 repeats
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from reslearn.errors import ReslearnError  # noqa: E402
from reslearn.export import require  # noqa: E402
from reslearn.results import inference_markdown  # noqa: E402
from reslearn.summary import count_macs  # noqa: E402
from machine import has_bf16, machine, measured_peaks  # noqa: E402

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
Runner = Callable[[torch.Tensor], torch.Tensor]


class Skip(Exception):
    """A runtime that cannot run here (not installed, or no such units on this CPU)."""


@dataclass
class Case:
    model: str
    size: int
    batches: tuple[int, ...]
    ref_name: str = ""
    ref: nn.Module | None = None
    ours: nn.Module | None = None
    images: torch.Tensor | None = None  # the agreement set, as model input
    labels: torch.Tensor | None = None  # only with trained weights
    calib: torch.Tensor | None = None  # int8 calibration images (training split)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- data and weights
def cifar(root: Path, train: bool, n: int):
    from reslearn.data.cifar import load_cifar

    ds = load_cifar(root, name="cifar10", train=train)
    return ds.images[:n], ds.labels[:n]


def recalibrate_bn(model: nn.Module, images: torch.Tensor, batch: int = 32) -> None:
    """Re-estimate every BN's running statistics on ``images`` (cumulative average)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(0, len(images), batch):
            model(images[i : i + batch])
    model.eval()


def imagenet_view(u8: torch.Tensor, size: int) -> torch.Tensor:
    """CIFAR uint8 images upsampled to ``size`` and normalised as torchvision's ImageNet models expect."""
    x = F.interpolate(u8.float() / 255, size=(size, size), mode="bilinear", align_corners=False)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def setup_resnet50(case: Case, args, data: Path | None) -> None:
    import torchvision

    import reslearn

    torch.manual_seed(0)
    tv = torchvision.models.resnet50().eval()
    load = lambda n, train: imagenet_view(cifar(data, train, n)[0], case.size)  # noqa: E731
    if data:
        case.images, case.calib = load(args.agree, False), load(args.calibration, True)
        what = f"{len(case.images)} CIFAR-10 test images upsampled to {case.size} px"
    else:
        case.images, case.calib = torch.randn(args.agree, 3, case.size, case.size), torch.randn(args.calibration, 3, case.size, case.size)
        what = "random inputs (no CIFAR-10 found)"
    if args.weights:
        from reslearn.models.pretrained import read_state_dict

        tv.load_state_dict(read_state_dict(args.weights))
        case.notes.append(f"weights {args.weights}; agreement on {what}")
    else:
        recalibrate_bn(tv, case.calib[:64])
        case.notes.append(f"random weights, BN statistics from 64 training images; agreement on {what}")
    ours = reslearn.create_model("resnet50", variant="v1.5").eval()  # torchvision's stride placement
    ours.load_state_dict(tv.state_dict())
    case.ref_name, case.ref, case.ours = "torchvision eager", tv, ours


def setup_resnet20(case: Case, args, data: Path | None) -> None:
    import reslearn
    from reslearn.data.augment import Normalizer

    n_test = args.agree_cifar
    if args.checkpoint:
        from reslearn.checkpoint import load_model, tensors_from_json

        model, doc = load_model(args.checkpoint)
        norm = Normalizer.from_state_dict(tensors_from_json(doc["normalizer"]))
        case.notes.append(f"trained weights {args.checkpoint}")
    else:
        torch.manual_seed(0)
        model, norm = reslearn.create_model("resnet20").eval(), None
    if data:
        train_u8, _ = cifar(data, True, max(args.calibration, 1000))
        test_u8, labels = cifar(data, False, n_test)
        norm = norm or Normalizer.fit(train_u8, mode="per_pixel")
        case.images, case.calib = norm(test_u8), norm(train_u8[: args.calibration])
        case.labels = labels if args.checkpoint else None
        what = f"{len(test_u8)} CIFAR-10 test images"
    else:
        case.images, case.calib = torch.randn(n_test, 3, 32, 32), torch.randn(args.calibration, 3, 32, 32)
        what = "random inputs (no CIFAR-10 found)"
    if not args.checkpoint:
        recalibrate_bn(model, case.calib)
        case.notes.append("random weights, BN statistics from the calibration images")
    case.notes.append(f"torchvision has no CIFAR ResNet-20, hence this reference; agreement on {what}")
    case.ref_name, case.ref, case.ours = "reslearn eager", model, model


# --------------------------------------------------------------------------- runtimes
def _torch_precision() -> str:
    p = torch.backends.mkldnn.conv.fp32_precision
    return "fp32" if p in ("none", "ieee") else f"fp32 storage, {p} convolution math"


def torch_builder(module: nn.Module) -> Callable[[int], tuple[Runner, str]]:
    def build(batch: int):
        def run(x):
            with torch.no_grad():
                return module(x)
        return run, _torch_precision()
    return build


class Exported:
    """The ONNX file and OpenVINO models of one case, made once, lazily."""

    def __init__(self, case: Case, tmp: Path) -> None:
        self.case, self.tmp = case, tmp
        self._cache: dict[str, Any] = {}

    def get(self, key: str, make: Callable[[], Any]):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def example(self) -> torch.Tensor:
        return self.case.images[:2]

    def onnx(self, int8: bool) -> Path:
        from reslearn.export import onnx_file, quantize_onnx

        fp32 = self.get("onnx", lambda: onnx_file(self.case.ours, self.tmp / f"{self.case.model}.onnx", self.example()))
        if not int8:
            return fp32
        return self.get("onnx8", lambda: quantize_onnx(fp32, self.tmp / f"{self.case.model}.int8.onnx", self.case.calib))

    def openvino(self, int8: bool):
        from reslearn.export import openvino_model, quantize_openvino

        om = self.get("ov", lambda: openvino_model(self.case.ours, self.example()))
        return self.get("ov8", lambda: quantize_openvino(om, self.case.calib)) if int8 else om


def runtimes(case: Case, exp: Exported, info: dict[str, Any], threads: int):
    """(name, build) pairs; build(batch) returns (run, precision) or raises Skip."""
    from reslearn.inference import fast_model

    def installed(module, extra):
        try:
            require(module, extra)
        except ReslearnError as e:
            raise Skip(f"not installed ({str(e).split(': ', 1)[1]})") from None

    def ort(int8):
        def build(batch):
            installed("onnxruntime", "onnx")
            installed("onnxscript", "onnx")
            from reslearn.export import onnx_runner

            return onnx_runner(exp.onnx(int8), threads=threads)
        return build

    def ov(precision, int8=False, streams=1):
        def build(batch):
            installed("openvino", "openvino")
            if int8:
                installed("nncf", "openvino")
            if precision == "bf16" and not has_bf16(info):
                raise Skip("this CPU has no bf16 units (avx512_bf16 / amx_bf16)")
            if batch % streams or batch < streams:
                raise Skip(f"a batch of {batch} does not split into {streams} streams")
            from reslearn.export import openvino_runner

            return openvino_runner(exp.openvino(int8), precision=precision, threads=threads, batch=batch,
                                   streams=streams)
        return build

    size = (3, case.size, case.size)
    folded_nchw = fast_model(case.ours, input_size=size, channels_last=False)
    folded = fast_model(case.ours, input_size=size)
    compiled = fast_model(case.ours, input_size=size, compile=True)
    rows = [(case.ref_name + " fp32", torch_builder(case.ref))]
    if case.ref is not case.ours:
        rows.append(("reslearn eager fp32", torch_builder(case.ours)))
    rows += [
        ("reslearn BN-folded eager", torch_builder(folded_nchw)),
        ("reslearn BN-folded channels_last eager", torch_builder(folded)),
        ("reslearn fast: folded+CL+compile(freezing)", torch_builder(compiled)),
        ("ONNX Runtime fp32", ort(False)),
        ("OpenVINO f32 (hint f32)", ov("f32")),
        ("OpenVINO bf16 (hint bf16)", ov("bf16")),
        ("ONNX Runtime int8 (static QDQ)", ort(True)),
        ("OpenVINO int8 (NNCF, rest f32)", ov("f32", int8=True)),
        # what NNCF leaves in float (the residual adds, pooling, the fc where it stays float) in
        # bf16 where the CPU has it: int8 and bf16 together, the issue's "reduced precision" line
        ("OpenVINO int8 (NNCF, rest bf16)", ov("bf16", int8=True)),
    ]
    if threads > 1:  # throughput mode: one stream per thread, each call's batch split between them
        rows += [(f"OpenVINO bf16, {threads} streams", ov("bf16", streams=threads)),
                 (f"OpenVINO int8 (NNCF, rest f32), {threads} streams", ov("f32", int8=True, streams=threads))]
    return rows


# --------------------------------------------------------------------------- measuring
def per_call(run: Runner, x: torch.Tensor, inner: int) -> float:
    t0 = time.perf_counter()
    for _ in range(inner):
        run(x)
    return (time.perf_counter() - t0) / inner


def outputs(run: Runner, images: torch.Tensor, batch: int) -> torch.Tensor:
    """Logits of ``images`` in batches of ``batch``; the last one padded (static shapes)."""
    outs = []
    for i in range(0, len(images), batch):
        x = images[i : i + batch]
        n = len(x)
        if n < batch:
            x = torch.cat([x, x[:1].expand(batch - n, *x.shape[1:])])
        outs.append(run(x.contiguous())[:n].float())
    return torch.cat(outs)


def agreement(got: torch.Tensor, ref: torch.Tensor, labels: torch.Tensor | None) -> dict[str, Any]:
    r = {"max_abs_diff": float((got - ref).abs().max()),
         "top1_agreement": 100 * float((got.argmax(1) == ref.argmax(1)).float().mean())}
    r["top1_err"] = None if labels is None else 100 * float((got.argmax(1) != labels).float().mean())
    return r


def build_all(case: Case, rows, batch: int, skipped: dict[str, str]):
    """{name: (run, precision, seconds to the first output)}; the first output's time includes
    export, quantisation (first batch size only: they are made once) and compilation."""
    built = {}
    x = case.images[:1].expand(batch, -1, -1, -1).contiguous()
    for name, build in rows:
        if name in skipped:
            continue
        t0 = time.perf_counter()
        try:
            run, precision = build(batch)
        except Skip as e:
            skipped[name] = str(e)
            print(f"  skipped {name}: {e}", flush=True)
            continue
        run(x)
        built[name] = (run, precision, time.perf_counter() - t0)
    return built


def time_batch(built, x: torch.Tensor, args) -> dict[str, float]:
    """Median seconds per call of each runtime: warm-up calls (compilation happens there), then
    ``args.repeats`` round-robin repeats of at least ``args.min_time`` seconds each."""
    inner = {}
    for name, (run, *_) in built.items():
        for _ in range(args.warmup):
            run(x)
        t = per_call(run, x, 1)
        inner[name] = max(1, int(args.min_time / max(t, 1e-6)))
    times: dict[str, list[float]] = {n: [] for n in built}
    names = list(built)
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            times[name].append(per_call(built[name][0], x, inner[name]))
    return {n: statistics.median(v) for n, v in times.items()}


def run_case(case: Case, rows, args) -> list[dict[str, Any]]:
    skipped: dict[str, str] = {}
    results, agree = [], {}
    ref_out = None
    for batch in sorted(case.batches, reverse=True):  # the largest first: agreement is measured there
        print(f"{case.model} {case.size}px batch {batch}: building and warming up ...", flush=True)
        built = build_all(case, rows, batch, skipped)
        if not agree:
            ref_out = outputs(built[rows[0][0]][0], case.images, batch)
            agree = {n: agreement(outputs(run, case.images, batch), ref_out, case.labels) for n, (run, *_) in built.items()}
            top2 = ref_out.topk(2, dim=1).values
            case.notes.append(f"reference logits: max |logit| {float(ref_out.abs().max()):.3g}, median top-1/top-2 "
                              f"margin {float((top2[:, 0] - top2[:, 1]).median()):.3g}")
            print(f"  {case.notes[-1]}", flush=True)
        x = case.images[:batch].contiguous() if len(case.images) >= batch else case.images[:1].expand(batch, -1, -1, -1).contiguous()
        secs = time_batch(built, x, args)
        ref_s = secs[rows[0][0]]
        flops = 2 * count_macs(case.ours, (3, case.size, case.size))  # an image's forward, as the papers count
        for name, (_, precision, first_s) in built.items():
            results.append({"model": case.model, "size": case.size, "batch": batch, "runtime": name,
                            "precision": precision, "first_output_s": first_s,
                            "latency_ms": 1e3 * secs[name], "img_s": batch / secs[name],
                            "ratio": ref_s / secs[name], "gflop_s": flops * batch / secs[name] / 1e9,
                            **agree[name]})
        print_table([r for r in results if r["batch"] == batch], case)
    return results


# --------------------------------------------------------------------------- output
def print_table(rows, case: Case) -> None:
    r0 = rows[0]
    print(f"\n{case.model} {r0['size']}px batch {r0['batch']} (reference: {case.ref_name} fp32)")
    print(f"  {'runtime':<44} {'precision':<24} {'latency ms':>10} {'img/s':>9} {'ratio':>7} "
          f"{'max|dlogit|':>11} {'top-1 agree':>11} {'top-1 err':>9} {'1st out s':>9}")
    for r in rows:
        err = "" if r["top1_err"] is None else f"{r['top1_err']:.2f}%"
        print(f"  {r['runtime']:<44} {r['precision']:<24} {r['latency_ms']:>10.2f} {r['img_s']:>9.1f} "
              f"{r['ratio']:>6.2f}x {r['max_abs_diff']:>11.2e} {r['top1_agreement']:>10.2f}% {err:>9} "
              f"{r['first_output_s']:>9.1f}")
    print(flush=True)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT / ".data"), help="folder holding cifar-10-batches-py/")
    p.add_argument("--checkpoint", help="a trained reslearn resnet20 CIFAR-10 checkpoint")
    p.add_argument("--weights", help="a torchvision resnet50 state_dict (.pth or .safetensors)")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--min-time", type=float, default=0.3, help="seconds per timed repeat (at least one call)")
    p.add_argument("--agree", type=int, default=256, help="ResNet-50 agreement images")
    p.add_argument("--agree-cifar", type=int, default=10000, help="ResNet-20 agreement images (the test set)")
    p.add_argument("--calibration", type=int, default=300, help="int8 calibration images (training split)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--only", choices=["resnet50", "resnet20"])
    p.add_argument("--quick", action="store_true", help="smoke run: small inputs and batches, 2 repeats")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--markdown", action="store_true", help="also print the results as markdown tables")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.min_time = 2, 1, 0.05
        args.agree, args.agree_cifar, args.calibration = 8, 64, 16
    return args


def main(argv=None) -> int:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    info = machine()
    # the machine's own fp32 (and bf16) rate, measured in this run: what "x of peak" is against
    info["peaks"], info["peak_kernels"] = measured_peaks(
        matmul_n=512 if args.quick else 4096, conv=(16, 8, 2) if args.quick else (256, 28, 32),
        bf16=has_bf16(info), repeats=3 if args.quick else 10, device="cpu")
    print(json.dumps(info))
    data = Path(args.data) if (Path(args.data) / "cifar-10-batches-py").is_dir() else None
    cases = [Case("resnet50", 64 if args.quick else 224, (1, 4) if args.quick else (1, 16)),
             Case("resnet20", 32, (1, 16) if args.quick else (1, 256))]
    cases = [c for c in cases if args.only in (None, c.model)]
    results = []
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            (setup_resnet50 if case.model == "resnet50" else setup_resnet20)(case, args, data)
            print(f"{case.model}: {'; '.join(case.notes)}", flush=True)
            results += run_case(case, runtimes(case, Exported(case, Path(tmp)), info, args.threads), args)
    report = {"machine": info, "results": results, "notes": {c.model: c.notes for c in cases}}
    if args.markdown:  # the same tables `make readme` puts in docs/benchmarks.md from the JSON
        print(inference_markdown(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
