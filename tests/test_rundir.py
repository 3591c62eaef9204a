"""Reusing a finished run folder across reslearn versions: a key added since is its default."""

import pytest

from reslearn.config import dump_config, load_config
from reslearn.engine.rundir import check_same_run
from reslearn.errors import ReslearnError


def _saved_without(tmp_path, cfg, key: str):
    """config.yaml as an older reslearn wrote it: without ``key`` (section.name)."""
    section, name = key.split(".")
    text = dump_config(cfg)
    lines = [ln for ln in text.splitlines() if ln.strip().split(":")[0] != name]
    assert len(lines) == len(text.splitlines()) - 1, f"{key} not found once in the dump"
    (tmp_path / "config.yaml").write_text("\n".join(lines) + "\n")


def test_a_key_added_since_the_run_counts_as_its_default(tmp_path):
    cfg = load_config("cifar10_quick", [])
    _saved_without(tmp_path, cfg, "train.ema_decay")
    check_same_run(cfg, tmp_path)  # the run had the default 0.0: the same run
    with pytest.raises(ReslearnError, match=r"train\.ema_decay=0\.0, this one asks for 0\.9"):
        check_same_run(load_config("cifar10_quick", ["train.ema_decay=0.9"]), tmp_path)


def test_a_changed_key_is_still_refused(tmp_path):
    cfg = load_config("cifar10_quick", [])
    (tmp_path / "config.yaml").write_text(dump_config(cfg))
    check_same_run(cfg, tmp_path)
    with pytest.raises(ReslearnError, match=r"optim\.lr=0\.1, this one asks for 0\.05"):
        check_same_run(load_config("cifar10_quick", ["optim.lr=0.05"]), tmp_path)
