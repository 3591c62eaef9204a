"""Issue 18: the ImageNet experiments on ImageNet-style images. The shared 50-class, 64x64
Tiny ImageNet subset read by the loaders (skipped where it is absent, failing under
RESLEARN_REQUIRE_DATA=1), the imagenet64 recipe, test-time augmentation scaled to the model's
crop, workers and threads that fit the machine, and ``reproduce fig4`` end to end without CIFAR-10
at a tiny budget (width-4 nets, a few iterations, one thread)."""

import io
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import ROOT, require_data
from reslearn.config import load_config
from reslearn.data import testtime
from reslearn.data.folder import ImageFolderDataset, scan_image_folder
from reslearn.data.transforms import PAPER_TEST_SCALES, eval_resize, multi_scale_sizes
from reslearn.engine.data import build_data
from reslearn.engine.device import auto_threads, auto_workers
from reslearn.engine.logging import Progress
from reslearn.errors import ReslearnError
from reslearn.results import read_results

TINY = ["model.kwargs.width=4", "optim.batch_size=16", "train.progress=false", "train.tensorboard=false",
        "train.threads=1"]


def cli(*args, cwd=ROOT, env=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "reslearn.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def tiny():
    """The shared subset, extracted by scripts/prepare_data.sh into $RESLEARN_DATA_DIR or .data."""
    root = Path(os.environ.get("RESLEARN_DATA_DIR", ROOT / ".data"))
    return require_data(root / "tiny-imagenet-50", "Tiny ImageNet 50-class subset (scripts/prepare_data.sh)")


# --------------------------------------------------------------------------- the shared subset
def test_subset_is_an_image_folder_of_50_classes(tiny):
    wnids = [line.split("\t")[0] for line in (tiny / "classes.txt").read_text().splitlines() if line.strip()]
    train, classes, skipped = scan_image_folder(tiny, split="train")
    val, val_classes, val_skipped = scan_image_folder(tiny, split="val", classes=classes)
    assert classes == sorted(wnids) and len(classes) == 50 and val_classes == classes
    assert (len(train), len(val), skipped, val_skipped) == (25_000, 2_500, [], [])
    per_class = torch.bincount(torch.tensor([y for _, y in val]), minlength=50)
    assert per_class.tolist() == [50] * 50
    # labels follow the folders
    assert all(p.parent.name == classes[y] for p, y in val[::97])


def test_grayscale_jpegs_come_out_rgb_at_the_recipe_crop(tiny):
    gray = None
    for path in sorted((tiny / "val").glob("*/*.JPEG")):
        with Image.open(path) as im:
            if im.mode == "L":
                gray = path
                break
    assert gray is not None, "the subset's README promises grayscale JPEGs"
    bundle = build_data(load_config("imagenet64", [f"data.root={tiny}", "data.workers=0"]).data, batch_size=8,
                        seed=0, device=torch.device("cpu"))
    for tf in (bundle.train.dataset.transform, bundle.evals["test"].dataset.transform):  # the recipe's two
        ds = ImageFolderDataset(tiny, split="val", transform=tf)
        x, y = ds[[p for p, _ in ds.samples].index(gray)]
        assert x.shape == (3, 56, 56) and x.dtype == torch.float32 and torch.isfinite(x).all()
        assert ds.classes[y] == gray.parent.name


def test_imagenet64_batches_without_worker_warnings(tiny):
    cfg = load_config("imagenet64", [f"data.root={tiny}", "data.train_subset=64", "data.test_subset=40"])
    assert cfg.data.workers == "auto" and cfg.train.threads == "auto"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bundle = build_data(cfg.data, batch_size=16, seed=0, device=torch.device("cpu"))
        x, y = next(bundle.train.iter_epoch(0))
        xt, yt = next(bundle.evals["test"].iter_epoch(0))
    assert not [w for w in caught if "worker" in str(w.message)], [str(w.message) for w in caught]
    assert (bundle.num_classes, bundle.image_size, bundle.train_size) == (50, (56, 56), 64)
    assert x.shape == (16, 3, 56, 56) and xt.shape == (40, 3, 56, 56)
    assert 0 <= int(y.min()) and int(y.max()) < 50
    # the scale augmentation's range follows the crop: [64, 120] for 56 ([256, 480] for 224)
    tf = bundle.train.dataset.dataset.transform  # a Subset of the folder
    resize = [t for t in tf.transforms if type(t).__name__ == "RandomResize"][0]
    assert (resize.min_size, resize.max_size) == (64, 121)  # upper bound exclusive


# --------------------------------------------------------------------------- recipe, cores
def test_imagenet64_recipe_is_the_imagenet_shape_at_56():
    cfg, paper = load_config("imagenet64"), load_config("imagenet")
    first = Path(cfg.recipe).read_text().splitlines()[0]
    assert "Fig. 4" in first and "Target:" in first
    assert (cfg.data.name, cfg.data.augment, cfg.data.image_size) == ("imagefolder", "standard", 56)
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay, cfg.optim.batch_size) == \
        (paper.optim.lr, paper.optim.momentum, paper.optim.weight_decay, paper.optim.batch_size)
    it = cfg.schedule.iterations
    assert cfg.schedule.kind == "step" and cfg.schedule.milestones == [it // 2, it * 3 // 4]
    assert it == math.ceil(120 * 25_000 / 256)  # 120 epochs of the subset, as 60e4 of ImageNet


def test_auto_workers_and_threads_fit_the_cores():
    assert [auto_workers("auto", cores=c) for c in (1, 2, 4, 16, 64)] == [0, 1, 3, 8, 8]
    assert auto_threads("auto", workers=1, cores=2) == 1 and auto_threads("auto", workers=8, cores=16) == 8
    assert auto_threads("auto", workers=0, cores=1) == 1
    assert (auto_workers(5, cores=2), auto_threads(0, workers=1, cores=2)) == (5, 0)  # counts as given
    assert load_config(None, ["data.workers=3", "train.threads=2"]).data.workers == 3
    for bad in ("data.workers=many", "data.workers=-1", "train.threads=-2", "train.threads=all"):
        with pytest.raises(ReslearnError, match="must be a count >= 0 or auto"):
            load_config(None, [bad])


# --------------------------------------------------------------------------- test-time augmentation
def test_test_sizes_are_the_papers_ratios_to_the_crop():
    assert multi_scale_sizes(224) == PAPER_TEST_SCALES and eval_resize(224) == 256
    assert multi_scale_sizes(56) == (56, 64, 96, 120, 160) and eval_resize(56) == 64
    assert multi_scale_sizes(32) == (32, 37, 55, 69, 91)


def test_multi_scale_runs_the_given_sizes():
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(tuple(x.shape[-2:]))
            return torch.zeros(len(x), 3)

    img = torch.rand(3, 64, 80)
    probs = testtime.predict_multi_scale(Probe(), [img], scales=multi_scale_sizes(56))
    assert probs.shape == (1, 3) and torch.allclose(probs, torch.full((1, 3), 1 / 3))
    # each shorter side, then its flip; the aspect ratio kept
    assert seen == [(56, 70), (56, 70), (64, 80), (64, 80), (96, 120), (96, 120), (120, 150), (120, 150),
                    (160, 200), (160, 200)]


@pytest.fixture(scope="module")
def trained64(tiny, tmp_path_factory):
    run = tmp_path_factory.mktemp("r64") / "run"
    r = cli("train", "--recipe", "imagenet64", "--model", "resnet18", f"data.root={tiny}", "data.train_subset=32",
            "schedule.iterations=2", "schedule.milestones=[1]", "train.eval_every=2", "data.test_subset=16",
            *TINY, "--run-dir", run)
    assert r.returncode == 0, r.stderr
    return run / "model.safetensors"


@pytest.mark.parametrize("flags,mode,views", [
    ([], "center-crop", {"crop": 56, "resize": 64}),
    (["--ten-crop"], "10-crop", {"crop": 56, "resize": 64}),
    (["--multi-scale"], "multi-scale", {"crop": 56, "scales": [56, 64, 96, 120, 160]}),
    (["--scales", "48", "64"], "multi-scale", {"crop": 56, "scales": [48, 64]}),
])
def test_eval_views_follow_the_training_crop(trained64, flags, mode, views):
    r = cli("eval", trained64, "--limit", "12", "--json", *flags)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["mode"] == mode and res["n"] == 12 and 0 <= res["top1_err"] <= 100
    assert {k: res[k] for k in views} == views


def test_bad_scales_are_one_line(trained64):
    r = cli("eval", trained64, "--scales", "0", "64")
    assert r.returncode == 2 and "multi-scale test sizes must be >= 1" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- progress, Fig. 4
def test_progress_lines_carry_the_eval_errors():
    buf = io.StringIO()
    p = Progress(total=8, initial=0, desc="resnet18", stream=buf, tty=False)
    p.update(8)
    p.show({"train_loss": 3.9, "train_err": 97.5, "lr": 0.1, "images_per_s": 50.0, "test_err": 96.25})
    assert buf.getvalue().startswith("resnet18 it 8/8 (100%) | loss 3.9000 | err 97.50% |")
    assert buf.getvalue().endswith(" | test err 96.25%\n")


def test_fig4_alone_without_cifar(tiny, tmp_path):
    empty = tmp_path / "no-data"
    empty.mkdir()
    out = tmp_path / "fig4"
    # no CIFAR-10 anywhere it is looked for: RESLEARN_DATA_DIR empty, cwd without .data
    r = cli("reproduce", "fig4", "--imagefolder", tiny, "--recipe", "imagenet64", "--iterations", "4",
            "--train-subset", "64", "--test-subset", "32", "--out", out, "--set", *TINY, cwd=tmp_path,
            env={"RESLEARN_DATA_DIR": str(empty), "PYTHONPATH": str(ROOT / "src")})
    assert r.returncode == 0, r.stderr
    assert not (out / "cifar10").exists() and "cifar10" not in r.stdout
    for net in ("plain18", "plain34", "resnet18", "resnet34"):
        assert net in r.stdout
    assert "training error (mean over the last 10% of the iterations)" in r.stdout
    assert "plain-34 " in r.stdout and r.stdout.count("verdict:") == 1
    assert f"figure: {out / 'fig4_imagefolder.png'}" in r.stdout
    assert (out / "fig4_imagefolder.png").stat().st_size > 5000
    res = json.loads((out / "fig4.json").read_text())
    assert [row["net"] for row in res["imagefolder"]] == ["plain18", "plain34", "resnet18", "resnet34"]
    assert all(math.isfinite(row["train_err"]) and 0 <= row["test_err"] <= 100 for row in res["imagefolder"])
    assert "train.eval_every=50" in res["budget"] and "data.train_subset=64" in res["budget"]
    cfg = (out / "imagefolder" / "resnet34-seed0" / "config.yaml").read_text()
    assert "image_size: 56" in cfg and "iterations: 4" in cfg and "train_subset: 64" in cfg
    # train.progress=false: one line per net, at its one evaluation (the last iteration)
    assert r.stderr.count("it 4/4 (100%)") == 4 and r.stderr.count("| test err ") == 4, r.stderr
    assert (out / "fig4.csv").is_file()


@pytest.mark.parametrize("args,needle", [
    (["--imagefolder", "/nonexistent/tiny"], "--imagefolder /nonexistent/tiny: no such folder"),
    (["--set", "optim.lrr=1"], "unknown config key 'optim.lrr'"),
    (["--recipe", "imagenet46"], "did you mean imagenet64"),
])
def test_fig4_checks_everything_before_training(tiny, tmp_path, args, needle):
    # a flag given twice: argparse keeps the last
    r = cli("reproduce", "fig4", "--imagefolder", tiny, "--recipe", "imagenet64", "--iterations", "2", "--out",
            tmp_path / "f", *args)
    assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "f" / "imagefolder").exists()


