"""benchmarks/peer_loop.py: the plain torchvision loop used as the peer check of CIFAR results."""

import subprocess
import sys

from reslearn.results import COLUMNS, read_results

from conftest import ROOT


def run(data_root, out, *extra):
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "peer_loop.py"), "--data", str(data_root),
                           "--train-subset", "256", "--test-subset", "100", "--workers", "0", "--batch", "32",
                           "--eval-every", "2", "--checkpoint-every", "2", "--out", str(out), *extra],
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"})


def test_peer_loop_trains_records_and_resumes(data_root, tmp_path):
    out = tmp_path / "peer"
    r = run(data_root, out, "--iterations", "2", "--record", str(tmp_path / "rec"))
    assert r.returncode == 0, r.stderr
    row, = read_results(tmp_path / "rec" / "peer_loop.csv")
    assert list(row) == COLUMNS and row["recipe"] == "torchvision-loop" and row["iterations"] == "2"
    assert 0 <= float(row["test_err"]) <= 100 and row["commit"]
    r = run(data_root, out, "--iterations", "4", "--resume")  # continues from iteration 2
    assert r.returncode == 0, r.stderr
    its = [line.split(",")[0] for line in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert its == ["2", "4"]
    assert read_results(out / "peer_loop.csv")[-1]["iterations"] == "4"


def test_reslearn_engine_records_its_row_beside_the_peer(data_root, tmp_path):
    rec = tmp_path / "rec"
    for engine, out in (("torchvision", "peer"), ("reslearn", "ours")):
        r = run(data_root, tmp_path / out, "--iterations", "2", "--engine", engine, "--threads", "1",
                "--record", str(rec))
        assert r.returncode == 0, r.stderr
    rows = read_results(rec / "peer_loop.csv")
    assert [r["recipe"] for r in rows] == ["torchvision-loop", "cifar10"]  # one table, both loops
    assert all(r["iterations"] == "2" and 0 <= float(r["test_err"]) <= 100 for r in rows)
    assert (tmp_path / "ours" / "resnet20-seed0" / "final.json").is_file()


def test_reslearn_engine_bad_config_is_one_line(data_root, tmp_path):
    r = run(data_root, tmp_path / "ours", "--iterations", "2", "--engine", "reslearn", "--batch", "0")
    assert r.returncode != 0 and "Traceback" not in r.stderr and r.stderr.strip().startswith("peer_loop:")
