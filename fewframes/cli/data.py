"""``fewframes data synth|ingest|inspect|download|split``: the data commands.

Handlers import their modules inside, so ``fewframes --help`` stays fast and a data module that is
missing or broken only affects its own subcommand.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

from fewframes import fsio
from fewframes.errors import DataError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` command group to the ``fewframes`` command line."""
    data = subparsers.add_parser(
        "data",
        help="make, fetch, ingest, inspect and split YouTube-8M-format data",
        description="YouTube-8M frame-level data: synthesise it, download it, ingest TFRecords into a frame "
        "store, inspect either, and record a train/validation/test split.",
    )
    commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    synth = commands.add_parser(
        "synth",
        help="write synthetic YouTube-8M-format TFRecords (docs/synthetic_data.md)",
        description="Write real-format YouTube-8M frame-level TFRecords from the documented generative model "
        "(docs/synthetic_data.md). Sizes come from --preset; --videos/--classes/--seed override it.",
    )
    synth.add_argument("--out", required=True, help="output folder, local or gs:// (shards + manifest.json)")
    synth.add_argument("--preset", choices=("tiny", "demo", "bench"), default="demo", help="data size (default: demo)")
    synth.add_argument("--videos", type=int, help="number of videos (default: the preset's)")
    synth.add_argument("--classes", type=int, help="number of classes (default: the preset's)")
    synth.add_argument("--seed", type=int, help="random seed; same seed -> byte-identical shards (default: the preset's)")
    synth.add_argument("--shards", type=int, help="number of TFRecord shards (default: about 500 videos each)")
    synth.add_argument("--world", choices=("standard", "null", "redundant"), default="standard",
                       help="standard (the spec), null (labels independent of the frames) or redundant (every frame "
                       "shows every label): checks of the benchmark, docs/synthetic_data.md 'Worlds' (default: standard)")
    synth.add_argument("--vocabulary", action="store_true",
                       help="also write vocabulary.csv (class names, YouTube-8M's layout) for data ingest --vocabulary")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(handler=run_synth)

    ingest = commands.add_parser(
        "ingest",
        help="TFRecord shards -> frame store",
        description="Validate YouTube-8M frame-level TFRecord shards and write them into a frame store "
        "(atomically: a failed ingest leaves nothing at --out).",
    )
    ingest.add_argument("--src", required=True, help="TFRecord file, folder or glob (local or gs://)")
    ingest.add_argument("--out", required=True, help="frame store folder to write (local or gs://)")
    ingest.add_argument(
        "--vocabulary", metavar="FILE",
        help="class names: YouTube-8M's vocabulary.csv or an index,name CSV (local or gs://); kept in the store, "
        "sets the class count (docs/your_own_data.md)",
    )
    ingest.add_argument(
        "--num-classes", type=int,
        help="class count without names (default: the vocabulary's; else a recognised YouTube-8M release's, "
        "4716 for 2017 and 3862 for 2018; else the largest label + 1, printed)",
    )
    ingest.add_argument("--rgb-dim", type=int, metavar="BYTES",
                        help="rgb bytes per frame (default: read from the records; YouTube-8M: 1024)")
    ingest.add_argument("--audio-dim", type=int, metavar="BYTES",
                        help="audio bytes per frame (default: read from the records; YouTube-8M: 128)")
    ingest.add_argument("--skip-invalid", action="store_true", help="skip and count invalid records instead of failing")
    ingest.add_argument(
        "--unlabelled", action="store_true",
        help="the shards have no labels (the official test set): a store for predict, refused by training/evaluation",
    )
    ingest.add_argument("--allow-empty", action="store_true", help="accept shards without records (an error otherwise)")
    ingest.add_argument("--workers", type=int, default=1, help="parallel processes, one shard each (default: 1)")
    ingest.add_argument("--shard-size", type=int, metavar="FRAMES", help="frames per frame-store shard file (default: the store's)")
    ingest.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    ingest.add_argument("--quiet", action="store_true", help="no progress bar")
    ingest.set_defaults(handler=run_ingest)

    inspect = commands.add_parser(
        "inspect",
        help="counts, length histogram and label frequencies of TFRecords or a frame store",
        description="Describe TFRecord shards (file, folder, glob) or a frame store: videos, frames, a "
        "frame-length histogram, label frequencies; invalid TFRecord records are counted, not fatal.",
    )
    inspect.add_argument("path", help="frame store folder, or TFRecord file/folder/glob (local or gs://)")
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.add_argument("--num-classes", type=int, help="count labels outside [0, N) as invalid (TFRecords)")
    inspect.add_argument("--quiet", action="store_true", help="no progress bar")
    inspect.set_defaults(handler=run_inspect)

    download = commands.add_parser(
        "download",
        help="download real YouTube-8M frame-level shards (resumable, checksum-verified)",
        description="Download YouTube-8M (2018+) frame-level shards with the official mirror layout: the "
        "checksum index <mirror>/2/download_plans/frame_<split>.json, then <mirror>/2/frame/<split>/<file>. "
        "Verified files are skipped on a re-run; partial files are continued.",
    )
    download.add_argument("--out", required=True, help="output folder (local: partial files resume in place)")
    amount = download.add_mutually_exclusive_group()
    amount.add_argument("--fraction", type=float, help="about this fraction of the files (the official shard=1,N)")
    amount.add_argument("--shards", type=int, help="the first N files")
    download.add_argument("--split", choices=("train", "validate", "test"), default="train", help="default: train")
    download.add_argument("--mirror", help="base URL of a mirror (default: the official data.yt8m.org hosts)")
    download.add_argument("--quiet", action="store_true", help="no progress bars")
    download.set_defaults(handler=run_download)

    split = commands.add_parser(
        "split",
        help="record the train/validation/test split of a frame store",
        description="Assign each video of a frame store to train/validation/test by a stable hash of its id "
        "and record it in the store (re-runs and re-sharding never move a video).",
    )
    split.add_argument("store", help="frame store folder (local or gs://)")
    split.add_argument("--validation-fraction", type=float, default=0.1, help="default: 0.1")
    split.add_argument("--test-fraction", type=float, default=0.2, help="default: 0.2 (0 with --test-store)")
    split.add_argument("--train-fraction", type=float, default=1.0, help="seeded training subset (default: 1.0)")
    split.add_argument("--seed", type=int, default=0, help="seed of the training subset (default: 0)")
    split.add_argument("--test-store", help="a separate frame store used as the test set")
    split.set_defaults(handler=run_split)


