"""Issue 4's commands end to end at a tiny budget on real CIFAR-10: outputs written, table rows
present, numbers finite."""

import json
import math
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from conftest import ROOT, require_data
from reslearn.errors import ReslearnError
from reslearn.results import read_results

TINY = ["model.kwargs.width=4", "data.val_size=0", "optim.batch_size=32", "train.progress=false",
        "train.tensorboard=false"]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "reslearn.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def root():
    r = pathlib.Path(os.environ.get("RESLEARN_DATA_DIR", ROOT / ".data"))
    require_data(r / "cifar-10-batches-py", "CIFAR-10 (scripts/prepare_data.sh)")
    return r


@pytest.fixture(scope="module")
def degradation(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("deg")
    r = cli("reproduce", "degradation", "--depths", "20", "32", "--iterations", "6", "--train-subset", "256",
            "--test-subset", "128", "--out", str(out), "--set", f"data.root={root}", *TINY)
    assert r.returncode == 0, r.stderr
    return out, r.stdout


def test_degradation_outputs(degradation):
    out, stdout = degradation
    for net in ("plain20", "plain32", "resnet20", "resnet32"):
        assert net in stdout
    assert re.search(r"^plain-32 (trains|does not train) worse than plain-20 \(", stdout, re.M)
    assert re.search(r"^verdict: ", stdout, re.M) and f"figure: {out / 'fig6_cifar10.png'}" in stdout
    res = json.loads((out / "degradation.json").read_text())
    assert len(res["cifar10"]) == 4
    assert all(math.isfinite(r["train_err"]) and 0 <= r["test_err"] <= 100 for r in res["cifar10"])
    assert set(res["finding"]) == {"plain_deeper_higher_train_error", "resnet_beats_plain",
                                   "resnet_deeper_lower_or_equal_train_error", "reproduced", "lines"}
    # one results row per net, the verdict's training error in it
    rows = {r["model"]: r for r in read_results(out / "fig6.csv")}
    assert sorted(rows) == ["plain20", "plain32", "resnet20", "resnet32"]
    by_net = {r["net"]: r["train_err"] for r in res["cifar10"]}
    assert all(abs(float(rows[n]["train_err"]) - by_net[n]) < 0.006 for n in rows)
    assert all(rows[n]["iterations"] == "6" and rows[n]["recipe"] == "cifar10" and rows[n]["commit"] for n in rows)
    from reslearn.reproduce import degradation_finding

    # the verdict is the one the rows give (test_finding_on_made_up_curves checks degradation_finding itself)
    assert res["finding"] == degradation_finding(res["cifar10"], (20, 32))
    assert (out / "fig6_cifar10.png").stat().st_size > 5000
    assert not list(out.rglob("curves.png"))  # compare(figure=False): one figure, drawn once
    # budget keeps the paper's shape: lr /10 at 50% and 75%; a 6-iteration budget evaluates at its end only
    assert "schedule.milestones=[3, 4]" in res["budget"] and "train.eval_every=50" in res["budget"]


def _final_rows(**train_err):
    """degradation() result rows with made-up final training errors (test errors unused)."""
    return [{"net": n, "depth": int(n.lstrip("plainresnet")), "train_err": e, "test_err": 50.0}
            for n, e in train_err.items()]


@pytest.mark.parametrize("errs,plain_degrades,resnet_improves,beats_plain", [
    # Fig. 6: the deeper plain net trains worse, the deeper ResNet better: the finding
    (dict(plain20=5.0, plain32=6.0, plain56=8.0, resnet20=5.0, resnet32=4.0, resnet56=3.0), True, True, True),
    # "lower or equal" for ResNets: equal still shows it
    (dict(plain20=5.0, plain56=8.0, resnet20=4.0, resnet56=4.0), True, True, True),
    # the deeper plain net no worse (equal): no degradation shown
    (dict(plain20=5.0, plain56=5.0, resnet20=5.0, resnet56=3.0), False, True, True),
    # the deeper ResNet worse: not shown either
    (dict(plain20=5.0, plain56=8.0, resnet20=3.0, resnet56=3.5), True, False, True),
    # only the shallowest and deepest count: a bad middle depth changes nothing
    (dict(plain20=5.0, plain32=1.0, plain56=8.0, resnet20=5.0, resnet32=9.0, resnet56=3.0), True, True, True),
    # everything the wrong way round
    (dict(plain20=8.0, plain56=5.0, resnet20=3.0, resnet56=5.0), False, False, False),
    # Fig. 4's nets (ImageFolder): plain-34 above plain-18, ResNet-34 below ResNet-18
    (dict(plain18=30.0, plain34=32.0, resnet18=29.0, resnet34=27.0), True, True, True),
])
def test_finding_on_made_up_curves(errs, plain_degrades, resnet_improves, beats_plain):
    from reslearn.reproduce import degradation_finding, format_degradation

    depths = sorted({int(n.lstrip("plainresnet")) for n in errs})
    f = degradation_finding(_final_rows(**errs), depths)
    assert {k: v for k, v in f.items() if k != "lines"} == {
        "plain_deeper_higher_train_error": plain_degrades, "resnet_beats_plain": beats_plain,
        "resnet_deeper_lower_or_equal_train_error": resnet_improves,
        "reproduced": plain_degrades and resnet_improves and beats_plain}
    assert len(f["lines"]) == 3
    text = format_degradation({"cifar10": _final_rows(**errs), "finding": f})
    verdict = ("verdict: the paper's finding is reproduced" if f["reproduced"]
               else "verdict: not fully reproduced at this budget (see above which half shows)")
    assert text.endswith(verdict)


def test_degradation_skips_finished_nets(degradation, root):
    out, stdout = degradation
    mtime = (out / "cifar10" / "plain20-seed0" / "model.safetensors").stat().st_mtime
    r = cli("reproduce", "degradation", "--depths", "20", "32", "--iterations", "6", "--train-subset", "256",
            "--test-subset", "128", "--out", str(out), "--set", f"data.root={root}", *TINY)
    assert r.returncode == 0 and r.stdout == stdout
    assert (out / "cifar10" / "plain20-seed0" / "model.safetensors").stat().st_mtime == mtime
    # A different budget in the same folder must not silently report the old runs.
    r = cli("reproduce", "degradation", "--depths", "20", "32", "--iterations", "8", "--train-subset", "256",
            "--test-subset", "128", "--out", str(out), "--set", f"data.root={root}", *TINY)
    assert r.returncode == 2 and "schedule.iterations=6" in r.stderr and "another --out" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_responses_and_ensemble(degradation, tmp_path):
    out, _ = degradation
    p = out / "cifar10" / "plain32-seed0" / "model.safetensors"
    q = out / "cifar10" / "resnet32-seed0" / "model.safetensors"
    r = cli("analyze", "responses", str(p), str(q), "--limit", "200", "--out", str(tmp_path / "r.png"), "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    layers = res["layers"]
    # 32-layer CIFAR net: the 3x3 stem + 30 block convs -> 31 responses each, all finite and positive
    assert [len(v) for v in layers.values()] == [31, 31]
    assert all(s > 0 and math.isfinite(s) for v in layers.values() for _, s in v)
    assert (tmp_path / "r.png").stat().st_size > 5000
    r = cli("ensemble", str(p), str(q), "--limit", "300", "--json")
    assert r.returncode == 0, r.stderr
    e = json.loads(r.stdout)
    assert len(e["members"]) == 2 and e["ensemble"]["n"] == 300
    assert 0 <= e["ensemble"]["top1_err"] <= 100
    r = cli("ensemble", str(p))
    assert r.returncode == 2 and "at least two" in r.stderr


def test_ensemble_averages_softmax_outputs_hand_worked(monkeypatch):
    """Two members, three samples, three classes (labels 0, 1, 2). Each member is wrong once, on
    a different sample; the average of their softmax outputs is right on all three."""
    from reslearn.engine import evaluate

    probs = {"a": torch.tensor([[0.90, 0.05, 0.05], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]]),
             "b": torch.tensor([[0.30, 0.60, 0.10], [0.1, 0.8, 0.1], [0.1, 0.3, 0.6]])}
    labels = torch.tensor([0, 1, 2])
    monkeypatch.setattr(evaluate, "collect_probs",
                        lambda p, **kw: (probs[p], labels, {"model": f"net-{p}"}, "single"))
    res = evaluate.ensemble_checkpoints(["a", "b"])
    a, b = res["members"]
    assert (a["model"], a["top1_err"], b["top1_err"]) == ("net-a", pytest.approx(100 / 3), pytest.approx(100 / 3))
    assert a["loss"] == pytest.approx(-(math.log(0.9) + math.log(0.4) + math.log(0.6)) / 3)
    # average [[0.6, 0.325, 0.075], [0.3, 0.6, 0.1], [0.15, 0.25, 0.6]]: the label's share is 0.6
    # in every row (a sum instead of the mean would give 1.2, a negative loss)
    ens = res["ensemble"]
    assert (ens["top1_err"], ens["top5_err"], ens["n"]) == (0.0, 0.0, 3)
    assert ens["loss"] == pytest.approx(-math.log(0.6))
    monkeypatch.setattr(evaluate, "collect_probs",
                        lambda p, **kw: (probs[p], labels if p == "a" else labels.flip(0), {"model": p}, "single"))
    with pytest.raises(ReslearnError, match="different data"):
        evaluate.ensemble_checkpoints(["a", "b"])


class _Fig7Net(nn.Module):
    """3x3 conv (identity kernel) -> BN -> 1x1 conv -> BN: only the first BN is a Fig. 7 response
    (it follows a 3x3 conv). The BNs are fixed at y = 2x + 1 in eval mode."""

    def __init__(self, channels):
        super().__init__()
        self.conv3 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, channels, 1)
        self.bn1 = nn.BatchNorm2d(channels)
        with torch.no_grad():
            self.conv3.weight.zero_()
            for c in range(channels):
                self.conv3.weight[c, c, 1, 1] = 1.0
            for bn in (self.bn3, self.bn1):
                bn.weight.fill_(2.0)
                bn.bias.fill_(1.0)
                bn.running_var.fill_(1.0 - bn.eps)  # (x - 0) / sqrt(var + eps) = x

    def forward(self, x):
        return self.bn1(self.conv1(self.bn3(self.conv3(x))))


