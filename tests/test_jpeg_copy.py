"""benchmarks/jpeg_copy.py: the shared CIFAR-10 copy re-encoded once more with JPEG (the estimate
of what its own JPEG pass costs), and peer_loop's --data-label that keeps that run's row apart."""

import json
import subprocess
import sys

import pytest

from reslearn.data.cifar import load_cifar
from reslearn.results import read_results

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import jpeg_copy  # noqa: E402


def script(*args):
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "jpeg_copy.py"), *map(str, args)],
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"})


def test_copy_loads_and_reports_what_the_pass_did(data_root, tmp_path):
    r = script("--data", data_root, "--out", tmp_path / "c", "--limit", "200")
    assert r.returncode == 0, r.stderr
    train, test = load_cifar(tmp_path / "c", train=True), load_cifar(tmp_path / "c", train=False)
    src = load_cifar(data_root, train=True)
    assert train.images.shape == (200, 3, 32, 32) and test.images.shape == (200, 3, 32, 32)
    assert train.classes == src.classes and (train.labels == src.labels[:200]).all()
    diff = (train.images.int() - src.images[:200].int()).abs()
    assert 0 < diff.float().mean() < 8  # a lossy pass, not noise and not a copy
    report = json.loads((tmp_path / "c" / "jpeg_copy.json").read_text())
    assert report["quality"] == 75 and report["shift"] == 4 and report["subsampling"] == "4:2:0"
    assert 20 < report["train"]["psnr_db"] < 50 and "PSNR" in r.stdout


def test_moving_the_grid_is_what_makes_a_second_pass_lossy(data_root):
    """A second pass on the first pass's grid changes little; moved by half a block it quantises afresh."""
    x = load_cifar(data_root, train=False).images[:100].numpy()
    same = jpeg_copy.psnr(x, jpeg_copy.reencode(x, quality=75, subsampling="4:2:0", shift=0))
    moved = jpeg_copy.psnr(x, jpeg_copy.reencode(x, quality=75, subsampling="4:2:0", shift=4))
    assert moved < same - 1.0
    lossless_ish = jpeg_copy.psnr(x, jpeg_copy.reencode(x, quality=95, subsampling="4:4:4", shift=4))
    assert lossless_ish > moved + 5


@pytest.mark.parametrize("args,msg", [(["--quality", "0"], "--quality"), (["--shift", "9"], "--shift")])
def test_bad_arguments_are_one_line(data_root, tmp_path, args, msg):
    r = script("--data", data_root, "--out", tmp_path / "c", *args)
    assert r.returncode != 0 and "Traceback" not in r.stderr and msg in r.stderr.strip().splitlines()[-1]


def test_missing_data_is_one_line(tmp_path):
    r = script("--data", tmp_path / "none", "--out", tmp_path / "c")
    assert r.returncode != 0 and "Traceback" not in r.stderr and r.stderr.strip().startswith("jpeg_copy:")


def test_out_must_not_be_the_source(data_root):
    r = script("--data", data_root, "--out", data_root)
    assert r.returncode != 0 and "overwrite" in r.stderr


def test_peer_loop_data_label_keeps_rows_apart(data_root, tmp_path):
    """The run on the re-encoded copy records beside the shared copy's row instead of replacing it."""
    rec = tmp_path / "rec"
    script("--data", data_root, "--out", tmp_path / "c", "--limit", "300")
    for data, label in ((data_root, "cifar10"), (tmp_path / "c", "cifar10-jpeg2")):
        r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "peer_loop.py"), "--engine", "reslearn",
                            "--data", str(data), "--data-label", label, "--train-subset", "200", "--val-size", "50",
                            "--test-subset", "100", "--batch", "32", "--iterations", "2", "--threads", "1",
                            "--out", str(tmp_path / label), "--record", str(rec)],
                           capture_output=True, text=True, env={"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"})
        assert r.returncode == 0, r.stderr
    assert [r["data"] for r in read_results(rec / "peer_loop.csv")] == ["cifar10", "cifar10-jpeg2"]
