"""Two runs of the paper pipeline compared model by model, from their training histories (issue 10).

Answers "is training reproducible, and if two runs differ, why?" without re-training anything: for every model
key both runs trained, it compares the per-epoch history (validation GAP and training loss, epoch by epoch)
on the epochs both ran, and says where they first differ. A model whose histories agree on every common epoch
was trained bit-identically; any difference in its test GAP then comes from where training stopped (the
stopping rule), not from the arithmetic. It also lists, for the second run, every model that ran into its
epoch cap (not stopped by patience) and how much its validation GAP still rose after epoch 100, so a reader
sees whether "trained to its plateau" holds for it.

    python benchmarks/training_histories.py RUN_A RUN_B --out benchmarks/results/plateau_runs_compared.json

RUN_A / RUN_B: ``fewframes run --out`` folders (their ``kfp/`` output trees hold each model's
``model.json`` and ``result.json``). Reads files only; seconds of CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HISTORY_FIELDS = ("val_gap", "train_loss")


def trained_models(run_dir: Path) -> dict[str, dict[str, Any]]:
    """model key -> {"model": model.json, "result": result.json} for every trained model of a run."""
    models: dict[str, dict[str, Any]] = {}
    for model_file in sorted((run_dir / "kfp").glob("*/**/model.json")):
        result_file = model_file.with_name("result.json")
        if not result_file.exists():
            continue  # evaluation-only entries (teacher on k frames) train nothing
        model = json.loads(model_file.read_text())
        models[model["model_key"]] = {"model": model, "result": json.loads(result_file.read_text())}
    return models


def first_difference(history_a: list[dict[str, Any]], history_b: list[dict[str, Any]]) -> int | None:
    """The first epoch (1-based) whose recorded values differ, or None if every common epoch agrees."""
    for index, (a, b) in enumerate(zip(history_a, history_b)):
        if any(a.get(field) != b.get(field) for field in HISTORY_FIELDS):
            return index + 1
    return None


def best_epoch(result: dict[str, Any]) -> dict[str, Any]:
    best = next(iter(result.get("best", {}).values()), {})
    return {"epoch": best.get("epoch"), "val_gap": best.get("gap")}


def compare(run_a: Path, run_b: Path) -> dict[str, Any]:
    a, b = trained_models(run_a), trained_models(run_b)
    rows = []
    for key in sorted(set(a) & set(b)):
        ra, rb = a[key]["result"], b[key]["result"]
        rows.append({
            "model": key,
            "uses_teacher": bool(a[key]["model"].get("teacher_key")),
            "epochs": [ra.get("epochs_run"), rb.get("epochs_run")],
            "best": [best_epoch(ra), best_epoch(rb)],
            "first_different_epoch": first_difference(ra.get("history", []), rb.get("history", [])),
        })
    return {"models_a": len(a), "models_b": len(b), "common": rows}


def capped(run_dir: Path, after_epoch: int = 100) -> list[dict[str, Any]]:
    """Models of a run that ran into an epoch cap (of the whole run or of a stage) instead of stopping early."""
    out = []
    for key, entry in sorted(trained_models(run_dir).items()):
        result = entry["result"]
        stages = result.get("stages", [])
        if result.get("stopped_early", True) and all(stage.get("stopped_early", True) for stage in stages):
            continue
        gaps = [epoch["val_gap"] for epoch in result.get("history", []) if epoch.get("val_gap") is not None]
        out.append({
            "model": key,
            "epochs_run": result.get("epochs_run"),
            "max_epochs": result.get("max_epochs"),
            "capped_stages": [s["stage"] for s in stages if not s.get("stopped_early", True)],
            "best_val_gap": max(gaps),
            f"best_val_gap_by_epoch_{after_epoch}": max(gaps[:after_epoch]),
            f"rise_after_epoch_{after_epoch}": max(gaps) - max(gaps[:after_epoch]),
            "last_lr": result.get("history", [{}])[-1].get("lr"),
        })
    return out


def settings(run_dir: Path) -> dict[str, Any]:
    arguments = json.loads((run_dir / "run.json").read_text()).get("arguments", {})
    return {name: arguments.get(name) for name in ("preset", "family", "max_epochs", "patience", "modes", "seed")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    for run in (args.run_a, args.run_b):
        if not (run / "run.json").is_file():
            print(f"training_histories: {run} is not a fewframes run folder (no run.json)", file=sys.stderr)
            return 2
    compared = compare(args.run_a, args.run_b)
    rows = compared["common"]
    same = [r for r in rows if r["first_different_epoch"] is None]
    result = {
        "what": __doc__.split("\n\n")[0],
        "runs": {"a": {"path": str(args.run_a), **settings(args.run_a)},
                 "b": {"path": str(args.run_b), **settings(args.run_b)}},
        "summary": {
            "models_in_both": len(rows),
            "identical_on_common_epochs": len(same),
            "identical_and_teacher_free": sum(1 for r in same if not r["uses_teacher"]),
            "teacher_free_models": sum(1 for r in rows if not r["uses_teacher"]),
            "identical_with_same_best_epoch": sum(1 for r in same if r["best"][0]["epoch"] == r["best"][1]["epoch"]),
            "different_from_epoch_1": sum(1 for r in rows if r["first_different_epoch"] == 1),
            "different_later": sum(1 for r in rows if (r["first_different_epoch"] or 1) > 1),
        },
        "models": rows,
        "capped_in_b": capped(args.run_b),
    }
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(json.dumps(result["summary"], indent=1))
    for row in result["capped_in_b"]:
        print(f"capped in b: {row['model']}: val GAP rose {row['rise_after_epoch_100']:+.4f} after epoch 100")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
