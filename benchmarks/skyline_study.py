"""The skyline study (issue 10): at which family and sizes is the all-frames teacher, trained to its plateau,
better than every k-frame model trained without it?

Each *arm* is a family + model sizes + optimiser + data size. For an arm and a seed the script trains, with
``fewframes.training`` and the same early-stopping rule for all (``TrainConfig.epochs`` = the maximum,
``patience``), the teacher (``train_teacher``: every frame) and the k-frame baselines (``train_baseline``:
Uniform-k, and whatever other selections the arm lists), evaluates each on the test split
(``fewframes.evaluation.evaluate``: the teacher on all frames, a baseline on its own k frames) and records
the run: configuration, seed, validation GAP per epoch, best epoch, epochs run, test GAP/mAP, seconds.
Then, per arm, the paired bootstrap 95 % interval (``fewframes.stats``, over test videos, seeds resampled
per side) of teacher − baseline for every baseline, and the verdict of "the teacher beats it" (``greater``,
margin 0). The rule was written before the runs: the teacher is a skyline for an arm when every interval
lies above 0.

Results accumulate in ``benchmarks/results/skyline_study.json`` (a run already recorded is not trained
again; delete its entry to redo it). Stores are built from the generator (``fewframes.data.synth``, the
standard world) under ``--work`` and reused. One thread per process (``OMP_NUM_THREADS=1``).

    OMP_NUM_THREADS=1 python benchmarks/skyline_study.py --arm netvlad-k8 --seeds 0
    OMP_NUM_THREADS=1 python benchmarks/skyline_study.py --arm hrnn-report --seeds 0 --only teacher
    python benchmarks/skyline_study.py --summary        # print the table from the JSON, train nothing
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from fewframes.config import DataConfig, ModelConfig, StudentConfig, TrainConfig

RESULTS = Path(__file__).resolve().parent / "results" / "skyline_study.json"
KS = (6, 10, 15, 20, 30)

# The report preset's data (1,200 videos, 25 classes, 402 test videos) unless an arm says otherwise.
REPORT_DATA = DataConfig(videos=1200, classes=25, seed=0, validation_fraction=0.1, test_fraction=0.3)

# arm name -> (data, model config fields, train config fields, baselines [(selection, k)])
ARMS: dict[str, dict[str, Any]] = {
    # Checks the script itself in seconds (not a result).
    "smoke": dict(
        data=DataConfig(videos=120, classes=6, seed=0, validation_fraction=0.25, test_fraction=0.35),
        model=dict(family="netvlad", hidden_size=16, clusters=2),
        train=dict(epochs=2, batch_size=16, learning_rate=3e-3, patience=1),
        baselines=[("uniform", 6)],
    ),
    # The paper's hierarchical LSTM at the report preset's sizes, trained to its plateau (same rule as NetVLAD).
    "hrnn-report": dict(
        data=REPORT_DATA,
        model=dict(family="hrnn", hidden_size=32, num_layers=2, block_length=20),
        train=dict(epochs=40, batch_size=32, learning_rate=6e-3, patience=10),
        baselines=[("uniform", k) for k in (10, 30)],
    ),
    # The same with the authors' classifier: a 2-expert mixture of experts.
    "hrnn-moe": dict(
        data=REPORT_DATA,
        model=dict(family="hrnn", hidden_size=32, num_layers=2, block_length=20, classifier="moe"),
        train=dict(epochs=40, batch_size=32, learning_rate=6e-3, patience=10),
        baselines=[("uniform", k) for k in (10, 30)],
    ),
    # The hierarchical LSTM with twice the cells (capacity).
    "hrnn-64": dict(
        data=REPORT_DATA,
        model=dict(family="hrnn", hidden_size=64, num_layers=2, block_length=20),
        train=dict(epochs=40, batch_size=32, learning_rate=6e-3, patience=10),
        baselines=[("uniform", 30)],
    ),
    # The hierarchical LSTM with teacher blocks of 10 frames (the paper: 20): shorter lower recurrences.
    "hrnn-l10": dict(
        data=REPORT_DATA,
        model=dict(family="hrnn", hidden_size=32, num_layers=2, block_length=10),
        train=dict(epochs=40, batch_size=32, learning_rate=6e-3, patience=10),
        baselines=[("uniform", 30)],
    ),
    # NetVLAD (WILLOW's NetVLADModelLF), few clusters: cheap at these sizes. It learns slowly (L2-normalised
    # VLAD into a linear projection): lr 1e-2 and up to 100 epochs, a patience that outlasts noisy epochs.
    "netvlad-k8": dict(
        data=REPORT_DATA,
        model=dict(family="netvlad", hidden_size=64, clusters=8),
        train=dict(epochs=100, batch_size=32, learning_rate=1e-2, patience=10),
        baselines=[("uniform", k) for k in KS] + [("random", k) for k in KS],
    ),
    # The netvlad-k8 baselines again with a patience of 20 (epochs up to 150), against netvlad-k8's teachers:
    # does a longer patience rescue a baseline stopped in NetVLAD's early flat stretch (Random-15, seed 0)?
    "netvlad-k8-p20": dict(
        data=REPORT_DATA,
        model=dict(family="netvlad", hidden_size=64, clusters=8),
        train=dict(epochs=150, batch_size=32, learning_rate=1e-2, patience=20),
        baselines=[("random", 15), ("uniform", 30), ("random", 6)],
        teacher_arm="netvlad-k8",
    ),
    # Exactly the `plateau` preset's rule (150 epochs, patience 20) for the teacher and Uniform-30.
    "netvlad-plateau": dict(
        data=REPORT_DATA,
        model=dict(family="netvlad", hidden_size=64, clusters=8),
        train=dict(epochs=150, batch_size=32, learning_rate=1e-2, patience=20),
        baselines=[("uniform", 30), ("uniform", 6)],
    ),
    # Not run in the study: its expansion (1024 -> 2048 a frame, ~2 M multiply-adds against NetVLAD-8's ~20 k)
    # makes a teacher epoch an estimated ~10x NetVLAD's on this CPU (not measured).
    "nextvlad-k8": dict(
        data=REPORT_DATA,
        model=dict(family="nextvlad", hidden_size=64, clusters=8, expansion=2, groups=8),
        train=dict(epochs=40, batch_size=32, learning_rate=3e-3, patience=5),
        baselines=[("uniform", k) for k in KS],
    ),
}


def store_for(data: DataConfig, work: Path) -> Path:
    """The frame store of ``data`` (standard world) under ``work``, built once from the generator."""
    from threadpoolctl import threadpool_limits

    from fewframes.data.split import write_split
    from fewframes.data.store import FrameStoreWriter
    from fewframes.data.synth import World

    path = work / f"store-v{data.videos}-c{data.classes}-s{data.seed}-val{data.validation_fraction}-test{data.test_fraction}"
    if (path / "store.json").exists():
        return path
    world = World(data.classes, data.seed)
    with threadpool_limits(1, "blas"), FrameStoreWriter(path, num_classes=data.classes) as writer:
        for index in range(data.videos):
            writer.add_video(world.generate(index).video)
    write_split(path, validation_fraction=data.validation_fraction, test_fraction=data.test_fraction)
    return path


def run_key(arm: str, role: str, selection: str, k: int | None, seed: int) -> str:
    return f"{arm}/{role}/{selection}-{k or 'all'}/seed{seed}"


@contextlib.contextmanager
def locked_results():
    """The results JSON, read under an exclusive lock and written back when the block ends (two study
    processes may run at once)."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS.with_name(RESULTS.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = load_results()
        yield results
        save_results(results)


