"""Registry-driven tests: every registered model builds, runs forward and backward, has the
interface, and matches the multiply-adds its paper states."""

import pytest
import torch

from reslearn import create_model, list_models, model_info
from reslearn.summary import summarize

ALL = list_models()


def _input(name, batch=2):
    info = model_info(name)
    size = info.test_input_size or info.input_size
    return torch.randn(batch, *size)


def test_registry_is_not_empty_and_names_unique():
    assert len(ALL) == len(set(ALL)) and len(ALL) >= 18


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_interface(name):
    info = model_info(name)
    model = create_model(name)
    x = _input(name)
    out = model(x)
    if info.task == "sequence":
        assert out.dim() == 3 and out.shape[0] == 2 and out.shape[-1] == info.num_classes
    else:
        assert out.shape == (2, info.num_classes)
    assert torch.isfinite(out).all()
    out.float().pow(2).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # uniform interface
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        assert torch.allclose(model.forward_head(feats), model(x), atol=1e-5)
        pre = model.forward_head(feats, pre_logits=True)
    # sequence models keep the time axis: (B, T, num_features)
    lead = (2, out.shape[1]) if info.task == "sequence" else (2,)
    assert pre.shape == (*lead, model.num_features)
    model.reset_classifier(7)
    with torch.no_grad():
        assert model(x).shape[-1] == 7


# Parameter counts: tests/test_param_counts.py derives every model's from its paper's tables
# and checks the registry's reference["params"] against the same formula.


@pytest.mark.parametrize("name", [n for n in ALL if "macs" in model_info(n).reference])
def test_multiply_adds_match_paper(name):
    ref = model_info(name).reference["macs"]
    macs = summarize(name).macs
    assert abs(macs - ref) / ref < 0.02, (name, macs, ref)


@pytest.mark.parametrize("name", ALL)
def test_bad_num_classes_and_unknown_argument(name):
    with pytest.raises(ValueError, match="num_classes"):
        create_model(name, num_classes=0)
    with pytest.raises(ValueError, match="unknown argument 'no_such_option'"):
        create_model(name, no_such_option=1)
