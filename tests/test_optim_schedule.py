"""RMSProp, Adam, gradient clipping and the exponential (staircase) LR schedule: config checks and the policy's values."""

import pytest
import torch

from reslearn.config import load_config
from reslearn.engine.schedule import LRPolicy
from reslearn.errors import ReslearnError


def test_exponential_schedule_is_a_staircase():
    cfg = load_config(None, ["schedule.kind=exponential", "schedule.decay_every=10", "schedule.gamma=0.94",
                             "optim.lr=0.045"])
    pol = LRPolicy(cfg.schedule, cfg.optim.lr)
    assert [pol.lr(i) for i in (0, 9)] == [0.045, 0.045]
    assert pol.lr(10) == pytest.approx(0.045 * 0.94) and pol.lr(19) == pytest.approx(0.045 * 0.94)
    assert pol.lr(35) == pytest.approx(0.045 * 0.94 ** 3)


def test_exponential_needs_decay_every():
    with pytest.raises(ReslearnError, match="decay_every"):
        load_config(None, ["schedule.kind=exponential"])


def test_fixed_length_warmup():
    """warmup_until_error=0 never ends the warm-up early: exactly warmup_max_iterations at warmup_lr."""
    cfg = load_config("preact_cifar10")
    pol = LRPolicy(cfg.schedule, cfg.optim.lr)
    lrs = []
    for it in range(402):
        lrs.append(pol.lr(it))
        pol.after_step(it, wrong=0.0, n=128.0)  # a perfect batch would end an error-based warm-up
    assert lrs[:400] == [0.01] * 400 and lrs[400:] == [0.1, 0.1]


def test_rmsprop_config_checks():
    cfg = load_config(None, ["optim.name=rmsprop"])
    assert (cfg.optim.rmsprop_decay, cfg.optim.rmsprop_eps) == (0.9, 1.0)
    with pytest.raises(ReslearnError, match="nesterov"):
        load_config(None, ["optim.name=rmsprop", "optim.nesterov=true"])
    with pytest.raises(ReslearnError, match="must be one of sgd, rmsprop, adam"):
        load_config(None, ["optim.name=adagrad"])
    with pytest.raises(ReslearnError, match="rmsprop_eps"):
        load_config(None, ["optim.name=rmsprop", "optim.rmsprop_eps=0"])


def _trainer(*overrides):
    from reslearn.engine.data import DataBundle
    from reslearn.engine.trainer import Trainer

    cfg = load_config(None, ["model.kwargs.width=4", "train.device=cpu", *overrides])
    data = DataBundle(train=None, evals={}, num_classes=10, in_chans=3, image_size=(32, 32),
                      classes=[str(i) for i in range(10)], normalizer_state={}, train_size=0, info={})
    return Trainer(cfg, data=data)


def test_trainer_builds_rmsprop():
    t = _trainer("optim.name=rmsprop", "optim.lr=0.045", "optim.weight_decay=4e-5")
    assert isinstance(t.optimizer, torch.optim.RMSprop)
    g = t.optimizer.param_groups[0]
    assert (g["lr"], g["alpha"], g["eps"], g["momentum"], g["weight_decay"]) == (0.045, 0.9, 1.0, 0.9, 4e-5)


def test_adam_and_clipping_config_checks():
    cfg = load_config(None, ["optim.name=adam", "optim.lr=1e-3"])
    assert (cfg.optim.momentum, cfg.optim.adam_beta2, cfg.optim.clip_grad_norm) == (0.9, 0.999, 0.0)
    for bad, msg in ((["optim.name=adam", "optim.nesterov=true"], "nesterov applies to sgd only"),
                     (["optim.name=adam", "optim.adam_beta2=1"], "adam_beta2"),
                     (["optim.clip_grad_norm=-1"], "clip_grad_norm")):
        with pytest.raises(ReslearnError, match=msg):
            load_config(None, bad)


def test_trainer_builds_adam():
    t = _trainer("optim.name=adam", "optim.lr=0.002", "optim.momentum=0.8", "optim.adam_beta2=0.99",
                 "optim.weight_decay=0")
    assert isinstance(t.optimizer, torch.optim.Adam)
    g = t.optimizer.param_groups[0]
    assert (g["lr"], g["betas"], g["weight_decay"]) == (0.002, (0.8, 0.99), 0.0)


@pytest.mark.parametrize("clip", [0.0, 1e-3])
def test_clip_grad_norm_bounds_the_step(clip):
    """Plain SGD at lr 1: the update is the gradient, so its global norm is the clipped norm."""
    torch.manual_seed(0)
    t = _trainer("optim.lr=1", "optim.momentum=0", "optim.weight_decay=0", f"optim.clip_grad_norm={clip}")
    before = [p.detach().clone() for p in t.model.parameters()]
    batch = (torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
    assert t._micro_step(batch, 0, 1) is not None
    step = torch.cat([(p.detach() - b).flatten() for p, b in zip(t.model.parameters(), before)])
    if clip:
        assert step.norm().item() == pytest.approx(clip, rel=1e-4)
    else:
        assert step.norm().item() > 0.01  # an unclipped first step of a fresh network
