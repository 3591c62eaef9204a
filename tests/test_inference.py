"""The inference fast path (exact BN folding, channels_last, torch.compile) and deployment export
(ONNX Runtime, OpenVINO; fp32 and int8), against the eager PyTorch model."""

import copy
import inspect
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

import reslearn
from conftest import ROOT
from reslearn.inference import fast_model, fold_bn, foldable_pairs
from reslearn.registry import model_info

# Folding is exact in real arithmetic; in float32 it changes where rounding happens. So the test
# holds the folded model to the eager float32 model's own accuracy: against the eager model run
# in float64, its error may be at most FOLD_FACTOR times the eager float32 model's (plus 1e-6 of
# the logit scale, for models whose float32 error is near zero). Measured factors: 0.6-1.7.
FOLD_FACTOR = 4.0


def as_exact(model: nn.Module, candidate, x: torch.Tensor) -> tuple[bool, str]:
    with torch.no_grad():
        truth = copy.deepcopy(model).double()(x.double())
        eager = float((model(x).double() - truth).abs().max())
        got = float((candidate(x).double() - truth).abs().max())
    bound = FOLD_FACTOR * eager + 1e-6 * float(truth.abs().max())
    return got <= bound, f"error {got:.3g} vs float64, eager float32's {eager:.3g}"


def close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> bool:
    return float((a - b).abs().max()) <= rtol * max(1.0, float(a.abs().max()))


def one_per_family() -> list[str]:
    """The first registered model of every image-classifier family (by declared task)."""
    seen: dict[str, str] = {}
    for name in reslearn.list_models():
        info = model_info(name)
        if info.task == "classification":
            seen.setdefault(info.family, name)
    return list(seen.values())


def tiny(name: str, **kwargs) -> tuple[nn.Module, tuple[int, ...]]:
    """``name`` at a small width where its builder takes one, with BN statistics estimated on noise
    images and random affine parameters (a fresh BN is the identity map, which folding could not
    get wrong; estimated statistics keep the activations at a realistic scale through depth)."""
    info = model_info(name)
    params = inspect.signature(info.builder).parameters
    if "width" in params and "width" not in info.defaults:
        kwargs.setdefault("width", 4 if info.input_size[1] <= 32 else 8)
    model = reslearn.create_model(name, **kwargs)
    size = tuple(info.test_input_size or info.input_size)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in bns:
            m.momentum = None  # a cumulative average over the batches below
            if m.affine:
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
        model.train()
        for _ in range(2):
            model(torch.randn(4, *size, generator=g))
    return model.eval(), size


def check_fold(name: str, **kwargs) -> nn.Module:
    model, size = tiny(name, **kwargs)
    x = torch.randn(3, *size)
    folded = fold_bn(model)
    fast = fast_model(model)
    for label, candidate in (("folded", folded), ("fast path", lambda t: fast(t.contiguous(memory_format=torch.channels_last)))):
        ok, why = as_exact(model, candidate, x)
        assert ok, f"{name} {kwargs}: {label} {why}"
    return folded


@pytest.mark.parametrize("name", one_per_family())
def test_fold_and_fast_path_equal_eager_for_every_family(name):
    folded = check_fold(name)
    left = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    bns = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in reslearn.create_model(name).modules())
    assert folded.folded_bn + left == bns


@pytest.mark.parametrize("kwargs", [{"ordering": o} for o in ("original", "bn_after_addition",
                                                                "relu_before_addition", "relu_only_preact",
                                                                "full_preact")]
                         + [{"shortcut_type": t} for t in ("conv_shortcut", "exclusive_gating")])
def test_fold_every_preactivation_ordering_and_shortcut(kwargs):
    # He et al. ECCV 2016 Fig. 4 (a)-(e) place BN differently around the convs and the addition;
    # Fig. 2 (c), (e) add 1x1 convs (gate, projection + BN) on the shortcut.
    check_fold("resnet110_ablation", **kwargs)


def test_fold_counts_follow_the_data_flow():
    # Post-activation: every BN follows its conv. Full pre-activation: only the BN between a
    # unit's two convs (plus the stem's) folds; a BN that opens a unit feeds a padded conv and
    # stays. Keyword spotting (conv -> ReLU -> BN): nothing folds.
    assert fold_bn(reslearn.create_model("resnet20")).folded_bn == 19
    pre = fold_bn(reslearn.create_model("preact_resnet110"))
    assert pre.folded_bn == 1 + 54 and not isinstance(pre.layer1[1].bn1, nn.Identity)
    assert isinstance(pre.layer1[1].bn2, nn.Identity)
    assert fold_bn(reslearn.create_model("res8")).folded_bn == 0