def run_synth(args: argparse.Namespace) -> int:
    """Handler of ``fewframes data synth``."""
    from fewframes.data.synth import SYNTH_PRESETS, GenerativeModel, generate_synthetic

    fsio.check_output_dir(args.out, "--out")
    preset = SYNTH_PRESETS[args.preset]
    changes = {k: v for k, v in (("videos", args.videos), ("classes", args.classes), ("seed", args.seed)) if v is not None}
    data = preset.data.replace(**changes)
    model = GenerativeModel(fixed_frames=preset.fixed_frames, world=args.world)
    if fsio.is_gcs(args.out):
        # Generate locally, then upload with the manifest last: a reader that sees it sees every shard.
        staging = fsio.local_temp_dir("fewframes-synth-")
        try:
            manifest = generate_synthetic(staging, data, shards=args.shards, model=model, progress=not args.quiet,
                                          vocabulary=args.vocabulary)
            fsio.upload_dir(staging, args.out, last=("manifest.json",))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    else:
        created = not os.path.lexists(args.out)
        try:
            with fsio.output_errors(args.out):
                manifest = generate_synthetic(args.out, data, shards=args.shards, model=model, progress=not args.quiet,
                                              vocabulary=args.vocabulary)
        except BaseException:
            if created:  # a folder this command made holds nothing anyone asked for (e.g. after a full disk)
                shutil.rmtree(args.out, ignore_errors=True)
            raise
    print(
        f"wrote {manifest['videos']} videos ({manifest['frames']} frames, {manifest['classes']} classes, "
        f"seed {manifest['seed']}) in {len(manifest['shards'])} shard(s) to {args.out}"
    )
    return 0


def run_ingest(args: argparse.Namespace) -> int:
    """Handler of ``fewframes data ingest``."""
    from fewframes.data.ingest import ingest
    from fewframes.data.store import is_frame_store

    fsio.check_output_dir(args.out, "--out", inputs=(args.src,), may_replace=is_frame_store)
    with fsio.output_errors(args.out):
        summary = ingest(
            args.src,
            args.out,
            num_classes=args.num_classes,
            vocabulary=args.vocabulary,
            rgb_dim=args.rgb_dim,
            audio_dim=args.audio_dim,
            skip_invalid=args.skip_invalid,
            workers=args.workers,
            shard_max_frames=args.shard_size,
            progress=not args.quiet,
            labelled=not args.unlabelled,
            allow_empty=args.allow_empty,
        )
    if args.json and summary.classes_note:
        print(summary.classes_note, file=sys.stderr)  # the one line a user must see, outside the JSON
    print(json.dumps(summary.to_dict()) if args.json else "\n".join(summary.lines()))
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    """Handler of ``fewframes data inspect``."""
    from fewframes.data.inspect import format_report, inspect_path

    report = inspect_path(args.path, num_classes=args.num_classes, progress=not (args.quiet or args.json))
    print(json.dumps(report) if args.json else format_report(report))
    return 0


def run_download(args: argparse.Namespace) -> int:
    """Handler of ``fewframes data download``."""
    from fewframes.data.download import download

    if fsio.is_gcs(args.out):
        # It continues partial files in place and skips verified ones on a re-run: that needs a local folder.
        raise DataError(
            f"--out {args.out}: download writes a local folder (partial files resume in place); "
            "copy it to gs:// afterwards (gcloud storage cp -r)"
        )
    fsio.check_output_dir(args.out, "--out")
    summary = download(
        args.out, split=args.split, fraction=args.fraction, shards=args.shards, mirror=args.mirror, progress=not args.quiet
    )
    print(
        f"{summary.selected} file(s) of {summary.split}: {summary.downloaded} downloaded "
        f"({summary.bytes_downloaded:,} bytes), {summary.skipped_verified} already verified, in {summary.out}"
    )
    return 0


def run_split(args: argparse.Namespace) -> int:
    """Handler of ``fewframes data split``."""
    try:
        from fewframes.data.split import write_split
    except ImportError as exc:
        raise DataError(f"data split is unavailable: {exc}") from None
    summary = write_split(
        args.store,
        validation_fraction=args.validation_fraction,
        test_fraction=args.test_fraction,
        train_fraction=args.train_fraction,
        seed=args.seed,
        test_store=args.test_store,
    )
    json.dump(summary, sys.stdout, indent=2, default=str)
    print()
    return 0
