"""gs:// end to end through the command lines, on a real GCS emulator (gcp-storage-emulator on 127.0.0.1).

synth -> ingest -> split -> train a teacher -> distil a student -> predict, with the TFRecords, the frame
store, the models and the predictions all in the emulated bucket; every command runs through its entry
point (``fewframes.cli.main``, ``fewframes.training.__main__.main``) in this process. The resumable-upload
threshold is lowered through its real setting ($FEWFRAMES_GCS_RESUMABLE_THRESHOLD), so model files and
store shards take the chunked resumable path, seen in the emulator's own request log.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
from store_helpers import gcs_emulator, write_store
from training_helpers import run_training_process, training_command

from fewframes import fsio
from fewframes.cli import main as fewframes_main
from fewframes.training.__main__ import main as training_main
from fewframes.training.loop import PROGRESS_FILE

BUCKET = "fewframes-e2e"
ROOT = f"gs://{BUCKET}/run"
CLASSES = 5
EMULATOR_LOGGER = "gcp_storage_emulator.server"


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    with gcs_emulator(BUCKET) as url:
        yield url


@pytest.fixture
def local_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """An empty working folder and an empty temp folder (tempfile's, so every staging folder lands there)."""
    work, temp = tmp_path / "work", tmp_path / "temp"
    work.mkdir()
    temp.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    # torch keeps its compile cache in the temp folder on purpose (it outlives the process): not ours to check.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "torch-cache"))
    return work, temp


def _run_cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = fewframes_main(argv)
    out, err = capsys.readouterr()
    assert code == 0, f"fewframes {' '.join(argv)} exited {code}: {err}"
    return out


def _run_training(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    code = training_main(argv)
    out, err = capsys.readouterr()
    assert code == 0, f"python -m fewframes.training {' '.join(argv)} exited {code}: {err}"
    return json.loads(out.strip().splitlines()[-1])


def _objects(prefix: str) -> list[str]:
    return fsio.listdir(prefix)


def _assert_kaggle_predictions(path: str, video_ids: list[str]) -> dict[str, list[tuple[int, float]]]:
    from fewframes.predict import CSV_HEADER, read_predictions

    lines = fsio.read_bytes(path).decode("utf-8").splitlines()
    assert lines[0] == CSV_HEADER and len(lines) == 1 + len(video_ids)
    rows = read_predictions(path)
    assert sorted(rows) == sorted(video_ids), "one row per video of the store"
    for pairs in rows.values():
        labels = [label for label, _ in pairs]
        scores = [score for _, score in pairs]
        assert len(pairs) == CLASSES and sorted(labels) == list(range(CLASSES))  # top-20 of 5 classes: all
        assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    return rows


def test_ingest_train_predict_all_on_gcs(
    emulator: str,
    local_dirs: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fewframes.data.store import FrameStore

    work, temp = local_dirs
    monkeypatch.setenv(fsio.RESUMABLE_THRESHOLD_ENV, str(64 * 1024))
    monkeypatch.setenv(fsio.RESUMABLE_CHUNK_SIZE_ENV, str(256 * 1024))
    caplog.set_level(logging.INFO, logger=EMULATOR_LOGGER)
    tfrecords, store, teacher_dir, student_dir = (f"{ROOT}/{name}" for name in ("tfrecords", "store", "teacher", "student"))

    _run_cli(capsys, ["data", "synth", "--out", tfrecords, "--preset", "tiny", "--videos", "24",
                      "--classes", str(CLASSES), "--shards", "2", "--quiet"])
    assert _objects(tfrecords) == ["manifest.json", "synth-00000-of-00002.tfrecord", "synth-00001-of-00002.tfrecord"]
    ingested = json.loads(_run_cli(capsys, ["data", "ingest", "--src", tfrecords, "--out", store,
                                            "--num-classes", str(CLASSES), "--json", "--quiet"]))
    assert ingested["videos"] == 24 and ingested["shards"] == 2
    _run_cli(capsys, ["data", "split", store, "--validation-fraction", "0.3", "--test-fraction", "0.2"])
    video_ids = list(FrameStore.open(store).video_ids)

    common = ["--store", store, "--no-progress",
              "--train-config", json.dumps({"epochs": 1, "batch_size": 8, "num_workers": 0, "device": "cpu"})]
    model_config = {"num_classes": CLASSES, "hidden_size": 8, "num_layers": 1, "block_length": 10}
    teacher = _run_training(capsys, ["teacher", "--out", teacher_dir, "--model-config", json.dumps(model_config), *common])
    assert teacher["model_path"] == f"{teacher_dir}/teacher.pt"
    student = _run_training(capsys, ["student", "--out", student_dir, "--teacher", teacher["model_path"],
                                     "--student-config", json.dumps({"k": 5, "loss": "rep_ce"}), *common])
    assert student["model_path"] == f"{student_dir}/student.pt"
    again = _run_training(capsys, ["teacher", "--out", teacher_dir, "--model-config", json.dumps(model_config), *common])
    assert again == teacher, "a finished run on gs:// is found and returned, not trained again"
    other = json.dumps({**model_config, "hidden_size": 4})
    err = _one_line_error(capsys, training_main(["teacher", "--out", teacher_dir, "--model-config", other, *common]))
    assert f"{teacher_dir} holds a finished run with other settings" in err
    for out_dir, model in ((teacher_dir, "teacher.pt"), (student_dir, "student.pt")):
        objects = set(_objects(out_dir))
        # The serial student left the frozen teacher's outputs beside the teacher (fewframes.training.teacher_cache).
        caches = {name for name in objects if name.startswith("teacher_outputs-") and name.endswith(".pt")}
        assert len(caches) == (1 if model == "teacher.pt" else 0), objects
        assert objects - caches == {"checkpoints", "result.json", PROGRESS_FILE, model}
        assert json.loads(fsio.read_bytes(f"{out_dir}/result.json"))["best"]

    from_store, from_tfrecords = f"{ROOT}/predictions/student.csv", f"{ROOT}/predictions/student-tfrecords.csv"
    _run_cli(capsys, ["predict", "--model", student["model_path"], "--src", store, "--out", from_store])
    _run_cli(capsys, ["predict", "--model", student["model_path"], "--src", tfrecords, "--out", from_tfrecords])
    store_rows = _assert_kaggle_predictions(from_store, video_ids)
    tfrecord_rows = _assert_kaggle_predictions(from_tfrecords, video_ids)
    for video_id in video_ids:  # uniform k frames: the same frames, whichever source they came from
        assert [label for label, _ in store_rows[video_id]] == [label for label, _ in tfrecord_rows[video_id]]

    onnx, bench = f"{ROOT}/student.onnx", f"{ROOT}/benchmark.json"
    _run_cli(capsys, ["export", "--model", student["model_path"], "--out", onnx])
    assert fsio.read_bytes(onnx)[:64] and fsio.listdir(ROOT).count("student.onnx") == 1
    _run_cli(capsys, ["benchmark", "--models", f"teacher={teacher['model_path']}", f"student={student['model_path']}",
                      "--store", store, "--videos", "2", "--batch", "2", "--rounds", "1", "--out", bench])
    assert [row["name"] for row in json.loads(fsio.read_bytes(bench))["rows"]] == ["teacher", "student"]

    assert os.listdir(work) == [] and os.listdir(temp) == [], "nothing local: no outputs, no temp files left"
    requests = [record.getMessage() for record in caplog.records if record.name == EMULATOR_LOGGER]
    resumable_sessions = [r for r in requests if r.startswith('"POST /upload/') and "uploadType=resumable" in r]
    chunks = [r for r in requests if r.startswith('"PUT /upload/') and "uploadType=resumable" in r]
    assert resumable_sessions and len(chunks) > len(resumable_sessions), "files above 64 KiB went up in chunks"


def test_torchrun_ranks_share_one_staging_folder_for_a_gcs_out_dir(
    emulator: str, local_dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes under torchrun, as the training components launch it: rank 0 stages and publishes, the
    other rank reads the best model back from the same local folder; nothing of ours stays in the temp folder."""
    from fewframes.data.split import write_split

    work, temp = local_dirs
    monkeypatch.setenv("TMPDIR", str(temp))  # the training processes' temp folder
    store, out = f"{ROOT}/ddp/store", f"{ROOT}/ddp/baseline"
    write_store(store, [40, 55, 60, 35, 50, 45, 60, 30] * 2, num_classes=4)
    write_split(store, validation_fraction=0.25, test_fraction=0.0)
    command = training_command(
        "baseline", store, out, processes=2,
        model_config={"num_classes": 4, "hidden_size": 8, "num_layers": 1, "block_length": 5},
        train_config={"epochs": 1, "batch_size": 4, "num_workers": 0, "device": "cpu"}, student_config={"k": 5},
    )
    summary = run_training_process(command)
    assert summary["model_path"] == f"{out}/baseline.pt"
    assert set(fsio.listdir(out)) == {"baseline.pt", "checkpoints", "result.json", PROGRESS_FILE}
    assert json.loads(fsio.read_bytes(f"{out}/result.json"))["signature"]["world_size"] == 2
    assert os.listdir(work) == []
    # torchrun and its libraries leave files of their own in the temp folder (torchelastic_*, ...); every
    # staging folder of ours is named fewframes-*.
    assert [name for name in os.listdir(temp) if name.startswith("fewframes-")] == []


def test_a_killed_training_run_resumes_from_its_checkpoints_on_gcs(
    emulator: str, local_dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL (a preempted node: no handler runs) once the first checkpoint is on GCS; the checkpoints the
    mirror had uploaded are found by the next run, which refuses other settings and finishes with the same."""
    import subprocess
    import time

    from fewframes.data.split import write_split

    work, temp = local_dirs
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setenv(fsio.SYNC_SECONDS_ENV, "0.1")  # the real setting: mirror passes every 0.1 s
    store, out = f"{ROOT}/killed/store", f"{ROOT}/killed/teacher"
    write_store(store, [40, 55, 60, 35, 50, 45, 30, 60] * 2, num_classes=4)
    write_split(store, validation_fraction=0.25, test_fraction=0.0)
    model_config = {"num_classes": 4, "hidden_size": 8, "num_layers": 1, "block_length": 5}
    train_config = {"epochs": 3, "batch_size": 4, "num_workers": 0, "device": "cpu"}  # a checkpoint per epoch
    command = training_command("teacher", store, out, model_config=model_config, train_config=train_config)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while not (fsio.exists(f"{out}/checkpoints") and fsio.listdir(f"{out}/checkpoints")):
            assert process.poll() is None, f"training ended before its first checkpoint reached GCS: {process.stderr.read()}"
            assert time.monotonic() < deadline, "no checkpoint on GCS after 120 s"
            time.sleep(0.05)
    finally:
        process.kill()
        process.wait()
        process.stderr.close()
    assert not fsio.exists(f"{out}/result.json"), "killed before the end"
    killed_at = fsio.listdir(f"{out}/checkpoints")

    argv = command[3:]  # the same arguments, through the entry point in this process
    other_seed = [*argv[: argv.index("--train-config") + 1], json.dumps({**train_config, "seed": 7}),
                  *argv[argv.index("--train-config") + 2 :]]
    err = _one_line_error(capsys, training_main(other_seed))
    assert f"{out}/checkpoints holds a checkpoint of a run with other settings (train_config differs)" in err
    assert fsio.listdir(f"{out}/checkpoints") == killed_at, "a refused run changes nothing on GCS"

    summary = _run_training(capsys, argv)
    assert summary["model_path"] == f"{out}/teacher.pt" and len(summary["history"]) == 3
    assert set(fsio.listdir(out)) == {"checkpoints", "result.json", "teacher.pt", PROGRESS_FILE}
    remote = fsio.listdir(f"{out}/checkpoints")
    # Checkpoints pruned locally are pruned on GCS too: only the two newest stay, and the finished run wrote
    # newer ones than the killed run had uploaded (how many the kill left depends on timing: one or two).
    assert len(remote) == 2 and max(remote) > max(killed_at), (remote, killed_at)
    # The killed process could not clean up its staging folder (SIGKILL); the two runs here did.
    assert len([name for name in os.listdir(temp) if name.startswith("fewframes-train-")]) == 1
    assert os.listdir(work) == []


def _one_line_error(capsys: pytest.CaptureFixture[str], code: int) -> str:
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_missing_bucket_object_and_credentials_are_one_line_errors(
    emulator: str,
    local_dirs: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    work, temp = local_dirs
    predict = ["predict", "--src", f"gs://{BUCKET}/no-store", "--out", f"gs://{BUCKET}/out.csv", "--model"]
    err = _one_line_error(capsys, fewframes_main([*predict, "gs://no-such-bucket/teacher.pt"]))
    assert "gs://no-such-bucket/teacher.pt" in err and "bucket no-such-bucket not found" in err
    err = _one_line_error(capsys, fewframes_main([*predict, f"gs://{BUCKET}/missing/teacher.pt"]))
    assert f"gs://{BUCKET}/missing/teacher.pt does not exist" in err
    err = _one_line_error(capsys, training_main(["teacher", "--store", f"gs://{BUCKET}/no-store", "--out",
                                                 f"gs://{BUCKET}/t", "--model-config", '{"num_classes": 3}']))
    assert f"gs://{BUCKET}/no-store" in err
    err = _one_line_error(capsys, fewframes_main(["data", "ingest", "--src", f"gs://{BUCKET}/no-tfrecords/*.tfrecord",
                                                  "--out", f"gs://{BUCKET}/s", "--quiet"]))
    assert f"gs://{BUCKET}/no-tfrecords" in err
    assert not fsio.exists(f"gs://{BUCKET}/out.csv") and not fsio.exists(f"gs://{BUCKET}/s")
    err = _one_line_error(capsys, fewframes_main(["data", "download", "--out", f"gs://{BUCKET}/yt8m", "--shards", "1"]))
    assert f"--out gs://{BUCKET}/yt8m: download writes a local folder" in err  # the one local-only output
    assert os.listdir(work) == [], "no local folder named gs:"

    # No emulator and no Google credentials anywhere: one line, not a google-auth traceback.
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(work / "absent.json"))
    monkeypatch.setattr(fsio, "_CLIENT", None)
    err = _one_line_error(capsys, fewframes_main([*predict, "gs://some-bucket/teacher.pt"]))
    assert "credentials" in err and err.startswith("fewframes: error: gs://")
    monkeypatch.setattr(fsio, "_CLIENT", None)
    assert os.listdir(temp) == []


def test_a_gcs_out_dir_that_cannot_be_read_leaves_no_staging_folder(
    emulator: str, local_dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The staging folder of a gs:// out_dir is made before what the prefix holds is downloaded into it; when
    that download fails (here: no such bucket) the error is one line naming the bucket and the folder goes."""
    from fewframes.data.split import write_split

    _, temp = local_dirs
    store = f"{ROOT}/unreadable-out/store"
    write_store(store, [20, 25, 30, 15] * 2, num_classes=3)
    write_split(store, validation_fraction=0.25, test_fraction=0.0)
    err = _one_line_error(capsys, training_main([
        "teacher", "--store", store, "--out", "gs://no-such-bucket/teacher", "--no-progress",
        "--model-config", '{"num_classes": 3, "hidden_size": 4, "num_layers": 1, "block_length": 5}',
        "--train-config", '{"epochs": 1, "batch_size": 4, "num_workers": 0, "device": "cpu"}',
    ]))
    assert "gs://no-such-bucket/teacher" in err and "bucket no-such-bucket not found" in err
    assert [name for name in os.listdir(temp) if name.startswith("fewframes-")] == []
