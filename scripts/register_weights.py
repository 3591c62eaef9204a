"""Register a finished, recorded run's weights as a model's pretrained weights (maintainers).

    python scripts/register_weights.py RUN_DIR --tag cifar10-table6 --experiment table6 \
        --recipe cifar10 [--paper-err 8.75] [--default]

Copies RUN_DIR/model.safetensors to src/reslearn/weights/<model>-<tag>-<sha8>.safetensors and
writes its entry (SHA-256, and the run's results row: recipe, budget, seed, test error, commit)
into src/reslearn/weights/index.json. The row must already be in docs/results/<experiment>.csv
(written by the command that ran it), so the weights and the docs cite one measurement.
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

from reslearn.results import read_results, run_row
from reslearn.weights import sha256_file

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "src" / "reslearn" / "weights"


def recorded(row: dict, experiment: str) -> dict:
    keys = ("model", "recipe", "iterations", "seed", "test_err")
    for r in read_results(ROOT / "docs" / "results" / f"{experiment}.csv"):
        if all(str(r[k]) == str(row[k]) for k in keys):
            return r
    sys.exit(f"register_weights: the run's row ({', '.join(f'{k}={row[k]}' for k in keys)}) is not in "
             f"docs/results/{experiment}.csv; record it first (--record docs/results)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--tag", required=True, help="data set and experiment, e.g. cifar10-table6")
    ap.add_argument("--experiment", required=True, help="the results CSV's experiment name, e.g. table6")
    ap.add_argument("--recipe", required=True)
    ap.add_argument("--paper-err", type=float, default=None, help="the paper's test error for this model, %%")
    ap.add_argument("--default", action="store_true", help="make it the model's default entry")
    args = ap.parse_args()

    src = args.run_dir / "model.safetensors"
    if not src.is_file():
        sys.exit(f"register_weights: {src} does not exist (an unfinished run?)")
    row = recorded(run_row(args.run_dir, experiment=args.experiment, recipe=args.recipe), args.experiment)
    sha = sha256_file(src)
    name = f"{row['model']}-{args.tag}-{sha[:8]}.safetensors"
    shutil.copyfile(src, WEIGHTS / name)
    entry = {"model": row["model"], "tag": args.tag, "file": name, "sha256": sha, "data": row["data"],
             "recipe": row["recipe"], "iterations": int(row["iterations"]), "seed": int(row["seed"]),
             "test_err": float(row["test_err"]), "paper_test_err": args.paper_err, "commit": row["commit"],
             "results": f"docs/results/{args.experiment}.csv"}
    index_path = WEIGHTS / "index.json"
    index = json.loads(index_path.read_text())
    old = [e for e in index["weights"] if (e["model"], e["tag"]) == (entry["model"], entry["tag"])]
    for e in old:  # a re-registered tag replaces its file
        if e["file"] != name:
            (WEIGHTS / e["file"]).unlink(missing_ok=True)
    rest = [e for e in index["weights"] if e not in old]
    index["weights"] = [entry, *rest] if args.default else [*rest, entry]
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    print(f"registered {entry['model']}/{args.tag}: {name} (test error {entry['test_err']}%)")


if __name__ == "__main__":
    main()
