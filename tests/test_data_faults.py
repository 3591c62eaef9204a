"""Data as users have it, wrong in the ways users get it wrong (issue 13): each case on small real
files (CIFAR-10 JPEGs, Tiny-ImageNet JPEGs, Arabic Speech Commands clips, or PIL-made images),
asserting the one-line message and exit code, or the labels."""

import json
import os
import shutil
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, require_data
from reslearn.cli import main
from reslearn.config import DataConfig, load_config
from reslearn.data.folder import decode_image, read_image_file, scan_image_folder
from reslearn.errors import ReslearnError

DATA = Path(os.environ.get("RESLEARN_DATA_DIR", ROOT / ".data"))
C3 = ("airplane", "automobile", "bird")
TINY = ["model.kwargs.width=4", "optim.batch_size=8", "schedule.iterations=2", "schedule.milestones=[1]",
        "train.eval_every=2", "train.log_every=1", "train.checkpoint_every=2", "train.progress=false"]


def _copy_cifar(root: Path, split: str, classes, n: int, *, src_split: str = "test") -> None:
    src = require_data(DATA / "cifar10-jpeg", "CIFAR-10 JPEG folder") / src_split
    for c in classes:
        (root / split / c).mkdir(parents=True, exist_ok=True)
        for f in sorted((src / c).iterdir())[:n]:
            shutil.copy(f, root / split / c / f.name)


def _one_image(cls: str = "bird") -> Path:
    src = require_data(DATA / "cifar10-jpeg", "CIFAR-10 JPEG folder")
    return sorted((src / "test" / cls).iterdir())[0]


def cli(capsys, *args) -> tuple[int, str, str]:
    rc = main(list(map(str, args)))
    out, err = capsys.readouterr()
    return rc, out, err


