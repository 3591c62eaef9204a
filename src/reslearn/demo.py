"""The first command (``reslearn demo``, ``make demo``): the degradation problem of He et al. 2016
(Fig. 6) measured at a CPU budget, on whatever image data this machine has or can get.

Four nets are trained with one recipe (``demo``) and one seed: plain-20 and plain-56 (the plain
half of Fig. 6: the deeper plain net trains worse) and ResNet-20 and ResNet-56 (the residual
half: shortcuts remove the degradation). The verdict is computed from the run's own training
errors; a half that does not show at the budget is reported as such.

The data chain, each step printed in one line: CIFAR-10 found in the usual roots -> Debian's
Fashion-MNIST found -> Fashion-MNIST installed with apt-get (as root, where apt works) ->
CIFAR-10 downloaded (checksum-verified) -> otherwise one line naming the three ways to get data.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable, Sequence

from .config import DataConfig
from .errors import ReslearnError

__all__ = ["DEMO_NETS", "DEMO_RECIPE", "find_demo_data", "run_demo", "format_demo"]

DEMO_RECIPE = "demo"
DEMO_DEPTHS = (20, 56)
DEMO_NETS = tuple(f"{kind}{d}" for d in sorted(DEMO_DEPTHS, reverse=True) for kind in ("plain", "resnet"))
FASHION_PACKAGE = "dataset-fashion-mnist"

Say = Callable[[str], None]


def _cifar_root() -> Path | None:
    from .data.bundle import resolve_root

    return resolve_root(DataConfig(name="cifar10"))


def _fashion_root() -> Path | None:
    from .data.idx import find_idx_root

    return find_idx_root("fashion-mnist")


def _apt_install(say: Say) -> bool:
    """Install Debian's Fashion-MNIST package when this is root on a machine with apt-get."""
    apt = shutil.which("apt-get")
    if apt is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        say(f"data: cannot install {FASHION_PACKAGE} here ({'not root' if apt else 'no apt-get'}); skipped")
        return False
    say(f"data: installing Debian's {FASHION_PACKAGE} with apt-get (about 30 MB)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in ([apt, "install", "-y", "-q", FASHION_PACKAGE], [apt, "update", "-q"],
                [apt, "install", "-y", "-q", FASHION_PACKAGE]):
        try:
            ok = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                timeout=900).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok and cmd[1] == "install":
            return _fashion_root() is not None
    say(f"data: apt-get could not install {FASHION_PACKAGE}")
    return False


def _download_cifar(say: Say) -> Path | None:
    from .data.cifar import download_cifar
    from .data.bundle import default_data_roots

    root = default_data_roots()[0]
    say(f"data: downloading CIFAR-10 (163 MB, md5-verified) into {root}")
    try:
        download_cifar(root, progress=True)
    except ReslearnError as e:
        say(f"data: {e}")
        return None
    return root


def find_demo_data(*, install: bool = True, download: bool = True, say: Say = print) -> list[str]:
    """Walk the data chain; returns the config overrides that select the data found.

    Raises:
        ReslearnError: no step gave data; the message names the three ways to get some.
    """
    from .data.bundle import default_data_roots

    roots = ", ".join(str(r) for r in default_data_roots())
    root = _cifar_root()
    if root is not None:
        say(f"data: CIFAR-10 found in {root}")
        return ["data.name=cifar10", f"data.root={root}"]
    say(f"data: no CIFAR-10 (cifar-10-batches-py/) in {roots}")
    if _fashion_root() is None and install:
        _apt_install(say)
    fashion = _fashion_root()
    if fashion is not None:
        say(f"data: Fashion-MNIST found in {fashion}")
        return ["data.name=fashion-mnist"]
    say("data: no Fashion-MNIST (Debian's dataset-fashion-mnist) on this machine")
    if download and (root := _download_cifar(say)) is not None:
        return ["data.name=cifar10", f"data.root={root}"]
    raise ReslearnError(
        "no data for the demo; get some in one of three ways: put CIFAR-10 (cifar-10-batches-py/) in one of "
        f"{roots}; or install Debian's Fashion-MNIST (as root: apt-get install {FASHION_PACKAGE}); "
        "or run where https://www.cs.toronto.edu can be reached so that CIFAR-10 is downloaded")


def run_demo(*, out: str | Path, overrides: Sequence[str] = (), data: Sequence[str] = (),
             jobs: int = 1, record: str | Path | None = None) -> dict[str, Any]:
    """Train the demo's nets (recipe ``demo`` + ``data`` + ``overrides``, seed 0) under ``out``;
    returns the table rows, the verdict and the figure path. The results rows go to
    ``out/demo.csv`` and, with ``record``, to ``record/demo.csv`` too (e.g. docs/results)."""
    from .experiments import compare
    from .reproduce import degradation_finding, record_rows, result_rows, two_panel_figure
    from .results import run_row

    out = Path(out)
    res = compare(list(DEMO_NETS), recipe=DEMO_RECIPE, overrides=list(data) + list(overrides), out_dir=out,
                  seeds=[0], jobs=jobs, figure=False)  # its figure is the two-panel one below
    rows = result_rows([f"{kind}{d}" for kind in ("plain", "resnet") for d in DEMO_DEPTHS], res, out, 0)
    figure = two_panel_figure(
        {kind: [(f"{kind}-{d}", out / f"{kind.lower()}{d}-seed0") for d in DEMO_DEPTHS] for kind in ("plain", "ResNet")},
        out / "curves.png", "He et al. 2016, Fig. 6 at the demo's budget: thin = training error, bold = test error")
    record_rows([run_row(out / f"{r['net']}-seed0", experiment="demo", recipe=DEMO_RECIPE, train_err=r["train_err"])
             for r in rows], out, record)
    return {"rows": rows, "finding": degradation_finding(rows, DEMO_DEPTHS), "figure": str(figure)}


def format_demo(result: dict[str, Any]) -> str:
    from .experiments import format_table
    from .reproduce import WINDOW_FRACTION, format_finding

    return "\n".join([
        f"training error (mean over the last {WINDOW_FRACTION:.0%} of the iterations) and test error, %",
        format_table(result["rows"], [("net", "net"), ("train error %", "train_err"), ("test error %", "test_err")]),
        format_finding(result["finding"]),
        f"curves: {result['figure']}",
    ])
