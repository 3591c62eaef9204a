"""The fast recipe's engine features (label smoothing, Nesterov, no weight decay on BN and biases,
a weight EMA that resumes bit for bit, the one-cycle schedule, flip test-time augmentation) and
the cifar10_fast recipe itself."""

import math
import os
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import ROOT, require_data
from reslearn.checkpoint import load_tensors
from reslearn.config import load_config
from reslearn.engine.evaluate import evaluate_checkpoint
from reslearn.engine.schedule import LRPolicy
from reslearn.tasks import ClassificationTask
from reslearn.engine.trainer import Trainer, build_ema, build_optimizer, build_task, param_groups
from reslearn.errors import ReslearnError
from reslearn.registry import create_model


class _Batches:
    """A batch source over float tensors (the engine's sources take uint8 images)."""

    def __init__(self, x, y, batch_size):
        self.batches = list(zip(x.split(batch_size), y.split(batch_size)))

    def iter_epoch(self, epoch, start=0):
        yield from self.batches[start:]


# ----------------------------------------------------------------------------- config checks
@pytest.mark.parametrize("override,match", [
    ("optim.label_smoothing=1.0", "label_smoothing"),
    ("optim.label_smoothing=-0.1", "label_smoothing"),
    ("train.ema_decay=1.0", "ema_decay"),
    ("schedule.onecycle_anneal=exp", "must be one of cos, linear"),
    ("optim.momentum=0", "nesterov needs optim.momentum"),
    ("train.compile_mode=fastest", "must be one of default, reduce-overhead"),
])
def test_bad_values_are_one_line_errors(override, match):
    with pytest.raises(ReslearnError, match=match):
        load_config(None, ["optim.nesterov=true", override])


@pytest.mark.parametrize("override,match", [
    ("schedule.onecycle_pct_start=1.0", "onecycle_pct_start"),
    ("schedule.onecycle_div_factor=0", "div_factor"),
    ("schedule.warmup_lr=0.01", "warms up by itself"),
    ("schedule.iterations=3", "must be > 1 iteration"),
])
def test_onecycle_config_checks(override, match):
    with pytest.raises(ReslearnError, match=match):
        load_config(None, ["schedule.kind=onecycle", override])


# ----------------------------------------------------------------------------- the schedule
@pytest.mark.parametrize("anneal,pct,total", [("cos", 0.3, 100), ("linear", 0.2, 97), ("cos", 0.25, 7)])
def test_onecycle_matches_torch_onecyclelr(anneal, pct, total):
    """Every iteration's lr equals torch's OneCycleLR (momentum cycle off) to float precision."""
    cfg = load_config(None, ["schedule.kind=onecycle", f"schedule.iterations={total}", "optim.lr=0.4",
                             f"schedule.onecycle_pct_start={pct}", f"schedule.onecycle_anneal={anneal}",
                             "schedule.onecycle_div_factor=10", "schedule.onecycle_final_div_factor=100"])
    pol = LRPolicy(cfg.schedule, cfg.optim.lr)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.4, momentum=0.9)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.4, total_steps=total, pct_start=pct,
                                              anneal_strategy=anneal, cycle_momentum=False, div_factor=10,
                                              final_div_factor=100)
    ours, theirs = [], []
    for it in range(total):
        ours.append(pol.lr(it))
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15)
    assert max(ours) == pytest.approx(0.4, rel=0.05) and ours[-1] == pytest.approx(0.4 / 10 / 100)


# ----------------------------------------------------------------------------- loss and optimizer
def test_label_smoothing_is_the_smoothed_cross_entropy():
    """(1 - e) x NLL of the label + e x the mean NLL over the K classes, by hand; eval unsmoothed."""
    torch.manual_seed(1)
    model = nn.Linear(6, 4)
    x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
    task = ClassificationTask(label_smoothing=0.2)
    loss, sums = task.loss(model, (x, y))
    logp = F.log_softmax(model(x), -1).detach()
    by_hand = (0.8 * -logp[torch.arange(8), y] + 0.2 * -logp.mean(-1)).mean()
    assert float(loss.detach()) == pytest.approx(float(by_hand), rel=1e-6)
    assert float(loss.detach()) != pytest.approx(float(F.cross_entropy(model(x), y)), rel=1e-3)
    ev = task.evaluate(model, _Batches(x, y, 8))
    assert ev["loss"] == pytest.approx(float(F.cross_entropy(model(x), y)), rel=1e-6)


