"""Fault injection: every fault of docs/faults.md gives one line naming the path/flag and exit status 2, and
nothing already written is lost.

Real faults, no stubs: a read-only folder (as root, with the capabilities that bypass file permissions
dropped by ``capsh``; a non-root user gets it from the permission bits alone), a full disk (a tiny tmpfs
mounted in a private mount namespace with ``unshare -m``), files where folders belong and the reverse.
A case whose tool the machine lacks is skipped, saying so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fewframes.cli import main
from fewframes.cli.progress import EVENT_LINE
from fewframes.config import ModelConfig, StudentConfig
from fewframes.models import build_model
from fewframes.training import save_model

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------


def cli(*args: str, prefix: tuple[str, ...] = (), timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``fewframes ARGS`` in a fresh process (optionally under a wrapper such as capsh/unshare)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", FEWFRAMES_DEBUG="")
    command = [*prefix, sys.executable, "-m", "fewframes", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def stderr_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    """stderr without blank lines, progress bars (tqdm's lines hold "NN%|") and `fewframes run`'s progress lines."""
    return [line for line in done.stderr.replace("\r", "\n").splitlines()
            if line.strip() and "%|" not in line and not EVENT_LINE.match(line)]


def one_line_error(done: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """The run ended with exit status 2 and exactly one stderr line (no traceback) holding ``fragments``."""
    lines = stderr_lines(done)
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith("fewframes: error: "), done.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def in_process_error(capsys: pytest.CaptureFixture[str], argv: list[str], *fragments: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, (code, err)
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def _capsh_prefix() -> tuple[str, ...]:
    """A wrapper under which writing into a mode-555 folder is refused: none for a non-root user; for root,
    capsh dropping CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (the capabilities that ignore permission bits)."""
    if os.geteuid() != 0:
        return ()
    capsh = shutil.which("capsh")
    if capsh is None:
        pytest.skip("running as root without capsh: cannot make a folder read-only for this process")
    probe = subprocess.run(
        [capsh, "--drop=cap_dac_override,cap_dac_read_search", "--", "-c", "true"], capture_output=True
    )
    if probe.returncode != 0:
        pytest.skip(f"capsh cannot drop capabilities here: {probe.stderr.decode()[:200]}")
    return (capsh, "--drop=cap_dac_override,cap_dac_read_search", "--")


def as_restricted(prefix: tuple[str, ...], args: list[str]) -> subprocess.CompletedProcess[str]:
    if not prefix:
        return cli(*args)
    import shlex

    command = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "fewframes", *args])
    env = dict(os.environ, FEWFRAMES_DEBUG="")
    return subprocess.run([*prefix, "-c", command], capture_output=True, text=True, timeout=300, env=env, cwd=REPO)


def on_full_disk(mount: Path, size: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``fewframes ARGS`` with a ``size`` tmpfs mounted at ``mount`` in a private mount namespace (the
    mount vanishes with the process); skip where the machine does not allow it."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("a small file system needs unshare and root (mount namespace) on this machine")
    probe = subprocess.run([unshare, "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {mount}"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {probe.stderr.decode()[:200]}")
    import shlex

    command = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "fewframes", *args])
    script = f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(mount))} && {command}; code=$?; ls -A {shlex.quote(str(mount))} >&2; exit $code"
    env = dict(os.environ, FEWFRAMES_DEBUG="")
    done = subprocess.run([unshare, "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    # The folder listing (what the command left in the small file system) is stderr's last lines.
    return done


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small saved student (12 classes, k=6), as `fewframes predict --model` takes it."""
    torch.manual_seed(0)
    config = ModelConfig(num_classes=12, hidden_size=8, num_layers=1, block_length=3)
    path = tmp_path_factory.mktemp("model") / "student.pt"
    save_model(build_model(config), path, config, StudentConfig(k=6), role="student")
    return path


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory: pytest.TempPathFactory, tiny_tfrecords: Path) -> Path:
    from fewframes.data.ingest import ingest

    store = tmp_path_factory.mktemp("store") / "store"
    ingest(str(tiny_tfrecords), str(store), num_classes=12, progress=False)
    return store


# ----------------------------------------------------------------------------------------------------------
# 1. the error boundary: OS errors and bad outputs are one line, exit 2, checked before any work
# ----------------------------------------------------------------------------------------------------------


