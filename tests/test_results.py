"""Measured results as data: rows written by the commands, docs tables generated from them."""

import re

from conftest import ROOT
from reslearn.results import COLUMNS, markdown_table, read_results, record_runs, update_docs


def _row(**kw):
    base = {"experiment": "fig6", "model": "resnet20", "recipe": "cifar10", "data": "cifar10", "iterations": 640,
            "epochs": 1.82,
            "seed": 0, "train_err": 44.73, "test_err": 44.65, "device": "cpu", "machine": "AMD EPYC, 2 cores, avx2",
            "commit": "abc1234", "wall_s": 847}
    return {**base, **kw}


def test_record_replaces_rows_with_the_same_key(tmp_path):
    path = record_runs([_row(), _row(model="plain20", train_err=49.69)], tmp_path)
    assert path == tmp_path / "fig6.csv"
    record_runs([_row(train_err=40.0), _row(seed=1, train_err=41.0)], tmp_path)
    rows = read_results(path)
    assert list(rows[0]) == COLUMNS
    got = {(r["model"], r["seed"]): r["train_err"] for r in rows}
    assert got == {("plain20", "0"): "49.69", ("resnet20", "0"): "40.0", ("resnet20", "1"): "41.0"}
    # another budget or data set is another row, not a replacement
    record_runs([_row(iterations=64000, train_err=1.0), _row(data="fashion-mnist")], tmp_path)
    assert len(read_results(path)) == 5
    assert not list(tmp_path.glob(".*.tmp"))


def test_markdown_table_and_doc_blocks(tmp_path):
    record_runs([_row(), _row(model="plain20", train_err=49.69)], tmp_path)
    t = markdown_table(read_results(tmp_path / "fig6.csv"), [("model", "model"), ("train err %", "train_err")])
    assert t.splitlines() == ["| model | train err % |", "|---|---:|", "| resnet20 | 44.73 |", "| plain20 | 49.69 |"]
    doc = "intro\n<!-- results:fig6:start -->\nold table\n<!-- results:fig6:end -->\n<!-- results:none:start -->\n" \
          "<!-- results:none:end -->\nend\n"
    new = update_docs(doc, tmp_path)
    assert "old table" not in new and "| resnet20 | cpu" not in new
    assert re.search(r"\| resnet20 \| cifar10 \| cifar10 \| 640 \| 1\.82 \| 0 \| 44\.73 \| 44\.65 \| AMD EPYC", new)
    assert "<!-- results:none:start -->\n(no rows yet)\n<!-- results:none:end -->" in new
    assert update_docs(new, tmp_path) == new


def test_docs_results_tables_are_generated():
    """Every results table in README.md and docs/*.md is docs/results/NAME.csv, not typed by hand."""
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text()
        assert update_docs(text, ROOT / "docs" / "results") == text, f"{doc.name} is stale: run `make readme`"


def test_short_commit_keeps_the_dirty_mark():
    from reslearn.results import short_commit

    assert short_commit("253c11bc9dbbea552088ca9a243b80fa1aab2a7c") == "253c11b"
    assert short_commit("253c11bc9dbbea552088ca9a243b80fa1aab2a7c-dirty") == "253c11b-dirty"
    assert short_commit("") == ""


def test_inference_report_blocks_render_the_benchmark_json(tmp_path):
    """A ``results:NAME.json`` block is the tables of that benchmarks/inference.py report: batches
    ascending, the reference first, numbers formatted as the benchmark prints them."""
    import json

    machine = {"cpu": "AMD EPYC", "threads": 2, "flags": ["avx2", "avx512_bf16"], "torch": "2.14.1",
               "torchvision": "0.29.1", "onnxruntime": "1.32.0", "openvino": "2026.4", "nncf": "3.4.0",
               "commit": "abc1234", "load_avg": [0.52, 1.0, 1.0]}

    def row(batch, runtime, img_s, err):
        return {"model": "resnet20", "size": 32, "batch": batch, "runtime": runtime, "precision": "fp32",
                "first_output_s": 0.11, "latency_ms": 1000 * batch / img_s, "img_s": img_s,
                "ratio": img_s / 1000, "max_abs_diff": 0.0, "top1_agreement": 100.0, "top1_err": err}

    report = {"machine": machine, "notes": {"resnet20": ["trained weights X"]},
              "results": [row(256, "reslearn eager fp32", 1000.0, 12.55), row(256, "ONNX Runtime fp32", 4000.0, None),
                          row(1, "reslearn eager fp32", 1000.0, 12.55)]}
    (tmp_path / "inf.json").write_text(json.dumps(report))
    doc = "x\n<!-- results:inf.json:start -->\nhand-typed\n<!-- results:inf.json:end -->\n"
    new = update_docs(doc, tmp_path)
    assert "hand-typed" not in new and "commit abc1234; load average before 0.52." in new
    assert new.index("batch 1**") < new.index("batch 256**")
    assert "**resnet20, 32 px, batch 256** (reference: reslearn eager fp32; trained weights X)" in new
    assert "| ONNX Runtime fp32 | fp32 | 64.00 | 4000.0 | 4.00x | 0.0e+00 | 100.00% |  | 0.1 |" in new
    assert update_docs(new, tmp_path) == new


def test_inference_report_with_a_measured_peak_shows_the_share_of_it(tmp_path):
    """A report that measured the fp32 peak gets GFLOP/s and share-of-peak columns and the line
    saying what 3x the reference would need."""
    import json

    machine = {"cpu": "AMD EPYC", "threads": 2, "flags": [], "torch": "2.14.1", "torchvision": "0.29.1",
               "onnxruntime": None, "openvino": None, "nncf": None, "commit": "abc1234", "load_avg": [0.5, 0, 0],
               "peaks": {"fp32": 400.0}, "peak_kernels": {"fp32": {"matmul": 300.0, "conv3x3": 400.0}}}
    row = {"model": "resnet50", "size": 224, "batch": 16, "runtime": "torchvision eager fp32", "precision": "fp32",
           "first_output_s": 0.5, "latency_ms": 800.0, "img_s": 20.0, "ratio": 1.0, "gflop_s": 200.0,
           "max_abs_diff": 0.0, "top1_agreement": 100.0, "top1_err": None}
    (tmp_path / "r.json").write_text(json.dumps({"machine": machine, "notes": {}, "results": [row]}))
    new = update_docs("<!-- results:r.json:start -->\n<!-- results:r.json:end -->\n", tmp_path)
    assert "Measured fp32 peak in this run: 400 GFLOP/s (the faster of torch.mm 300 and a 3x3 convolution 400)." in new
    assert "| 0.5 | 200 | 50% |" in new
    assert "3x the reference would be 600 GFLOP/s of direct fp32 convolution, 1.50x the measured fp32 peak." in new
