"""A CLI-free entry point the pipeline launches, also under ``torchrun``::

    python -m fewframes.training teacher  --store STORE --out DIR --model-config '{"hidden_size": 64}'
    python -m fewframes.training student  --store STORE --out DIR --teacher DIR/teacher.pt --student-config '{"k": 6}'
    python -m fewframes.training parallel --store STORE --out DIR --model-config ... --student-config ...
    python -m fewframes.training baseline --store STORE --out DIR --model-config ... --student-config ...
    torchrun --standalone --nproc_per_node=2 -m fewframes.training teacher ...

Config arguments are JSON objects (or ``@file.json``) of ``ModelConfig``/``TrainConfig``/``StudentConfig``
fields. Rank 0 prints the result summary as one JSON line on stdout (the same facts as ``DIR/result.json``
plus the best model's path). Bad arguments: one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from fewframes.config import ConfigError, ModelConfig, StudentConfig, TrainConfig
from fewframes.errors import FewframesError, TrainingError

MODES = ("teacher", "student", "parallel", "baseline")


def _json_arg(flag: str, text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise TrainingError(f"{flag}: cannot read {text[1:]}: {exc.strerror}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TrainingError(f"{flag} is not valid JSON: {exc.msg} at character {exc.pos}") from None
    if not isinstance(value, dict):
        raise TrainingError(f"{flag} must be a JSON object of config fields")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fewframes.training",
        description="Train a teacher, a serial or parallel student, or a k-frame baseline (torchrun-ready).",
    )
    parser.add_argument("mode", choices=MODES, help="what to train")
    parser.add_argument("--store", required=True, help="frame store path (local or gs://)")
    parser.add_argument("--out", required=True, help="output folder, local or gs://: checkpoints, best model(s), result.json")
    parser.add_argument("--model-config", help="ModelConfig fields as JSON (student mode: read from --teacher)")
    parser.add_argument("--train-config", help="TrainConfig fields as JSON (defaults: the paper's)")
    parser.add_argument("--student-config", help="StudentConfig fields as JSON (student, parallel, baseline)")
    parser.add_argument("--teacher", help="student mode: the trained teacher's model file (local or gs://)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (omit: no tracking)")
    parser.add_argument("--experiment", default="fewframes", help="MLflow experiment name")
    parser.add_argument("--run-name", help="MLflow run name (default: the mode)")
    parser.add_argument("--parent-run-id", help="MLflow parent run id (the pipeline run)")
    parser.add_argument("--run-id", help="log into this existing MLflow run (the pipeline step's) instead of a new one")
    parser.add_argument("--teacher-run-id", help="MLflow run id of the teacher, logged as teacher_run_id")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train as ``args`` say; return the result summary."""
    from fewframes import training

    train_config = TrainConfig.from_dict(_json_arg("--train-config", args.train_config))
    model_values = _json_arg("--model-config", args.model_config)
    student_values = _json_arg("--student-config", args.student_config)
    if args.mode != "student" and "num_classes" not in model_values:
        # The store's own classes and frame widths (a count given explicitly must match the store's).
        from fewframes.config import data_widths
        from fewframes.data.store import FrameStore

        store = FrameStore.open(args.store)
        model_values = {"num_classes": store.num_classes, **data_widths(store.rgb_dim, store.audio_dim), **model_values}
    model_config = ModelConfig.from_dict(model_values) if model_values else None
    student_config = StudentConfig.from_dict(student_values) if student_values else None
    if args.mode in ("student", "parallel", "baseline") and student_config is None:
        raise TrainingError(f"{args.mode} mode needs --student-config (at least k)")
    if args.mode == "student" and not args.teacher:
        raise TrainingError("student mode needs --teacher (the teacher's model file)")
    progress = not args.no_progress

    tracker = None
    if args.tracking_uri and _is_rank_zero():  # only rank 0 tracks
        from fewframes.tracking import Tracker

        tracker = Tracker.start(
            args.tracking_uri, args.experiment, args.run_name or args.mode, parent_run_id=args.parent_run_id,
            run_id=args.run_id,
        )
    try:
        if args.mode == "teacher":
            result = training.train_teacher(
                args.store, model_config, train_config, out_dir=args.out, tracker=tracker, progress=progress
            )
            return result.summary()
        if args.mode == "student":
            result = training.train_student(
                args.store, args.teacher, student_config, train_config, model_config=model_config,
                out_dir=args.out, tracker=tracker, progress=progress, teacher_run_id=args.teacher_run_id,
            )
            return result.summary()
        if args.mode == "parallel":
            pair = training.train_parallel(
                args.store, model_config, student_config, train_config, out_dir=args.out, tracker=tracker,
                progress=progress,
            )
            return {"teacher": pair.teacher.summary(), "student": pair.student.summary()}
        result = training.train_baseline(
            args.store, student_config, model_config, train_config, out_dir=args.out, tracker=tracker,
            progress=progress,
        )
        return result.summary()
    finally:
        if tracker is not None:
            tracker.end()


def _is_rank_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, train, print the summary (rank 0); exit code 2 on bad input."""
    args = build_parser().parse_args(argv)
    try:
        summary = run(args)
    except (FewframesError, ConfigError) as exc:
        print(f"fewframes.training: error: {exc}", file=sys.stderr)
        return 2
    if _is_rank_zero():
        print(json.dumps(summary, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
