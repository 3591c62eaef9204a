"""Measured results as data: one CSV row per run, written by the command that ran it, and the
docs' tables generated from those files (``make readme``; a test fails when a table is stale).

A row records what a reader needs to trust a number: the experiment, model, recipe, budget
(iterations, epochs), seed, training and test error, the machine (device and CPU flags), the
git commit and the wall time. ``docs/results/<experiment>.csv`` holds the rows the docs cite;
``record_runs`` adds (or replaces, keyed by experiment, model, recipe, data set, iterations and seed) rows
there or in any other folder.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from .system import cpu_flags

__all__ = ["COLUMNS", "run_row", "short_commit", "record_runs", "read_results", "machine_description", "markdown_table",
           "update_docs"]

COLUMNS = ["experiment", "model", "recipe", "data", "iterations", "epochs", "seed", "train_err", "test_err",
           "device", "machine", "commit", "wall_s"]
_KEY = ("experiment", "model", "recipe", "data", "iterations", "seed")


def machine_description(device: str) -> str:
    """The accelerator's name, or the CPU's model, core count and vector flags (avx2, avx512f,
    avx512_bf16, amx_bf16): speeds differ several-fold between CPUs that all say "cpu"."""
    if device.startswith("cuda"):
        try:
            import torch

            return torch.cuda.get_device_name(torch.device(device))
        except Exception:  # no CUDA here: the run was elsewhere
            return device
    model, flags = platform.processor() or platform.machine(), set()
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = re.search(r"^model name\s*:\s*(.+)$", info, re.M).group(1).strip()  # type: ignore[union-attr]
        flags = cpu_flags(info)
    except (OSError, AttributeError):
        pass
    vec = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{model}, {os.cpu_count()} cores, {' '.join(vec) or 'no avx2'}"


def run_row(run_dir: str | Path, *, experiment: str, recipe: str, train_err: float | None = None) -> dict[str, Any]:
    """The results row of a finished run folder (``config.yaml``, ``run.json``, ``final.json``,
    ``metrics.csv``). ``train_err`` overrides the last logged window (e.g. a verdict's window)."""
    from .config import yaml_load
    from .engine.logging import read_metrics

    run_dir = Path(run_dir)
    cfg = yaml_load((run_dir / "config.yaml").read_text())
    run = json.loads((run_dir / "run.json").read_text())
    final = json.loads((run_dir / "final.json").read_text())
    rows = read_metrics(run_dir / "metrics.csv")
    test = final.get("test", {}).get("top1_err")
    return {
        "experiment": experiment, "model": cfg["model"]["name"], "recipe": recipe, "data": cfg["data"]["name"],
        "iterations": final.get("iteration", cfg["schedule"]["iterations"]),
        "epochs": float(rows[-1]["epoch"]) if rows else "",
        "seed": cfg["train"]["seed"],
        "train_err": round(float(train_err if train_err is not None else final.get("train_err", "nan")), 2),
        "test_err": round(float(test), 2) if test is not None else "",
        "device": run.get("device", ""), "machine": run.get("machine") or machine_description(run.get("device", "cpu")),
        "commit": run.get("git_commit", ""),
        "wall_s": round(float(rows[-1]["elapsed_s"])) if rows and rows[-1].get("elapsed_s") else "",
    }


def short_commit(commit: str) -> str:
    """git's short form of a results row's commit, keeping the ``-dirty`` mark of a run from a
    checkout with uncommitted changes (``253c11bc...-dirty`` -> ``253c11b-dirty``)."""
    sha, dirty, _ = commit.partition("-dirty")
    return sha[:7] + ("-dirty" if dirty else "")


def read_results(path: str | Path) -> list[dict[str, str]]:
    """The rows of one results CSV (an empty list when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def record_runs(rows: Iterable[dict[str, Any]], folder: str | Path) -> Path:
    """Add ``rows`` to ``folder/<experiment>.csv`` (one file per experiment), replacing rows with
    the same experiment, model, recipe, data set, iterations and seed; written atomically."""
    rows = list(rows)
    if not rows:
        raise ValueError("no rows to record")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{rows[0]['experiment']}.csv"
    new = {tuple(str(r[k]) for k in _KEY): r for r in rows}
    kept = [r for r in read_results(path) if tuple(r[k] for k in _KEY) not in new]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows([*kept, *new.values()])
    os.replace(tmp, path)
    return path


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A markdown table of ``rows`` with (header, key) ``columns``; numbers right-aligned."""
    def numeric(k: str) -> bool:
        return all(re.fullmatch(r"-?[\d.,]+", str(r[k])) for r in rows if str(r[k]))

    head = "| " + " | ".join(h for h, _ in columns) + " |"
    rule = "|" + "|".join("---:" if numeric(k) else "---" for _, k in columns) + "|"
    body = ["| " + " | ".join(str(r[k]) for _, k in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


DOC_COLUMNS = [("model", "model"), ("recipe", "recipe"), ("data", "data"), ("iterations", "iterations"),
               ("epochs", "epochs"),
               ("seed", "seed"), ("train err %", "train_err"), ("test err %", "test_err"),
               ("machine", "machine"), ("commit", "commit"), ("wall (s)", "wall_s")]
_MARK = re.compile(r"(<!-- results:(?P<name>[\w.-]+):start -->\n)(?:.*?\n)?(<!-- results:(?P=name):end -->)", re.S)


def inference_markdown(report: dict[str, Any]) -> str:
    """The markdown of one ``benchmarks/inference.py --json`` report: the machine line, then one
    table per (model, batch), models in the order measured, batches ascending; the first row of each is the reference."""
    info = report["machine"]
    cpu = info["cpu"] + (f" (cpu family/model {info['cpu_family_model']})" if info.get("cpu_family_model") else "")
    lines = [f"Machine: {cpu}, {info['threads']} threads, flags {' '.join(info['flags'])}; "
             f"torch {info['torch']}, torchvision {info['torchvision']}, onnxruntime {info['onnxruntime']}, "
             f"openvino {info['openvino']}, nncf {info['nncf']}; commit {info['commit']}; "
             f"load average before {info['load_avg'][0]:.2f}."]
    peak = info.get("peaks", {}).get("fp32")  # reports before the benchmark measured it have none
    if peak:
        kernels = info["peak_kernels"]["fp32"]
        lines[0] += (f" Measured fp32 peak in this run: {peak:.0f} GFLOP/s (the faster of torch.mm "
                     f"{kernels['matmul']:.0f} and a 3x3 convolution {kernels['conv3x3']:.0f}).")
    lines.append("")
    models = list(dict.fromkeys(r["model"] for r in report["results"]))
    cases = sorted(dict.fromkeys((r["model"], r["size"], r["batch"]) for r in report["results"]),
                   key=lambda c: (models.index(c[0]), c[2]))
    for model, size, batch in cases:
        rows = [r for r in report["results"] if (r["model"], r["size"], r["batch"]) == (model, size, batch)]
        notes = "; ".join(report["notes"].get(model, []))
        rate = peak and "gflop_s" in rows[0]
        lines += [f"**{model}, {size} px, batch {batch}** (reference: {rows[0]['runtime']}; {notes})", "",
                  "| runtime | precision that ran | latency ms | img/s | vs reference | max abs logit diff "
                  "| top-1 agreement | top-1 error | first output s |" + (" GFLOP/s | of fp32 peak |" if rate else ""),
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if rate else "")]
        for r in rows:
            err = "" if r["top1_err"] is None else f"{r['top1_err']:.2f}%"
            lines.append(f"| {r['runtime']} | {r['precision']} | {r['latency_ms']:.2f} | {r['img_s']:.1f} | "
                         f"{r['ratio']:.2f}x | {r['max_abs_diff']:.1e} | {r['top1_agreement']:.2f}% | {err} | "
                         f"{r['first_output_s']:.1f} |"
                         + (f" {r['gflop_s']:.0f} | {r['gflop_s'] / peak:.0%} |" if rate else ""))
        if rate:  # what a 3x exact-fp32 goal asks of this machine, from this run's own numbers
            lines += ["", f"3x the reference would be {3 * rows[0]['gflop_s']:.0f} GFLOP/s of direct fp32 "
                          f"convolution, {3 * rows[0]['gflop_s'] / peak:.2f}x the measured fp32 peak."]
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def update_docs(text: str, results_dir: str | Path) -> str:
    """Replace every ``<!-- results:NAME:start --> ... <!-- results:NAME:end -->`` block of
    ``text`` with the table of ``results_dir/NAME.csv``, or, for a NAME ending in ``.json``, with
    the tables of that inference-benchmark report."""
    def table(m: re.Match) -> str:
        if m.group("name").endswith(".json"):
            report = json.loads((Path(results_dir) / m.group("name")).read_text())
            return m.group(1) + inference_markdown(report) + "\n" + m.group(3)
        rows = read_results(Path(results_dir) / f"{m.group('name')}.csv")
        # run rows get the standard columns; a study's own CSV (other columns) is shown as it is
        cols = DOC_COLUMNS if rows and list(rows[0]) == COLUMNS else [(k, k) for k in (rows[0] if rows else [])]
        if cols is DOC_COLUMNS:  # the CSV keeps the full commit; a table shows git's short form
            rows = [{**r, "commit": short_commit(r["commit"])} for r in rows]
        return m.group(1) + (markdown_table(rows, cols) if rows else "(no rows yet)") + "\n" + m.group(3)

    return _MARK.sub(table, text)