def _train(root: Path, run: Path, name: str) -> Path:
    extra = ["data.image_size=32", "data.workers=0"] if name == "imagefolder" else ["data.workers=1"]
    r = subprocess.run([sys.executable, "-m", "reslearn.cli", "train", "-r", "cifar10_quick", "-m", "resnet20",
                        f"data.name={name}", f"data.root={root}", *extra, *TINY, "--run-dir", str(run)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    return run / "model.safetensors"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A 3-class folder (8 train, 4 val images per class, real CIFAR-10 JPEGs) with an unlabelled
    Tiny-ImageNet-style test/images/, and the two checkpoints trained on it for 2 iterations:
    the DataLoader path (imagefolder) and the in-memory path (imagefolder-memory)."""
    base = tmp_path_factory.mktemp("faults")
    root = base / "c3"
    _copy_cifar(root, "train", C3, 8, src_split="train")
    _copy_cifar(root, "val", C3, 4)
    (root / "test" / "images").mkdir(parents=True)
    shutil.copy(_one_image("cat"), root / "test" / "images" / "test_0.jpg")
    return {"root": root, "base": base, "loader": _train(root, base / "run_loader", "imagefolder"),
            "memory": _train(root, base / "run_memory", "imagefolder-memory")}


# ------------------------------------------------------------------ classes are names


def test_training_refuses_a_val_split_with_other_classes(folders, tmp_path, capsys):
    root = tmp_path / "r"
    _copy_cifar(root, "train", C3, 2, src_split="train")
    _copy_cifar(root, "val", ("airplane", "bird"), 2)
    args = ["train", "-r", "cifar10_quick", "data.name=imagefolder", f"data.root={root}", "data.workers=0",
            "data.image_size=32", *TINY, "--run-dir", tmp_path / "run"]
    rc, _, err = cli(capsys, *args)
    assert rc == 2 and err.count("\n") == 1
    assert f"{root / 'val'} lacks 1 of the 3 training classes (first: automobile)" in err
    assert "data.shared_classes=true" in err
    _copy_cifar(root, "val", ("automobile", "cat"), 2)
    rc, _, err = cli(capsys, *args[:-2], "--run-dir", tmp_path / "run2")
    assert rc == 2 and "has 1 class(es) the training set has not (first: cat)" in err


@pytest.mark.parametrize("name", ["imagefolder", "imagefolder-memory"])
def test_shared_classes_labels_by_name(tmp_path, name):
    from reslearn.engine.data import build_data

    root = tmp_path / "r"
    _copy_cifar(root, "train", C3, 2, src_split="train")
    _copy_cifar(root, "val", ("airplane", "bird"), 3)
    cfg = DataConfig(name=name, root=str(root), shared_classes=True, workers=0,
                     image_size=32 if name == "imagefolder" else 0)
    with pytest.warns(UserWarning, match="using only the 2 of the 3 training classes"):
        b = build_data(cfg, batch_size=4, seed=0, device=torch.device("cpu"))
    labels = torch.cat([y for _, y in b.evals["test"].iter_epoch(0)])
    assert b.classes == list(C3) and labels.tolist() == [0, 0, 0, 2, 2, 2]  # bird keeps label 2


@pytest.mark.parametrize("kind", ["loader", "memory"])
def test_eval_maps_the_checkpoints_classes_by_name(folders, tmp_path, capsys, kind):
    from reslearn.engine.evaluate import collect_probs

    ckpt = folders[kind]
    rc, out, err = cli(capsys, "eval", ckpt, "--json")
    assert rc == 0, err
    assert json.loads(out)["n"] == 12  # val/, as training read it, not the unlabelled test/
    two = tmp_path / "two"
    _copy_cifar(two, "train", ("bird", "airplane"), 1, src_split="train")
    _copy_cifar(two, "val", ("bird", "airplane"), 4)
    rc, _, err = cli(capsys, "eval", ckpt, "--data", two)
    assert rc == 2 and err.count("\n") == 1 and "lacks 1 of the 3 training classes (first: automobile)" in err
    with pytest.warns(UserWarning, match="using only the 2 of the 3 training classes"):
        probs, labels, _, _ = collect_probs(ckpt, root=str(two), shared_classes=True)
    assert labels.tolist() == [0] * 4 + [2] * 4 and probs.shape == (8, 3)
    # the same images in the model's own folder get the same labels and outputs
    full, full_labels, _, _ = collect_probs(ckpt)
    keep = (full_labels != 1).nonzero().flatten()
    assert torch.equal(full_labels[keep], labels) and torch.allclose(full[keep], probs, atol=1e-6)
    extra = tmp_path / "extra"
    _copy_cifar(extra, "train", C3, 1, src_split="train")
    _copy_cifar(extra, "val", (*C3, "cat"), 2)
    rc, _, err = cli(capsys, "eval", ckpt, "--data", extra)
    assert rc == 2 and "has 1 class(es) the training set has not (first: cat)" in err


# ------------------------------------------------------------------ predict


def test_predict_works_on_imagefolder_checkpoints_as_eval_preprocesses(folders, capsys):
    from reslearn.checkpoint import load_model
    from reslearn.engine.evaluate import eval_split, image_inputs
    from reslearn.data import transforms

    ckpt = folders["loader"]
    rc, out, err = cli(capsys, "predict", ckpt, folders["root"] / "val" / "bird" / "0000.jpg", "--json")
    assert rc == 0, err
    top = json.loads(out)[0]["top"]
    assert {c for c, _ in top} == set(C3) and abs(sum(p for _, p in top) - 1) < 1e-5
    _, doc = load_model(ckpt)
    assert doc["normalizer"], "the trainer records the ImageFolder normalisation"
    _, ds = eval_split(doc, transform=transforms.imagenet_eval_transform(crop=32, resize=round(32 * 256 / 224)))
    i = next(k for k, (p, _) in enumerate(ds.samples) if p.name == "0000.jpg" and p.parent.name == "bird")
    assert torch.allclose(image_inputs(doc, [ds.samples[i][0]])[0], ds[i][0], atol=1e-5)
    from reslearn.export import _preprocessing  # the export sidecar states the same preprocessing

    pre = _preprocessing(doc)
    assert pre["resize_shorter_side"] == 37 and pre["mean"]["data"] == pytest.approx(transforms.IMAGENET_MEAN)
    assert _preprocessing(load_model(folders["memory"])[1])["resize_shorter_side"] == 32


def _rewrite(src: Path, dest: Path, **changes) -> dict:
    """``src`` with its JSON document changed (the tensors, and their checksum, unchanged)."""
    from reslearn.checkpoint import load_tensors, save_tensors

    tensors, doc = load_tensors(src)
    doc = {k: v for k, v in doc.items() if k not in ("format", "version", "sha256")} | changes
    save_tensors(dest, tensors, doc)
    return doc


def test_predict_on_imagefolder_checkpoints_written_before_the_normaliser_was_recorded(folders, tmp_path, capsys):
    img = folders["root"] / "val" / "bird" / "0000.jpg"
    _rewrite(folders["loader"], tmp_path / "old.safetensors", normalizer={})
    outs = []
    for ckpt in (folders["loader"], tmp_path / "old.safetensors"):
        rc, out, err = cli(capsys, "predict", ckpt, img, "--json")
        assert rc == 0, err
        outs.append(json.loads(out)[0]["top"])
    assert outs[0] == outs[1]


def test_predict_refuses_a_checkpoint_that_is_not_an_image_classifier(folders, tmp_path, capsys):
    from reslearn.checkpoint import load_tensors

    config = load_tensors(folders["loader"])[1]["config"]
    config["data"]["name"] = "speech-commands"
    _rewrite(folders["loader"], tmp_path / "kws.safetensors", data="speech-commands", config=config)
    for cmd in ("predict", "eval"):
        args = [tmp_path / "kws.safetensors"] + ([_one_image()] if cmd == "predict" else [])
        rc, _, err = cli(capsys, cmd, *args)
        assert rc == 2 and err.count("\n") == 1, err
        assert f"is a speech-commands model, not an image classifier; reslearn {cmd} takes image classifiers" in err


# ------------------------------------------------------------------ image files


def test_16_bit_and_float_images_are_scaled_to_8_bits(tmp_path):
    gray = np.array(Image.open(_one_image()).convert("L"))
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "g16.png")  # 16-bit PNG: mode I;16
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    assert torch.equal(decode_image(tmp_path / "g16.png", channels=1)[0], torch.from_numpy(gray))
    rgb = decode_image(tmp_path / "g16.png")
    assert rgb.shape == (3, 32, 32) and torch.equal(rgb[1], torch.from_numpy(gray))
    Image.fromarray(gray.astype(np.float32) / 255).save(tmp_path / "f.tif")  # mode F in [0, 1]
    assert torch.equal(decode_image(tmp_path / "f.tif", channels=1)[0], torch.from_numpy(gray))
    Image.fromarray(gray.astype(np.float32)).save(tmp_path / "f255.tif")  # float in 0..255: ambiguous
    with pytest.raises(ReslearnError, match=r"f255.tif: a float image with values outside \[0, 1\]"):
        decode_image(tmp_path / "f255.tif")
    Image.fromarray(gray.astype(np.int32) * 70000).save(tmp_path / "i32.tif")
    with pytest.raises(ReslearnError, match="i32.tif: a 32-bit integer image"):
        decode_image(tmp_path / "i32.tif")


def test_predict_reads_what_training_reads(folders, tmp_path, capsys):
    gray = np.asarray(Image.open(_one_image()).convert("RGB"))
    Image.fromarray(gray).save(tmp_path / "a.bmp")
    Image.fromarray(gray).save(tmp_path / "a.tif")
    Image.fromarray(gray).save(tmp_path / "a.png")
    l8 = np.asarray(Image.open(_one_image()).convert("L"))
    Image.fromarray(l8).save(tmp_path / "l8.png")
    Image.fromarray(l8.astype(np.uint16) * 257).save(tmp_path / "l16.png")
    rc, out, err = cli(capsys, "predict", folders["loader"], *(tmp_path / f for f in
                       ("a.bmp", "a.tif", "a.png", "l8.png", "l16.png")), "--json")
    assert rc == 0, err
    res = [r["top"] for r in json.loads(out)]
    assert res[0] == res[1] == res[2] and res[3] == res[4]  # same pixels, same answer; 16 bits not white
    (tmp_path / "notes.txt").write_text("not an image")
    rc, _, err = cli(capsys, "predict", folders["loader"], tmp_path / "notes.txt")
    assert rc == 2 and "notes.txt: not an image file extension (reslearn reads .jpg, .jpeg, .png" in err
    raw = _one_image().read_bytes()
    (tmp_path / "cut.jpg").write_bytes(raw[: len(raw) // 2])
    rc, _, err = cli(capsys, "predict", folders["loader"], tmp_path / "cut.jpg")
    assert rc == 2 and err.count("\n") == 1 and "cut.jpg: truncated JPEG" in err


def _png_claiming(path: Path, w: int, h: int) -> None:
    """A small PNG whose header says w x h (what a decompression bomb looks like to a reader)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(w + 1) * 4))
                     + chunk(b"IEND", b""))


