"""``fewframes predict`` (Kaggle-format predictions) and ``fewframes export`` (ONNX for serving)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``predict`` and ``export`` to the ``fewframes`` command line."""
    parser = subparsers.add_parser(
        "predict",
        help="classify videos with a saved model and write a YouTube-8M submission CSV",
        description="Classify the videos of a frame store or of frame-level TFRecords, reading only the frames "
        "the model needs, and write VideoId,LabelConfidencePairs (top-k label/score pairs by score).",
    )
    parser.add_argument("--model", required=True, help="saved model file, teacher or student (local or gs://)")
    parser.add_argument("--src", required=True, help="frame store, or TFRecord file/directory/glob (local or gs://)")
    parser.add_argument("--out", required=True, help="predictions CSV to write atomically (local or gs://), Kaggle's "
                        "format; with class names known, also OUT.names.csv (VideoId,Rank,Label,Name,Score)")
    parser.add_argument("--top-k", type=int, default=20, help="label/score pairs per video (default: 20)")
    parser.add_argument("--batch", type=int, default=64, help="videos per batch (default: 64)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.set_defaults(handler=run_predict)

    export = subparsers.add_parser(
        "export",
        help="export a saved model to ONNX and check it against the PyTorch model",
        description="Export a saved teacher/student to ONNX (input uint8 frames [batch, frames, 1152], output "
        "logits), check onnxruntime's logits against the PyTorch model's, optionally log it to MLflow.",
    )
    export.add_argument("--model", required=True, help="saved model file (local or gs://)")
    export.add_argument("--out", required=True, help="ONNX file to write (local or gs://)")
    export.add_argument("--frames", type=int, help="frames per video (default: a student's k, a teacher's 300)")
    export.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed |logit difference|")
    export.add_argument("--tracking-uri", help="log the ONNX file to this MLflow tracking URI")
    export.add_argument("--experiment", default="fewframes", help="MLflow experiment (default: fewframes)")
    export.set_defaults(handler=run_export)


def run_predict(args: argparse.Namespace) -> int:
    """Handler of ``fewframes predict``."""
    from fewframes import fsio
    from fewframes.predict import names_path, predict_files

    fsio.check_output_file(args.out, "--out", inputs=(args.model, args.src))  # before any prediction
    fsio.check_output_file(names_path(args.out), "--out", inputs=(args.model, args.src))
    with fsio.output_errors(args.out):
        count, named = predict_files(args.model, args.src, args.out, args.top_k, batch_size=args.batch, device=args.device)
    print(f"wrote predictions for {count} videos to {args.out}" + (f" (with class names: {named})" if named else ""))
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Handler of ``fewframes export``."""
    from fewframes.benchmark import resolve_model
    from fewframes import fsio
    from fewframes.export import export_onnx, log_export

    fsio.check_output_file(args.out, "--out", inputs=(args.model,))
    model = resolve_model(args.model)
    with fsio.output_errors(args.out):
        result = export_onnx(model, args.out, n_frames=args.frames, tolerance=args.tolerance)
    print(f"exported {args.model} to {result.path} ({result.n_frames} frames/video, "
          f"max |logit difference| {result.max_abs_diff:.2e})")
    if args.tracking_uri:
        from fewframes.tracking import Tracker

        with Tracker.start(args.tracking_uri, args.experiment, f"export-{Path(args.model).stem}") as tracker:
            log_export(tracker, result, args.model)  # the model file, logged as a pyfunc (no pickle)
    return 0
