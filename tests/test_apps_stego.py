"""Steganalysis: DRN (Wu, Zhong, Liu, MTAP 2018) structure and its fixed KV filter; LSB-matching
embedder, pair bookkeeping and the detection error P_E (reslearn.apps.stego)."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, require_data
from reslearn import create_model
from reslearn.apps.stego import (
    StegoPairs,
    StegoPairSource,
    StegoTask,
    covers_from_array,
    detection_error,
    embedding_path,
    image_seed,
    load_cover_folder,
    lsb_extract,
    lsb_matching,
    make_stego,
)
from reslearn.errors import ReslearnError
from reslearn.summary import count_params

DATA = Path(os.environ.get("RESLEARN_DATA_DIR", ROOT / ".data"))
KV = [[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [2, -6, 8, -6, 2], [-1, 2, -2, 2, -1]]



def _cifar_covers(n):
    return load_cover_folder(require_data(DATA / "cifar10-jpeg" / "test", "CIFAR-10 JPEGs"), limit=n)


# ------------------------------------------------------------------------------------- DRN


def test_kv_filter_is_exact_fixed_and_survives_an_optimizer_step():
    model = create_model("drn_stego", depth=18, width=8)
    hpf = model.hpf
    assert torch.equal(hpf.weight, torch.tensor(KV, dtype=torch.float32).div(12).view(1, 1, 5, 5))
    assert not hpf.weight.requires_grad
    assert all(p is not hpf.weight for p in model.parameters())
    assert "hpf.weight" in model.state_dict()
    # An impulse returns the (symmetric) kernel itself; the size is kept (padding 2).
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 12.0
    assert torch.equal(hpf(x)[0, 0, 2:7, 2:7], torch.tensor(KV, dtype=torch.float32))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    loss = torch.nn.functional.cross_entropy(model(torch.rand(4, 1, 32, 32) * 255), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    opt.step()
    after = model.state_dict()
    assert torch.equal(after["hpf.weight"], before["hpf.weight"])
    assert not torch.equal(after["conv1.weight"], before["conv1.weight"])


def test_kv_filter_travels_in_state_dict_and_cannot_be_replaced():
    src = create_model("drn_stego", depth=18, width=8)
    with torch.device("meta"):
        meta = create_model("drn_stego", depth=18, width=8)
    meta = meta.to_empty(device="cpu")
    meta.load_state_dict(src.state_dict())
    assert torch.equal(meta.hpf.weight, src.hpf.weight)
    tampered = src.state_dict()
    tampered["hpf.weight"] = tampered["hpf.weight"] * 2
    with pytest.raises(ValueError, match="KV"):
        create_model("drn_stego", depth=18, width=8).load_state_dict(tampered)


def test_drn_structure():
    m = create_model("drn_stego")  # the registered default: depth 50, 1 input channel, 2 classes
    assert (m.conv1.in_channels, m.conv1.out_channels, m.conv1.kernel_size, m.conv1.stride) == (1, 64, (7, 7), (2, 2))
    assert (m.fc1.in_features, m.fc1.out_features, m.fc.in_features, m.fc.out_features) == (2048, 1000, 1000, 2)
    assert [m.get_submodule(f"layer{i}")[0].conv2.out_channels for i in range(1, 5)] == [64, 128, 256, 512]
    # The non-bottleneck body (depth 18): 64 -> 512 maps, each stage halving the map.
    small = create_model("drn_stego", depth=18)
    sizes = {}
    def hook(name):
        return lambda _m, _i, out: sizes.__setitem__(name, tuple(out.shape[1:]))

    for name in ("hpf", "conv1", "maxpool", "layer1", "layer2", "layer3", "layer4"):
        small.get_submodule(name).register_forward_hook(hook(name))
    small(torch.zeros(1, 1, 128, 128))
    assert sizes == {
        "hpf": (1, 128, 128), "conv1": (64, 64, 64), "maxpool": (64, 32, 32), "layer1": (64, 32, 32),
        "layer2": (128, 16, 16), "layer3": (256, 8, 8), "layer4": (512, 4, 4),
    }
    for i in (2, 3, 4):  # the dimension-increasing block: stride 2, projection shortcut
        first = small.get_submodule(f"layer{i}")[0]
        assert first.stride == 2 and first.downsample is not None
    # ResNet-18 (11,689,512) on 1 channel (-6,272) with fc 512->1000 kept, plus fc 1000->2 (+2,002).
    assert count_params(small) == 11_689_512 - 6_272 + 2_002
    assert small.forward_head(torch.zeros(3, 512, 4, 4), pre_logits=True).shape == (3, 1000)


# -------------------------------------------------------------------------------- embedder


@pytest.mark.parametrize("source", ["cifar10", "utkface"])
def test_lsb_matching_change_rate_matches_payload_on_real_images(source):
    if source == "cifar10":
        covers = _cifar_covers(300)
    else:
        covers = load_cover_folder(require_data(DATA / "utkface" / "crop_part1", "UTKFace"), size=64, limit=75)
    n_pixels = covers.images.size
    for payload in (0.1, 0.4, 1.0):
        stego = make_stego(covers, payload=payload, seed=3)
        diff = stego.astype(np.int16) - covers.images
        assert np.abs(diff).max() == 1
        rate = (diff != 0).sum() / n_pixels
        assert abs(rate - payload / 2) < 0.01, (payload, rate)
        # +1 and -1 are equally likely where the pixel is not saturated.
        ups, downs = (diff == 1).sum(), (diff == -1).sum()
        assert abs(ups - downs) / (ups + downs) < 0.1
    # The receiver reads the message back from the path.
    i = 7
    seed = image_seed(covers.names[i], 3)
    _, bits = embedding_path(covers.images[i].shape, payload=0.4, seed=seed)
    stego_i = lsb_matching(covers.images[i], payload=0.4, seed=seed)
    assert np.array_equal(lsb_extract(stego_i, payload=0.4, seed=seed), bits)
    assert np.array_equal(stego_i, make_stego(covers, payload=0.4, seed=3)[i])


def test_lsb_matching_clamps_at_0_and_255_and_is_reproducible():
    for value, allowed in ((0, {0, 1}), (255, {254, 255})):
        cover = np.full((32, 32), value, np.uint8)
        stego = lsb_matching(cover, payload=1.0, seed=11)
        assert set(np.unique(stego).tolist()) == allowed
        positions, bits = embedding_path(cover.shape, payload=1.0, seed=11)
        assert np.array_equal(stego.reshape(-1)[positions] & 1, bits)
        # Changed exactly where the bit disagreed with the LSB.
        assert (stego != cover).sum() == ((value & 1) != bits).sum()
    rng = np.random.default_rng(0)
    cover = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    a = lsb_matching(cover, payload=0.5, seed=5)
    assert np.array_equal(a, lsb_matching(cover, payload=0.5, seed=5))
    assert not np.array_equal(a, lsb_matching(cover, payload=0.5, seed=6))
    positions, _ = embedding_path(cover.shape, payload=0.5, seed=5)
    outside = np.ones(cover.size, bool)
    outside[positions] = False
    assert len(positions) == 128 and np.array_equal(a.reshape(-1)[outside], cover.reshape(-1)[outside])
    assert image_seed("a.png") != image_seed("b.png") and image_seed("a.png") == image_seed("a.png")
    with pytest.raises(ValueError, match="payload"):
        lsb_matching(cover, payload=1.5, seed=0)


def test_array_covers_match_file_covers():
    covers = _cifar_covers(20)
    root = DATA / "cifar10-jpeg" / "test"
    rgb = np.stack([np.asarray(Image.open(root / n).convert("RGB")) for n in covers.names])
    assert np.array_equal(covers_from_array(rgb, names=covers.names).images, covers.images)
    assert np.array_equal(covers_from_array(np.moveaxis(rgb, -1, 1)).images, covers.images)
    assert covers_from_array(rgb, size=16).images.shape == (20, 16, 16)


def test_ready_made_stego_folder(tmp_path):
    covers = covers_from_array(np.random.default_rng(1).integers(0, 256, (6, 24, 24), dtype=np.uint8))
    stego = make_stego(covers, payload=0.3)
    (tmp_path / "c").mkdir()
    (tmp_path / "s").mkdir()
    for i, (c, s) in enumerate(zip(covers.images, stego)):
        Image.fromarray(c).save(tmp_path / "c" / f"{i:02d}.png")
        # Stego files keep the covers' names; one is stored under another lossless suffix.
        Image.fromarray(s).save(tmp_path / "s" / (f"{i:02d}.pgm" if i == 3 else f"{i:02d}.png"))
    files = load_cover_folder(tmp_path / "c")
    pairs = StegoPairs.from_folder(files, tmp_path / "s")
    assert np.array_equal(pairs.covers, covers.images) and np.array_equal(pairs.stegos, stego)
    (tmp_path / "s" / "05.png").unlink()
    with pytest.raises(ReslearnError, match="lacks 1 of 6"):
        StegoPairs.from_folder(files, tmp_path / "s")


# ---------------------------------------------------------------------------- pairs, batches


def test_pairs_never_split_and_batches_hold_whole_pairs():
    pairs = StegoPairs.embed(_cifar_covers(120), payload=0.5, seed=0)
    train, test = pairs.split(test_fraction=0.25, seed=4)
    assert len(test) == 30 and len(train) == 90
    assert not set(train.names) & set(test.names) and set(train.names) | set(test.names) == set(pairs.names)
    for part in (train, test):  # each stego image stays with its own cover
        idx = [pairs.names.index(n) for n in part.names]
        assert np.array_equal(part.covers, pairs.covers[idx]) and np.array_equal(part.stegos, pairs.stegos[idx])

    by_cover = {c.tobytes(): s for c, s in zip(train.covers, train.stegos)}
    src = StegoPairSource(train, batch_size=8, shuffle=True, seed=1)
    seen = 0
    for x, y in src.iter_epoch(2):
        assert torch.equal(y, torch.tensor([0, 1] * (len(y) // 2)))
        xs = x[:, 0].to(torch.uint8).numpy()
        for c, s in zip(xs[0::2], xs[1::2]):
            assert np.array_equal(by_cover.pop(c.tobytes()), s)
            seen += 1
    assert seen == 90 and not by_cover  # every pair once per epoch

    # With augmentation both images of a pair get the same rotation/flip.
    aug = StegoPairSource(train, batch_size=8, shuffle=True, augment=True, seed=1)
    changes = []
    for x, _ in aug.iter_epoch(0):
        d = x[1::2] - x[0::2]
        assert d.abs().max() <= 1
        changes += (d != 0).flatten(1).sum(1).tolist()
    assert sorted(changes) == sorted((train.covers != train.stegos).reshape(90, -1).sum(1).tolist())
    # Resumption replays the same batches.
    full = list(aug.iter_epoch(3))
    tail = list(aug.iter_epoch(3, start=5))
    assert len(tail) == len(full) - 5 and all(torch.equal(a[0], b[0]) for a, b in zip(full[5:], tail))
    with pytest.raises(ValueError, match="batch_size"):
        StegoPairSource(train, batch_size=7)


# ---------------------------------------------------------------------------------- metrics


def test_detection_error_hand_worked():
    # Covers 0.1 0.35 0.4 0.8, stego 0.3 0.6 0.7 0.9. Calling "stego" at >= 0.6: one cover of four
    # (0.8) is a false alarm, one stego image of four (0.3) is missed: (1/4 + 1/4) / 2 = 0.25, and
    # no threshold does better (>= 0.7: 1/4 + 2/4; >= 0.3: 3/4 + 0).
    assert detection_error([0.1, 0.4, 0.35, 0.8, 0.9, 0.6, 0.3, 0.7], [0, 0, 0, 0, 1, 1, 1, 1]) == 0.25
    # Ties: covers 1 2 2 3, stego 2 3 4 4. t=2: (3/4 + 0)/2; t=3: (1/4 + 1/4)/2; t=4: (0 + 2/4)/2.
    assert detection_error(np.array([1, 2, 2, 3, 2, 3, 4, 4]), np.array([0, 0, 0, 0, 1, 1, 1, 1])) == 0.25
    assert detection_error(torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.tensor([0, 0, 1, 1])) == 0.0
    assert detection_error([2.0, 3.0, 0.0, 1.0], [0, 0, 1, 1]) == 0.5  # never above chance
    with pytest.raises(ValueError, match="both"):
        detection_error([0.1, 0.2], [0, 0])


def _stego_eval(cover_logits, stego_logits):
    """StegoTask.evaluate of an identity "model" on one batch: the inputs are the logits
    (z_cover, z_stego), covers labelled 0 and stego images 1."""
    from test_engine import _Batches

    x = torch.tensor(cover_logits + stego_logits, dtype=torch.float32)
    y = torch.tensor([0] * len(cover_logits) + [1] * len(stego_logits))
    return StegoTask().evaluate(torch.nn.Identity(), _Batches((x, y)))


def test_stego_task_pe_where_one_logit_decides():
    # z_stego alone decides (z_cover = 0): a perfect detector, P_E 0. Scored with the sign
    # flipped (z_cover - z_stego) the same logits would give 50.
    m = _stego_eval([[0, -1], [0, -2]], [[0, 1], [0, 2]])
    assert (m["pe"], m["acc"], m["n"]) == (0.0, 100.0, 4)
    # z_cover alone decides (z_stego = 0): the score is the difference, so again perfect; a score
    # of z_stego alone would be constant here and give 50
    m = _stego_eval([[3, 0], [1, 0]], [[-1, 0], [-3, 0]])
    assert (m["pe"], m["acc"]) == (0.0, 100.0)
    # no information (every logit equal): chance, 50; argmax ties go to "cover"
    m = _stego_eval([[0, 0], [0, 0]], [[0, 0], [0, 0]])
    assert (m["pe"], m["acc"]) == (50.0, 50.0)
    # a detector that is always wrong: P_E is still 50 (the rule "stego if score >= t" cannot be
    # inverted), accuracy 0
    m = _stego_eval([[0, 1], [0, 2]], [[0, -1], [0, -2]])
    assert (m["pe"], m["acc"]) == (50.0, 0.0)
    # mixed: scores covers -2, 0.5 and stego 1, -1. t = 1: (0 + 1/2) / 2; t = -1: (1/2 + 0) / 2;
    # t = 0.5: (1/2 + 1/2) / 2. Argmax gets one cover and one stego right.
    m = _stego_eval([[0, -2], [0, 0.5]], [[0, 1], [0, -1]])
    assert (m["pe"], m["acc"]) == (25.0, 50.0)


def test_drn_trains_on_pairs_with_the_stego_task():
    pairs = StegoPairs.embed(_cifar_covers(32), payload=1.0, seed=0)
    src = StegoPairSource(pairs, batch_size=16, shuffle=True)
    model = create_model("drn_stego", depth=18, width=8)
    task = StegoTask()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for x, y in src.iter_epoch(0):
        loss, sums = task.loss(model, (x, y))
        assert torch.isfinite(loss) and sums["n"] == 16 and 0 <= sums["top1_err"] <= 16
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    metrics = task.evaluate(model, StegoPairSource(pairs, batch_size=16))
    # recompute P_E and accuracy from the model's own logits, outside StegoTask
    with torch.no_grad():
        logits = torch.cat([model(x) for x, _ in StegoPairSource(pairs, batch_size=16).iter_epoch(0)])
    labels = torch.tensor([0, 1]).repeat(32)
    assert metrics["n"] == 64
    assert metrics["pe"] == pytest.approx(100 * detection_error(logits[:, 1] - logits[:, 0], labels))
    assert metrics["acc"] == pytest.approx(100 * float((logits.argmax(-1) == labels).double().mean()))
    # at the argmax threshold the error is 100 - acc (as many covers as stego images); P_E is
    # the minimum over all thresholds, so it can only be lower
    assert metrics["pe"] <= 100 - metrics["acc"] + 1e-9
    assert np.isfinite(metrics["loss"])