def test_nesterov_and_no_decay_groups():
    cfg = load_config(None, ["optim.nesterov=true", "optim.no_decay_bn_bias=true", "optim.weight_decay=5e-4"])
    model = create_model("resnet20", width=4)
    opt = build_optimizer(param_groups(model, cfg.optim), cfg.optim)
    assert all(g["nesterov"] for g in opt.param_groups)
    decayed, exempt = opt.param_groups
    bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    exempt_ids = {id(p) for p in exempt["params"]}
    assert exempt["weight_decay"] == 0.0 and decayed["weight_decay"] == 5e-4
    assert all(id(m.weight) in exempt_ids and id(m.bias) in exempt_ids for m in bn)
    assert id(model.fc.bias) in exempt_ids and id(model.fc.weight) not in exempt_ids
    assert all(p.ndim == 4 or p is model.fc.weight for p in decayed["params"])
    assert len(decayed["params"]) + len(exempt["params"]) == len(list(model.parameters()))
    # off: one group, every parameter decayed
    plain = load_config(None, [])
    (only,) = build_optimizer(param_groups(model, plain.optim), plain.optim).param_groups
    assert only["weight_decay"] == 1e-4 and not only["nesterov"]


def test_no_decay_step_leaves_bn_weights_alone_without_gradient():
    """With a zero gradient, SGD's decay moves the conv weights and leaves the exempt ones."""
    cfg = load_config(None, ["optim.no_decay_bn_bias=true", "optim.weight_decay=0.1", "optim.momentum=0"])
    model = create_model("resnet20", width=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = build_optimizer(param_groups(model, cfg.optim), cfg.optim)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    after = model.state_dict()
    assert torch.equal(after["fc.bias"], before["fc.bias"]) and torch.equal(after["bn1.weight"], before["bn1.weight"])
    assert torch.allclose(after["conv1.weight"], before["conv1.weight"] * (1 - 0.1 * 0.1))


# ----------------------------------------------------------------------------- EMA and flip TTA
def test_ema_averages_weights_and_bn_statistics():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    ema = build_ema(model, 0.9)
    assert build_ema(model, 0.0) is None
    start = model[0].weight.detach().clone()
    ema.update_parameters(model)  # the first update copies
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].running_mean.fill_(2.0)
    ema.update_parameters(model)
    assert torch.allclose(ema.module[0].weight, start + 0.1)
    assert torch.allclose(ema.module[1].running_mean, torch.full((3,), 0.2))


def test_flip_tta_averages_the_two_softmax_outputs():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 4, 5))  # not mirror-symmetric
    x, y = torch.randn(6, 2, 3, 4), torch.randint(0, 5, (6,))
    got = ClassificationTask(eval_flip=True).evaluate(model, _Batches(x, y, 4))
    probs = (F.softmax(model(x), -1) + F.softmax(model(torch.flip(x, dims=[3])), -1)) / 2
    want_loss = float(F.nll_loss(probs.log(), y))
    assert got["loss"] == pytest.approx(want_loss, rel=1e-5)
    assert got["top1_err"] == pytest.approx(100 * float((probs.argmax(-1) != y).float().mean()))
    plain = ClassificationTask().evaluate(model, _Batches(x, y, 4))
    assert plain["loss"] != pytest.approx(got["loss"], rel=1e-4)


def test_own_tasks_refuse_classification_options():
    cfg = load_config(None, ["train.eval_flip=true"])
    with pytest.raises(ReslearnError, match="its own task"):
        build_task(cfg, ClassificationTask())
    assert build_task(cfg, None).eval_flip


# ----------------------------------------------------------------------------- on real CIFAR-10
@pytest.fixture(scope="module")
def cifar_root():
    root = Path(os.environ.get("RESLEARN_DATA_DIR", ROOT / ".data"))
    require_data(root / "cifar-10-batches-py", "CIFAR-10 (scripts/prepare_data.sh)")
    return root


