"""`reslearn convert`: a pytorch_resnet_cifar10 checkpoint (option A padded on both sides, keys
``module.``-prefixed, ``linear`` head) becomes a reslearn weights file computing the same logits.

The peer network below is written here from that project's published definition (its resnet.py
and trainer.py), so the test does not depend on our own model to define what "theirs" computes."""

import argparse
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.transforms.functional import normalize

from conftest import ROOT, require_data
from reslearn.checkpoint import load_model, load_tensors
from reslearn.cli import main
from reslearn.convert import PEER_MEAN, PEER_STD, convert_checkpoint, peer_to_reslearn, stream_permutations
from reslearn.layers import ZeroPadShortcut
from reslearn.models import cifar_resnet

DATA = pathlib.Path(os.environ.get("RESLEARN_DATA_DIR", ROOT / ".data"))


class PeerPad(nn.Module):
    """Their option A: subsample by 2, then ``planes // 4`` zero channels before and after."""

    def __init__(self, planes: int) -> None:
        super().__init__()
        self.pad = planes // 4

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class PeerBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = PeerPad(planes) if stride != 1 or in_planes != planes else nn.Sequential()

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


class PeerResNet(nn.Module):
    """conv1/bn1, three stages of n blocks (16, 32, 64 filters), average pool, ``linear``."""

    def __init__(self, n: int, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        planes_in = 16
        for s, planes in enumerate((16, 32, 64)):
            blocks = [PeerBlock(planes_in if b == 0 else planes, planes, 2 if s and b == 0 else 1) for b in range(n)]
            self.add_module(f"layer{s + 1}", nn.Sequential(*blocks))
            planes_in = planes
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(F.avg_pool2d(out, out.size(3)).flatten(1))


def peer(depth: int, seed: int = 0) -> PeerResNet:
    """A peer net in eval mode with random BN scales, shifts and running statistics, so that a
    wrongly permuted BN tensor changes the logits."""
    g = torch.Generator().manual_seed(seed)
    net = PeerResNet((depth - 2) // 6)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.3 + 0.5 * torch.rand(c, generator=g))
                m.bias.copy_(0.2 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=g))
    return net.eval()


def save_like_theirs(net: nn.Module, path: pathlib.Path, **extra) -> pathlib.Path:
    """Their trainer's file: the DataParallel state_dict (``module.`` keys) and ``best_prec1``."""
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}, "best_prec1": 91.73,
                **extra}, path)
    return path


def run(*args):
    return subprocess.run([sys.executable, "-m", "reslearn.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def converted20(tmp_path_factory):
    """A ResNet-20 checkpoint of theirs and its conversion through the command line."""
    d = tmp_path_factory.mktemp("convert")
    net = peer(20, seed=1)
    src = save_like_theirs(net, d / "resnet20-test.th", epoch=200)
    r = run("convert", str(src), "-o", str(d / "r20.safetensors"))
    assert r.returncode == 0, r.stderr
    assert "resnet20" in r.stdout and "best test error 8.27%" in r.stdout
    return net, src, d / "r20.safetensors"


@pytest.fixture(scope="module")
def cifar_test():
    from reslearn.data.cifar import load_cifar

    root = require_data(DATA / "cifar-10-batches-py", "CIFAR-10 (scripts/prepare_data.sh)").parent
    ds = load_cifar(root, name="cifar10", train=False)
    return root, ds.images[:300], ds.labels[:300]


def theirs_preprocess(images_uint8: torch.Tensor) -> torch.Tensor:
    """Their test transform: ToTensor() (x / 255) then Normalize(mean, std)."""
    return normalize(images_uint8.float() / 255, list(PEER_MEAN), list(PEER_STD))


def test_stream_permutations_carry_our_shortcut_onto_theirs():
    perms = stream_permutations()
    for p, c in zip(perms, (16, 32, 64)):
        assert torch.equal(p.sort().values, torch.arange(c))  # a permutation
    assert torch.equal(perms[1][:16], torch.arange(8, 24))  # their identity channels sit in the middle
    x_theirs = torch.randn(2, 16, 8, 8)
    for s, (c_in, c_out) in enumerate(((16, 32), (32, 64))):
        x_ours = x_theirs[:, perms[s]]
        ours = ZeroPadShortcut(c_in, c_out, 2)(x_ours)
        theirs = PeerPad(c_out)(x_theirs)
        assert torch.equal(ours, theirs[:, perms[s + 1]])
        x_theirs = torch.randn(2, c_out, 8, 8)


@pytest.mark.parametrize("depth", [20, 32, 56])
def test_converted_logits_equal_theirs(depth, tmp_path):
    net = peer(depth, seed=depth)
    sd, old = net.state_dict(), depth == 20
    if old:  # as the published files: no BN batch counter (PyTorch < 0.4.1), the pre-1.6 file format
        sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "best_prec1": torch.tensor(93.0)},
               tmp_path / "c.th", _use_new_zipfile_serialization=not old)
    r = convert_checkpoint(tmp_path / "c.th", tmp_path / "w.safetensors")
    assert r["model"] == f"resnet{depth}" and r["depth"] == depth and r["best_prec1"] == pytest.approx(93.0)
    ours, doc = load_model(tmp_path / "w.safetensors")
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        want, got = net(x), ours(x)
        assert want.abs().max() > 1  # logits of a size where 1e-5 is a real test
        assert torch.allclose(got, want, rtol=0, atol=1e-5), (got - want).abs().max()
        # The same tensors under our names but in their channel order compute something else.
        naive = cifar_resnet(depth=depth).eval()
        naive.load_state_dict({k.replace("linear.", "fc."): v for k, v in net.state_dict().items()})
        assert (naive(x) - want).abs().max() > 0.1
    assert doc["source"]["layout"] == "pytorch_resnet_cifar10" and doc["kind"] == "weights"


