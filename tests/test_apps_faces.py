"""Age and gender with three ResNets (Lee et al., IWAIT 2018): model wiring, the combined-age
formula, UTKFace parsing and loading, the task, and real training steps (reslearn.apps.faces)."""

import math
import os
import warnings
from pathlib import Path

import pytest
import torch
import torchvision

from conftest import ROOT, require_data
from reslearn import create_model
from reslearn.apps.faces import AgeGenderTask, FaceSet, FaceSource, load_utkface, parse_utkface_name, scan_utkface
from reslearn.errors import ReslearnError
from reslearn.models.age_gender import AgeGenderNet, load_imagenet_weights

DATA = Path(os.environ.get("RESLEARN_DATA_DIR", ROOT / ".data"))
UTK = DATA / "utkface" / "crop_part1"



def _tiny(**kw):
    return create_model("age_gender_resnet50", backbone="resnet18", width=8, **kw)


def test_structure_and_arguments():
    with torch.device("meta"):
        m = create_model("age_gender_resnet50")
    for name in ("gender", "age_female", "age_male"):
        net = m.get_submodule(name)
        assert type(net).__name__ == "ResNet" and net.fc.out_features == 1 and net.fc.in_features == 2048
        assert net.layer3[0].conv3.out_channels == 1024  # a full ResNet-50
    assert m.num_features == 3 * 2048
    with pytest.raises(ValueError, match="num_classes must be 3"):
        create_model("age_gender_resnet50", num_classes=2)
    with pytest.raises(ValueError, match="backbone"):
        create_model("age_gender_resnet50", backbone="resnet20")


def test_combined_age_by_hand():
    out = torch.tensor([[0.0, 30.0, 50.0], [math.log(3.0), 20.0, 40.0], [-math.log(4.0), 10.0, 60.0]])
    # P(female) = 1/2, 3/4, 1/5: 15 + 25; 15 + 10; 2 + 48.
    assert torch.allclose(AgeGenderNet.combine(out), torch.tensor([40.0, 25.0, 50.0]))


def test_task_metrics_by_hand():
    model = _tiny().eval()
    with torch.no_grad():  # constant heads: P(female) = 3/4, female age 20, male age 40
        for name, bias in (("gender", math.log(3.0)), ("age_female", 20.0), ("age_male", 40.0)):
            net = model.get_submodule(name)
            net.fc.weight.zero_()
            net.fc.bias.fill_(bias)
    faces = FaceSet(
        torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8),
        torch.tensor([25.0, 30.0, 10.0, 45.0]),
        torch.tensor([1, 0, 1, 0]),
        ["a", "b", "c", "d"],
    )
    m = AgeGenderTask().evaluate(model, FaceSource(faces, batch_size=3))
    # Combined age 0.75 * 20 + 0.25 * 40 = 25 for everyone: |0| + |5| + |15| + |20| over 4.
    assert m["mae"] == pytest.approx(10.0) and m["n"] == 4
    assert m["gender_acc"] == pytest.approx(50.0) and m["gender_err"] == pytest.approx(50.0)
    # True-gender networks: |20-25| + |40-30| + |20-10| + |40-45| = 30, over 4.
    assert m["mae_true_gender"] == pytest.approx(7.5)
    bce = -(2 * math.log(0.75) + 2 * math.log(0.25)) / 4
    assert m["loss"] == pytest.approx(bce + 7.5, rel=1e-5)


def test_training_forward_routes_each_image_to_its_gender():
    model = _tiny().eval()
    x = torch.randn(6, 3, 64, 64)
    female = torch.tensor([1, 0, 0, 1, 1, 0]).bool()
    with torch.no_grad():
        full = model(x)
        split = model(x, female)
    assert split.shape == (6, 2)
    assert torch.allclose(split[:, 0], full[:, 0], atol=1e-5)
    assert torch.allclose(split[:, 1], torch.where(female, full[:, 1], full[:, 2]), atol=1e-5)
    # In training, an all-female batch reaches neither the male network's weights nor its BN.
    model.train()
    bn = model.age_male.bn1.running_mean.clone()
    model(x, torch.ones(6, dtype=torch.bool)).sum().backward()
    assert all(p.grad is None for p in model.age_male.parameters())
    assert all(p.grad is not None for p in model.age_female.parameters())
    assert torch.equal(model.age_male.bn1.running_mean, bn)


