"""Pretrained weights from reslearn's own runs (reslearn.weights): the registered files load,
match their checksums and reproduce the test error their run recorded; tampered files, unknown
tags and contradicting arguments are refused in one line."""

import json
import os
import subprocess
import sys

import pytest
import torch

import reslearn
from reslearn import weights as W
from reslearn.checkpoint import resolve_weights, save_tensors, tensors_to_json
from reslearn.data.augment import Normalizer
from reslearn.errors import ReslearnError
from reslearn.results import read_results

from conftest import ROOT

ENTRIES = W.list_pretrained()


def test_index_lists_real_runs():
    """Each entry's file is shipped and cites a row of its results CSV with the same numbers."""
    for w in ENTRIES:
        assert w.path.is_file() and W.pretrained_path(w.model, w.tag) == w.path
        rows = read_results(ROOT / w.results)
        match = [r for r in rows if r["model"] == w.model and r["recipe"] == w.recipe and int(r["seed"]) == w.seed
                 and int(r["iterations"]) == w.iterations]
        assert match, f"{w.ref}: no row in {w.results}"
        assert float(match[0]["test_err"]) == pytest.approx(w.test_err, abs=1e-9)
        assert match[0]["commit"] == w.commit


@pytest.mark.parametrize("entry", ENTRIES, ids=[w.ref for w in ENTRIES])
def test_pretrained_reproduces_its_recorded_test_error(entry, data_root):
    """The shipped weights give the recorded error on the whole CIFAR-10 test split here."""
    from reslearn.engine.evaluate import evaluate_checkpoint

    res = evaluate_checkpoint(entry.ref, root=str(data_root), fast=False)
    assert res["n"] == 10000
    assert res["top1_err"] == pytest.approx(entry.test_err, abs=0.006)  # rows are rounded to 0.01


@pytest.mark.parametrize("entry", ENTRIES, ids=[w.ref for w in ENTRIES])
def test_create_model_pretrained_equals_the_file(entry):
    model = reslearn.create_model(entry.model, pretrained=entry.tag)
    assert model.training  # like every create_model result
    from safetensors.torch import load_file

    state = load_file(str(entry.path))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    cfg = model.pretrained_cfg
    assert isinstance(cfg["normalizer"], Normalizer) and cfg["classes"] and cfg["test_err"] == entry.test_err


# ----------------------------------------------------------------------------- the machinery
@pytest.fixture
def fake_index(tmp_path, monkeypatch):
    """A weights folder holding one resnet20 file (random weights, CIFAR-shaped metadata)."""
    torch.manual_seed(0)
    net = reslearn.create_model("resnet20").eval()
    norm = Normalizer(mean=torch.full((3, 32, 32), 0.5), std=torch.ones(3, 1, 1))
    doc = {"kind": "weights", "model": "resnet20", "model_kwargs": {"in_chans": 3, "num_classes": 10},
           "classes": [str(i) for i in range(10)], "image_size": [32, 32], "in_chans": 3, "data": "cifar10",
           "normalizer": tensors_to_json(norm.state_dict())}
    save_tensors(tmp_path / "resnet20-t.safetensors", dict(net.state_dict()), doc)
    sha = W.sha256_file(tmp_path / "resnet20-t.safetensors")
    entry = {"model": "resnet20", "tag": "t", "file": "resnet20-t.safetensors", "sha256": sha, "data": "cifar10",
             "recipe": "cifar10", "iterations": 10, "seed": 0, "test_err": 8.9, "paper_test_err": 8.75,
             "commit": "0" * 40, "results": "docs/results/none.csv"}  # within 0.5 points: the default
    (tmp_path / "index.json").write_text(json.dumps({"weights": [entry]}))
    monkeypatch.setattr(W, "WEIGHTS_DIR", tmp_path)
    return tmp_path, net


def set_test_err(folder, err):
    """Change the fake entry's recorded error (whether it reproduces the paper follows from it)."""
    index = json.loads((folder / "index.json").read_text())
    index["weights"][0]["test_err"] = err
    (folder / "index.json").write_text(json.dumps(index))
    W._read_index.cache_clear()


def test_pretrained_loads_the_registered_file(fake_index):
    _, net = fake_index
    model = reslearn.create_model("resnet20", pretrained=True)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model.eval()(x), net(x))
    assert model.pretrained_cfg["ref"] == "pretrained:resnet20/t"
    assert resolve_weights("pretrained:resnet20") == fake_index[0] / "resnet20-t.safetensors"