def test_read_only_output_folder_is_one_line_for_ingest_predict_and_run(
    tmp_path: Path, tiny_tfrecords: Path, tiny_store: Path, model_file: Path
) -> None:
    prefix = _capsh_prefix()
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        done = as_restricted(prefix, ["data", "ingest", "--src", str(tiny_tfrecords), "--out", str(locked / "store"), "--quiet"])
        one_line_error(done, f"--out {locked / 'store'}", "permission denied")
        done = as_restricted(prefix, ["predict", "--model", str(model_file), "--src", str(tiny_store), "--out", str(locked / "p.csv")])
        one_line_error(done, f"--out {locked / 'p.csv'}", "permission denied")
        done = as_restricted(prefix, ["run", "--preset", "tiny", "--out", str(locked / "run")])
        one_line_error(done, f"--out {locked / 'run'}", "permission denied")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_unreadable_source_folder_is_permission_denied_not_no_shards(tmp_path: Path, tiny_tfrecords: Path) -> None:
    prefix = _capsh_prefix()
    locked = tmp_path / "shards"
    shutil.copytree(tiny_tfrecords, locked)
    locked.chmod(0o000)
    try:
        for command in (["data", "inspect", str(locked), "--quiet"],
                        ["data", "ingest", "--src", str(locked), "--out", str(tmp_path / "s"), "--quiet"]):
            one_line_error(as_restricted(prefix, command), f"{locked}: permission denied")
    finally:
        locked.chmod(0o755)


def test_run_out_that_is_a_file_is_refused_before_anything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "a-file"
    target.write_text("keep me\n")
    in_process_error(capsys, ["run", "--preset", "tiny", "--out", str(target)], f"--out {target}", "is an existing file")
    assert target.read_text() == "keep me\n"
    # A file higher up the path: "not a folder", named.
    in_process_error(capsys, ["run", "--preset", "tiny", "--out", str(target / "run")], str(target), "is a file, not a folder")


