import json
import re
import subprocess
import sys

import pytest
import torch

from reslearn.cli import main
from conftest import ROOT


def test_models_and_summary(capsys):
    assert main(["models", "resnet1*"]) == 0
    out = capsys.readouterr().out
    assert "resnet18" in out and "11,689,512" in out and "resnet1202" in out
    assert main(["summary", "resnet34", "--shortcut", "A", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["params"] == 21_623_848 and [r["name"] for r in s["stages"]][:3] == ["conv1", "maxpool", "layer1"]
    assert s["stages"][2]["output_size"] == [64, 56, 56]
    assert main(["summary", "resnet20", "--input-size", "28", "28", "--in-chans", "1"]) == 0
    text = capsys.readouterr().out
    assert "[3x3, 16; 3x3, 16] x 3" in text and "1x28x28" in text


def test_cli_errors_are_one_line(capsys):
    assert main(["summary", "resnet51"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean" in err[0]
    assert main(["summary", "resnet50", "--variant", "v9"]) == 2
    assert "variant must be one of" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["reslearn.cli", "reslearn"])
def test_console_script_help(module):
    """``python -m reslearn`` (and the cli module) give the ``reslearn`` script's command line."""
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "summary" in out.stdout and "models" in out.stdout


@pytest.mark.parametrize("name,argv", [("model-table", ["models", "--markdown"]),
                                       ("pretrained-table", ["models", "--pretrained", "--markdown"])])
def test_readme_tables_are_generated(capsys, name, argv):
    """The README's model and pretrained-weights tables are `reslearn models` output, not typed by hand."""
    main(argv)
    generated = capsys.readouterr().out.strip()
    readme = (ROOT / "README.md").read_text()
    m = re.search(rf"<!-- {name}:start -->\n(.*?)\n<!-- {name}:end -->", readme, re.S)
    assert m, f"README lacks the {name} markers"
    assert m.group(1).strip() == generated, f"README {name} is stale: run `make readme`"


def test_torch_hub_pretrained_is_the_registered_file():
    from reslearn.weights import list_pretrained

    for w in list_pretrained():
        m = torch.hub.load(str(ROOT), w.model, source="local", pretrained=w.tag)
        assert m.pretrained_cfg["ref"] == w.ref


def test_torch_hub_local():
    m = torch.hub.load(str(ROOT), "resnet20", source="local", num_classes=3)
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    # torch.hub.list only reads GitHub; check the local hubconf's entry points directly.
    import importlib.util

    from reslearn import list_models

    spec = importlib.util.spec_from_file_location("hubconf", ROOT / "hubconf.py")
    hub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hub)
    assert all(callable(getattr(hub, n, None)) for n in list_models())
