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

from conftest import ROOT, require_data

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
    assert (out / "fig6_cifar10.png").stat().st_size > 5000
    # budget keeps the paper's shape: lr /10 at 50% and 75%; a 6-iteration budget evaluates at its end only
    assert "schedule.milestones=[3, 4]" in res["budget"] and "train.eval_every=50" in res["budget"]


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
