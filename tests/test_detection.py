"""reslearn ResNets as torchvision Faster R-CNN backbones, C4 (He et al. 2016, Appendix A) and FPN
(Lin et al. 2017) forms: freezing, frozen BN, one training step and inference on small images."""

import pytest
import torch
import torch.nn as nn
from torchvision.ops.misc import FrozenBatchNorm2d

from reslearn import create_model
from reslearn.detection import build_faster_rcnn, freeze_batchnorm, freeze_stages

# Few proposals and sampled RoIs keep a CPU step short; the wiring is what is under test. With
# random heads no score reaches torchvision's 0.05 reliably, so inference keeps every score.
SMALL = dict(
    rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100, rpn_pre_nms_top_n_test=200,
    rpn_post_nms_top_n_test=50, box_batch_size_per_image=32, box_score_thresh=0.0,
)



def _stage(name: str) -> str:
    """The ResNet stage a detector parameter belongs to ('' for detector-only parts)."""
    stages = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")
    return next((part for part in name.split(".") if part in stages), "")


def _calibrated(backbone: str) -> dict:
    """A random backbone whose BN statistics were measured on random images (as ImageNet
    training would have measured them), so that frozen BN normalises as in a real model."""
    net = create_model(backbone, width=8, variant="v1.5")
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average
    with torch.no_grad():
        net.train()(torch.rand(8, 3, 128, 128))
    return net.state_dict()


@pytest.mark.parametrize("form,backbone", [("fpn", "resnet50"), ("c4", "resnet18")])
def test_train_step_and_inference(form, backbone):
    torch.manual_seed(0)
    model = build_faster_rcnn(
        backbone, form=form, num_classes=3, trainable_layers=2, width=8, variant="v1.5", min_size=128,
        max_size=128, fpn_channels=32, weights=_calibrated(backbone), rcnn_kwargs=SMALL,
    )
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    if form == "c4":  # layer4 is the RoI head, layer1-3 the shared trunk
        assert hasattr(model.roi_heads.box_head, "layer4") and not hasattr(model.backbone, "layer4")
    images = [torch.rand(3, 128, 128), torch.rand(3, 128, 128)]
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0], [50.0, 40.0, 120.0, 110.0]]), "labels": torch.tensor([1, 2])},
        {"boxes": torch.tensor([[0.0, 0.0, 64.0, 64.0]]), "labels": torch.tensor([2])},
    ]
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    named = dict(model.named_parameters())
    for name, p in named.items():
        stage = _stage(name)
        if stage in ("conv1", "bn1", "layer1", "layer2"):
            assert not p.requires_grad and p.grad is None, name
        else:  # layer3, layer4, FPN, RPN, box head and predictor
            assert p.requires_grad and p.grad is not None and torch.isfinite(p.grad).all(), name
    assert any(_stage(n) == "layer3" and p.grad.abs().sum() > 0 for n, p in named.items())
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2 and sum(len(det["boxes"]) for det in out) > 0
    for det in out:
        boxes = det["boxes"]
        assert boxes.dim() == 2 and boxes.shape[1] == 4 and len(det["scores"]) == len(det["labels"]) == len(boxes)
        assert (boxes >= 0).all() and (boxes <= 128).all() and (boxes[:, 2:] >= boxes[:, :2]).all()
        assert ((det["labels"] >= 1) & (det["labels"] <= 2)).all()
        assert ((det["scores"] >= 0) & (det["scores"] <= 1)).all()
    # An optimizer step moves the trainable stages and leaves the frozen ones as they were.
    before = {n: p.clone() for n, p in named.items()}
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01).step()
    assert all(torch.equal(named[n], v) for n, v in before.items() if not named[n].requires_grad)
    assert any(not torch.equal(named[n], v) for n, v in before.items() if _stage(n) == "layer3")


def test_frozen_batchnorm_keeps_the_statistics_and_weights():
    net = create_model("resnet18", width=8)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    net.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = net(x)
        frozen = freeze_batchnorm(net)
        assert frozen is net and not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
        assert torch.allclose(net(x), ref, atol=1e-5)
        net.train()  # frozen BN ignores the mode: same output in training
        assert torch.allclose(net(x), ref, atol=1e-5)


@pytest.mark.parametrize("n,trainable", [
    (0, set()),
    (1, {"layer4"}),
    (3, {"layer2", "layer3", "layer4"}),
    (5, {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4"}),
])
def test_trainable_layers_as_torchvision(n, trainable):
    net = create_model("resnet18", width=8)
    freeze_stages(net, n)
    got = {name.split(".")[0] for name, p in net.named_parameters() if p.requires_grad}
    assert got == trainable


def test_unfrozen_bn_and_argument_errors():
    model = build_faster_rcnn("resnet18", num_classes=2, frozen_bn=False, trainable_layers=5, width=8, fpn_channels=16)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.backbone.body.modules())
    assert all(p.requires_grad for p in model.backbone.body.parameters())
    with pytest.raises(ValueError, match="form"):
        build_faster_rcnn("resnet18", form="c5", num_classes=2, width=8)
    with pytest.raises(ValueError, match="trainable_layers"):
        build_faster_rcnn("resnet18", num_classes=2, trainable_layers=6, width=8)
    with pytest.raises(ValueError, match="num_classes"):
        build_faster_rcnn("resnet18", num_classes=1, width=8)
    with pytest.raises(ValueError, match="backbone"):
        build_faster_rcnn("resnet20", num_classes=2)