def test_api_and_permuted_state_dict_agree(converted20, tmp_path):
    net, src, cli_out = converted20
    convert_checkpoint(src, tmp_path / "api.safetensors", model="resnet20")
    a, doc = load_tensors(tmp_path / "api.safetensors")
    b, _ = load_tensors(cli_out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    direct = peer_to_reslearn(net.state_dict(), n=3)
    assert all(torch.equal(direct[k], a[k]) for k in direct)
    assert doc["source"]["epoch"] == 200 and doc["source"]["best_prec1"] == pytest.approx(91.73)
    assert doc["classes"][0] == "airplane" and doc["data"] == "cifar10"


def test_real_images_logits_and_eval_match_theirs(converted20, cifar_test):
    from reslearn.data.augment import Normalizer
    from reslearn.checkpoint import tensors_from_json
    from reslearn.engine.evaluate import collect_probs

    net, _, weights = converted20
    root, images, labels = cifar_test
    ours, doc = load_model(weights)
    norm = Normalizer.from_state_dict(tensors_from_json(doc["normalizer"]))  # what eval/predict apply
    with torch.no_grad():
        want = net(theirs_preprocess(images))
        assert torch.allclose(ours(norm(images)), want, rtol=0, atol=1e-5)
    probs, got_labels, _, _ = collect_probs(weights, root=str(root), limit=300)
    assert torch.equal(got_labels, labels) and torch.equal(probs.argmax(1), want.argmax(1))
    assert torch.allclose(probs, F.softmax(want, -1), rtol=0, atol=1e-6)
    r = run("eval", str(weights), "--data", str(root), "--limit", "300", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["top1_err"] == pytest.approx(100 * float((want.argmax(1) != labels).float().mean()))
    assert res["loss"] == pytest.approx(float(F.cross_entropy(want, labels)), rel=1e-5)


def test_predict_applies_their_preprocessing(converted20, cifar_test, tmp_path):
    from torchvision.io import write_png

    net, _, weights = converted20
    _, images, _ = cifar_test
    write_png(images[0], str(tmp_path / "img.png"))
    r = run("predict", str(weights), str(tmp_path / "img.png"), "--topk", "1", "--json")
    assert r.returncode == 0, r.stderr
    [(cls, p)] = json.loads(r.stdout)[0]["top"]
    with torch.no_grad():
        want = F.softmax(net(theirs_preprocess(images[:1])), -1)[0]
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert cls == classes[int(want.argmax())] and p == pytest.approx(float(want.max()), abs=1e-5)


def _bad_files(d: pathlib.Path, src: pathlib.Path) -> list[tuple[list[str], str]]:
    theirs = torch.load(src, weights_only=True)["state_dict"]
    (d / "notes.th").write_text("not a checkpoint\n")
    torch.save({"state_dict": theirs, "args": argparse.Namespace(arch="resnet20")}, d / "args.th")
    torch.save({"state_dict": {k.replace("linear", "fc"): v for k, v in theirs.items()}}, d / "tv.th")
    torch.save({"state_dict": {**theirs, "module.layer2.0.shortcut.0.weight": torch.zeros(32, 16, 1, 1)}},
               d / "optb.th")
    cut = dict(theirs, **{"module.layer2.0.conv1.weight": theirs["module.layer2.0.conv1.weight"][:, :8]})
    torch.save({"state_dict": cut}, d / "cut.th")
    return [
        ([str(d / "missing.th")], "does not exist"),
        ([str(d / "notes.th")], "not a readable PyTorch file (Unsupported operand"),
        ([str(d / "args.th")], "argparse.Namespace"),
        ([str(d / "tv.th")], "unknown checkpoint layout"),
        ([str(d / "optb.th")], "layer2.0.shortcut.0.weight"),
        ([str(src), "--model", "resnet56"], "holds a ResNet-20 (3 blocks per stage), not resnet56"),
        ([str(src), "--model", "plain20"], "plain20 is not a CIFAR ResNet"),
        ([str(d / "cut.th")], "layer2.0.conv1.weight is (32, 8, 3, 3), resnet20 needs (32, 16, 3, 3)"),
    ]


def test_bad_checkpoints_are_one_line_errors(converted20, tmp_path, capsys):
    for args, needle in _bad_files(tmp_path, converted20[1]):
        assert main(["convert", *args, "-o", str(tmp_path / "out.safetensors")]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("reslearn convert: error:") and needle in err[0], (args, err)
    assert not (tmp_path / "out.safetensors").exists()