def test_layer_response_std_hand_worked():
    from reslearn.analysis import layer_response_std, response_layers

    net = _Fig7Net(1)
    assert [n for n, _ in response_layers(net)] == ["bn3"]
    # One std over the whole set, not a mean of per-batch stds: a batch of 0s and a batch of 2s
    # respond 1 and 5 (y = 2x + 1), whose std is 2 (each batch alone has std 0).
    batches = [(torch.zeros(1, 1, 2, 2), None), (torch.full((1, 1, 2, 2), 2.0), None)]
    ((name, std),) = layer_response_std(net.train(), batches)  # it evaluates in eval mode itself
    assert name == "bn3" and std == pytest.approx(2.0, rel=1e-5)
    # ... and over all channels together: channel 0 at 0, channel 1 at 2 -> 2 again (0 per channel)
    x = torch.stack([torch.zeros(2, 2), torch.full((2, 2), 2.0)]).unsqueeze(0)
    ((_, std),) = layer_response_std(_Fig7Net(2), [(x, None)])
    assert std == pytest.approx(2.0, rel=1e-5)
    # values 0, 1, 2, 3 respond 1, 3, 5, 7: population std sqrt(5)
    ((_, std),) = layer_response_std(net, [(torch.arange(4.0).view(1, 1, 2, 2), None)])
    assert std == pytest.approx(math.sqrt(5), rel=1e-5)