def test_utkface_quirky_names(tmp_path):
    names = [
        "25_1_0_20170116174525125.jpg.chip.jpg",
        "3_0_4_20161219222749039.jpg.chip.jpg",
        "61_1_20170109142408075.jpg.chip.jpg",  # no race field
        "61_3_20170109150557335.jpg.chip.jpg",  # no race field, "gender" 3
        "30_3_1_20170101000000000.jpg.chip.jpg",  # gender 3
        "0_0_0_20170101000000000.jpg.chip.jpg",  # age 0
        "holiday.jpg",
    ]
    for n in names + ["README.txt"]:
        (tmp_path / n).touch()
    records, skipped = scan_utkface(tmp_path)
    assert [(r.age, r.gender, r.race) for r in records] == [(25, 1, 0), (3, 0, 4)]
    assert skipped == {"malformed name": 3, "gender not 0/1": 1, "age not 1-116": 1}
    assert parse_utkface_name(names[0]).gender == 1
    with pytest.raises(ValueError, match="gender not 0/1"):
        parse_utkface_name(names[4])
    with pytest.raises(ValueError, match="malformed"):
        parse_utkface_name(names[2])
    with pytest.raises(ReslearnError, match="does not exist"):
        scan_utkface(tmp_path / "nope")


def test_real_utkface_labels_and_cache(tmp_path):
    records, skipped = scan_utkface(require_data(UTK, "UTKFace crop_part1"))
    assert len(records) == 9778 and skipped == {"malformed name": 2}
    assert {r.gender for r in records} == {0, 1} and min(r.age for r in records) >= 1
    with pytest.warns(UserWarning, match="skipped 2 files"):
        a = load_utkface(UTK, size=32, limit=40, seed=1, cache_dir=tmp_path)
    assert a.images.shape == (40, 3, 32, 32) and a.images.dtype == torch.uint8
    assert [parse_utkface_name(n).age for n in a.names] == a.ages.int().tolist()
    assert len(list(tmp_path.glob("utkface-32px-*.safetensors"))) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = load_utkface(UTK, size=32, limit=40, seed=1, cache_dir=tmp_path)
    assert torch.equal(a.images, b.images) and a.names == b.names and torch.equal(a.genders, b.genders)
    train, val = a.split(val_fraction=0.25, seed=0)
    assert len(val) == 10 and not set(train.names) & set(val.names)


def test_real_training_steps_decrease_the_loss():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        faces = load_utkface(require_data(UTK, "UTKFace crop_part1"), size=64, limit=96, seed=0)
    torch.manual_seed(0)
    model = _tiny(age_bias=float(faces.ages.mean()))
    task = AgeGenderTask()
    src = FaceSource(faces, batch_size=32, train=True, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    epoch_loss = []
    for epoch in range(6):
        total = 0.0
        for batch in src.iter_epoch(epoch):
            loss, sums = task.loss(model, batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
            assert sums["n"] == 32
        epoch_loss.append(total / len(src))
    assert all(math.isfinite(v) for v in epoch_loss)
    assert epoch_loss[-1] < 0.8 * epoch_loss[0], epoch_loss
    model.eval()
    m = task.evaluate(model, FaceSource(faces, batch_size=64))
    assert m["n"] == 96 and 0 < m["mae"] < 60 and 0 <= m["gender_acc"] <= 100


def test_local_torchvision_weights_load_into_all_three_networks(tmp_path):
    from safetensors.torch import save_file

    tv = torchvision.models.resnet18()
    torch.save(tv.state_dict(), tmp_path / "r18.pth")
    save_file(tv.state_dict(), str(tmp_path / "r18.safetensors"))
    for file in ("r18.pth", "r18.safetensors"):
        model = create_model("age_gender_resnet50", backbone="resnet18", variant="v1.5")
        load_imagenet_weights(model, tmp_path / file)
        for net in model.nets():
            assert torch.equal(net.layer3[1].conv2.weight, tv.layer3[1].conv2.weight)
            assert net.fc.out_features == 1
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():  # same features as torchvision's network
            feats = model.eval().gender.forward_head(model.gender.forward_features(x), pre_logits=True)
            tv.eval().fc = torch.nn.Identity()
            assert torch.allclose(feats, tv(x), atol=1e-5)
            tv.fc = torchvision.models.resnet18().fc
    with pytest.raises(ReslearnError, match="do not fit"):
        load_imagenet_weights(_tiny(), tmp_path / "r18.pth")
    torch.save({"weights": Path("x")}, tmp_path / "evil.pth")  # not plain tensors: refused
    with pytest.raises(ReslearnError, match="cannot read weights"):
        load_imagenet_weights(_tiny(), tmp_path / "evil.pth")