def test_shortcuts_table3_shares_option_b_with_fig4(tiny, tmp_path):
    out = tmp_path / "fig4"
    budget = ["--recipe", "imagenet64", "--iterations", "4", "--train-subset", "64", "--test-subset", "32",
              "--out", out, "--set", *TINY]
    r = cli("reproduce", "shortcuts", "--imagefolder", tiny, *budget, "--record", tmp_path / "rec")
    assert r.returncode == 0, r.stderr
    assert "Table 3" in r.stdout and "25.03 / 7.76" in r.stdout  # the paper's option-A figures beside ours
    res = json.loads((out / "table3.json").read_text())
    assert [row["shortcut"] for row in res["rows"]] == ["A", "B", "C"]
    params = [row["params"] for row in res["rows"]]
    assert params[0] < params[1] < params[2]  # A adds no parameters, B projects where dims grow, C everywhere
    for option, folder in (("A", "shortcut-A"), ("C", "shortcut-C")):
        assert f"shortcut: {option}" in (out / folder / "resnet34-seed0" / "config.yaml").read_text()
    assert "shortcut" not in (out / "imagefolder" / "resnet34-seed0" / "config.yaml").read_text()  # B: the default
    rows = read_results(tmp_path / "rec" / "table3.csv")
    assert [row["recipe"] for row in rows] == [f"imagenet64 shortcut {o}" for o in "ABC"]
    assert all(row["model"] == "resnet34" and 0 <= float(row["test_err"]) <= 100 for row in rows)
    # Fig. 4 with the same --out and budget trains its other three nets and reuses B's ResNet-34
    stamp = (out / "imagefolder" / "resnet34-seed0" / "final.json").stat().st_mtime_ns
    r = cli("reproduce", "fig4", "--imagefolder", tiny, *budget)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("it 4/4 (100%)") == 3, r.stderr
    assert (out / "imagefolder" / "resnet34-seed0" / "final.json").stat().st_mtime_ns == stamp


def test_shortcuts_refuses_jobs_and_missing_folders(tmp_path):
    for args, needle in ((["--imagefolder", tmp_path / "none"], "no such folder"),
                         (["--imagefolder", tmp_path, "--jobs", "2"], "one after the other")):
        r = cli("reproduce", "shortcuts", "--recipe", "imagenet64", "--out", tmp_path / "o", *args)
        assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
