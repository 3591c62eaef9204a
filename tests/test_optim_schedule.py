"""RMSProp and the exponential (staircase) LR schedule: config checks and the policy's values."""

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
    with pytest.raises(ReslearnError, match="must be one of sgd, rmsprop"):
        load_config(None, ["optim.name=adam"])
    with pytest.raises(ReslearnError, match="rmsprop_eps"):
        load_config(None, ["optim.name=rmsprop", "optim.rmsprop_eps=0"])


def test_trainer_builds_rmsprop():
    from reslearn.engine.data import DataBundle
    from reslearn.engine.trainer import Trainer

    cfg = load_config(None, ["optim.name=rmsprop", "optim.lr=0.045", "optim.weight_decay=4e-5",
                             "model.kwargs.width=4", "train.device=cpu"])
    data = DataBundle(train=None, evals={}, num_classes=10, in_chans=3, image_size=(32, 32),
                      classes=[str(i) for i in range(10)], normalizer_state={}, train_size=0, info={})
    t = Trainer(cfg, data=data)
    assert isinstance(t.optimizer, torch.optim.RMSprop)
    g = t.optimizer.param_groups[0]
    assert (g["lr"], g["alpha"], g["eps"], g["momentum"], g["weight_decay"]) == (0.045, 0.9, 1.0, 0.9, 4e-5)