def load_results() -> dict[str, Any]:
    if RESULTS.exists():
        return json.loads(RESULTS.read_text())
    return {"what": __doc__.split("\n\n")[0], "runs": {}, "arms": {}}


def save_results(results: dict[str, Any]) -> None:
    results["machine"] = {"platform": platform.platform(), "cpu_cores": os.cpu_count(), "torch": torch.__version__,
                          "threads": torch.get_num_threads(), "note": "2 cores shared with other jobs: seconds are wall time under load"}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    temp = RESULTS.with_name(RESULTS.name + ".tmp")
    temp.write_text(json.dumps(results, indent=1) + "\n")
    temp.replace(RESULTS)


def train_and_evaluate(arm: str, spec: dict[str, Any], role: str, selection: str, k: int | None, seed: int,
                       store: Path, work: Path) -> dict[str, Any]:
    from fewframes.evaluation import evaluate, write_evaluation
    from fewframes.training import train_baseline, train_teacher

    data: DataConfig = spec["data"]
    model_config = ModelConfig(num_classes=data.classes, dropout=spec["model"].get("dropout", 0.5),
                               **{f: v for f, v in spec["model"].items() if f != "dropout"})
    train_config = TrainConfig(seed=seed, device="cpu", **spec["train"])
    out = work / "runs" / run_key(arm, role, selection, k, seed).replace("/", "_")
    shutil.rmtree(out, ignore_errors=True)  # a recorded run is skipped; an unrecorded one starts afresh
    started = time.time()
    if role == "teacher":
        result = train_teacher(store, model_config, train_config, out_dir=out / "train", progress=False)
        strategy, eval_k = "all", None
    else:
        student = StudentConfig(k=k, frame_selection=selection)
        result = train_baseline(store, student, model_config, train_config, out_dir=out / "train", progress=False)
        strategy, eval_k = selection, k
    trained = time.time() - started
    evaluation = evaluate(result.model, store, "test", strategy=strategy, k=eval_k, progress=False, sample_encodings=0)
    write_evaluation(evaluation, out / "eval")
    metrics = evaluation.metrics()
    return {
        "arm": arm, "role": role, "selection": selection, "k": k, "seed": seed,
        "data": data.to_dict(), "model_config": model_config.to_dict(), "train_config": train_config.to_dict(),
        "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "stopped_early": result.stopped_early,
        "best_val_gap": round(result.best_val_gap, 4),
        "val_gap_per_epoch": [round(h["val_gap"], 4) for h in result.history],
        "test_gap": round(float(metrics["gap"]), 4), "test_map": round(float(metrics["map"]), 4),
        "train_seconds": round(trained, 1), "predictions": str(out / "eval" / "predictions.parquet"),
    }


