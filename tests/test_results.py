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