def test_cifar_table(root, tmp_path):
    r = cli("reproduce", "cifar-table", "--depths", "20", "--seeds", "2", "--iterations", "4", "--train-subset",
            "256", "--test-subset", "128", "--out", str(tmp_path), "--set", f"data.root={root}", *TINY)
    assert r.returncode == 0, r.stderr
    assert "8.75" in r.stdout and "0.27M" in r.stdout and "+-" in r.stdout
    rows = json.loads((tmp_path / "table6.json").read_text())["rows"]
    assert rows[0]["seeds"] == 2 and math.isfinite(rows[0]["err_mean"]) and rows[0]["paper_err"] == 8.75


def small_image_folder(root, dest, per_class=12):
    """Real CIFAR-10 JPEGs of two classes in the ImageFolder layout (train/, val/)."""
    src = require_data(root / "cifar10-jpeg", "CIFAR-10 JPEG copy")
    for split in ("train", "val"):
        for cls in ("cat", "ship"):
            d = dest / split / cls
            d.mkdir(parents=True)
            files = sorted((src / ("train" if split == "train" else "test") / cls).glob("*.jpg"))[:per_class]
            for f in files:
                shutil.copy(f, d / f.name)
    return dest


def test_fig4_on_an_image_folder(degradation, root, tmp_path):
    # Fig. 4 (plain/ResNet-18/34) on small in-memory images; the CIFAR-10 runs of the fixture are
    # reused (same budget, same folder), so only the four ImageFolder nets train here.
    out, _ = degradation
    folder = small_image_folder(root, tmp_path / "folder", per_class=16)
    r = cli("reproduce", "degradation", "--depths", "20", "32", "--iterations", "6", "--train-subset", "256",
            "--test-subset", "128", "--out", str(out), "--set", f"data.root={root}", *TINY,
            "--imagefolder", str(folder), "--imagenet-iterations", "4",
            "--imagefolder-set", "data.name=imagefolder-memory", "data.image_size=0", "schedule.kind=step",
            "optim.batch_size=16")
    assert r.returncode == 0, r.stderr
    # the imagenet recipe asks for channels_last; at width 4 on the CPU the trainer must refuse it
    assert "channels_last is off" in r.stderr
    res = json.loads((out / "degradation.json").read_text())
    assert [row["net"] for row in res["imagefolder"]] == ["plain18", "plain34", "resnet18", "resnet34"]
    assert all(math.isfinite(row["train_err"]) and 0 <= row["test_err"] <= 100 for row in res["imagefolder"])
    assert set(res["imagefolder_finding"]) == set(res["finding"])
    assert (out / "fig4_imagefolder.png").stat().st_size > 5000
    # both figures printed, Fig. 6 first
    assert f"figure: {out / 'fig6_cifar10.png'}\nfigure: {out / 'fig4_imagefolder.png'}" in r.stdout
    cfg = (out / "imagefolder" / "resnet34-seed0" / "config.yaml").read_text()
    assert "name: imagefolder-memory" in cfg and "iterations: 4" in cfg