def summarise(results: dict[str, Any], arm: str) -> dict[str, Any] | None:
    """Per baseline: teacher − baseline test GAP, paired bootstrap 95 % interval over test videos and seeds,
    and the verdict of "the teacher beats it" (holds / does not hold / inconclusive)."""
    from fewframes.evaluation import read_predictions
    from fewframes.stats import PairedBootstrap, verdict

    teacher_arm = ARMS.get(arm, {}).get("teacher_arm", arm)
    runs = [r for r in results["runs"].values() if Path(r["predictions"]).exists()
            and (r["arm"] == arm and r["role"] == "baseline" or r["arm"] == teacher_arm and r["role"] == "teacher")]
    teachers = [r for r in runs if r["role"] == "teacher"]
    if teacher_arm != arm:  # borrowed teachers: only the seeds this arm's baselines have
        seeds = {r["seed"] for r in runs if r["role"] == "baseline"}
        teachers = [r for r in teachers if r["seed"] in seeds]
        runs = [r for r in runs if r["role"] == "baseline" or r["seed"] in seeds]
    if not teachers:
        return None
    boot = PairedBootstrap()
    for r in runs:
        boot.add(run_key(r["arm"], r["role"], r["selection"], r["k"], r["seed"]), read_predictions(r["predictions"]))
    teacher_side = boot.side([run_key(teacher_arm, "teacher", "all", None, r["seed"]) for r in teachers])
    rows = []
    baselines = sorted({(r["selection"], r["k"]) for r in runs if r["role"] == "baseline"}, key=lambda x: (x[0], x[1]))
    for selection, k in baselines:
        seeds = [r["seed"] for r in runs if r["role"] == "baseline" and r["selection"] == selection and r["k"] == k]
        side = boot.side([run_key(arm, "baseline", selection, k, s) for s in seeds])
        interval = boot.contrast([(1.0, teacher_side), (-1.0, side)])
        rows.append({"selection": selection, "k": k, "seeds": len(seeds), "baseline_gap": round(float(side.values.mean()), 4),
                     "difference": round(interval.estimate, 4), "low": round(interval.low, 4), "high": round(interval.high, 4),
                     "verdict": verdict(interval.low, interval.high)})
    return {"teacher_gap": round(float(teacher_side.values.mean()), 4), "teacher_seeds": len(teachers),
            "teacher_seconds": [r["train_seconds"] for r in teachers], "rows": rows,
            "skyline": ("holds" if rows and all(r["verdict"] == "holds" for r in rows)
                        else "does not hold" if any(r["verdict"] == "does not hold" for r in rows) else "inconclusive")}


def print_summary(results: dict[str, Any]) -> None:
    for arm, summary in results.get("arms", {}).items():
        if not summary:
            continue
        print(f"{arm}: teacher {summary['teacher_gap']:.4f} ({summary['teacher_seeds']} seeds)  skyline: {summary['skyline']}")
        for row in summary["rows"]:
            print(f"   {row['selection']:>8}-{row['k']:<3} {row['baseline_gap']:.4f}  teacher − it {row['difference']:+.4f} "
                  f"[{row['low']:+.4f}, {row['high']:+.4f}]  {row['verdict']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arm", choices=sorted(ARMS), action="append", default=[])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--only", choices=("teacher", "baselines"), help="train only the teacher or only the baselines")
    parser.add_argument("--ks", type=int, nargs="+", help="only these k for the baselines")
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "fewframes-skyline")
    parser.add_argument("--summary", action="store_true", help="print the recorded table and exit")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    results = load_results()
    if args.summary:
        print_summary(results)
        return
    for arm in args.arm:
        spec = ARMS[arm]
        store = store_for(spec["data"], args.work)
        jobs = []
        for seed in args.seeds:
            if args.only != "baselines" and "teacher_arm" not in spec:
                jobs.append(("teacher", "all", None, seed))
            if args.only != "teacher":
                jobs += [("baseline", s, k, seed) for s, k in spec["baselines"] if not args.ks or k in args.ks]
        for role, selection, k, seed in jobs:
            key = run_key(arm, role, selection, k, seed)
            if key in results["runs"]:
                continue
            record = train_and_evaluate(arm, spec, role, selection, k, seed, store, args.work)
            with locked_results() as results:
                results["runs"][key] = record
                results["arms"][arm] = summarise(results, arm)
            print(f"{key}: test GAP {record['test_gap']:.4f}, best epoch {record['best_epoch']}/{record['epochs_run']}, "
                  f"{record['train_seconds']:.0f} s", flush=True)
        with locked_results() as results:
            results["arms"][arm] = summarise(results, arm)
    print_summary(load_results())


if __name__ == "__main__":
    main()
