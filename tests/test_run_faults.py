"""Bad inputs and faults around the run folder and the CLI, as a new user meets them: one run per
folder (lock, resume refusals, no silent overwrite), one line and a non-zero exit for every
mistake and OS error, Ctrl-C that saves and says how to resume, files that follow the umask.

Most cases call ``reslearn.cli.main`` in this process (the same one line a user sees, without
paying a Python start per case); the ones about processes (the lock, Ctrl-C and SIGTERM, in one
process and under torchrun with 2 gloo ranks, the umask) run the CLI as a subprocess. Training
runs are 2-6 iterations of a width-4 resnet20 on 64 images, or run until a signal stops them."""

import csv
import errno
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from conftest import ROOT
import reslearn
from reslearn.checkpoint import atomic_write_bytes, load_model, save_tensors
from reslearn.cli import main, resume_command
from reslearn.config import load_config
from reslearn.engine.data import LoaderSource
from reslearn.engine.rundir import LOCK_NAME, lock_run_dir
from reslearn.engine.schedule import LRPolicy
from reslearn.engine.trainer import Trainer
from reslearn.errors import ReslearnError, RunFolderBusy
from reslearn.registry import create_model
from test_cli_train import TINY, run  # data_root: the fixture in conftest.py

# test_cli_train's TINY, smaller still: 2 iterations of batch 8, a checkpoint after each.
FAST = [*TINY, "data.train_subset=64", "data.test_subset=32", "optim.batch_size=8", "schedule.iterations=2",
        "schedule.milestones=[1]", "train.eval_every=1", "train.log_every=1", "train.checkpoint_every=1",
        "train.tensorboard=false", "train.threads=1"]


def fast(root, *extra):
    return ["--recipe", "cifar10_quick", f"data.root={root}", *FAST, *extra]


PACKAGE = str(Path(reslearn.__file__).parent)  # in a traceback's frames
PROGRESS_LINE = re.compile(r"\S+ it \d+/\d+ \(\d+%\) \| ")  # engine.logging.Progress, at evaluations


def errors(text: str) -> list[str]:
    """The lines of stderr that are neither warnings, notices (``reslearn: ...``) nor progress."""
    return [ln for ln in text.strip().splitlines()
            if ln.strip() and "warning:" not in ln.lower() and not ln.startswith("reslearn: ")
            and not PROGRESS_LINE.match(ln)]


def one_line(capsys, *argv, code=2) -> str:
    """Run the CLI in this process; assert the exit code and a single error line; return it."""
    rc = main([str(a) for a in argv])
    lines = errors(capsys.readouterr().err)
    assert rc == code and len(lines) == 1, (rc, lines)
    assert lines[0].startswith("reslearn"), lines
    return lines[0]


def train_ok(capsys, *argv) -> None:
    rc = main(["train", *map(str, argv)])
    assert rc == 0, capsys.readouterr().err
    capsys.readouterr()


