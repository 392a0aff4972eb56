"""A trained student served by a REAL ``mlflow models serve`` answers what ``fewframes predict`` writes.

The student is logged to a real MLflow server (tests/mlflow_server.py) as an MLflow 3 logged model
(pyfunc from code, the fewframes model file as its artifact), registered with the ``champion`` alias, and
served from ``models:/NAME@champion`` with ``--env-manager local`` on a loopback port the OS picked.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from fewframes.config import FEATURE_DIM, PRESETS, StudentConfig
from fewframes.data.store import FrameStore, FrameStoreWriter
from fewframes.models import build_model, student_model_config
from fewframes.predict import predict, read_predictions
from fewframes.training.results import save_model

mlflow = pytest.importorskip("mlflow")

TINY = PRESETS["tiny"]
CLASSES = TINY.data.classes
LENGTHS = [80, 3, 45, 20, 300, 7, 30, 12]  # some shorter than k: the student's padded, masked path
SERVE_START_S = 120.0


@pytest.fixture(scope="module")
def store_and_student(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("serving")
    rng = np.random.default_rng(0)
    with FrameStoreWriter(folder / "store", num_classes=CLASSES) as writer:
        for i, length in enumerate(LENGTHS):
            frames = rng.integers(0, 256, (length, FEATURE_DIM), dtype=np.uint8)
            writer.add(f"vid{i}", [i % CLASSES], frames[:, :1024], frames[:, 1024:])
    torch.manual_seed(0)
    student = StudentConfig(k=6)
    config = student_model_config(TINY.model_config(), student.k)
    model = build_model(config).eval()
    save_model(model, folder / "student.pt", config, student, role="student")
    return folder / "store", folder / "student.pt"


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.mark.slow
def test_served_student_answers_what_predict_writes(mlflow_server: str, store_and_student, tmp_path: Path) -> None:
    from fewframes.serving import serve_model
    from fewframes.tracking import Tracker

    store_path, model_file = store_and_student
    with Tracker.start(mlflow_server, "serving-test", "student k=6", params={"k": 6}) as tracker:
        model_id = tracker.log_model_file(model_file, name="student")
        version = tracker.register_model(model_id, "fewframes-serving-test")
    client = mlflow.MlflowClient(mlflow_server)
    logged = client.get_logged_model(model_id)
    assert logged.source_run_id == tracker.run_id and str(logged.status) == "READY"
    assert client.get_model_version_by_alias("fewframes-serving-test", "champion").version == version

    with serve_model(
        "models:/fewframes-serving-test@champion", tmp_path / "serve.log", tracking_uri=mlflow_server,
        start_timeout_s=SERVE_START_S,
    ) as server:  # fmt: skip
        url = server.url
        store = FrameStore.open(store_path)
        ids = list(store.video_ids)
        records = []
        for index, video_id in enumerate(ids):
            frames = store.read_frames(index, np.arange(int(store.lengths[index])))
            records.append({"video_id": video_id, "rgb": frames[:, :1024].tolist(), "audio": frames[:, 1024:].tolist()})
        status, answer = _post(f"{url}/invocations", {"dataframe_records": records, "params": {"top_k": 5}})
        assert status == 200, answer

        predict(model_file, store_path, tmp_path / "predictions.csv", top_k=5, progress=False)
        expected = read_predictions(tmp_path / "predictions.csv")
        rows = answer["predictions"]
        assert [row["video_id"] for row in rows] == ids
        for row in rows:
            pairs = expected[row["video_id"]]
            assert row["labels"] == [label for label, _ in pairs]
            assert row["names"] == [""] * len(pairs)  # the store had no vocabulary: no names to give
            # predict writes %f (6 decimals): the served scores round to the same figures
            assert [f"{score:f}" for score in row["scores"]] == [f"{score:f}" for _, score in pairs]

        status, answer = _post(
            f"{url}/invocations", {"dataframe_records": [{"video_id": "bad", "rgb": [[1, 2]], "audio": [[3]]}]}
        )
        assert status >= 400 and "1024" in json.dumps(answer), answer


def test_pyfunc_reads_only_the_students_frames(store_and_student) -> None:
    """The pyfunc converts only the k selected rows; a frame it does not select may hold anything."""
    from fewframes.benchmark import frame_positions
    from fewframes.serving import classify_videos, videos_frame
    from fewframes.training import load_model

    store_path, model_file = store_and_student
    model = load_model(model_file)
    store = FrameStore.open(store_path)
    frames = store.read_frames(0, np.arange(int(store.lengths[0])))
    chosen, _ = frame_positions(len(frames), model.student_config, np.random.default_rng(0))
    request = videos_frame([("vid0", frames)])
    unselected = [i for i in range(len(frames)) if i not in set(chosen.tolist())]
    damaged = request.copy()
    rgb = list(damaged.at[0, "rgb"])
    for i in unselected:
        rgb[i] = "not a frame"  # never read: would fail the uint8 conversion if it were
    damaged.at[0, "rgb"] = rgb
    assert classify_videos(model, model.student_config, damaged).equals(
        classify_videos(model, model.student_config, request)
    )


def test_loopback_server_waits_for_its_ready_path_and_stops_its_process_group(tmp_path: Path) -> None:
    """start_loopback_server (what serve_model and tests/mlflow_server.py use), with a real Python http.server:
    it returns once the ready path answers, stop() ends the process; a server that exits at once is one
    RuntimeError naming its log, with the log's tail."""
    import sys

    from fewframes.serving import answers, free_loopback_port, start_loopback_server

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "ready").write_text("yes")
    port = free_loopback_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path / "site")]
    with start_loopback_server(command, port, "/ready", tmp_path / "http.log", start_timeout_s=60) as server:
        assert server.url == f"http://127.0.0.1:{port}" and answers(f"{server.url}/ready")
    assert server.process.poll() is not None and not answers(f"{server.url}/ready")

    failing = [sys.executable, "-c", "import sys; print('no model here'); sys.exit(3)"]
    with pytest.raises(RuntimeError, match=r"(?s)exit 3.*failing\.log.*no model here"):
        start_loopback_server(failing, free_loopback_port(), "/ping", tmp_path / "failing.log", start_timeout_s=60)
