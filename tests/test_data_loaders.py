"""Data loaders on the real data (CIFAR-10 python batches and JPEG folder, Fashion-MNIST IDX),
plus their failure modes: hostile pickles, offline downloads, corrupt files."""

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import shutil
import tarfile
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, require_data
from reslearn.data import cifar, folder
from reslearn.data.arrays import ArrayDataset, train_val_split
from reslearn.data.augment import Normalizer
from reslearn.data.cifar import download_cifar, load_cifar, verify_cifar
from reslearn.data.folder import ImageFolderDataset, decode_rgb, load_image_folder_arrays, scan_image_folder
from reslearn.data.idx import find_idx_root, load_idx
from reslearn.data.safe_pickle import restricted_load
from reslearn.errors import ReslearnError

DATA = Path(os.environ.get("RESLEARN_DATA_DIR", ROOT / ".data"))
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# ---------------------------------------------------------------- CIFAR-10, real data

@pytest.fixture(scope="module")
def cifar_root():
    require_data(DATA / "cifar-10-batches-py" / "test_batch", "CIFAR-10 python batches")
    return DATA


@pytest.fixture(scope="module")
def cifar_train(cifar_root):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_cifar(cifar_root, train=True)


def test_cifar10_real_train_and_test(cifar_root, cifar_train, monkeypatch):
    tr = cifar_train
    assert tr.images.shape == (50000, 3, 32, 32) and tr.images.dtype == torch.uint8
    assert tr.labels.dtype == torch.int64 and tr.classes == CIFAR10_CLASSES and tr.name == "cifar10"
    assert tr.labels.bincount().tolist() == [5000] * 10
    # Per-channel mean of the official release (0.4914, 0.4822, 0.4465); the shared copy's README
    # says it matches to 1e-4 while the std is about 1% lower (JPEG re-encoding).
    norm = Normalizer.fit(tr.images, mode="per_channel")
    assert torch.allclose(norm.mean.flatten(), torch.tensor([0.4914, 0.4822, 0.4465]), atol=2e-4)
    std, official = norm.std.flatten(), torch.tensor([0.2470, 0.2435, 0.2616])
    assert ((std < official) & (std > 0.98 * official)).all(), std

    monkeypatch.setattr(cifar, "_warned_unverified", set())
    with pytest.warns(UserWarning, match="unverified") as rec:
        te = load_cifar(cifar_root, train=False)
        load_cifar(cifar_root, train=False)  # the second load does not warn again
    assert len([w for w in rec if "unverified" in str(w.message)]) == 1
    assert te.images.shape == (10000, 3, 32, 32) and te.labels.bincount().tolist() == [1000] * 10
    assert not verify_cifar(cifar_root, name="cifar10")


def test_real_batch_through_restricted_unpickler(cifar_root):
    with open(cifar_root / "cifar-10-batches-py" / "test_batch", "rb") as f:
        d = restricted_load(f)
    assert {"data", "labels", "filenames", "batch_label"} <= set(d)  # bytes keys normalised to str
    assert d["data"].dtype == np.uint8 and d["data"].shape == (10000, 3072)


def test_split_45k_5k_deterministic_disjoint(cifar_train):
    tr, va = train_val_split(cifar_train, val_size=5000)
    tr2, va2 = train_val_split(cifar_train, val_size=5000, seed=0)
    assert (len(tr), len(va)) == (45000, 5000) and tr.classes == va.classes == CIFAR10_CLASSES
    assert torch.equal(va.images, va2.images) and torch.equal(tr.labels, tr2.labels)
    assert (tr.labels.bincount() + va.labels.bincount()).tolist() == [5000] * 10  # a partition