def _fast_tiny(root):
    """The cifar10_fast recipe at a width-4 toy size: 256 images, 16 iterations."""
    return [f"data.root={root}", "data.train_subset=256", "data.test_subset=128", "model.kwargs.width=4",
            "optim.batch_size=32", "schedule.iterations=16", "train.eval_every=8", "train.log_every=4",
            "train.checkpoint_every=4", "train.keep_last=10", "train.progress=false",
            "train.tensorboard=false", "train.deterministic=true", "train.threads=1"]


def test_ema_run_resumes_bit_for_bit(cifar_root, tmp_path):
    """A cifar10_fast run stopped at iteration 8 and resumed ends with the same raw weights, the
    same weight average and the same test numbers as the run that never stopped; the saved
    model.safetensors holds the average (what was evaluated)."""
    cfg = load_config("cifar10_fast", _fast_tiny(cifar_root))
    assert cfg.train.ema_decay > 0 and cfg.train.eval_flip and cfg.optim.no_decay_bn_bias
    full = Trainer(cfg, run_dir=tmp_path / "full")
    ref = full.fit()
    part = tmp_path / "part"
    shutil.copytree(tmp_path / "full", part)
    for f in ["final.json", "model.safetensors", "best.safetensors",
              *(f"checkpoints/iter-{i:08d}.safetensors" for i in (12, 16))]:
        (part / f).unlink()
    again = Trainer(load_config("cifar10_fast", _fast_tiny(cifar_root)), run_dir=part).fit(resume=True)
    assert again == ref
    a, _ = load_tensors(tmp_path / "full" / "checkpoints" / "iter-00000016.safetensors")
    b, _ = load_tensors(part / "checkpoints" / "iter-00000016.safetensors")
    ema_keys = [k for k in a if k.startswith("ema.")]
    assert ema_keys and a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a if not k.startswith("rng."))
    saved, _ = load_tensors(tmp_path / "full" / "model.safetensors")
    assert all(torch.equal(saved[k], a[f"ema.module.{k}"]) for k in saved)
    assert not all(torch.equal(saved[k], a[f"model.{k}"]) for k in saved if saved[k].is_floating_point())
    # `reslearn eval` of the saved model flips too, and reproduces the run's own test numbers
    ev = evaluate_checkpoint(tmp_path / "full" / "model.safetensors", fast=False, limit=128)
    assert ev["mode"] == "flip" and ev["n"] == ref["test"]["n"]
    assert ev["top1_err"] == ref["test"]["top1_err"] and ev["loss"] == pytest.approx(ref["test"]["loss"], rel=1e-5)


def test_resume_without_ema_in_checkpoint_is_refused(cifar_root, tmp_path):
    over = _fast_tiny(cifar_root) + ["schedule.iterations=8"]
    Trainer(load_config("cifar10_fast", over + ["train.ema_decay=0"]), run_dir=tmp_path / "r").fit()
    ck = tmp_path / "r" / "checkpoints" / "iter-00000008.safetensors"
    t = Trainer(load_config("cifar10_fast", over), run_dir=tmp_path / "r2")
    with pytest.raises(ReslearnError, match="no weight average"):
        t.load_checkpoint(ck)


def fast_rows(model: str, recipe: str = "cifar10_fast") -> list[dict[str, str]]:
    """The rows of docs/results/cifar10_fast.csv of ``model`` trained with ``recipe`` (a row's
    recipe column: the plain recipe, or it with overrides such as ``train.amp=bf16``)."""
    from reslearn.results import read_results

    return [r for r in read_results(ROOT / "docs" / "results" / "cifar10_fast.csv")
            if r["model"] == model and r["recipe"] == recipe]


