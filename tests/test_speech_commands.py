"""Speech Commands keyword spotting on the prepared Arabic copy (Google layout): splits, the
12-class mapping, silence cuts, augmentation, the batch source, the download, and a short real
training run of res8-narrow."""

import hashlib
import io
import math
import os
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, require_data, require_module

require_module("soundfile")
require_module("librosa")

from reslearn import create_model  # noqa: E402
from reslearn.errors import ReslearnError  # noqa: E402
from reslearn.speech import commands  # noqa: E402
from reslearn.speech.audio import read_wav  # noqa: E402
from reslearn.speech.commands import (  # noqa: E402
    SILENCE,
    UNKNOWN,
    KWSSource,
    KWSTask,
    apply_augmentation,
    draw_augmentation,
    load_speech_commands,
)
from reslearn.speech.features import MFCC  # noqa: E402

DATA = Path(os.environ.get("RESLEARN_DATA_DIR", ROOT / ".data"))
# The Arabic copy has no on/off/go: ten of its sixteen words as keywords, six left for unknown.
WORDS = ("yes", "no", "up", "down", "left", "right", "stop", "start", "open", "close")


@pytest.fixture(scope="module")
def root():
    return require_data(DATA / "asc-speech-commands", "Arabic Speech Commands")


@pytest.fixture(scope="module")
def val(root):
    return load_speech_commands(root, split="val", words=WORDS, seed=0)


def _listed(root, name):
    return [ln.strip() for ln in (root / name).read_text().splitlines() if ln.strip()]


def test_split_sizes_and_class_mapping(root, val):
    lists = {"val": _listed(root, "validation_list.txt"), "test": _listed(root, "testing_list.txt")}
    every = sorted(f"{p.parent.name}/{p.name}" for p in root.glob("*/*.wav") if p.parent.name[0] != "_")
    held = set(lists["val"]) | set(lists["test"])
    assert (len(every) - len(held), len(lists["val"]), len(lists["test"])) == (2880, 960, 960)

    n_kw = sum(r.split("/")[0] in WORDS for r in lists["val"])
    counts = val.class_counts()
    assert val.classes == (SILENCE, UNKNOWN, *WORDS)
    assert sum(counts[w] for w in WORDS) == n_kw
    assert counts[UNKNOWN] == counts[SILENCE] == math.ceil(0.1 * n_kw)
    assert val.waves.shape == (len(val), 16000) and val.waves.dtype == torch.float32
    for rel, label in zip(val.files, val.labels.tolist()):
        if label == 0:
            assert rel.startswith(SILENCE + "/")
            continue
        assert rel in lists["val"]  # the split comes from validation_list.txt
        word = rel.split("/")[0]
        assert label == (2 + WORDS.index(word) if word in WORDS else 1)
    # one clip read back directly: the stored waveform is the file's samples
    i = val.files.index(next(f for f in val.files if f.startswith("stop/")))
    assert torch.equal(val.waves[i], torch.from_numpy(read_wav(root / val.files[i], sample_rate=16000)))


def test_silence_clips_are_cuts_of_the_background_noise(root, val):
    noise = {p.name: read_wav(p, sample_rate=16000) for p in (root / "_background_noise_").glob("*.wav")}
    silent = [i for i, y in enumerate(val.labels.tolist()) if y == 0]
    assert silent
    offsets = set()
    for i in silent:
        name, offset = val.files[i].split("/", 1)[1].split("@")
        cut = noise[name][int(offset) : int(offset) + 16000]
        assert len(cut) == 16000
        np.testing.assert_allclose(val.waves[i].numpy(), commands.SILENCE_VOLUME * cut, atol=1e-7)
        offsets.add((name, offset))
    assert len(offsets) == len(silent)  # distinct random cuts


def test_unknown_draw_is_seeded(root, val):
    again = load_speech_commands(root, split="val", words=WORDS, seed=0)
    other = load_speech_commands(root, split="val", words=WORDS, seed=1, silence_share=0.0)
    assert again.files == val.files and torch.equal(again.waves, val.waves)
    unknown = lambda d: {f for f, y in zip(d.files, d.labels.tolist()) if y == 1}  # noqa: E731
    assert unknown(other) != unknown(val)
    assert other.class_counts()[SILENCE] == 0


def test_missing_keyword_folder_lists_the_available_words(root):
    with pytest.raises(ReslearnError, match="on, off, go not found.*available words: backward"):
        load_speech_commands(root, split="test")  # the classic ten include on/off/go
    with pytest.raises(ValueError, match="split"):
        load_speech_commands(root, split="dev", words=WORDS)
    with pytest.raises(ReslearnError, match="not a Speech Commands folder"):
        load_speech_commands(root / "yes", split="test", words=WORDS)


def test_augmentation_draws_stay_in_range():
    g = torch.Generator().manual_seed(5)
    lengths = torch.tensor([40000, 17000])
    aug = draw_augmentation(4000, g, noise_lengths=lengths)
    assert aug.shift.abs().max() <= 1600 and aug.shift.min() < -1500 and aug.shift.max() > 1500
    assert 0.77 < aug.use_noise.float().mean() < 0.83  # probability 0.8
    assert torch.all(aug.volume[~aug.use_noise] == 0)
    assert 0 <= aug.volume.min() and aug.volume.max() <= 0.1 and aug.volume.max() > 0.099
    assert torch.all(aug.noise_offset + 16000 <= lengths[aug.noise_index])