def test_ten_crop_and_multi_scale_on_an_image_folder(root, tmp_path):
    small_image_folder(root, tmp_path / "folder")
    r = cli("train", "--model", "resnet18", f"data.root={tmp_path / 'folder'}", "data.name=imagefolder",
            "data.image_size=32", "data.workers=0", "model.kwargs.width=4", "optim.batch_size=8",
            "schedule.iterations=3", "schedule.milestones=[2]", "train.eval_every=3", "train.progress=false",
            "--run-dir", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    ck = str(tmp_path / "run" / "model.safetensors")
    res = {}
    for flag in ("", "--ten-crop", "--multi-scale"):
        r = cli("eval", ck, "--json", *([flag] if flag else []))
        assert r.returncode == 0, r.stderr
        res[flag] = json.loads(r.stdout)
        assert res[flag]["n"] == 24 and 0 <= res[flag]["top1_err"] <= 100
    assert [res[f]["mode"] for f in res] == ["center-crop", "10-crop", "multi-scale"]


def test_finding_words_follow_the_numbers():
    from reslearn.reproduce import degradation_finding, format_finding

    rows = [{"net": "plain20", "train_err": 40.0}, {"net": "plain56", "train_err": 88.0},
            {"net": "resnet20", "train_err": 33.0}, {"net": "resnet56", "train_err": 50.0}]
    f = degradation_finding(rows, (20, 56))
    assert (f["plain_deeper_higher_train_error"], f["resnet_beats_plain"],
            f["resnet_deeper_lower_or_equal_train_error"], f["reproduced"]) == (True, True, False, False)
    assert format_finding(f).splitlines() == [
        "plain-56 trains worse than plain-20 (88.00% vs 40.00% training error): degradation",
        "ResNet-56 trains better than plain-56 (50.00% vs 88.00% training error): the shortcuts remove the degradation",
        "ResNet-56 trains worse than ResNet-20 (50.00% vs 33.00% training error): this half of the figure needs a "
        "longer budget",
        "verdict: not fully reproduced at this budget (see above which half shows)"]
    rows[3]["train_err"] = 33.0  # a tie counts for the deeper ResNet, as the paper's "lower or equal"
    assert degradation_finding(rows, (20, 56))["reproduced"]
    rows[1]["train_err"] = 39.0
    f = degradation_finding(rows, (20, 56))
    assert not f["plain_deeper_higher_train_error"] and f["resnet_beats_plain"] and not f["reproduced"]
    assert f["lines"][0].startswith("plain-56 does not train worse than plain-20")


def test_train_error_window_is_the_last_tenth(tmp_path):
    from reslearn.reproduce import train_error_window

    lines = ["iteration,train_err"] + [f"{i},{100 - i / 10}" for i in range(10, 201, 10)]
    (tmp_path / "metrics.csv").write_text("\n".join(lines) + "\n")
    # rows after iteration 180: 190 and 200 -> (81 + 80) / 2
    assert train_error_window(tmp_path) == pytest.approx(80.5)
    assert train_error_window(tmp_path, fraction=0.25) == pytest.approx((84 + 83 + 82 + 81 + 80) / 5)