class _Branchy(nn.Module):
    """conv whose output feeds its BN and a second consumer; a conv called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn_a = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.b, self.bn_b = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
        self.c, self.bn_c = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.a(x)
        y = self.bn_a(y) + y  # the conv output is read twice: its BN must stay
        z = self.b(self.b(y))  # shared conv
        return self.bn_c(self.c(self.bn_b(z)))


def test_fold_skips_shared_outputs_and_shared_convs():
    model = _Branchy().eval()
    with torch.no_grad():
        for bn in (model.bn_a, model.bn_b, model.bn_c):
            bn.running_var.uniform_(0.5, 2)
            bn.running_mean.uniform_(-1, 1)
    assert foldable_pairs(model, input_size=(3, 8, 8)) == [("c", "bn_c")]
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert as_exact(model, fold_bn(model, input_size=(3, 8, 8)), x)[0]


def test_compiled_fast_path_equals_eager():
    model, size = tiny("resnet20")
    fast = fast_model(model, compile=True)
    x = torch.randn(2, *size)
    with torch.no_grad():  # freezing applies under no_grad; Inductor may reorder sums: 1e-4
        assert close(model(x), fast(x), rtol=1e-4)


# --------------------------------------------------------------------------- trained net, CLI, export
def run(*args):
    return subprocess.run([sys.executable, "-m", "reslearn.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    """resnet20 at width 8 trained for 60 iterations on 5,000 real CIFAR-10 images (about 20 s on
    one thread): about 71% test error, far from chance (90%)."""
    out = tmp_path_factory.mktemp("infer") / "run"
    r = run("train", "--recipe", "cifar10_quick", "--model", "resnet20", f"data.root={data_root}",
            "model.kwargs.width=8", "data.train_subset=5000", "data.test_subset=1000", "optim.batch_size=64",
            "schedule.iterations=60", "schedule.milestones=[45]", "train.eval_every=60", "train.log_every=20",
            "train.checkpoint_every=60", "train.progress=false", "--run-dir", str(out))
    assert r.returncode == 0, r.stderr
    return out / "model.safetensors"


def test_eval_and_predict_fast_path_print_the_same(trained, data_root):
    fast, slow = (run("eval", str(trained), "--json", "--limit", "1000", *flag) for flag in ([], ["--no-fast"]))
    assert fast.returncode == 0 and slow.returncode == 0, fast.stderr + slow.stderr
    a, b = json.loads(fast.stdout), json.loads(slow.stdout)
    assert a["top1_err"] == b["top1_err"] and a["top5_err"] == b["top5_err"] and abs(a["loss"] - b["loss"]) < 1e-5
    imgs = [str(p) for p in sorted((data_root / "cifar10-jpeg" / "test" / "dog").glob("*.jpg"))[:3]]
    fast, slow = (run("predict", str(trained), *imgs, *flag) for flag in ([], ["--no-fast"]))
    assert fast.returncode == 0 and fast.stdout == slow.stdout, fast.stderr


def _runtime_logits(path: pathlib.Path, x: torch.Tensor) -> torch.Tensor:
    if path.suffix == ".onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(sess.run(None, {"images": x.numpy()})[0])
    import openvino as ov

    return torch.from_numpy(ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x.numpy())[0])


def _sidecar_input(side: dict, jpg: pathlib.Path) -> torch.Tensor:
    """A JPEG preprocessed from the sidecar alone (PIL + numpy, no reslearn), as a deployer would."""
    import numpy as np
    from PIL import Image

    pre = side["preprocessing"]
    img = Image.open(jpg).convert("RGB")
    h, w = pre["center_crop"]
    s = pre["resize_shorter_side"] / min(img.size)
    img = img.resize((round(img.width * s), round(img.height * s)), Image.BILINEAR)
    left, top = (img.width - w) // 2, (img.height - h) // 2
    px = np.asarray(img.crop((left, top, left + w, top + h)), dtype=np.float32).transpose(2, 0, 1)
    mean = np.array(pre["mean"]["data"], dtype=np.float32).reshape(pre["mean"]["shape"])
    std = np.array(pre["std"]["data"], dtype=np.float32).reshape(pre["std"]["shape"])
    return torch.from_numpy((px * pre["scale"] - mean) / std)[None]


@pytest.mark.parametrize("suffix", [".onnx", ".xml"])
def test_export_matches_pytorch_at_another_batch(trained, data_root, tmp_path, suffix):
    from reslearn.checkpoint import load_model
    from reslearn.engine.evaluate import real_inputs

    out = tmp_path / f"r20{suffix}"
    r = run("export", str(trained), "-o", str(out), "--check-images", "200")
    assert r.returncode == 0, r.stderr
    assert "checked on 200 cifar10 test images" in r.stdout and "fp32 (19 convs)" in r.stdout, r.stdout
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["classes"][:2] == ["airplane", "automobile"] and side["input"]["shape"] == [None, 3, 32, 32]
    assert side["preprocessing"]["mean"]["shape"] == [3, 32, 32]  # the paper's per-pixel mean image
    model, doc = load_model(trained)
    x, _, _ = real_inputs(doc, split="test", n=5)  # batch 5: the export traced batch 2, the check 16
    with torch.no_grad():
        want = model(x)
    assert close(want, _runtime_logits(out, x), rtol=1e-4)
    jpgs = sorted((data_root / "cifar10-jpeg" / "test" / "ship").glob("*.jpg"))[:2]
    pred = run("predict", str(trained), *map(str, jpgs), "--json", "--topk", "1")
    top = [p["top"][0][0] for p in json.loads(pred.stdout)]
    got = [side["classes"][int(_runtime_logits(out, _sidecar_input(side, j)).argmax())] for j in jpgs]
    assert got == top


# int8: on 1,000 real test images the quantised net's top-1 error stays within INT8_BOUND points of
# the fp32 net's. At this size (a net of about 71% error, trained for 60 iterations) the test shows
# that int8 keeps the net's function (a broken quantisation scores at chance, 90%); it cannot show
# the 0.5-point goal on a trained net, which benchmarks/inference.py measures on the whole
# test set with a trained checkpoint.
INT8_BOUND = 2.0


@pytest.mark.parametrize("suffix", [".onnx", ".xml"])
def test_int8_export_keeps_the_test_error(trained, tmp_path, suffix):
    from reslearn.export import export_model

    r = export_model(trained, tmp_path / f"r20.int8{suffix}", int8=True, calibration=200, check_images=1000,
                     max_drop=INT8_BOUND)
    assert r["precision"] == "int8 (19 convs)" and r["checked_on"] == "1000 cifar10 test images"
    assert r["top1_err_pytorch"] < 85, "the fixture did not learn"
    assert r["top1_err_exported"] - r["top1_err_pytorch"] <= INT8_BOUND
    assert r["top1_agreement"] >= 85
    side = json.loads((tmp_path / "r20.int8.json").read_text())
    assert side["precision"].startswith("int8") and side["check"]["top1_err_exported"] == r["top1_err_exported"]


def test_missing_runtime_names_the_extra():
    from reslearn.errors import ReslearnError
    from reslearn.export import require

    with pytest.raises(ReslearnError, match=r"pip install 'reslearn\[openvino\]'"):
        require("openvino_not_installed_here", "openvino")


def test_export_errors_are_one_line(trained, tmp_path):
    r = run("export", str(trained), "-o", str(tmp_path / "m.pt"))
    assert r.returncode == 2 and "must end in .onnx" in r.stderr and "Traceback" not in r.stderr
    r = run("export", "resnet20", "-o", str(tmp_path / "m.onnx"), "--int8")
    assert r.returncode == 2 and "int8 needs calibration images" in r.stderr and "Traceback" not in r.stderr


def test_openvino_streams_split_the_batch_and_keep_its_order():
    """Throughput mode (benchmarks/inference.py's "N streams" lines): the batch split across
    streams gives the one-stream logits, image for image; an unsplittable batch is refused."""
    from reslearn.export import openvino_model, openvino_runner

    torch.manual_seed(0)
    model = reslearn.create_model("resnet20", width=4).eval()
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        want = model(x)
    om = openvino_model(model, x[:2])
    one, prec = openvino_runner(om, precision="f32", threads=2, batch=6)
    two, _ = openvino_runner(om, precision="f32", threads=2, batch=6, streams=2)
    assert prec == "fp32 (19 convs)"
    assert close(want, one(x), rtol=1e-4) and close(one(x), two(x), rtol=1e-5)
    assert close(two(x.flip(0)), one(x).flip(0), rtol=1e-5)  # each part's logits in its place
    with pytest.raises(ValueError, match="streams=2 needs a static batch divisible by it; got batch=5"):
        openvino_runner(om, batch=5, streams=2)
