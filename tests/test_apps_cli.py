"""The image applications through the engine and the CLI: DRN steganalysis (data.name=stego) and
age/gender estimation (data.name=utkface), each trained for a few iterations on real data; the
data builders' pair bookkeeping and options; the age/gender training forward under DDP."""

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, require_data
from reslearn import create_model
from reslearn.config import load_config
from reslearn.engine.data import build_data
from reslearn.errors import ReslearnError

DATA = pathlib.Path(os.environ.get("RESLEARN_DATA_DIR", ROOT / ".data"))
SHORT = ["schedule.iterations=4", "schedule.milestones=[3]", "train.eval_every=2", "train.log_every=1",
         "train.checkpoint_every=2", "train.progress=false", "train.tensorboard=false"]


def run(*args):
    return subprocess.run([sys.executable, "-m", "reslearn.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def _check_run(run_dir: pathlib.Path, primary: str) -> dict:
    for f in ("config.yaml", "run.json", "metrics.csv", "model.safetensors", "best.safetensors", "final.json"):
        assert (run_dir / f).is_file(), f
    final = json.loads((run_dir / "final.json").read_text())
    assert final["iteration"] == 4
    assert math.isfinite(final["test"][primary]) and math.isfinite(final["test"]["loss"])
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    last = dict(zip(header, rows[-1].split(",")))
    assert float(last["test_err"]) == pytest.approx(final["test"][primary], rel=1e-5)
    assert 0.0 <= float(last["train_err"]) <= 100.0
    return final


@pytest.fixture(scope="module")
def cifar_root():
    return require_data(DATA / "cifar-10-batches-py", "CIFAR-10 (scripts/prepare_data.sh)").parent


@pytest.fixture(scope="module")
def utk_root():
    return require_data(DATA / "utkface" / "crop_part1", "UTKFace crop_part1")


def test_stego_drn_trains_through_the_cli(cifar_root, tmp_path):
    out = tmp_path / "stego"
    r = run("train", "--recipe", "stego_drn_quick", f"data.root={cifar_root}", "data.options.cover_source=cifar10",
            "data.options.size=0", "data.options.limit=64", "data.options.payload=0.4",
            "data.test_size=0.25", "data.val_size=0", "model.kwargs.width=4",
            "model.kwargs.hidden=16", "optim.batch_size=16", *SHORT, "--run-dir", str(out))
    assert r.returncode == 0, r.stderr
    assert "test pe" in r.stdout
    final = _check_run(out, "pe")
    test = final["test"]
    assert test["n"] == 2 * 16  # 16 held-out pairs, both images of each
    # P_E is the best threshold's error; the argmax threshold's is 100 - acc (balanced classes)
    assert test["pe"] <= 100 - test["acc"] + 1e-9
    run_info = json.loads((out / "run.json").read_text())
    assert run_info["data"]["train_pairs"] == 48 and run_info["model_kwargs"]["depth"] == 18


def test_age_gender_trains_through_the_cli(utk_root, tmp_path):
    out = tmp_path / "faces"
    r = run("train", "--recipe", "utkface_age_gender_quick", f"data.root={utk_root}", "data.options.size=64",
            "data.options.limit=96", "data.options.cache_dir=", "model.kwargs.width=4", "optim.batch_size=16",
            *SHORT, "--run-dir", str(out))
    assert r.returncode == 0, r.stderr
    assert "test mae" in r.stdout
    final = _check_run(out, "mae")
    for split, n in (("val", 10), ("test", 19)):
        m = final[split]
        assert m["n"] == n and 0.0 < m["mae"] < 100.0 and 0.0 <= m["gender_acc"] <= 100.0
        right = m["gender_acc"] * n / 100  # a whole number of the split's n faces
        assert right == pytest.approx(round(right), abs=1e-6)
    info = json.loads((out / "run.json").read_text())
    assert info["data"]["train"] == 67 and info["model_kwargs"]["backbone"] == "resnet18"


def test_stego_bundle_keeps_pairs_together_and_checks_options(cifar_root):
    cfg = load_config("stego_drn_quick", [f"data.root={cifar_root}", "data.options.cover_source=cifar10",
                                          "data.options.size=0", "data.options.limit=40",
                                          "data.val_size=0.25", "data.test_size=0.25"])
    b = build_data(cfg.data, batch_size=8, seed=0, device=torch.device("cpu"))
    assert (b.num_classes, b.in_chans, b.image_size, b.classes) == (2, 1, (32, 32), ["cover", "stego"])
    names = {k: set(s.pairs.names) for k, s in {"train": b.train, **b.evals}.items()}
    assert [len(names[k]) for k in ("train", "val", "test")] == [20, 10, 10]
    assert not (names["train"] & names["val"] or names["train"] & names["test"] or names["val"] & names["test"])
    x, y = next(b.train.iter_epoch(0))
    assert x.shape == (8, 1, 32, 32) and y.tolist() == [0, 1] * 4
    # a cover and its twin differ by at most 1 per pixel (LSB matching), after the same dihedral move
    assert (x[0::2] - x[1::2]).abs().max() <= 1 and (x[0::2] != x[1::2]).any()
    cfg.data.options["colour"] = 1
    with pytest.raises(ReslearnError, match="unknown option data.options.colour"):
        build_data(cfg.data, batch_size=8, seed=0, device=torch.device("cpu"))
    del cfg.data.options["colour"]
    cfg.data.test_size = 0.8
    with pytest.raises(ReslearnError, match="data.test_size . data.val_size must leave training pairs of stego"):
        build_data(cfg.data, batch_size=8, seed=0, device=torch.device("cpu"))


def test_cover_sources(utk_root, tmp_path):
    from reslearn.apps.stego import load_covers

    faces = load_covers("utkface", root=str(utk_root), size=32, limit=6)
    assert faces.images.shape == (6, 32, 32) and faces.names[0].endswith(".jpg.chip.jpg")
    jpegs = require_data(DATA / "cifar10-jpeg" / "test", "CIFAR-10 JPEGs")
    folder = load_covers(str(jpegs), size=24, limit=3)
    assert folder.images.shape == (3, 24, 24) and folder.names[0].startswith("airplane/")
    with pytest.raises(ReslearnError, match="cover_source"):
        load_covers(str(tmp_path / "nowhere"))


def test_age_gender_training_forward_under_ddp(tmp_path):
    """A batch of one gender leaves the other age network idle: DDP copes because the model asks
    for find_unused_parameters, and the wrapper passes the gender through to the training forward."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from reslearn.apps.faces import AgeGenderTask

    model = create_model("age_gender_resnet50", backbone="resnet18", width=4)
    assert model.ddp_find_unused_parameters is True
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        ddp = DDP(model, find_unused_parameters=model.ddp_find_unused_parameters)
        task = AgeGenderTask()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        x = torch.randn(4, 3, 32, 32)
        for female in (1.0, 1.0, 0.0):  # female-only twice (the male net idle), then male-only
            t = torch.tensor([[female, 30.0]] * 4)
            opt.zero_grad(set_to_none=True)
            loss, sums = task.loss(ddp, (x, t))
            loss.backward()
            opt.step()
            idle = model.age_male if female else model.age_female
            assert all(p.grad is None for p in idle.parameters())
            assert model.gender.fc.weight.grad is not None and sums["n"] == 4
    finally:
        dist.destroy_process_group()