def test_pixel_limit(folders, tmp_path, capsys, monkeypatch):
    _png_claiming(tmp_path / "bomb.png", 30000, 30000)
    assert (tmp_path / "bomb.png").stat().st_size < 2000
    rc, _, err = cli(capsys, "predict", folders["loader"], tmp_path / "bomb.png")
    assert rc == 2 and err.count("\n") == 1
    assert "bomb.png: 900,000,000 pixels, over the limit of 89,478,485 (PIL.Image.MAX_IMAGE_PIXELS" in err
    # between Pillow's warning and its error (1x-2x the limit) decoding is refused too
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 700)
    with pytest.raises(ReslearnError, match=r"1,024 pixels \(32x32\), over the limit of 700"):
        read_image_file(_one_image())


# ------------------------------------------------------------------ folder layouts


def test_links_are_followed_once_and_duplicates_reported(tmp_path):
    root = tmp_path / "r"
    _copy_cifar(root, "train", ("airplane", "bird"), 3, src_split="train")
    bird = root / "train" / "bird"
    (bird / "loop").symlink_to(".")  # a self-link: 41x the class before
    (bird / "up").symlink_to("..")  # a loop through the split folder
    first_plane = sorted((root / "train" / "airplane").iterdir())[0]
    (bird / "z_plane.jpg").symlink_to(first_plane)  # the same file in two classes
    with pytest.warns(UserWarning, match=r"1 duplicate file\(s\) under .* read once: .*z_plane.jpg") as rec:
        samples, classes, _ = scan_image_folder(root, split="train")
    assert len([w for w in rec if "duplicate" in str(w.message)]) == 1
    assert classes == ["airplane", "bird"] and [lab for _, lab in samples] == [0, 0, 0, 1, 1, 1]


