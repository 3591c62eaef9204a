"""The speech systems through the command line on real data: a short res8-narrow training on the
Arabic Speech Commands copy and its ROC curve, a short WRBN training on FSDD digit strings, and the
user-error paths."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, require_data, require_module

require_module("soundfile")
require_module("librosa")

from reslearn.config import load_config  # noqa: E402
from reslearn.speech.commands import ASC_WORDS, CLASSIC_WORDS, default_words  # noqa: E402
from reslearn.speech.digits import find_digit_folder  # noqa: E402

DATA = Path(os.environ.get("RESLEARN_DATA_DIR", ROOT / ".data"))
QUIET = ["train.progress=false", "train.tensorboard=false", "train.log_every=4"]


def run(*args):
    return subprocess.run([sys.executable, "-m", "reslearn.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def check_run_folder(run_dir: Path, metric: str) -> dict:
    for f in ("config.yaml", "run.json", "metrics.csv", "model.safetensors", "final.json"):
        assert (run_dir / f).is_file(), f
    final = json.loads((run_dir / "final.json").read_text())
    assert math.isfinite(final["test"][metric]) and math.isfinite(final["test"]["loss"])
    assert math.isfinite(final["train_err"])
    return final


@pytest.fixture(scope="module")
def kws_run(tmp_path_factory):
    root = require_data(DATA / "asc-speech-commands", "Arabic Speech Commands")
    out = tmp_path_factory.mktemp("kws") / "run"
    r = run("train", "--recipe", "kws_res_quick", "--model", "res8-narrow", f"data.root={root}",
            "data.train_subset=256", "data.test_subset=96", "data.options.eval_splits=[test]",
            "optim.batch_size=32", "schedule.iterations=24", "schedule.milestones=[16]",
            "train.eval_every=12", "train.checkpoint_every=12", *QUIET, "--run-dir", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("res8-narrow: test")
    return out


def test_kws_training_writes_the_run_folder(kws_run):
    final = check_run_folder(kws_run, "accuracy")
    assert final["test"]["n"] == 96 and "val" not in final
    run_info = json.loads((kws_run / "run.json").read_text())
    assert run_info["data"]["words"] == list(ASC_WORDS) and run_info["data"]["train"] == 256
    header = (kws_run / "metrics.csv").read_text().splitlines()[0]
    assert "train_err" in header and "test_err" in header


def test_roc_command_writes_a_png(kws_run, tmp_path):
    png = tmp_path / "roc.png"
    r = run("analyze", "roc", str(kws_run / "model.safetensors"), "-o", str(png), "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (curve,) = res["curves"]
    final = json.loads((kws_run / "final.json").read_text())
    # the same 96 test clips as the run's final evaluation (the run's config.yaml beside it)
    assert curve["n"] == 96 and curve["accuracy"] == pytest.approx(final["test"]["accuracy"], abs=1e-6)
    assert 0 <= curve["frr_at_far_5pct"] <= curve["frr_at_far_1pct"] <= 1
    # `reslearn eval` is for image classifiers: one line pointing here
    r = run("eval", str(kws_run / "model.safetensors"))
    assert r.returncode == 2 and "analyze roc" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_wrbn_ctc_training(tmp_path):
    require_data(DATA / "fsdd" / "recordings", "Free Spoken Digit Dataset")
    out = tmp_path / "wrbn"
    r = run("train", "--recipe", "wrbn_digits_quick", "data.options.train_strings=64",
            "data.options.test_strings=8", "data.options.max_digits=2", "optim.batch_size=8",
            "schedule.iterations=8", "schedule.milestones=[6]", "train.eval_every=8",
            "train.checkpoint_every=8", *QUIET, "--run-dir", str(out))
    assert r.returncode == 0, r.stderr
    final = check_run_folder(out, "wer")
    assert final["test"]["n"] == 8  # (after 8 iterations the WER says nothing; see test_speech_digits)
    info = json.loads((out / "run.json").read_text())["data"]
    assert info["test_speakers"] == ["theo", "yweweler"] and "theo" not in info["train_speakers"]
    # the ROC is for keyword spotting only: one line, exit 2
    r = run("analyze", "roc", str(out / "model.safetensors"), "-o", str(tmp_path / "x.png"))
    assert r.returncode == 2 and "keyword-spotting" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("recipe,override,message", [
    ("kws_res_quick", "data.root=/nonexistent/speech", "does not exist"),
    ("wrbn_digits_quick", "data.root=/nonexistent/digits", "does not exist"),
    ("kws_res_quick", "data.options.colour=red", "unknown option data.options.colour"),
])
def test_user_errors_are_one_line(recipe, override, message):
    r = run("train", "--recipe", recipe, override, "train.progress=false")
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_recipes_load_and_name_their_target():
    for name in ("kws_res", "kws_res_quick", "wrbn_digits_quick"):
        cfg = load_config(name)
        assert cfg.data.name in ("speech-commands", "digit-strings")
        assert "Target" in Path(cfg.recipe).read_text().splitlines()[0]
    assert load_config("kws_res").optim.batch_size == 64


def test_default_words_and_folders(tmp_path):
    for w in ("yes", "no", "up", "down", "left", "right", "stop", "start", "open", "close"):
        (tmp_path / "asc" / w).mkdir(parents=True)
    assert default_words(tmp_path / "asc") == ASC_WORDS
    for w in ("on", "off", "go"):
        (tmp_path / "asc" / w).mkdir()
    assert default_words(tmp_path / "asc") == CLASSIC_WORDS  # Google's copy has all ten
    (tmp_path / "fsdd" / "recordings").mkdir(parents=True)
    assert find_digit_folder(tmp_path / "fsdd") == tmp_path / "fsdd" / "recordings"
    assert find_digit_folder(tmp_path / "fsdd" / "recordings") == tmp_path / "fsdd" / "recordings"