def test_default_is_only_weights_that_reproduce_the_paper(fake_index):
    folder, net = fake_index
    set_test_err(folder, 90.0)  # 81 points from the paper's
    with pytest.raises(ValueError, match=r"no pretrained weights that reproduce the paper yet.*'t' \(90.00% test error"):
        reslearn.create_model("resnet20", pretrained=True)
    with pytest.raises(ReslearnError, match="reproduce the paper"):
        resolve_weights("pretrained:resnet20")
    model = reslearn.create_model("resnet20", pretrained="t")  # by its tag it loads
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(model.eval()(x), net(x))


def test_tampered_file_is_refused(fake_index):
    folder, _ = fake_index
    f = folder / "resnet20-t.safetensors"
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 1
    f.write_bytes(bytes(raw))
    with pytest.raises(ReslearnError, match="fail their checksum"):
        reslearn.create_model("resnet20", pretrained=True)


def test_missing_file_unknown_tag_and_model(fake_index):
    folder, _ = fake_index
    with pytest.raises(ValueError, match="no pretrained weights tagged 'x'; tags: t"):
        reslearn.create_model("resnet20", pretrained="x")
    with pytest.raises(ValueError, match="no pretrained weights for 'resnet56'; reslearn has them for: resnet20"):
        reslearn.create_model("resnet56", pretrained=True)
    with pytest.raises(ValueError, match="unknown model name"):
        reslearn.create_model("resnet21", pretrained=True)
    with pytest.raises(ReslearnError, match="no pretrained weights tagged 'x'"):
        resolve_weights("pretrained:resnet20/x")
    (folder / "resnet20-t.safetensors").unlink()
    with pytest.raises(ReslearnError, match="is missing from the installation"):
        resolve_weights("pretrained:resnet20")


def test_arguments_that_contradict_the_weights(fake_index):
    with pytest.raises(ValueError, match=r"trained with num_classes=10, not num_classes=100.*reset_classifier"):
        reslearn.create_model("resnet20", pretrained=True, num_classes=100)
    with pytest.raises(ValueError, match="the builder's default shortcut"):
        reslearn.create_model("resnet20", pretrained=True, shortcut="B")
    model = reslearn.create_model("resnet20", pretrained=True, num_classes=10)  # agreeing is fine
    model.reset_classifier(100)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 100)


def test_cli_lists_pretrained(fake_index, capsys):
    from reslearn.cli import main

    set_test_err(fake_index[0], 90.0)
    assert main(["models", "--pretrained"]) == 0
    line = capsys.readouterr().out.splitlines()[1].split()
    assert line[0] == "pretrained:resnet20/t" and line[-3:-1] == ["90.00", "8.75"]


def test_cli_unknown_pretrained_is_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "reslearn.cli", "eval", "pretrained:resnet1202"],
                       capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert p.returncode != 0
    assert "no pretrained weights for 'resnet1202'" in p.stderr and "Traceback" not in p.stderr


def test_register_script_refuses_an_unfinished_run(tmp_path):
    """Registering real runs is checked by test_index_lists_real_runs."""
    run = tmp_path / "run"
    run.mkdir()
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "register_weights.py"), str(run), "--tag", "x",
                        "--experiment", "table6", "--recipe", "cifar10"], capture_output=True, text=True)
    assert p.returncode != 0 and "model.safetensors does not exist" in p.stderr


def test_checkpoint_from_another_machine_finds_data_here(tmp_path):
    """A recorded data root that does not exist here (a teammate's run, the shipped weights)
    falls back to the default data roots; one that exists, or --root, is used as given."""
    from reslearn.config import Config, config_to_dict
    from reslearn.engine.evaluate import checkpoint_data_config

    cfg = config_to_dict(Config())
    cfg["data"]["root"] = str(tmp_path / "elsewhere")
    assert checkpoint_data_config({"config": cfg}, root=None, dataset=None).root == ""
    assert checkpoint_data_config({"config": cfg}, root="/given", dataset=None).root == "/given"
    cfg["data"]["root"] = str(tmp_path)
    assert checkpoint_data_config({"config": cfg}, root=None, dataset=None).root == str(tmp_path)