def test_augmentation_shifts_and_mixes_exactly():
    torch.manual_seed(0)
    waves = torch.rand(3, 16000) - 0.5
    noise = torch.rand(40000) - 0.5  # two recordings of 20000 samples
    starts = torch.tensor([0, 20000])
    aug = commands.KWSAugment(
        shift=torch.tensor([1600, -1600, 0]),
        use_noise=torch.tensor([False, True, True]),
        volume=torch.tensor([0.0, 0.05, 0.1]),
        noise_index=torch.tensor([0, 0, 1]),
        noise_offset=torch.tensor([0, 123, 4000]),
    )
    out = apply_augmentation(waves, aug, noise=noise, noise_starts=starts)
    w = waves.numpy()
    expect0 = np.concatenate([np.zeros(1600), w[0, :-1600]])  # delayed by 100 ms
    expect1 = np.concatenate([w[1, 1600:], np.zeros(1600)]) + 0.05 * noise[123:16123].numpy()
    expect2 = w[2] + 0.1 * noise[24000:40000].numpy()
    np.testing.assert_allclose(out[0].numpy(), expect0, atol=1e-6)
    np.testing.assert_allclose(out[1].numpy(), np.clip(expect1, -1, 1), atol=1e-6)
    np.testing.assert_allclose(out[2].numpy(), np.clip(expect2, -1, 1), atol=1e-6)


def test_source_is_deterministic_and_resumable(val):
    small = val.subset(range(0, len(val), 9))
    src = KWSSource(small, batch_size=16, augment=True, shuffle=True, seed=3)
    first = list(src.iter_epoch(2))
    again = list(src.iter_epoch(2))
    resumed = list(src.iter_epoch(2, start=3))
    other = list(src.iter_epoch(3))
    assert len(first) == len(src) == math.ceil(len(small) / 16)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first[3:], resumed))
    assert not torch.equal(first[0][0], other[0][0])
    x, y = first[0]
    assert x.shape == (16, 1, 101, 40) and y.dtype == torch.long
    # evaluation: no augmentation, MFCC of the clips themselves, cached
    ev = KWSSource(small, batch_size=16)
    xs, ys = zip(*ev.iter_epoch(0))
    assert torch.allclose(torch.cat(xs), MFCC()(small.waves), atol=1e-5)
    assert torch.equal(torch.cat(ys), small.labels) and ev._cache is not None
    # two accumulation steps split each global batch in halves
    acc = KWSSource(small, batch_size=16, accum_steps=2)
    halves = [y for _, y in acc.iter_epoch(0)]
    assert torch.equal(torch.cat(halves), small.labels) and len(acc) == 2 * len(ev)


def test_res8_narrow_learns_on_a_subset(root, val):
    torch.manual_seed(0)
    sources = commands.kws_sources(root, batch_size=32, words=WORDS, seed=0)
    assert sources["train"].augment and not sources["test"].augment
    assert [len(s.data) for s in sources.values()] == [2160, 720, 720]
    train = sources["train"].data
    g = torch.Generator().manual_seed(0)
    subset = train.subset(torch.randperm(len(train), generator=g)[:256])
    src = KWSSource(subset, batch_size=32, shuffle=True, seed=0)  # cached MFCC, quick
    model = create_model("res8-narrow")
    task = KWSTask()
    before = task.evaluate(model.eval(), src)
    # Adam: smoother than the paper's SGD (lr 0.1) over a few dozen steps of batch 32
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for epoch in range(6):  # 48 steps
        for batch in src.iter_epoch(epoch):
            loss, sums = task.loss(model, batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
    after = task.evaluate(model.eval(), src)
    assert after["loss"] < 0.8 * before["loss"], (before, after)
    assert after["accuracy"] > before["accuracy"] + 15
    probs, labels = task.posteriors(model, src)
    assert probs.shape == (256, 12) and torch.allclose(probs.sum(-1), torch.ones(256))
    # the reported accuracy is the argmax accuracy of the posteriors, counted here independently
    assert after["accuracy"] == pytest.approx(100 * float((probs.argmax(-1) == labels).double().mean()))


def _fake_archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (
            ("testing_list.txt", b"yes/a_nohash_0.wav\n"),
            ("validation_list.txt", b""),
            ("yes/a_nohash_0.wav", b"RIFF"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_download_is_atomic_and_checked(tmp_path, monkeypatch):
    blob = _fake_archive()
    calls = []

    def fake_urlopen(url, *a, **k):
        calls.append(url)
        return io.BytesIO(blob)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    dest = tmp_path / "gsc"
    # the official archive's checksum does not match the fake: nothing is left behind
    with pytest.raises(ReslearnError, match="checksum"):
        commands.download_speech_commands(dest, version=2)
    assert calls == [commands.URLS[2]] and not dest.exists()
    assert [p.name for p in tmp_path.iterdir()] == []
    out = commands.download_speech_commands(dest, sha256=hashlib.sha256(blob).hexdigest())
    assert calls[-1] == commands.URLS[1]
    assert (out / "testing_list.txt").read_bytes() == b"yes/a_nohash_0.wav\n"
    assert (out / "yes" / "a_nohash_0.wav").is_file()
    commands.download_speech_commands(dest)  # already there: no download
    assert len(calls) == 2
    with pytest.raises(ValueError, match="version"):
        commands.download_speech_commands(tmp_path / "x", version=3)