def test_split_indices_disjoint_and_pinned():
    ds = ArrayDataset(torch.zeros(100, 1, 1, 1, dtype=torch.uint8), torch.arange(100), ["x"], "ids")
    tr, va = train_val_split(ds, val_size=10)
    assert set(tr.labels.tolist()).isdisjoint(va.labels.tolist())
    assert sorted(tr.labels.tolist() + va.labels.tolist()) == list(range(100))
    # Pinned: a change in torch's CPU randperm would silently change the paper's held-out set.
    assert va.labels.tolist() == sorted([44, 19, 93, 90, 71, 69, 37, 95, 53, 91])
    for bad in (0, 100, 101):
        with pytest.raises(ValueError, match="val_size"):
            train_val_split(ds, val_size=bad)


def test_array_dataset_validates():
    with pytest.raises(ValueError, match="uint8"):
        ArrayDataset(torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.long), ["a"], "x")
    with pytest.raises(ValueError, match="labels"):
        ArrayDataset(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.zeros(3, dtype=torch.long), ["a"], "x")


# ---------------------------------------------------------------- CIFAR: synthetic files

def _py2_style_batch(n: int, seed: int, labels_key: bytes = b"labels", n_classes: int = 10) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"testing batch",
        labels_key: [int(v) for v in rng.integers(0, n_classes, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [b"img_%d.png" % i for i in range(n)],
    }


def _write_cifar10(root: Path, n: int = 4) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    files = {f"data_batch_{i}": _py2_style_batch(n, i) for i in range(1, 6)}
    files["test_batch"] = _py2_style_batch(n, 9)
    files["batches.meta"] = {b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_vis": 3072}
    for name, obj in files.items():
        # protocol 2 from Python 3 writes bytes via _codecs.encode: the restricted loader's rarest path
        (d / name).write_bytes(pickle.dumps(obj, protocol=2))
    return d


def test_synthetic_cifar10_and_cifar100(tmp_path):
    d = _write_cifar10(tmp_path)
    with pytest.warns(UserWarning, match="unverified"):
        ds = load_cifar(tmp_path, train=True)
    raw = restricted_load(open(d / "data_batch_2", "rb"))
    assert ds.images.shape == (20, 3, 32, 32)
    assert torch.equal(ds.images[4:8], torch.from_numpy(raw["data"]).view(4, 3, 32, 32))
    assert ds.labels[4:8].tolist() == raw["labels"]

    c100 = tmp_path / "cifar-100-python"
    c100.mkdir()
    fine = [f"class{i}" for i in range(100)]
    (c100 / "meta").write_bytes(pickle.dumps({b"fine_label_names": [f.encode() for f in fine],
                                              b"coarse_label_names": [b"c"] * 20}, protocol=2))
    for split, n in (("train", 6), ("test", 3)):
        b = _py2_style_batch(n, 1, labels_key=b"fine_labels", n_classes=100)
        b[b"coarse_labels"] = [0] * n
        (c100 / split).write_bytes(pickle.dumps(b, protocol=2))
    with pytest.warns(UserWarning, match="CIFAR-100"):
        te = load_cifar(tmp_path, name="cifar100", train=False)
    assert te.images.shape == (3, 3, 32, 32) and te.classes == fine and te.name == "cifar100"


def test_cifar_missing_folder_hint(tmp_path):
    with pytest.raises(ReslearnError, match=r"cifar-10-batches-py.*download=True.*prepare_data") as e:
        load_cifar(tmp_path, train=True)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="name"):
        load_cifar(tmp_path, name="cifar11", train=True)


def test_cifar_truncated_and_wrong_batches(tmp_path):
    d = _write_cifar10(tmp_path)
    blob = (d / "test_batch").read_bytes()
    (d / "test_batch").write_bytes(blob[: len(blob) // 2])
    with pytest.warns(UserWarning), pytest.raises(ReslearnError, match="test_batch"):
        load_cifar(tmp_path, train=False)
    bad = _py2_style_batch(4, 0)
    bad[b"data"] = bad[b"data"][:, :100]
    (d / "test_batch").write_bytes(pickle.dumps(bad))
    with pytest.raises(ReslearnError, match="test_batch.*3072"):
        load_cifar(tmp_path, train=False)
    bad = _py2_style_batch(4, 0)
    bad[b"labels"] = bad[b"labels"][:3]
    (d / "test_batch").write_bytes(pickle.dumps(bad))
    with pytest.raises(ReslearnError, match="test_batch.*4 images but 3"):
        load_cifar(tmp_path, train=False)


# ---------------------------------------------------------------- hostile pickles

class _System:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class _Eval:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        import builtins
        return (builtins.eval, (self.code,))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_malicious_pickles_are_refused(tmp_path, protocol):
    marker = tmp_path / "pwned"
    payloads = {
        "system": _System(f"touch {marker}"),
        "eval": _Eval(f"open({str(marker)!r}, 'w').write('x')"),
    }
    for kind, payload in payloads.items():
        blob = pickle.dumps({b"data": payload}, protocol=protocol)
        with pytest.raises(pickle.UnpicklingError, match=r"forbidden global (posix|os)\.system|builtins\.eval"):
            restricted_load(io.BytesIO(blob))
        assert not marker.exists(), kind
    # and inside a CIFAR folder the refusal becomes a one-line error naming the file
    d = _write_cifar10(tmp_path / "root")
    (d / "test_batch").write_bytes(pickle.dumps({b"data": payloads["system"]}, protocol=protocol))
    with pytest.warns(UserWarning), pytest.raises(ReslearnError, match=r"test_batch.*forbidden global"):
        load_cifar(tmp_path / "root", train=False)
    assert not marker.exists()


def test_restricted_load_admits_numpy_pickles():
    obj = {"a": np.arange(6, dtype=np.uint8).reshape(2, 3), "s": np.int64(7), "b": b"\x00\xff", "l": [1, "x"]}
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        out = restricted_load(io.BytesIO(pickle.dumps(obj, protocol=protocol)))
        assert np.array_equal(out["a"], obj["a"]) and out["s"] == 7 and out["b"] == b"\x00\xff" and out["l"] == [1, "x"]
    with pytest.raises(pickle.UnpicklingError, match="collections.OrderedDict"):
        import collections
        restricted_load(io.BytesIO(pickle.dumps(collections.OrderedDict(a=1))))


def _py2_numpy_core_batch() -> bytes:
    """A CIFAR-style batch written opcode by opcode as Python 2's cPickle wrote the official
    2009 files (protocol 2, numpy 1.x): globals under ``numpy.core``, strings as SHORT_BINSTRING.
    Hand-built, so the test does not depend on the module path the installed numpy writes."""
    def s(b):  # SHORT_BINSTRING: a Python 2 str, bytes under encoding="bytes"
        return b"U" + bytes([len(b)]) + b

    def k(i):  # BININT1
        return b"K" + bytes([i])

    def dtype(code, order):  # numpy.dtype(code, 0, 1) with its __setstate__ tuple
        return (b"cnumpy\ndtype\n" + s(code) + k(0) + k(1) + b"\x87R(" + k(3) + s(order) + b"NNN"
                + b"J\xff\xff\xff\xffJ\xff\xff\xff\xff" + k(0) + b"tb")

    # numpy.core.multiarray._reconstruct(ndarray, (0,), "b"), then BUILD (1, (2, 3), u1, False, raw)
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + k(0) + b"\x85" + s(b"b")
             + b"\x87R(" + k(1) + k(2) + k(3) + b"\x86" + dtype(b"u1", b"|") + b"\x89" + s(bytes(range(6))) + b"tb")
    scalar = b"cnumpy.core.multiarray\nscalar\n" + dtype(b"i8", b"<") + s((7).to_bytes(8, "little")) + b"\x86R"
    return (b"\x80\x02}(" + s(b"data") + array + s(b"labels") + b"](" + k(3) + scalar + b"e"
            + s(b"batch_label") + s(b"training batch 1 of 5") + b"u.")


def test_restricted_load_admits_the_official_numpy_core_names():
    blob = _py2_numpy_core_batch()
    assert b"numpy.core.multiarray" in blob and b"numpy._core" not in blob
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # resolving the names must not import numpy.core (numpy 2 warns)
        d = restricted_load(io.BytesIO(blob))
    assert set(d) == {"data", "labels", "batch_label"}
    assert d["data"].dtype == np.uint8 and d["data"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert d["labels"] == [3, 7] and type(d["labels"][1]) is np.int64
    assert d["batch_label"] == b"training batch 1 of 5"
    # the same names in any other module path stay forbidden
    with pytest.raises(pickle.UnpicklingError, match="forbidden global numpy.corex.multiarray._reconstruct"):
        restricted_load(io.BytesIO(blob.replace(b"numpy.core.multiarray\n_reconstruct", b"numpy.corex.multiarray\n_reconstruct")))


# ---------------------------------------------------------------- download, offline

def _tar_of(folder: Path, arcname: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return buf.getvalue()


class _Response(io.BytesIO):
    def __init__(self, data: bytes):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def _serve(monkeypatch, data: bytes) -> list:
    calls = []

    def urlopen(url, timeout=None):
        calls.append(url)
        return _Response(data)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return calls


def test_download_offline(tmp_path, monkeypatch):
    src = _write_cifar10(tmp_path / "src")
    blob = _tar_of(src, "cifar-10-batches-py")
    rel = cifar._RELEASES["cifar10"]
    monkeypatch.setitem(cifar._RELEASES, "cifar10", dataclasses.replace(rel, md5=hashlib.md5(blob).hexdigest()))
    calls = _serve(monkeypatch, blob)
    root = tmp_path / "dl"
    with pytest.warns(UserWarning, match="unverified"):  # per-file md5s are the official ones
        ds = load_cifar(root, train=True, download=True)
    assert calls == [rel.url] and len(ds) == 20
    assert (root / "cifar-10-python.tar.gz").read_bytes() == blob
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]  # no temp files

    # With the per-file md5s of these batches the copy verifies: no warning, and no new download.
    def files(part):
        return tuple((f, hashlib.md5((src / f).read_bytes()).hexdigest()) for f, _ in part)

    monkeypatch.setitem(cifar._RELEASES, "cifar10", dataclasses.replace(
        cifar._RELEASES["cifar10"], train=files(rel.train), test=files(rel.test), meta=files([rel.meta])[0]))
    assert verify_cifar(root, name="cifar10")
    assert download_cifar(root, name="cifar10") == root / "cifar-10-batches-py" and len(calls) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_cifar(root, train=False)


def test_download_wrong_md5_is_rejected(tmp_path, monkeypatch):
    blob = _tar_of(_write_cifar10(tmp_path / "src"), "cifar-10-batches-py")
    _serve(monkeypatch, blob)  # the official md5 stays expected
    root = tmp_path / "dl"
    with pytest.raises(ReslearnError, match="corrupt: md5"):
        download_cifar(root, name="cifar10", progress=False)
    assert list(root.iterdir()) == []  # neither the archive nor a partial file is left


def test_download_network_error_and_unsafe_tar(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(ReslearnError, match="could not download .*cifar-100-python.tar.gz"):
        download_cifar(tmp_path, name="cifar100", progress=False)

    buf = io.BytesIO()  # an archive whose member escapes the destination: refused by filter="data"
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escaped")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    blob = buf.getvalue()
    rel = cifar._RELEASES["cifar10"]
    monkeypatch.setitem(cifar._RELEASES, "cifar10", dataclasses.replace(rel, md5=hashlib.md5(blob).hexdigest()))
    _serve(monkeypatch, blob)
    with pytest.raises(ReslearnError, match="extract"):
        download_cifar(tmp_path / "dl", name="cifar10", progress=False)
    assert not (tmp_path / "escaped").exists()


# ---------------------------------------------------------------- Fashion-MNIST (IDX)

@pytest.fixture(scope="module")
def fmnist_root():
    return require_data(Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"),
                        "Fashion-MNIST (apt-get install dataset-fashion-mnist)").parent


def test_fashion_mnist_real(fmnist_root):
    assert find_idx_root("fashion-mnist") == fmnist_root
    tr = load_idx(train=True)
    assert tr.images.shape == (60000, 1, 28, 28) and tr.images.dtype == torch.uint8
    assert tr.labels.bincount().tolist() == [6000] * 10
    assert tr.classes[0] == "T-shirt/top" and tr.classes[9] == "Ankle boot" and tr.name == "fashion-mnist"
    te = load_idx(fmnist_root, train=False)
    assert te.images.shape == (10000, 1, 28, 28) and te.labels.bincount().tolist() == [1000] * 10
    x = tr.images.double() / 255  # the usual Fashion-MNIST statistics
    assert abs(x.mean().item() - 0.2860) < 1e-3 and abs(x.std().item() - 0.3530) < 1e-3


def _idx(magic: int, dims: tuple, data: bytes) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + data


def _write_idx(folder: Path, n: int = 5, *, gz: bool = True, prefix: str = "t10k") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    imgs = _idx(0x803, (n, 28, 28), bytes(range(256)) * (n * 784 // 256) + bytes(n * 784 % 256))
    labs = _idx(0x801, (n,), bytes(i % 10 for i in range(n)))
    for stem, blob in ((f"{prefix}-images-idx3-ubyte", imgs), (f"{prefix}-labels-idx1-ubyte", labs)):
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(blob))
        else:
            (folder / stem).write_bytes(blob)


def test_idx_raw_gz_and_torchvision_layout(tmp_path):
    _write_idx(tmp_path / "raw", gz=False)
    ds = load_idx(tmp_path / "raw", name="mnist", train=False)
    assert ds.images.shape == (5, 1, 28, 28) and ds.labels.tolist() == [0, 1, 2, 3, 4] and ds.classes[3] == "3"
    _write_idx(tmp_path / "tv" / "FashionMNIST" / "raw")
    assert torch.equal(load_idx(tmp_path / "tv", train=False).images, ds.images)
    with pytest.raises(ReslearnError, match="train-images-idx3-ubyte"):
        load_idx(tmp_path / "raw", name="mnist", train=True)
    with pytest.raises(ValueError, match="name"):
        load_idx(tmp_path, name="kmnist", train=True)


def test_idx_corruption_names_the_file(tmp_path):
    d = tmp_path / "d"
    _write_idx(d, gz=False)
    img = d / "t10k-images-idx3-ubyte"
    good = img.read_bytes()
    img.write_bytes(good[:-10])
    with pytest.raises(ReslearnError, match=r"t10k-images-idx3-ubyte: header says .*truncated"):
        load_idx(d, train=False)
    img.write_bytes(b"\x00\x00\x08\x01" + good[4:])  # a labels magic on the images file
    with pytest.raises(ReslearnError, match=r"t10k-images-idx3-ubyte: not an IDX3"):
        load_idx(d, train=False)
    img.write_bytes(good)
    (d / "t10k-labels-idx1-ubyte").write_bytes(_idx(0x801, (4,), bytes(4)))
    with pytest.raises(ReslearnError, match="t10k-labels-idx1-ubyte: 4 labels for 5 images"):
        load_idx(d, train=False)

    g = tmp_path / "g"
    _write_idx(g)
    gz = g / "t10k-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-30])
    with pytest.raises(ReslearnError, match=r"t10k-images-idx3-ubyte.gz: cannot read"):
        load_idx(g, train=False)


# ---------------------------------------------------------------- image folders (JPEG copy)

@pytest.fixture(scope="module")
def jpeg_subset(tmp_path_factory):
    """3 classes x (20 train, 10 test) real CIFAR-10 JPEGs (symlinks), plus planted bad files:
    a truncated JPEG, a text file named .jpg and a .txt note; a valid PNG and BMP; a hidden file."""
    src = require_data(DATA / "cifar10-jpeg" / "test", "CIFAR-10 JPEG folder").parent
    root = tmp_path_factory.mktemp("jpeg") / "cifar10-mini"
    for split, n in (("train", 20), ("test", 10)):
        for cls in ("airplane", "automobile", "bird"):
            (root / split / cls).mkdir(parents=True)
            for f in sorted((src / split / cls).iterdir())[:n]:
                (root / split / cls / f.name).symlink_to(f)
    real = sorted((src / "train" / "bird").iterdir())[0].read_bytes()
    (root / "train" / "bird" / "zz_truncated.jpg").write_bytes(real[: int(len(real) * 0.6)])
    (root / "train" / "airplane" / "broken.jpg").write_text("this is not a JPEG\n")
    (root / "train" / "automobile" / "notes.txt").write_text("class notes\n")
    (root / "train" / "bird" / ".DS_Store").write_bytes(b"\x00\x01")
    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "train" / "bird" / "extra.png")
    Image.fromarray(rgb).save(root / "train" / "bird" / "extra.bmp")
    return root, rgb


BAD = ["broken.jpg", "notes.txt", "zz_truncated.jpg"]


def test_scan_skip_and_raise(jpeg_subset):
    root, _ = jpeg_subset
    with pytest.warns(UserWarning, match=r"skipped 3 unreadable") as rec:
        samples, classes, skipped = scan_image_folder(root, split="train")
    assert len(rec) == 1 and all(b in str(rec[0].message) for b in BAD)
    assert classes == ["airplane", "automobile", "bird"]
    assert sorted(p.name for p in skipped) == BAD
    assert len(samples) == 62 and [lab for _, lab in samples].count(2) == 22
    with pytest.raises(ReslearnError, match=r"airplane/broken.jpg: unreadable image") as e:
        scan_image_folder(root, split="train", on_error="raise")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="on_error"):
        scan_image_folder(root, split="train", on_error="ignore")
    # "val" finds the "test" folder; labels are the training classes' positions, matched by name;
    # a missing class is an error, or with shared_classes a warning
    with pytest.raises(ReslearnError, match="lacks 1 of the 4 training classes .first: cat."):
        scan_image_folder(root, split="val", classes=["airplane", "automobile", "bird", "cat"])
    with pytest.warns(UserWarning, match="using only the 3 of the 4 training classes"):
        val, vcls, vskip = scan_image_folder(root, split="val", classes=["cat", "airplane", "automobile", "bird"],
                                             shared_classes=True)
    assert len(val) == 30 and vskip == [] and vcls[0] == "cat" and {lab for _, lab in val} == {1, 2, 3}
    with pytest.raises(ReslearnError, match="has 1 class.es. the training set has not .first: bird."):
        scan_image_folder(root, split="val", classes=["airplane", "automobile"])
    with pytest.raises(ReslearnError, match="valid"):
        scan_image_folder(root, split="valid")


def test_image_folder_dataset(jpeg_subset):
    root, rgb = jpeg_subset
    with pytest.warns(UserWarning, match="skipped 3"):
        ds = ImageFolderDataset(root, split="train", transform=lambda x: x.float() / 255)
    assert len(ds) == 62 and ds.classes == ["airplane", "automobile", "bird"]
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 0
    assert torch.equal(x, decode_rgb(ds.samples[0][0]).float() / 255)  # the transform was applied
    bmp = next(i for i, (p, _) in enumerate(ds.samples) if p.suffix == ".bmp")  # PIL fallback
    assert torch.equal(ds[bmp][0], torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)


def test_image_folder_dataset_file_broken_after_scan(tmp_path, jpeg_subset):
    root = tmp_path / "r"
    shutil.copytree(jpeg_subset[0] / "test", root / "test", symlinks=True)
    ds = ImageFolderDataset(root, split="test")
    victim = ds.samples[3][0]
    victim.unlink()
    victim.write_bytes(b"\xff\xd8\xff garbage \xff\xd9")  # passes the header check, fails to decode
    with pytest.warns(UserWarning, match=rf"{victim.name}: cannot decode"):
        x, y = ds[3]
    assert torch.equal(x, ds[4][0]) and y == ds.samples[4][1]
    strict = ImageFolderDataset(root, split="test", on_error="raise")
    with pytest.raises(ReslearnError, match=rf"{victim.name}: cannot decode"):
        strict[3]


def test_load_image_folder_arrays_matches_cifar_batches(jpeg_subset, cifar_root, tmp_path, monkeypatch):
    root, _ = jpeg_subset
    ds = load_image_folder_arrays(root, split="test", cache_dir=tmp_path / "cache", progress=False)
    assert ds.images.shape == (30, 3, 32, 32) and ds.labels.tolist() == [0] * 10 + [1] * 10 + [2] * 10
    assert ds.name == "cifar10-mini"
    # The python batches were made from the same JPEGs (named "<class>_<file>"): identical pixels.
    with open(cifar_root / "cifar-10-batches-py" / "test_batch", "rb") as f:
        batch = restricted_load(f)
    row = {n.decode(): i for i, n in enumerate(batch["filenames"])}
    samples, _, _ = scan_image_folder(root, split="test")
    idx = [row[f"{p.parent.name}_{p.name}"] for p, _ in samples]
    assert torch.equal(ds.images, torch.from_numpy(batch["data"][idx]).view(-1, 3, 32, 32))

    # Second load comes from the cache: decoding is not even reachable.
    def no_decode(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(folder, "_decode_all", no_decode)
    again = load_image_folder_arrays(root, split="test", cache_dir=tmp_path / "cache", progress=False)
    assert torch.equal(again.images, ds.images) and again.classes == ds.classes
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1
    # A changed size or file misses the cache.
    with pytest.raises(AssertionError, match="decoded again"):
        load_image_folder_arrays(root, split="test", size=16, cache_dir=tmp_path / "cache", progress=False)


def test_load_image_folder_arrays_bad_files(jpeg_subset, tmp_path):
    root, _ = jpeg_subset
    with pytest.warns(UserWarning, match="skipped 3") as rec:
        ds = load_image_folder_arrays(root, split="train", size=16, workers=2, cache_dir=tmp_path, progress=False)
    assert len([w for w in rec if "skipped" in str(w.message)]) == 1
    assert ds.images.shape == (62, 3, 16, 16)
    with pytest.warns(UserWarning, match="skipped 3"):  # the cached copy still reports them
        load_image_folder_arrays(root, split="train", size=16, cache_dir=tmp_path, progress=False)
    with pytest.raises(ReslearnError, match="broken.jpg"):
        load_image_folder_arrays(root, split="train", on_error="raise", progress=False)
    big = tmp_path / "mixed"
    shutil.copytree(root / "test", big / "test", symlinks=True)
    Image.new("RGB", (40, 40)).save(big / "test" / "bird" / "big.png")
    with pytest.warns(UserWarning, match=r"skipped 1 .*big.png"):
        mixed = load_image_folder_arrays(big, split="test", progress=False)
    assert len(mixed) == 30


def test_subsets_of_a_class_sorted_folder_span_its_classes(jpeg_subset):
    # Folders list class by class: a "first N" test subset would be one class. The subset is a
    # fixed random N (data.split_seed) instead, the same on every build; CIFAR keeps its first N.
    from reslearn.config import DataConfig
    from reslearn.engine.data import build_data, subset_index

    assert torch.equal(subset_index(100, 5, DataConfig(name="cifar10")), torch.arange(5))
    assert subset_index(100, 0, DataConfig(name="imagefolder")) is None
    assert subset_index(100, 100, DataConfig(name="imagefolder")) is None
    root, _ = jpeg_subset
    labels = {}
    for name in ("imagefolder-memory", "imagefolder"):
        cfg = DataConfig(name=name, root=str(root), test_subset=9, image_size=32 if name == "imagefolder" else 0,
                         workers=0)
        with pytest.warns(UserWarning, match="skipped"):
            b = build_data(cfg, batch_size=8, seed=0, device=torch.device("cpu"))
        ys = torch.cat([y for _, y in b.evals["test"].iter_epoch(0)])
        assert len(ys) == 9 and len(set(ys.tolist())) >= 2, ys
        labels[name] = ys
    # the two paths pick the same images: same listing, same seed
    assert torch.equal(labels["imagefolder"], labels["imagefolder-memory"])