@pytest.fixture(scope="module")
def finished(data_root, tmp_path_factory):
    """A finished 2-iteration run, trained by the CLI under umask 022."""
    out = tmp_path_factory.mktemp("faults") / "done"
    old = os.umask(0o022)  # the subprocess inherits it
    try:
        r = run("train", *fast(data_root), "--run-dir", str(out))
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture
def done(finished, tmp_path):
    """A copy of the finished run that a test may change."""
    return Path(shutil.copytree(finished, tmp_path / "done"))


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder this process cannot write in (root ignores modes: then a sysfs folder)."""
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    for cand in (d, Path("/sys/kernel")):
        try:
            os.close(os.open(cand / "probe", os.O_WRONLY | os.O_CREAT, 0o666))
            (cand / "probe").unlink()
        except OSError:
            yield cand
            break
    else:
        pytest.skip("no folder here is read-only to this user")
    d.chmod(0o755)


# --------------------------------------------------------------------------- one run per folder
def test_second_process_in_a_run_folder_exits_2_naming_the_holder(data_root, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    with lock_run_dir(busy):  # this process trains there, as far as the CLI can tell
        r = run("train", *fast(data_root), "--run-dir", str(busy))
    lines = errors(r.stderr)
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert f"pid {os.getpid()}" in lines[0] and "in use" in lines[0] and str(busy) in lines[0]
    assert not (busy / "config.yaml").exists(), "the refused process wrote into the folder"


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    code = ("import sys, time; from pathlib import Path; from reslearn.engine.rundir import lock_run_dir\n"
            "with lock_run_dir(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderBusy, match=f"pid {holder.pid} on "):
            with lock_run_dir(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with lock_run_dir(tmp_path):  # the kernel dropped the dead process's lock
        assert f"pid {os.getpid()}" in (tmp_path / LOCK_NAME).read_text()


def test_lock_is_exclusive_within_one_process_too(tmp_path):
    with lock_run_dir(tmp_path):
        with pytest.raises(RunFolderBusy, match=f"pid {os.getpid()}"):
            with lock_run_dir(tmp_path):
                pass


@pytest.mark.parametrize("change,key", [
    ("optim.lr=0.5", "optim.lr=0.1"),
    ("optim.batch_size=16", "optim.batch_size=8"),
    ("model.kwargs.width=8", "model.kwargs"),
    ("data.name=fashion-mnist", "data.name='cifar10'"),  # data with other channels
])
def test_resume_refuses_another_config(capsys, done, data_root, change, key):
    before = (done / "config.yaml").read_text()
    line = one_line(capsys, "train", *fast(data_root, "schedule.iterations=4", change), "--run-dir", done, "--resume")
    assert key in line and "holds a run with" in line
    assert (done / "config.yaml").read_text() == before, "config.yaml was rewritten"


def test_resume_refuses_fewer_iterations_than_done(capsys, done, data_root):
    final = (done / "final.json").read_bytes()
    line = one_line(capsys, "train", *fast(data_root, "schedule.iterations=1"), "--run-dir", done, "--resume")
    assert "schedule.iterations=1 is fewer than the 2 iterations" in line
    assert (done / "final.json").read_bytes() == final


def test_resume_of_a_finished_run_changes_nothing(capsys, done, data_root):
    final, weights = (done / "final.json").read_bytes(), (done / "model.safetensors").read_bytes()
    line = one_line(capsys, "train", *fast(data_root), "--run-dir", done, "--resume")
    assert "has finished its 2 iterations" in line and "schedule.iterations" in line
    assert (done / "final.json").read_bytes() == final and (done / "model.safetensors").read_bytes() == weights


def test_resume_may_lengthen_the_run(capsys, done, data_root):
    train_ok(capsys, *fast(data_root, "schedule.iterations=3"), "--run-dir", done, "--resume")
    final = json.loads((done / "final.json").read_text())
    assert final["iteration"] == 3 and final["test"]["n"] == 32
    assert [r.split(",")[0] for r in (done / "metrics.csv").read_text().splitlines()[1:]] == ["1", "2", "3"]


def test_resumed_run_counts_its_wall_time_from_the_start(capsys, done, data_root):
    """elapsed_s (and the results rows' wall_s) of a resumed run is the whole run's: the
    checkpoint's training seconds plus this process's."""
    from reslearn.checkpoint import load_tensors, save_tensors

    ckpt = sorted((done / "checkpoints").glob("iter-*.safetensors"))[-1]
    tensors, meta = load_tensors(ckpt)
    assert meta["elapsed_s"] > 0
    save_tensors(ckpt, tensors, {**meta, "elapsed_s": 1000.0})  # as if the first part took 1000 s
    train_ok(capsys, *fast(data_root, "schedule.iterations=3"), "--run-dir", done, "--resume")
    last = (done / "metrics.csv").read_text().splitlines()[-1].split(",")
    assert last[0] == "3" and 1000.0 < float(last[-1]) < 1000.0 + 600


def test_resume_at_the_last_checkpoint_restores_final_json(capsys, done, data_root):
    # killed after its last checkpoint, before final.json: resuming writes the same metrics
    want = json.loads((done / "final.json").read_text())
    (done / "final.json").unlink()
    (done / "model.safetensors").unlink()
    train_ok(capsys, *fast(data_root), "--run-dir", done, "--resume")
    assert json.loads((done / "final.json").read_text()) == want


def test_finished_run_is_not_overwritten_without_the_flag(capsys, done, data_root):
    final = (done / "final.json").read_bytes()
    line = one_line(capsys, "train", *fast(data_root), "--run-dir", done)
    assert "already holds a run (finished)" in line and "--overwrite" in line and "--resume" in line
    assert (done / "final.json").read_bytes() == final


def test_finished_run_without_checkpoints_is_not_overwritten(capsys, done, data_root):
    shutil.rmtree(done / "checkpoints")
    final = (done / "final.json").read_bytes()
    assert "--overwrite" in one_line(capsys, "train", *fast(data_root), "--run-dir", done)
    assert (done / "final.json").read_bytes() == final


def test_unfinished_run_is_not_restarted_without_the_flag(capsys, done, data_root):
    for f in ("final.json", "model.safetensors"):
        (done / f).unlink()
    line = one_line(capsys, "train", *fast(data_root), "--run-dir", done)
    assert "a run (checkpoint at iteration 2)" in line and "--resume" in line


def test_overwrite_replaces_the_run(capsys, done, data_root):
    (done / "notes.txt").write_text("mine")
    train_ok(capsys, *fast(data_root, "optim.lr=0.05"), "--run-dir", done, "--overwrite")
    assert "lr: 0.05" in (done / "config.yaml").read_text()
    assert len((done / "metrics.csv").read_text().splitlines()) == 3, "rows of the old run remain"
    assert (done / "notes.txt").read_text() == "mine", "--overwrite deleted a file that is not the run's"


def test_resume_and_overwrite_together_are_refused(capsys, done, data_root):
    line = one_line(capsys, "train", *fast(data_root), "--run-dir", done, "--resume", "--overwrite")
    assert "--resume" in line and "--overwrite" in line


def test_resume_without_a_checkpoint(capsys, data_root, tmp_path):
    line = one_line(capsys, "train", *fast(data_root), "--run-dir", tmp_path / "empty", "--resume")
    assert "no checkpoint" in line
    assert not (tmp_path / "empty").exists(), "a mistyped --run-dir was created"


def test_resume_checkpoint_of_another_shape_names_key_and_shapes(done, data_root):
    cfg = load_config("cifar10_quick", [f"data.root={data_root}", *FAST, "model.kwargs.width=8"])
    trainer = Trainer(cfg, run_dir=done)
    ck = sorted((done / "checkpoints").glob("*.safetensors"))[-1]
    with pytest.raises(ReslearnError, match=r"conv1\.weight is \[4, 3, 3, 3\] in the file, \[8, 3, 3, 3\] in the model"):
        trainer.load_checkpoint(ck)


# --------------------------------------------------------------------------- devices and arguments
@pytest.mark.parametrize("device,needle", [
    ("gpu", "train.device='gpu' is not a device; use auto, cpu, cuda, cuda:N or mps"),
    ("cpu:1", "train.device='cpu:1' is not a device"),
    ("cuda:99", "train.device=cuda:99 but this machine has no such CUDA device"),
])
def test_bad_train_device(capsys, data_root, tmp_path, device, needle):
    line = one_line(capsys, "train", *fast(data_root, f"train.device={device}"), "--run-dir", tmp_path / "r")
    assert needle in line and "has: cpu" in line  # the devices this machine has


def test_train_device_gpu_from_the_shell_is_one_line(data_root, tmp_path):
    r = run("train", *fast(data_root, "train.device=gpu"), "--run-dir", str(tmp_path / "r"))
    lines = errors(r.stderr)
    assert r.returncode == 2 and len(lines) == 1 and "train.device='gpu' is not a device" in lines[0], r.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_eval_on_cuda_without_cuda(capsys, finished):
    line = one_line(capsys, "eval", finished / "model.safetensors", "--device", "cuda")
    assert "--device=cuda" in line and "no such CUDA device" in line


@pytest.mark.parametrize("args,needle", [
    (["--device", "tpu"], "--device='tpu' is not a device"),
    (["--limit", "-5"], "limit must be >= 0"),
    (["--batch-size", "0"], "batch size must be >= 1"),
])
def test_bad_eval_arguments(capsys, finished, args, needle):
    assert needle in one_line(capsys, "eval", finished / "model.safetensors", *args)


@pytest.mark.parametrize("topk", ["-1", "0"])
def test_bad_predict_topk(capsys, finished, data_root, topk):
    img = next((data_root / "cifar10-jpeg" / "test" / "cat").glob("*.jpg"))
    assert "topk must be >= 1" in one_line(capsys, "predict", finished / "model.safetensors", img, "--topk", topk)


def test_analyze_negative_limit(capsys, finished):
    assert "limit must be >= 0" in one_line(capsys, "analyze", "responses", finished / "model.safetensors",
                                            "--limit", "-5", "-o", finished.parent / "x.png")


# --------------------------------------------------------------------------- OS errors while writing
def test_run_dir_that_is_a_file(capsys, data_root, tmp_path):
    (tmp_path / "f").write_text("x")
    assert "is a file, not a folder" in one_line(capsys, "train", *fast(data_root), "--run-dir", tmp_path / "f")


def test_run_dir_below_a_file(capsys, data_root, tmp_path):
    (tmp_path / "f").write_text("x")
    line = one_line(capsys, "train", *fast(data_root), "--run-dir", tmp_path / "f" / "run")
    assert str(tmp_path / "f") in line and "Not a directory" in line


def test_read_only_run_folder(capsys, data_root, readonly_dir):
    line = one_line(capsys, "train", *fast(data_root), "--run-dir", readonly_dir)
    assert f"{readonly_dir / LOCK_NAME}: " in line and ("denied" in line or "not permitted" in line or "Read-only" in line)


def test_run_folder_inside_a_read_only_folder(capsys, data_root, readonly_dir):
    line = one_line(capsys, "train", *fast(data_root), "--run-dir", readonly_dir / "run")
    assert str(readonly_dir / "run") in line


def _disk_full(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_keeps_the_old_file_and_names_the_path(monkeypatch, tmp_path):
    p = tmp_path / "model.safetensors"
    atomic_write_bytes(p, b"old")
    monkeypatch.setattr(os, "fsync", _disk_full)
    with pytest.raises(OSError) as e:
        atomic_write_bytes(p, b"new")
    assert e.value.filename == str(p) and e.value.errno == errno.ENOSPC
    assert p.read_bytes() == b"old" and [f.name for f in tmp_path.iterdir()] == ["model.safetensors"]


def test_disk_full_while_training_is_one_line(capsys, monkeypatch, data_root, tmp_path):
    monkeypatch.setattr(os, "fsync", _disk_full)
    line = one_line(capsys, "train", *fast(data_root), "--run-dir", tmp_path / "r")
    assert f"{tmp_path / 'r' / 'config.yaml'}: No space left on device" in line


def test_write_error_without_a_file_name_names_the_run_folder(capsys, monkeypatch, data_root, tmp_path):
    from reslearn.engine.logging import MetricLogger

    monkeypatch.setattr(MetricLogger, "log", _disk_full)
    line = one_line(capsys, "train", *fast(data_root), "--run-dir", tmp_path / "r")
    assert f"{tmp_path / 'r'}: No space left on device" in line


# --------------------------------------------------------------------------- files given as weights
def test_pytorch_zip_checkpoint_is_named_with_how_to_load_it(capsys, tmp_path):
    p = tmp_path / "resnet20.pt"
    torch.save(create_model("resnet20", width=4).state_dict(), p)
    assert zipfile.is_zipfile(p)
    line = one_line(capsys, "eval", p)
    assert "PyTorch checkpoint (torch.save" in line and "torch.load(path, weights_only=True)" in line
    assert "load_state_dict" in line and "corrupted" not in line


def test_legacy_pytorch_pickle_is_named(capsys, tmp_path):
    p = tmp_path / "model.bin"
    torch.save({"w": torch.zeros(2)}, p, _use_new_zipfile_serialization=False)
    line = one_line(capsys, "predict", p, "x.jpg")
    assert "PyTorch pickle file" in line and "weights_only=True" in line


def test_truncated_safetensors_is_still_called_corrupted(capsys, finished, tmp_path):
    p = tmp_path / "cut.safetensors"
    p.write_bytes((finished / "model.safetensors").read_bytes()[:-100])
    assert "truncated or corrupted" in one_line(capsys, "eval", p)


def test_run_folder_given_as_weights_uses_its_model(capsys, finished):
    assert main(["eval", str(finished), "--json", "--limit", "32"]) == 0  # the run tested on the first 32
    res = json.loads(capsys.readouterr().out)
    assert res["checkpoint"] == str(finished) and res["n"] == 32
    assert res["top1_err"] == pytest.approx(json.loads((finished / "final.json").read_text())["test"]["top1_err"])


def test_unfinished_run_folder_given_as_weights_names_its_last_checkpoint(capsys, done):
    (done / "model.safetensors").unlink()
    line = one_line(capsys, "eval", done)
    assert "without model.safetensors" in line and str(done / "checkpoints" / "iter-00000002.safetensors") in line


def test_weights_of_another_shape_name_the_first_key_and_both_shapes(tmp_path):
    p = tmp_path / "w.safetensors"
    save_tensors(p, create_model("resnet20", width=4).state_dict(),
                 {"model": "resnet20", "model_kwargs": {"width": 4, "in_chans": 1}, "kind": "weights"})
    with pytest.raises(ReslearnError, match=r"conv1\.weight is \[4, 3, 3, 3\] in the file, \[4, 1, 3, 3\] in the model"):
        load_model(p)


def test_weights_with_a_key_the_model_lacks(tmp_path):
    p = tmp_path / "w.safetensors"
    sd = {**create_model("resnet20", width=4).state_dict(), "extra.weight": torch.zeros(3)}
    save_tensors(p, sd, {"model": "resnet20", "model_kwargs": {"width": 4}, "kind": "weights"})
    with pytest.raises(ReslearnError, match=r"the file has extra\.weight \[3\], the model has not"):
        load_model(p)


# --------------------------------------------------------------------------- stopped runs
def test_nan_before_any_checkpoint_says_nothing_was_saved(capsys, data_root, tmp_path):
    line = one_line(capsys, "train", *fast(data_root, "optim.lr=1e12", "optim.momentum=0.0", "schedule.iterations=50",
                                           "schedule.milestones=[]", "train.checkpoint_every=1000"),
                    "--run-dir", tmp_path / "nan")
    assert "became" in line and "nothing was saved" in line and "last good" not in line
    assert not (tmp_path / "nan" / "checkpoints").exists()


def test_nan_after_a_checkpoint_names_one_that_exists(capsys, data_root, tmp_path):
    line = one_line(capsys, "train", *fast(data_root, "optim.lr=1e12", "optim.momentum=0.0", "schedule.iterations=50",
                                           "schedule.milestones=[]"), "--run-dir", tmp_path / "nan")
    kept = Path(line.split("the last good checkpoint is kept: ")[1])
    assert kept.is_file() and kept.parent == tmp_path / "nan" / "checkpoints"


@pytest.mark.parametrize("content", ["just some text\nwith lines\n", "iteration,train_err\nfirst,x\n",
                                     "\x00\x01binary\x00"])
def test_plot_names_a_garbage_metrics_file(capsys, tmp_path, content):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.csv").write_text(content)
    line = one_line(capsys, "plot", tmp_path / "run", "-o", tmp_path / "c.png")
    assert f"{tmp_path / 'run' / 'metrics.csv'} is not a reslearn metrics.csv" in line


def test_milestones_outside_the_run_warn_that_the_lr_never_drops():
    with pytest.warns(UserWarning, match=r"schedule.milestones \[100, 150\] are at or after schedule.iterations=50: "
                                         r"the lr will never drop"):
        load_config("cifar10_quick", ["schedule.iterations=50"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_config("cifar10_quick", ["schedule.iterations=120", "schedule.milestones=[60, 90]"])
        load_config("cifar10_quick", ["schedule.iterations=50", "schedule.kind=cosine"])  # no milestones used


# --------------------------------------------------------------------------- experiments check first
def test_compare_checks_every_model_before_training_the_first(capsys, data_root, tmp_path):
    line = one_line(capsys, "compare", "resnet20", "resnet21", "--out", tmp_path / "cmp", "--set", *FAST,
                    f"data.root={data_root}")
    assert "unknown model name 'resnet21'" in line
    assert not (tmp_path / "cmp").exists(), "resnet20 trained before resnet21 was checked"


def test_compare_checks_every_config_before_training(capsys, data_root, tmp_path):
    line = one_line(capsys, "compare", "resnet20", "plain20", "--out", tmp_path / "cmp", "--set", *FAST,
                    "optim.lrr=1")
    assert "unknown config key 'optim.lrr'" in line and not (tmp_path / "cmp").exists()


def test_reproduce_checks_every_depth_before_training(capsys, tmp_path):
    line = one_line(capsys, "reproduce", "cifar-table", "--depths", "20", "21", "--iterations", "2",
                    "--out", tmp_path / "t", "--set", *FAST)
    assert "unknown model name 'resnet21'" in line and not (tmp_path / "t").exists()


def test_reproduce_checks_the_imagefolder_runs_before_cifar(capsys, tmp_path):
    line = one_line(capsys, "reproduce", "degradation", "--depths", "20", "--iterations", "2", "--out", tmp_path / "d",
                    "--imagefolder", tmp_path, "--imagefolder-set", "optim.nope=1")
    assert "unknown config key 'optim.nope'" in line and not (tmp_path / "d").exists()


# --------------------------------------------------------------------------- Ctrl-C, SIGTERM
LONG = ("schedule.iterations=100000", "schedule.milestones=[]", "train.eval_every=100000")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])  # Ctrl-C; kill or a job scheduler's stop
def test_ctrl_c_saves_a_checkpoint_and_prints_the_resume_command(data_root, tmp_path, sig):
    out = tmp_path / "int"
    args = ["train", *fast(data_root, *LONG, "train.checkpoint_every=7", "train.log_every=1000"),
            "--run-dir", str(out)]
    p = subprocess.Popen([sys.executable, "-m", "reslearn.cli", *args], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list((out / "checkpoints").glob("iter-*.safetensors")):
        time.sleep(0.01)
    p.send_signal(sig)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 128 + sig and "Traceback" not in err, err
    last = errors(err)[-1]
    assert f"by {sig.name}; checkpoint " in last and "resume with: " in last, err
    saved = Path(last.split("checkpoint ")[1].split(";")[0])
    assert saved.is_file() and saved.parent == out / "checkpoints"
    cmd = last.split("resume with: ")[1]
    assert cmd.endswith(" --resume") and f"--run-dir {out}" in cmd and "schedule.iterations=100000" in cmd


def test_ctrl_c_checkpoint_resumes_bit_for_bit(capsys, monkeypatch, data_root, tmp_path):
    args = fast(data_root, "schedule.iterations=6", "schedule.milestones=[4]", "train.checkpoint_every=100")
    train_ok(capsys, *args, "--run-dir", tmp_path / "ref")
    step = LRPolicy.after_step

    def ctrl_c_in_the_third_iteration(self, it, wrong, n):
        step(self, it, wrong, n)
        if it == 2:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(LRPolicy, "after_step", ctrl_c_in_the_third_iteration)
    line = one_line(capsys, "train", *args, "--run-dir", tmp_path / "cut", "--overwrite", code=130)
    assert "interrupted at iteration 3 of 6" in line and line.endswith(f"--run-dir {tmp_path / 'cut'} --resume")
    assert "--overwrite" not in line.split("resume with: ")[1]
    assert [p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()] == ["iter-00000003.safetensors"]
    monkeypatch.setattr(LRPolicy, "after_step", step)
    train_ok(capsys, *args, "--run-dir", tmp_path / "cut", "--resume")
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "ref" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _torchrun(args):
    """``torchrun`` with 2 gloo ranks, as a user starts it."""
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "reslearn.cli", *args], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def _wait_for_a_row(run_dir: Path, proc) -> None:
    """Until rank 0 has logged iteration 1: then every rank is in the loop (the step's all-reduce
    joined them), with its signal handlers in place."""
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (run_dir / "metrics.csv").is_file() and len((run_dir / "metrics.csv").read_text().splitlines()) > 1:
            return
        time.sleep(0.02)
    raise AssertionError(f"no iteration logged (exit {proc.poll()}): {proc.stderr.read()[-3000:]}")


def _worker(launcher: int, rank: int) -> int:
    """The pid of the torchrun worker of ``launcher`` that has ``rank`` (from /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            env = (stat.parent / "environ").read_bytes().split(b"\0") if ppid == launcher else []
        except OSError:  # a process that ended meanwhile
            continue
        if f"RANK={rank}".encode() in env:
            return int(stat.parent.name)
    raise AssertionError(f"no rank {rank} among the children of {launcher}")


def test_ctrl_c_under_torchrun_checkpoints_once_and_resumes(data_root, tmp_path):
    """Ctrl-C reaches torchrun, which sends it on to each rank: the ranks agree on one iteration,
    rank 0 saves it and prints the torchrun command that resumes; that command finishes the run."""
    out = tmp_path / "ddp"
    p = _torchrun(["train", *fast(data_root, *LONG, "train.checkpoint_every=100000", "train.log_every=1"),
                   "--run-dir", str(out)])
    _wait_for_a_row(out, p)
    p.send_signal(signal.SIGINT)  # to the launcher alone, as a terminal's Ctrl-C (the workers have sessions of their own)
    _, err = p.communicate(timeout=300)
    assert p.returncode != 0, err[-3000:]  # torchrun's own status when a signal stops it (1, with its traceback)
    assert PACKAGE not in err, err[-3000:]  # no traceback through reslearn's code
    assert err.count("stopping after this iteration to save a checkpoint") == 1, err[-3000:]  # rank 0 alone says it
    said = [ln for ln in err.splitlines() if "resume with: " in ln]
    assert len(said) == 1, err[-3000:]
    m = re.fullmatch(r"reslearn train: interrupted at iteration (\d+) of 100000 by SIGINT; checkpoint (\S+); "
                     r"resume with: (.+)", said[0])
    assert m, said
    done, saved, cmd = int(m[1]), Path(m[2]), m[3]
    assert [f.name for f in (out / "checkpoints").iterdir()] == [saved.name] == [f"iter-{done:08d}.safetensors"]
    assert " -m torch.distributed.run --standalone --nproc_per_node=2 -m reslearn.cli train " in cmd
    assert cmd.endswith(" --resume"), cmd
    resumed = subprocess.run(shlex.split(cmd.replace("schedule.iterations=100000", f"schedule.iterations={done + 2}")),
                             cwd=ROOT, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert (run["resumed_from"], run["world_size"]) == (done, 2)
    assert json.loads((out / "final.json").read_text())["iteration"] == done + 2


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds the rank's pid in /proc")
def test_sigterm_to_one_rank_stops_every_rank_at_its_checkpoint(data_root, tmp_path):
    """A SIGTERM that reaches rank 1 only (a scheduler's stop, an OOM killer's warning) stops the
    run as Ctrl-C does: rank 0, which writes, learns it in the step's agreement and checkpoints
    the iteration every rank stopped at."""
    out = tmp_path / "one"
    p = _torchrun(["train", *fast(data_root, *LONG, "train.checkpoint_every=100000", "train.log_every=1"),
                   "--run-dir", str(out)])
    _wait_for_a_row(out, p)
    os.kill(_worker(p.pid, rank=1), signal.SIGTERM)
    _, err = p.communicate(timeout=300)
    assert p.returncode != 0, err[-3000:]  # torchrun reports the workers that exited 143
    saved = [f.name for f in (out / "checkpoints").iterdir()]
    assert len(saved) == 1, (saved, err[-3000:])
    logged = [int(r["iteration"]) for r in csv.DictReader((out / "metrics.csv").read_text().splitlines())]
    assert saved == [f"iter-{logged[-1]:08d}.safetensors"], (saved, logged[-3:])  # rank 0 stopped there too


class _SignalDispositions(torch.utils.data.Dataset):
    """Each item: whether the process loading it ignores SIGINT and SIGTERM."""

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return torch.tensor([signal.getsignal(s) == signal.SIG_IGN for s in (signal.SIGINT, signal.SIGTERM)]), 0


def test_dataloader_workers_leave_ctrl_c_to_the_trainer():
    """A terminal's Ctrl-C and torchrun's forwarded signal reach the DataLoader workers too: they
    ignore it (else the batch the iteration waits for would fail) and the trainer stops them."""
    # From the default dispositions (pytest-xdist's workers start with SIGINT ignored, which the
    # forked DataLoader worker would inherit whatever reslearn does)
    before = {s: signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        src = LoaderSource(_SignalDispositions(), batch_size=2, shuffle=False, seed=0, device=torch.device("cpu"),
                           rank=0, world_size=1, accum_steps=1, workers=1, drop_last=False, channels_last=False)
        (x, _), = list(src.iter_epoch(0))
        assert x.tolist() == [[True, True], [True, True]]
        # the training process still hears both
        assert [signal.getsignal(s) for s in before] == [signal.SIG_DFL, signal.SIG_DFL]
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def test_resume_command_is_the_command_line_as_typed():
    cmd = resume_command(["train", "--run-dir", "my runs/a", "optim.lr=0.05", "--overwrite"])
    assert cmd.endswith("train --run-dir 'my runs/a' optim.lr=0.05 --resume")
    assert resume_command(["compare", "resnet20", "plain20"]).endswith("compare resnet20 plain20")


# --------------------------------------------------------------------------- permissions
def test_run_files_follow_the_umask(finished):
    files = [p for p in finished.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"model.safetensors", "best.safetensors", "config.yaml", "final.json",
                                       "iter-00000002.safetensors", "metrics.csv", "run.json", LOCK_NAME}
    modes = {p.relative_to(finished).as_posix(): oct(p.stat().st_mode & 0o777) for p in files}
    assert {f: m for f, m in modes.items() if m != "0o644"} == {}, "files not 0644 under umask 022"


def test_atomic_writes_follow_a_stricter_umask(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "x.safetensors", b"data")
    finally:
        os.umask(old)
    assert (tmp_path / "x.safetensors").stat().st_mode & 0o777 == 0o640