def measured_header(model: str, recipe: str = "cifar10_fast") -> str:
    """What the recipe's header must say of ``model`` trained with ``recipe``: its rows as
    mean +- std over the seeds (the error itself for one seed), or, for the plain recipe with
    fewer than 3 seeds, that it is not measured."""
    import statistics

    errs = [float(r["test_err"]) for r in fast_rows(model, recipe)]
    if recipe == "cifar10_fast" and len(errs) < 3:
        return "NOT yet measured"
    if len(errs) == 1:
        return f"measured {errs[0]:.2f}% (1 seed"
    return f"measured {statistics.fmean(errs):.2f} +- {statistics.stdev(errs):.2f}% ({len(errs)} seeds"


def test_fast_recipe_header_and_schedule():
    """The recipe's header says its target and what docs/results/cifar10_fast.csv measured (a
    stale header fails), and its schedule is <= 30 epochs of the whole 50k training set."""
    path = ROOT / "src" / "reslearn" / "recipes" / "cifar10_fast.yaml"
    first, second = path.read_text().splitlines()[:2]
    assert "resnet20 <= 8.75% test error in <= 30 epochs (mean of 3 seeds)" in first
    assert measured_header("resnet20") in first
    assert second.startswith("# resnet56") and measured_header("resnet56") in second
    # bf16 autocast (train.amp=bf16): every model's rows are stated on its line
    bf16 = "cifar10_fast train.amp=bf16"
    for model, line in (("resnet20", first), ("resnet56", second)):
        if fast_rows(model, bf16):
            assert f"with train.amp=bf16 {measured_header(model, bf16)}" in line, model
    cfg = load_config("cifar10_fast")
    assert cfg.model.name == "resnet20" and not cfg.model.kwargs and cfg.data.val_size == 0
    epochs = cfg.schedule.iterations / (50000 // cfg.optim.batch_size)
    assert epochs <= 30 and math.isclose(epochs, round(epochs))
    assert cfg.schedule.kind == "onecycle" and cfg.optim.nesterov and cfg.optim.label_smoothing > 0


def test_compare_records_one_row_per_seed(cifar_root, tmp_path):
    """`reslearn compare resnet20 --recipe cifar10_fast --seeds N --record DIR`: the rows the
    fast recipe's measurement adds to docs/results/cifar10_fast.csv."""
    from reslearn.experiments import compare
    from reslearn.results import read_results

    over = _fast_tiny(cifar_root) + ["schedule.iterations=8", "train.eval_every=4"]
    compare(["resnet20"], recipe="cifar10_fast", overrides=over, out_dir=tmp_path / "runs", seeds=[0, 1],
            record=tmp_path / "results")
    rows = read_results(tmp_path / "results" / "cifar10_fast.csv")
    # the tiny run's recipe column names what it changed (not the data root or the logging)
    label = ("cifar10_fast data.test_subset=128 data.train_subset=256 model.kwargs.width=4 optim.batch_size=32"
             " train.deterministic=true")
    assert [(r["experiment"], r["model"], r["recipe"], r["seed"], r["iterations"]) for r in rows] == [
        ("cifar10_fast", "resnet20", label, "0", "8"), ("cifar10_fast", "resnet20", label, "1", "8")]
    assert float(rows[0]["epochs"]) == 1.0 and all(0 <= float(r["test_err"]) <= 100 for r in rows)
    # a run with another override (bf16) adds its own rows instead of replacing these
    compare(["resnet20"], recipe="cifar10_fast", overrides=over + ["train.amp=bf16"], out_dir=tmp_path / "bf16",
            seeds=[0], record=tmp_path / "results")
    rows = read_results(tmp_path / "results" / "cifar10_fast.csv")
    assert [r["recipe"] for r in rows] == [label, label, label.replace(" train.det", " train.amp=bf16 train.det")]
    # the same runs on another copy of the data, labelled, add rows instead of replacing these
    # (finished runs are not trained again: compare reads their final.json)
    compare(["resnet20"], recipe="cifar10_fast", overrides=over + ["train.amp=bf16"], out_dir=tmp_path / "bf16",
            seeds=[0], record=tmp_path / "results", data_label="cifar10-jpeg2", figure=False)
    rows = read_results(tmp_path / "results" / "cifar10_fast.csv")
    assert [r["data"] for r in rows] == ["cifar10", "cifar10", "cifar10", "cifar10-jpeg2"]
    assert rows[2]["test_err"] == rows[3]["test_err"]