def test_empty_class_folders_are_errors(tmp_path):
    root = tmp_path / "r"
    _copy_cifar(root, "train", ("airplane", "bird"), 2, src_split="train")
    (root / "train" / "cat").mkdir()
    with pytest.raises(ReslearnError, match=r"train/cat: empty class folder \(no files\)"):
        scan_image_folder(root, split="train")
    (root / "train" / "cat" / "notes.txt").write_text("to do")
    with pytest.raises(ReslearnError, match=r"train/cat: no readable image in this class folder"):
        scan_image_folder(root, split="train")


def test_tiny_imagenet_layout(tmp_path):
    src = require_data(DATA / "tiny-imagenet-50", "Tiny-ImageNet-50") / "val"
    wnids = sorted(d.name for d in src.iterdir())[:3]
    root = tmp_path / "tiny-imagenet-200"
    rows = []
    for w in wnids:  # Tiny-ImageNet's own layout: train/<wnid>/images/ + <wnid>_boxes.txt
        (root / "train" / w / "images").mkdir(parents=True)
        files = sorted((src / w).iterdir())[:4]
        for f in files[:2]:
            shutil.copy(f, root / "train" / w / "images" / f.name)
        (root / "train" / w / f"{w}_boxes.txt").write_text("")
        rows += [(f, w) for f in files[2:]]
    (root / "val" / "images").mkdir(parents=True)
    (root / "test" / "images").mkdir(parents=True)
    lines = []
    for i, (f, w) in enumerate(sorted(rows, key=lambda r: r[0].name)):
        shutil.copy(f, root / "val" / "images" / f"val_{i}.JPEG")
        shutil.copy(f, root / "test" / "images" / f"test_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match="skipped 3"):  # the _boxes.txt files
        train, classes, _ = scan_image_folder(root, split="train")
    assert classes == wnids and len(train) == 6
    for split in ("val", "test"):  # both name val/ (as in training); test/ has no labels
        val, vcls, _ = scan_image_folder(root, split=split, classes=classes)
        got = {p.name: classes[lab] for p, lab in val}
        assert got == {ln.split("\t")[0]: ln.split("\t")[1] for ln in lines}
    shutil.rmtree(root / "val")
    with pytest.raises(ReslearnError, match=r"test holds images/ without labels .*an unlabelled split cannot"):
        scan_image_folder(root, split="test", classes=classes)


# ------------------------------------------------------------------ application data


@pytest.fixture()
def kws(tmp_path):
    """A Speech Commands folder of 3 words x 6 real clips, no background noise; the lists name
    4 clips that exist and 3 that do not."""
    pytest.importorskip("soundfile")
    src = require_data(DATA / "asc-speech-commands", "Arabic Speech Commands")
    root = tmp_path / "kws"
    for w in ("yes", "no", "up"):
        (root / w).mkdir(parents=True)
        for f in sorted((src / w).glob("*.wav"))[:6]:
            shutil.copy(f, root / w / f.name)
    have = sorted(f"{p.parent.name}/{p.name}" for p in root.glob("*/*.wav"))
    (root / "validation_list.txt").write_text("\n".join([have[0], have[6], "yes/gone_1.wav", "no/gone_2.wav"]))
    (root / "testing_list.txt").write_text("\n".join([have[1], have[7], "up/gone_3.wav"]))
    return root


def test_speech_lists_naming_missing_clips_warn_with_counts(kws):
    from reslearn.speech.commands import load_speech_commands

    with pytest.warns(UserWarning, match=r"name 7 clips, 3 of them missing \(first: no/gone_2.wav\); using the 4 found"):
        val = load_speech_commands(kws, split="val", words=("yes", "no"), silence_share=0)
    assert len(val.files) >= 2


def test_speech_without_list_files_hint_or_split_by_speaker_hash(kws):
    from collections import Counter

    from reslearn.speech.commands import load_speech_commands, which_set

    for name in ("validation_list.txt", "testing_list.txt"):
        (kws / name).unlink()
    with pytest.raises(ReslearnError, match=r"validation_list.txt is missing \(write it: one clip per line as "
                                            r"<word>/<file>.wav.*set data.options.split_by_hash=true"):
        load_speech_commands(kws, split="train", words=("yes",), silence_share=0)
    train = load_speech_commands(kws, split="train", words=("yes", "no"), silence_share=0, split_by_hash=True)
    clips = sorted(f"{p.parent.name}/{p.name}" for p in kws.glob("*/*.wav"))
    want = [r for r in clips if which_set(r) == "train" and r.split("/")[0] in ("yes", "no")]
    assert 0 < len(want) < len(clips) and sorted(f for f, y in zip(train.files, train.labels) if y >= 2) == want
    # Google's rule: a speaker's clips share a split; about 10% val, 10% test
    assert len({which_set(f"{w}/3c4d_nohash_{i}.wav") for w in ("yes", "no") for i in range(5)}) == 1
    share = Counter(which_set(f"x/{i:08x}_nohash_0.wav") for i in range(3000))
    assert 240 < share["val"] < 360 and 240 < share["test"] < 360


def test_speech_hints_name_the_key_as_typed_and_lists_take_a_bare_string(kws, capsys):
    from reslearn.engine.data import build_data

    rc, _, err = cli(capsys, "train", "-r", "kws_res_quick", f"data.root={kws}", "data.options.words=[yes,no]",
                     "--run-dir", kws.parent / "run")
    assert rc == 2 and err.count("\n") == 1
    hint = "set data.options.silence_share=0"
    assert hint in err
    assert load_config("kws_res_quick", [hint.split()[1]]).data.options["silence_share"] == 0  # works as typed
    cfg = load_config("kws_res_quick", [f"data.root={kws}", "data.options.words=no", "data.options.eval_splits=test",
                                        "data.options.silence_share=0"]).data
    with pytest.warns(UserWarning, match="missing"):
        b = build_data(cfg, batch_size=4, seed=0, device=torch.device("cpu"))
    assert list(b.evals) == ["test"] and b.info["words"] == ["no"]
    assert b.classes == ["_silence_", "_unknown_", "no"]


def test_stego_pairs_of_another_size_or_identical_are_refused(tmp_path):
    from reslearn.apps.stego import StegoPairs, load_cover_folder, lsb_matching

    covers, stegos = tmp_path / "covers", tmp_path / "stego"
    covers.mkdir()
    stegos.mkdir()
    src = require_data(DATA / "cifar10-jpeg", "CIFAR-10 JPEG folder") / "test" / "bird"
    for i, f in enumerate(sorted(src.iterdir())[:3]):
        g = np.asarray(Image.open(f).convert("L"))
        Image.fromarray(g).save(covers / f"c{i}.png")
        Image.fromarray(lsb_matching(g, payload=0.4, seed=i)).save(stegos / f"c{i}.png")
    cs = load_cover_folder(covers)
    assert len(StegoPairs.from_folder(cs, stegos)) == 3
    shutil.copy(covers / "c1.png", stegos / "c1.png")
    with pytest.raises(ReslearnError, match=r"stego image .*stego/c1.png is identical to its cover c1.png"):
        StegoPairs.from_folder(cs, stegos)
    Image.open(covers / "c1.png").resize((30, 30)).save(stegos / "c1.png")
    with pytest.raises(ReslearnError, match=r"stego image .*c1.png is 30x30 but its cover c1.png is 32x32"):
        StegoPairs.from_folder(cs, stegos)
    cropped = load_cover_folder(covers, size=24)  # a crop of the covers is still checked by file size
    with pytest.raises(ReslearnError, match=r"c1.png is 30x30 but its cover c1.png is 32x32"):
        StegoPairs.from_folder(cropped, stegos)


# ------------------------------------------------------------------ one split vocabulary


def test_a_field_a_data_set_does_not_read_is_an_error(capsys):
    from reslearn.data.datasets import DATA_SETS, DataSetSpec, register
    from reslearn.engine.data import IN_MEMORY, KNOWN, build_data

    assert KNOWN == tuple(DATA_SETS) and set(IN_MEMORY) == {"cifar10", "cifar100", "fashion-mnist", "mnist",
                                                            "imagefolder-memory"}
    with pytest.raises(ValueError, match="reads unknown DataConfig fields .'val_fraction'."):
        register(DataSetSpec("mine", ("val_fraction",)))
    for name, override, why in [
        ("imagefolder", "data.val_size=5000", "its val/ folder is the held-out split"),
        ("stego", "data.normalize=per_channel", "it reads data.val_size, data.test_size, data.train_subset"),
        ("speech-commands", "data.val_size=10", "it has its own validation split"),
        ("speech-commands", "data.test_size=100", "it has its own test split"),
        ("cifar10", "data.test_size=0.2", "its test split is its own"),
        ("cifar10", "data.image_size=64", "it reads data.val_size"),
        ("cifar10", "data.options.size=3", "it reads data.val_size"),
    ]:
        cfg = load_config("cifar10_quick", [f"data.name={name}", "data.val_size=0", override]).data
        with pytest.raises(ReslearnError, match=rf"data\.{override[5:].split('=')[0].split('.')[0]} does not apply "
                                                rf"to {name}: {why}"):
            build_data(cfg, batch_size=8, seed=0, device=torch.device("cpu"))


def test_reslearn_data_lists_what_each_data_set_reads(capsys):
    rc, out, _ = cli(capsys, "data", "stego")
    keys = [ln.split()[0] for ln in out.splitlines()]
    assert rc == 0 and keys[:3] == ["data.root", "data.split_seed", "data.eval_batch_size"]
    assert {"data.val_size", "data.test_size", "data.train_subset", "data.test_subset",
            "data.options.cover_source"} <= set(keys)
    assert "data.normalize" not in keys and not any("fraction" in k or "options.eval_batch" in k for k in keys)
    rc, out, _ = cli(capsys, "data", "imagefolder")
    assert "data.shared_classes" in out and "data.val_size" not in out and "data.normalize" not in out
    assert "data.test_size" not in out and "data.eval_batch_size" in out
    rc, _, err = cli(capsys, "data", "imagenet")
    assert rc == 2 and err.count("\n") == 1 and "no data set 'imagenet'; known: cifar10" in err


def _fake_apps(monkeypatch, n: int = 50) -> None:
    """The stego and utkface loaders replaced by ``n`` generated covers / faces, so that their
    splitting runs alone (the files they read are tested in test_apps_*)."""
    from reslearn.apps import faces, stego

    covers = stego.CoverSet(np.random.default_rng(0).integers(0, 256, (n, 8, 8), dtype=np.uint8),
                            [f"c{i}" for i in range(n)])
    monkeypatch.setattr(stego, "load_covers", lambda source, **kw: covers)
    faceset = faces.FaceSet(torch.zeros(n, 3, 4, 4, dtype=torch.uint8), torch.arange(n).float(),
                            torch.arange(n) % 2, [f"f{i}" for i in range(n)])
    monkeypatch.setattr(faces, "load_utkface", lambda root, **kw: faceset)
    monkeypatch.setattr(faces, "utkface_root", lambda root: Path(root))
    monkeypatch.setattr(faces, "utkface_cache_dir", lambda cache_dir, root: None)


_APPS = {"stego": ("stego_drn_quick", lambda s: list(s.pairs.names)),
         "utkface": ("utkface_age_gender_quick", lambda s: s.targets[:, 1].long().tolist())}  # age = index


def _app_splits(name: str, *overrides: str) -> dict[str, list]:
    from reslearn.engine.data import build_data

    recipe, ident = _APPS[name]
    cfg = load_config(recipe, ["data.root=/nowhere", "data.augment=none", *overrides]).data
    b = build_data(cfg, batch_size=8, seed=0, device=torch.device("cpu"))
    return {k: ident(src) for k, src in {"train": b.train, **b.evals}.items()}


@pytest.mark.parametrize("name", ["stego", "utkface"])
def test_the_application_data_sets_split_with_the_shared_fields(monkeypatch, capsys, tmp_path, name):
    _fake_apps(monkeypatch)
    shares = _app_splits(name, "data.test_size=0.2", "data.val_size=0.2")
    assert [len(shares[k]) for k in ("train", "val", "test")] == [30, 10, 10]
    assert not set(shares["train"]) & set(shares["val"]) and not set(shares["val"]) & set(shares["test"])
    assert _app_splits(name, "data.test_size=10", "data.val_size=10") == shares  # a count means its share
    cut = _app_splits(name, "data.test_size=10", "data.val_size=10", "data.train_subset=16", "data.test_subset=4")
    assert [len(cut[k]) for k in ("train", "val", "test")] == [16, 4, 4]
    assert all(set(cut[k]) <= set(shares[k]) for k in shares)
    what = "pairs" if name == "stego" else "faces"
    for bad, message in [
        (["data.test_size=0"], f"data.test_size must hold out the test split of {name}: a share 0 < x < 1"),
        (["data.test_size=0.5", "data.val_size=0.5"], f"data.test_size + data.val_size must leave training {what}"),
        (["data.test_size=50"], f"data.test_size=50 leaves an empty split of the 50 samples of {name} ({what})"),
        (["data.options.test_fraction=0.2"], "data.options.test_fraction is now data.test_size"),
        (["data.options.eval_batch_size=64"], "data.options.eval_batch_size is now data.eval_batch_size"),
        (["data.val_size=1.5"], "data.val_size must be a count (a whole number) or a share 0 < x < 1; got 1.5"),
    ]:
        rc, _, err = cli(capsys, "train", "-r", _APPS[name][0], "data.root=/nowhere", *bad, "--run-dir", tmp_path / "r")
        assert rc == 2 and err.count("\n") == 1 and message in err, (bad, err)


# ------------------------------------------------------------------ one evaluation path


def _samples(ds):
    """What a split holds: (images, labels) of an ArrayDataset, (path, label) pairs of a folder."""
    if hasattr(ds, "images"):
        return ds.images, ds.labels.cpu()
    return [ds.dataset.samples[i] for i in ds.indices] if hasattr(ds, "indices") else list(ds.samples)


@pytest.mark.parametrize("name", ["cifar10", "imagefolder"])
def test_the_trainer_and_eval_build_a_split_through_one_function(tmp_path, monkeypatch, name):
    """The trainer's val/test sources and eval_split (eval, ensemble, analyze, export) both come
    from split_datasets, and hold the same samples with the same labels for the same run."""
    from reslearn.config import config_to_dict
    from reslearn.engine import data as engine_data
    from reslearn.engine import evaluate

    if name == "cifar10":
        root = require_data(DATA / "cifar-10-batches-py", "CIFAR-10 python batches").parent
        extra = ["data.val_size=300", "data.train_subset=500", "data.test_subset=200"]
    else:
        root = tmp_path / "r"
        _copy_cifar(root, "train", C3, 4, src_split="train")
        _copy_cifar(root, "val", C3, 3)
        extra = ["data.image_size=32", "data.workers=0", "data.test_subset=7"]
    cfg = load_config("cifar10_quick", [f"data.name={name}", f"data.root={root}", *extra])
    asked, real = [], engine_data.split_datasets

    def spy(cfg, splits, **kw):
        asked.append(tuple(splits))
        return real(cfg, splits, **kw)

    monkeypatch.setattr(engine_data, "split_datasets", spy)
    monkeypatch.setattr(evaluate, "split_datasets", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the local CIFAR copy's checksum note
        b = engine_data.build_data(cfg.data, batch_size=16, seed=0, device=torch.device("cpu"))
        doc = {"config": config_to_dict(cfg), "classes": b.classes}
        for split, src in b.evals.items():
            ours = src.dataset if hasattr(src, "dataset") else src
            _, theirs = evaluate.eval_split(doc, split=split, limit=cfg.data.test_subset)
            got, want = _samples(ours), _samples(theirs)
            assert all(map(torch.equal, got, want)) if name == "cifar10" else got == want
        _, train = evaluate.eval_split(doc, split="train")
    splits = ["val", "test"] if name == "cifar10" else ["test"]
    assert asked == [("train", *splits), *[(s,) for s in splits], ("train",)]
    # "train" is what the run trained on: without the held-out val images
    assert len(train) == (49700 if name == "cifar10" else 12)


# ------------------------------------------------------------------ one evaluation batch size


def test_one_evaluation_batch_size(tmp_path, monkeypatch):
    """data.eval_batch_size sets every data set's evaluation batches; by default the larger of the
    training batch and EVAL_BATCH_SIZE."""
    from dataclasses import replace

    from reslearn.data.bundle import EVAL_BATCH_SIZE
    from reslearn.engine.data import build_data

    cpu = torch.device("cpu")
    root = tmp_path / "r"
    _copy_cifar(root, "train", C3, 4, src_split="train")
    _copy_cifar(root, "val", C3, 3)
    for name, extra in (("imagefolder", {"image_size": 32}), ("imagefolder-memory", {})):
        cfg = DataConfig(name=name, root=str(root), workers=0, **extra)
        sizes = [build_data(c, batch_size=bs, seed=0, device=cpu).evals["test"].plan.batch_size
                 for c, bs in ((cfg, 4), (cfg, 512), (replace(cfg, eval_batch_size=2), 4))]
        assert sizes == [EVAL_BATCH_SIZE, 512, 2], name
    _fake_apps(monkeypatch)
    # 10 test pairs in batches of 5 images rounded up to 3 whole pairs; 10 test faces in batches of 5
    for name, batches in (("stego", 4), ("utkface", 2)):
        cfg = load_config(_APPS[name][0], ["data.root=/nowhere", "data.eval_batch_size=5"]).data
        assert len(build_data(cfg, batch_size=8, seed=0, device=cpu).evals["test"]) == batches
        assert len(build_data(replace(cfg, eval_batch_size=0), batch_size=8, seed=0, device=cpu).evals["test"]) == 1
