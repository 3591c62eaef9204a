import pytest

from reslearn.config import Config, apply_overrides, dump_config, find_recipe, list_recipes, load_config
from reslearn.errors import ReslearnError


def test_precedence_defaults_yaml_cli(tmp_path):
    assert Config().optim.lr == 0.1 and Config().schedule.iterations == 64000
    r = tmp_path / "r.yaml"
    r.write_text("optim:\n  lr: 0.05\n  batch_size: 64\nschedule:\n  iterations: 10\n  milestones: [5]\n")
    cfg = load_config(str(r), ["optim.lr=0.2", "model.kwargs.shortcut=B"])
    assert cfg.optim.lr == 0.2 and cfg.optim.batch_size == 64 and cfg.schedule.iterations == 10
    assert cfg.optim.momentum == 0.9  # default kept
    assert cfg.model.kwargs == {"shortcut": "B"}
    assert "lr: 0.2" in dump_config(cfg)


def test_packaged_recipes_load_and_cite_the_paper():
    names = list_recipes()
    assert {"cifar10", "cifar10_deep", "cifar10_quick", "imagenet"} <= set(names)
    for n in names:
        head = find_recipe(n).read_text().splitlines()[0]
        assert head.startswith("#") and "Target" in head, n
        load_config(n)
    c = load_config("cifar10")
    assert (c.schedule.milestones, c.schedule.iterations, c.optim.batch_size, c.data.val_size) == ([32000, 48000], 64000, 128, 5000)
    d = load_config("cifar10_deep")
    assert d.schedule.warmup_lr == 0.01 and d.schedule.warmup_until_error == 80.0


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["optim.lrr=0.1"], "unknown config key 'optim.lrr' \\(did you mean 'lr'\\?\\)"),
        (["nosection.x=1"], "unknown config key 'nosection.x'"),
        (["optim.lr=fast"], "config key 'optim.lr' expects float, got 'fast'"),
        (["optim.batch_size=1.5"], "config key 'optim.batch_size' expects int"),
        (["train.amp=fp8"], "config key 'train.amp' must be one of none, bf16, fp16, auto"),
        (["schedule.milestones=[5, 3]"], "schedule.milestones must be increasing"),
        (["optim.lr=0"], "optim.lr must be > 0"),
        (["justakey"], "is not key=value"),
        (["optim=3"], "is a section"),
    ],
)
def test_config_errors_name_the_key(overrides, match):
    with pytest.raises(ReslearnError, match=match):
        load_config(None, overrides)


def test_unknown_recipe_and_bad_yaml(tmp_path):
    with pytest.raises(ReslearnError, match="unknown recipe 'cifar11'"):
        load_config("cifar11")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [1, 2\n")
    with pytest.raises(ReslearnError, match="not valid YAML"):
        load_config(str(bad))
    unknown = tmp_path / "u.yaml"
    unknown.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ReslearnError, match="unknown config key 'optim.learning_rate'"):
        load_config(str(unknown))


def test_recipe_name_wins_over_a_folder_of_that_name(tmp_path, monkeypatch):
    # experiments write ./cifar10/ beside their runs; a later `--recipe cifar10` from there must
    # still find the packaged recipe, not the folder.
    (tmp_path / "cifar10").mkdir()
    monkeypatch.chdir(tmp_path)
    assert find_recipe("cifar10").parent.name == "recipes"
    (tmp_path / "mine.yaml").mkdir()
    with pytest.raises(ReslearnError, match="recipe file mine.yaml not found"):
        find_recipe("mine.yaml")


def test_override_types_parse_as_yaml():
    cfg = apply_overrides(Config(), ["train.deterministic=true", "schedule.milestones=[10, 20]", "optim.lr=1",
                                     "optim.weight_decay=5e-4"])
    assert cfg.optim.weight_decay == 5e-4
    assert cfg.train.deterministic is True and cfg.schedule.milestones == [10, 20]
    assert isinstance(cfg.optim.lr, float)


def test_yaml_12_scalars_keep_keywords_as_strings():
    cfg = apply_overrides(Config(), ["data.options.words=[yes, no, on, off]", "data.options.gain=1e-3",
                                     "train.progress=false"])
    assert cfg.data.options == {"words": ["yes", "no", "on", "off"], "gain": 1e-3}
    assert cfg.train.progress is False