def test_predict_out_that_is_a_folder_is_refused_before_predicting(
    tmp_path: Path, model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    # The source does not exist: the --out check must come first, before the model or the source is read.
    in_process_error(capsys, ["predict", "--model", str(model_file), "--src", str(tmp_path / "nope"), "--out", str(folder)],
                     f"--out {folder}", "is a folder")
    in_process_error(capsys, ["export", "--model", str(model_file), "--out", str(folder)], f"--out {folder}", "is a folder")


def test_predict_out_equal_to_an_input_is_refused(tmp_path: Path, model_file: Path, tiny_store: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "model.pt"
    shutil.copy(model_file, copy)
    before = copy.read_bytes()
    in_process_error(capsys, ["predict", "--model", str(copy), "--src", str(tiny_store), "--out", str(copy)],
                     f"--out {copy}", "is also an input")
    assert copy.read_bytes() == before


def test_malformed_gcs_bucket_name_is_one_line(tmp_path: Path, model_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    in_process_error(capsys, ["predict", "--model", str(model_file), "--src", str(tmp_path), "--out", "gs://Bad_Bucket!/p.csv"],
                     "gs://Bad_Bucket!/p.csv", "malformed bucket name 'Bad_Bucket!'")
    in_process_error(capsys, ["data", "ingest", "--src", "gs://UPPER/x.tfrecord", "--out", str(tmp_path / "s")],
                     "malformed bucket name 'UPPER'")


def test_full_disk_is_one_line_and_leaves_nothing(tmp_path: Path, tiny_tfrecords: Path, tiny_store: Path, model_file: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    # ingest: the store (~37 MB of frames) does not fit in 1 MiB
    done = on_full_disk(small, "1m", ["data", "ingest", "--src", str(tiny_tfrecords), "--out", str(small / "store"), "--quiet"])
    lines = stderr_lines(done)
    assert done.returncode == 2, done.stderr[-2000:]
    assert lines[0] == f"fewframes: error: {small / 'store'}: no space left on the device", lines
    assert lines[1:] == []  # the listing of the small disk afterwards: empty (no store, no temp folder)
    # synth: no empty folder left behind
    done = on_full_disk(small, "256k", ["data", "synth", "--preset", "tiny", "--out", str(small / "synth"), "--quiet"])
    lines = stderr_lines(done)
    assert done.returncode == 2 and "no space left on the device" in lines[0], done.stderr[-2000:]
    assert lines[1:] == []
    # predict: the CSV (160 lines of 20 pairs) does not fit in 8 KiB; the previous file stays
    done = on_full_disk(small, "8k", ["predict", "--model", str(model_file), "--src", str(tiny_store), "--out", str(small / "p.csv")])
    lines = stderr_lines(done)
    assert done.returncode == 2 and lines[0] == f"fewframes: error: {small / 'p.csv'}: no space left on the device", done.stderr[-2000:]
    assert lines[1:] == []


def test_parameters_are_checked_before_any_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for param, fragment in (
        ("max_epochs=0", "--param max_epochs=0: must be >= 1"),
        ("learning_rate=-0.01", "--param learning_rate=-0.01: must be >= 0"),
        ("batch_size=0", "--param batch_size=0"),
        ("hidden_size=0", "--param hidden_size=0"),
        ("teacher_block_length=0", "--param teacher_block_length=0"),
        ("test_fraction=1.5", "--param test_fraction=1.5"),
        ("device=tpu", "--param device=tpu"),
    ):
        run_dir = tmp_path / param.split("=")[0]
        in_process_error(capsys, ["run", "--preset", "tiny", "--out", str(run_dir), "--param", param], fragment)
        assert not run_dir.exists()  # refused before the run folder, MLflow or ingest


def test_a_combination_certain_to_fail_later_is_refused_before_any_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A serial L_rep student (loss (a)) trains L_rep, then L_CE: with max_epochs=1 its distill-student task
    failed a minute into the run, after the teachers had trained. Now refused up front, naming both
    parameters; the same settings without a serial rep student are accepted."""
    from fewframes.cli.pipeline import check_arguments
    from fewframes.errors import PipelineError
    from fewframes.pipelines.dag import parameter_defaults

    run_dir = tmp_path / "rep"
    in_process_error(capsys, ["run", "--pipeline", "paper", "--preset", "tiny", "--out", str(run_dir),
                              "--param", 'losses=["rep"]', "--param", "max_epochs=1"],
                     "--param max_epochs=1: losses has rep", "max_epochs >= 2")
    assert not run_dir.exists()
    for pipeline in ("paper", "distill"):
        arguments = {**parameter_defaults(pipeline, "tiny"), "max_epochs": 1}
        with pytest.raises(PipelineError, match="--param max_epochs=1: losses has rep"):
            check_arguments({**arguments, "losses": ["rep_ce", "rep"], "modes": ["serial"]})
        check_arguments({**arguments, "losses": ["rep_ce", "rep_pred_ce"]})  # one stage each
        check_arguments({**arguments, "losses": ["rep"], "modes": ["parallel"]})  # parallel: one stage
        check_arguments({**arguments, "losses": ["rep"], "max_epochs": 2})


def test_debug_flag_shows_the_traceback(tmp_path: Path) -> None:
    done = cli("--debug", "run", "--preset", "tiny", "--out", str(tmp_path / "r"), "--param", "max_epochs=0")
    assert done.returncode == 1 and "Traceback" in done.stderr and "PipelineError" in done.stderr
    done = cli("run", "--preset", "tiny", "--out", str(tmp_path / "r"), "--param", "max_epochs=0")
    one_line_error(done, "--param max_epochs=0")


# ----------------------------------------------------------------------------------------------------------
# 2. outputs never replace what they should not; stale temporaries are cleaned and reported
# ----------------------------------------------------------------------------------------------------------


def test_ingest_out_equal_to_its_own_input_is_refused(tmp_path: Path, tiny_tfrecords: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shard = tmp_path / "x.tfrecord"
    shutil.copy(sorted(tiny_tfrecords.glob("*.tfrecord"))[0], shard)
    before = shard.read_bytes()
    in_process_error(capsys, ["data", "ingest", "--src", str(shard), "--out", str(shard), "--quiet"], f"--out {shard}")
    assert shard.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tfrecord"]  # no hidden .old- copy either
    # the folder of the shards as --out: refused too (it is not a frame store)
    in_process_error(capsys, ["data", "ingest", "--src", str(tmp_path), "--out", str(tmp_path), "--quiet"], f"--out {tmp_path}")
    assert shard.read_bytes() == before


def test_ingest_out_that_is_another_regular_file_is_refused(tmp_path: Path, tiny_tfrecords: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("mine\n")
    in_process_error(capsys, ["data", "ingest", "--src", str(tiny_tfrecords), "--out", str(other), "--quiet"],
                     f"--out {other}", "existing file")
    assert other.read_text() == "mine\n" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    from fewframes.data.store import FrameStoreWriter
    from fewframes.errors import StoreError

    with pytest.raises(StoreError, match="existing file"):  # the library refuses as well, before any work
        FrameStoreWriter(other, num_classes=3)


def test_stale_temporaries_of_a_killed_ingest_are_removed_and_reported(
    tmp_path: Path, tiny_tfrecords: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / ".store.tmp-0123abcd"
    stale.mkdir()
    (stale / "shard-00000.arrow").write_bytes(b"x" * 100)
    parts = tmp_path / ".store.parts-89abcdef"
    parts.mkdir()
    unrelated = tmp_path / ".other.tmp-0123abcd"
    unrelated.mkdir()
    assert main(["data", "ingest", "--src", str(tiny_tfrecords), "--out", str(tmp_path / "store"), "--quiet", "--num-classes", "12"]) == 0
    printed = capsys.readouterr().out
    assert "removed 2 temporary folder(s) left by a killed earlier run" in printed and str(stale) in printed
    assert not stale.exists() and not parts.exists() and unrelated.exists()


# ----------------------------------------------------------------------------------------------------------
# 3. TFRecords: cut shards, empty shards, nothing kept, video-level and float data, ids, labels, unlabelled
# ----------------------------------------------------------------------------------------------------------


def _record(video_id: bytes = b"vid1", labels: list[int] | None = (3,), frames: int = 3, *, floats: bool = False,
            video_level: bool = False) -> bytes:
    """One SequenceExample built field by field (the official schema unless told otherwise)."""
    import tensorflow as tf

    example = tf.train.SequenceExample()
    example.context.feature["id"].bytes_list.value.append(video_id)
    if labels is not None:
        example.context.feature["labels"].int64_list.value.extend(labels)
    if video_level:  # the official video-level schema: means in the context, no frame lists
        example.context.feature["mean_rgb"].float_list.value.extend([0.5] * 1024)
        example.context.feature["mean_audio"].float_list.value.extend([0.5] * 128)
        return example.SerializeToString()
    for name, width in (("rgb", 1024), ("audio", 128)):
        feature_list = example.feature_lists.feature_list[name]
        for i in range(frames):
            if floats:
                feature_list.feature.add().float_list.value.extend([0.1] * width)
            else:
                feature_list.feature.add().bytes_list.value.append(bytes([i % 256]) * width)
    return example.SerializeToString()


def _shard(path: Path, records: list[bytes]) -> Path:
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    return path


def test_shard_cut_inside_a_record_header_names_shard_and_offset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = [_record(f"v{i}".encode()) for i in range(3)]
    shard = _shard(tmp_path / "cut.tfrecord", records)
    whole = len(records[0]) + 16 + len(records[1]) + 16
    shard.write_bytes(shard.read_bytes()[: whole + 5])  # 5 bytes of record 2's 8-byte length header
    out = tmp_path / "store"
    in_process_error(capsys, ["data", "ingest", "--src", str(shard), "--out", str(out), "--quiet", "--num-classes", "5"],
                     f"{shard}: 5 byte(s) at offset {whole} (after record 1) are not a whole record")
    assert not out.exists()
    # --skip-invalid keeps the whole records and counts the cut one
    assert main(["data", "ingest", "--src", str(shard), "--out", str(out), "--quiet", "--num-classes", "5", "--skip-invalid"]) == 0
    assert "invalid skipped 1 (1 shard(s) cut short by corruption)" in capsys.readouterr().out


def test_empty_shard_and_nothing_kept_are_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.tfrecord").write_bytes(b"")
    out = tmp_path / "store"
    in_process_error(capsys, ["data", "ingest", "--src", str(empty), "--out", str(out), "--quiet"],
                     f"{empty / 'a.tfrecord'}: empty TFRecord shard", "--allow-empty")
    # allowed explicitly, beside a shard with records
    _shard(empty / "b.tfrecord", [_record(b"v1")])
    assert main(["data", "ingest", "--src", str(empty), "--out", str(out), "--quiet", "--num-classes", "5", "--allow-empty"]) == 0
    assert "empty shards   1" in capsys.readouterr().out
    # --skip-invalid that keeps nothing: labels out of range in every record
    bad = _shard(tmp_path / "bad.tfrecord", [_record(f"v{i}".encode(), labels=[9]) for i in range(4)])
    in_process_error(capsys, ["data", "ingest", "--src", str(bad), "--out", str(tmp_path / "none"), "--quiet",
                              "--num-classes", "5", "--skip-invalid"],
                     "no video to ingest from 1 shard(s): all 4 record(s) were invalid and skipped", "label 9 out of range")
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (dict(video_level=True), "video-level data (context 'mean_rgb'/'mean_audio', no per-frame lists)"),
        (dict(floats=True), "'rgb' frame 0 holds 1024 float values; fewframes reads uint8-quantised frames"),
        (dict(video_id=b"a,b"), "video id holds whitespace or a comma"),
        (dict(video_id=b"a\nb"), "video id holds a character that is not printable"),
        (dict(video_id=b"a\x00b"), "video id holds a character that is not printable"),
        (dict(video_id=b"\xff\xfe"), "video id is not valid UTF-8"),
        (dict(video_id=b""), "video id is empty"),
        (dict(labels=None), "missing context feature 'labels' (an unlabelled set such as the official test partition? "
                            "ingest it with --unlabelled)"),
    ],
)
def test_records_of_another_kind_are_named_as_such(tmp_path: Path, capsys: pytest.CaptureFixture[str], record: dict,
                                                   message: str) -> None:
    shard = _shard(tmp_path / "s.tfrecord", [_record(**record)])
    in_process_error(capsys, ["data", "ingest", "--src", str(shard), "--out", str(tmp_path / "store"), "--quiet"],
                     f"{shard} record 0", message)


def test_duplicate_labels_are_dropped_and_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fewframes.data.store import FrameStore

    shard = _shard(tmp_path / "s.tfrecord", [_record(b"v1", labels=[3, 3, 1, 3]), _record(b"v2", labels=[2, 2])])
    assert main(["data", "ingest", "--src", str(shard), "--out", str(tmp_path / "store"), "--quiet", "--num-classes", "5"]) == 0
    assert "duplicate labels dropped 3" in capsys.readouterr().out
    store = FrameStore.open(tmp_path / "store")
    assert [labels.tolist() for labels in store.labels] == [[3, 1], [2]]


def test_unlabelled_shards_ingest_predict_and_are_refused_by_training_and_evaluation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model_file: Path
) -> None:
    from fewframes.config import TrainConfig
    from fewframes.data.store import FrameStore
    from fewframes.errors import StoreError
    from fewframes.evaluation import evaluate
    from fewframes.training import load_model
    from fewframes.training.data import open_training_data

    shard = _shard(tmp_path / "test0000.tfrecord", [_record(f"t{i}".encode(), labels=None, frames=8) for i in range(5)])
    store = tmp_path / "store"
    assert main(["data", "ingest", "--src", str(shard), "--out", str(store), "--quiet", "--num-classes", "12", "--unlabelled"]) == 0
    assert "labels         none (--unlabelled" in capsys.readouterr().out
    assert not FrameStore.open(store).labelled
    # predict, from the store and from the unlabelled shard itself
    for src in (store, shard):
        out = tmp_path / f"{src.name}.csv"
        assert main(["predict", "--model", str(model_file), "--src", str(src), "--out", str(out), "--top-k", "2"]) == 0
        assert len(out.read_text().splitlines()) == 1 + 5
    capsys.readouterr()
    refusal = f"{store}: an unlabelled frame store (ingested with --unlabelled) cannot be used for"
    in_process_error(capsys, ["data", "split", str(store)], refusal)
    with pytest.raises(StoreError, match="cannot be used for the train split"):
        open_training_data(str(store), TrainConfig(epochs=1, batch_size=2))
    with pytest.raises(StoreError, match="cannot be used for the test split"):
        evaluate(load_model(model_file), str(store), split="test", strategy="uniform", k=6)


# ----------------------------------------------------------------------------------------------------------
# 4. model files: checksum, configuration limits, architecture mismatch, not a model at all
# ----------------------------------------------------------------------------------------------------------


def _predict_args(model: Path, store: Path, out: Path) -> list[str]:
    return ["predict", "--model", str(model), "--src", str(store), "--out", str(out)]


def _crafted(model_file: Path, target: Path, *, checksum: bool = True, **config_changes: int) -> Path:
    """``model_file``'s payload with ``config_changes``, re-checksummed (as a crafting attacker would) or not."""
    from fewframes.training.results import CHECKSUM_KEY, payload_checksum

    payload = torch.load(model_file, weights_only=True)
    payload["model_config"].update(config_changes)
    payload.pop(CHECKSUM_KEY)
    if checksum:
        payload[CHECKSUM_KEY] = payload_checksum(payload)
    torch.save(payload, target)
    return target


def test_model_file_with_flipped_bytes_is_refused(tmp_path: Path, model_file: Path, tiny_store: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    data = bytearray(model_file.read_bytes())
    weights = torch.load(model_file, weights_only=True)["state_dict"]
    largest = max(weights.values(), key=lambda t: t.numel()).contiguous().view(torch.uint8).numpy().tobytes()
    start = bytes(data).find(largest[:256])
    assert start > 0
    for i in range(64):  # 64 flipped bytes inside the largest weight
        data[start + 100 + i] ^= 0xFF
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(bytes(data))
    out = tmp_path / "p.csv"
    in_process_error(capsys, _predict_args(damaged, tiny_store, out),
                     f"model file {damaged} is damaged: its content does not match its checksum")
    assert not out.exists()
    # 64 flipped bytes anywhere else (zip headers, the pickle): always one line, exit 2
    size = len(model_file.read_bytes())
    for position in (0, size // 7, size // 3, size - 200):
        data = bytearray(model_file.read_bytes())
        for i in range(64):
            data[min(position + i, size - 1)] ^= 0xFF
        damaged.write_bytes(bytes(data))
        line = in_process_error(capsys, _predict_args(damaged, tiny_store, out), f"model file {damaged}")
        assert "weights_only" not in line


def test_crafted_model_configuration_is_refused_before_any_allocation(tmp_path: Path, model_file: Path, tiny_store: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    huge = _crafted(model_file, tmp_path / "huge.pt", num_classes=10**9)
    in_process_error(capsys, _predict_args(huge, tiny_store, tmp_path / "p.csv"),
                     f"model file {huge}: model_config.num_classes = 1000000000 is over the limit 100,000")
    # each size within its limit, together far too many weights (hidden 60,000: ~15 billion)
    wide = _crafted(model_file, tmp_path / "wide.pt", hidden_size=60_000)
    in_process_error(capsys, _predict_args(wide, tiny_store, tmp_path / "p.csv"),
                     f"model file {wide}: its model_config describes", "weights, over the limit 2,000,000,000")


def test_architecture_mismatch_is_one_line(tmp_path: Path, model_file: Path, tiny_store: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    other = _crafted(model_file, tmp_path / "other.pt", hidden_size=16)
    line = in_process_error(capsys, _predict_args(other, tiny_store, tmp_path / "p.csv"),
                            f"model file {other}: weights do not fit its model_config: ",
                            "in the file,", "for its model_config (and")
    assert "[32, 1152] in the file, [64, 1152]" in line  # the LSTM's first weight: 4 gates x hidden


def test_a_file_that_is_not_a_model_is_one_line_without_unsafe_advice(tmp_path: Path, tiny_store: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "picture.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    line = in_process_error(capsys, _predict_args(png, tiny_store, tmp_path / "p.csv"),
                            f"model file {png} is damaged or not a fewframes model file")
    assert "weights_only" not in line
    pickle_file = tmp_path / "other.pt"
    torch.save({"some": "dict"}, pickle_file)
    in_process_error(capsys, _predict_args(pickle_file, tiny_store, tmp_path / "p.csv"), "is not a fewframes model")


def test_model_file_without_checksum_loads_with_a_warning(tmp_path: Path, model_file: Path, tiny_store: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    old = _crafted(model_file, tmp_path / "old.pt", checksum=False)
    out = tmp_path / "p.csv"
    assert main(_predict_args(old, tiny_store, out)) == 0
    err = capsys.readouterr().err
    assert f"fewframes: warning: model file {old} has no checksum" in err
    assert len(out.read_text().splitlines()) == 1 + 160


# ----------------------------------------------------------------------------------------------------------
# 5. MLflow: a dead server fails the run within a minute with one line; SIGTERM/Ctrl-C close the parent run
# ----------------------------------------------------------------------------------------------------------


def _start_run(run_dir: Path, *extra: str, resume: bool = False) -> tuple[subprocess.Popen[str], Path]:
    """``fewframes run --preset tiny --out RUN_DIR`` (or ``--resume RUN_DIR``) in its own session (as a
    terminal would run it); its stderr goes to RUN_DIR.stderr (appended to)."""
    log = run_dir.parent / f"{run_dir.name}.stderr"
    env = dict(os.environ, FEWFRAMES_DEBUG="", PYTHONUNBUFFERED="1")
    where = ["--resume", str(run_dir)] if resume else ["--preset", "tiny", "--out", str(run_dir)]
    process = subprocess.Popen(
        [sys.executable, "-m", "fewframes", "run", *where, *extra],
        stdout=subprocess.DEVNULL, stderr=open(log, "a"), text=True, env=env, cwd=REPO, start_new_session=True,
        preexec_fn=ctrl_c_as_in_a_terminal,
    )
    return process, log


def ctrl_c_as_in_a_terminal() -> None:
    """SIGINT back to its default in the child, as a terminal's shell leaves it: a pytest started in the
    background by a non-interactive shell (`make test &`) inherits SIGINT ignored, and Python then never
    raises KeyboardInterrupt, so a Ctrl-C test would see the run go on to the end."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_tasks(run_dir: Path, process: subprocess.Popen[str], count: int, timeout_s: float = 600) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while len(list((run_dir / "kfp").glob("**/executor_output.json"))) < count:
        assert process.poll() is None, f"the run ended early: {process.returncode}"
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.5)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace"):
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def _parent_status(uri: str) -> str:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("fewframes")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`fewframes.step` = 'pipeline'")
    assert len(runs) == 1
    return runs[0].info.status


def _running_child_runs(uri: str) -> list[str]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("fewframes")
    runs = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'RUNNING'")
    return [run.info.run_name for run in runs]


@pytest.mark.slow
def test_dead_mlflow_server_fails_the_run_within_a_minute_with_one_line(tmp_path: Path) -> None:
    import time

    from mlflow_server import kill_mlflow_server, running_mlflow_server

    with running_mlflow_server(tmp_path / "server") as uri:
        run_dir = tmp_path / "run"
        process, log = _start_run(run_dir, "--tracking-uri", uri)
        try:
            _wait_for_tasks(run_dir, process, 3)  # start-tracking, ingest/split and a plan have logged
            kill_mlflow_server(uri)
            killed = time.monotonic()
            process.wait(timeout=180)
            seconds = time.monotonic() - killed
        finally:
            if process.poll() is None:
                os.killpg(process.pid, 9)
    done = subprocess.CompletedProcess(process.args, process.returncode, "", log.read_text())
    line = one_line_error(done, uri)
    assert seconds < 60, (seconds, line)
    assert _processes_mentioning(str(run_dir)) == []


@pytest.mark.slow
def test_sigterm_ends_the_parent_run_killed_and_every_child(tmp_path: Path) -> None:
    import signal

    from fewframes.runs import local_tracking_uri

    from fewframes.cli.resume import alive as _alive, descendants as _descendants

    run_dir = tmp_path / "run"
    process, log = _start_run(run_dir)
    try:
        _wait_for_tasks(run_dir, process, 3)
        children = _descendants(process.pid)  # the steps (and the warm step server) under way
        assert children, "no step was running"
        os.kill(process.pid, signal.SIGTERM)  # the run alone, not its process group: children must be stopped
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
    assert process.returncode == 143, log.read_text()[-2000:]
    assert "fewframes: terminated (SIGTERM)" in log.read_text()
    assert _parent_status(local_tracking_uri(run_dir)) == "KILLED"
    assert _running_child_runs(local_tracking_uri(run_dir)) == []  # the cut-short steps' runs ended KILLED too
    assert [pid for pid in children if _alive(pid)] == []
    assert _processes_mentioning(str(run_dir)) == []


# 6. resume (Ctrl-C, SIGKILL, --resume): tests/test_faults_resume.py
