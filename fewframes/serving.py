"""A trained fewframes model as an MLflow 3 pyfunc model: ``mlflow models serve`` answers videos with top-k classes.

Request (``POST /invocations``, JSON)::

    {"dataframe_records": [{"video_id": "abc1", "rgb": [[...1024 ints 0..255], ...], "audio": [[...128], ...]}],
     "params": {"top_k": 20}}

one record per video, its YouTube-8M quantised frame features: ``rgb`` uint8 [n, 1024] and ``audio`` uint8
[n, 128] as nested lists (another extractor's widths, e.g. 2048 + 128, for a model trained on them), any n
from 1 to 300. Answer: one row per video, ``video_id``, ``labels`` (the top_k class ids, highest score first,
ties by lower label), ``names`` (those classes' names, from the vocabulary of the store the model was trained
on; '' where it had none) and ``scores`` (their sigmoid scores) -- the same pairs ``fewframes predict`` writes. A student reads only its k frames (fewframes' own frame selection,
``fewframes.benchmark.frame_positions``): only those rows are converted to arrays and fed to the model.
Videos are classified in batches of ``PREDICT_BATCH`` in request order with the selection generator seeded
by ``params.seed`` (0), exactly as ``predict`` does, so a request holding a store's videos in order answers
what ``predict`` writes for that store.

Saving choices: the model is an MLflow "model from code" (``python_model`` is a small script calling
``mlflow.models.set_model``), so nothing is pickled; the weights are the fewframes model file itself, an
artifact loaded with ``fewframes.training.load_model`` (``torch.load(weights_only=True)``); the fewframes
package travels in ``code_paths`` so the model loads where fewframes is not installed.

This module imports mlflow: the core library does not import it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from fewframes.config import AUDIO_DIM, MAX_FRAMES, RGB_DIM

MODEL_FILE_ARTIFACT = "model_file"
PREDICT_BATCH = 64  # predict()'s default batch: same batches, same numbers
DEFAULT_TOP_K = 20
_ENTRY_SCRIPT = """\
# The served model's entry point (MLflow "model from code": nothing pickled).
import mlflow

from fewframes.serving import FewFramesPyfunc

mlflow.models.set_model(FewFramesPyfunc())
"""


def _bad_request(message: str) -> Exception:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _frames_of(video: Mapping[str, Any], row: int) -> tuple[Any, Any, int]:
    rgb, audio = video.get("rgb"), video.get("audio")
    if rgb is None or audio is None:
        raise _bad_request(f"video {row}: needs both 'rgb' and 'audio' frame lists")
    n = len(rgb)
    if not 1 <= n <= MAX_FRAMES:
        raise _bad_request(f"video {row}: rgb has {n} frames; 1 to {MAX_FRAMES} are accepted")
    if len(audio) != n:
        raise _bad_request(f"video {row}: rgb has {n} frames but audio has {len(audio)}")
    return rgb, audio, n


def _rows(frames: Any, positions: np.ndarray, width: int, name: str, row: int) -> np.ndarray:
    """The selected frames only, checked: uint8 [len(positions), width]."""
    try:
        values = np.asarray([np.asarray(frames[int(i)], dtype=np.int64) for i in positions], dtype=np.int64)
    except (TypeError, ValueError):
        raise _bad_request(f"video {row}: {name} frames must be lists of {width} integers") from None
    if values.size and (values.ndim != 2 or values.shape[1] != width):
        raise _bad_request(f"video {row}: each {name} frame must hold {width} values")
    if values.size and (values.min() < 0 or values.max() > 255):
        raise _bad_request(f"video {row}: {name} values must be quantised bytes 0..255")
    return values.reshape(len(positions), width).astype(np.uint8)


class FewFramesPyfunc(mlflow.pyfunc.PythonModel):
    """Loads the fewframes model file artifact; ``predict`` maps videos' frames to top-k (labels, scores)."""

    def load_context(self, context: Any) -> None:
        from fewframes.benchmark import student_config_of
        from fewframes.training import load_model

        self.model = load_model(context.artifacts[MODEL_FILE_ARTIFACT]).eval()
        self.student = student_config_of(self.model)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return classify_videos(self.model, self.student, model_input, params)


def classify_videos(model: Any, student: Any, videos: pd.DataFrame, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Top-k labels, names and scores of each video (row) of ``videos``; see the module docstring."""
    import torch

    from fewframes.benchmark import classify_batch, frame_positions
    from fewframes.predict import top_k_pairs

    config = getattr(model, "config", None)
    rgb_dim, audio_dim = config.widths if config is not None else (RGB_DIM, AUDIO_DIM)
    class_names = getattr(model, "class_names", None)

    params = dict(params or {})
    top_k = int(params.get("top_k", DEFAULT_TOP_K))
    if top_k < 1:
        raise _bad_request(f"params.top_k must be >= 1, got {top_k}")
    rng = np.random.default_rng(int(params.get("seed", 0)))
    records = videos.to_dict("records")
    ids = [str(r.get("video_id") or i) if not _missing(r.get("video_id")) else str(i) for i, r in enumerate(records)]
    labels_out: list[list[int]] = []
    names_out: list[list[str]] = []
    scores_out: list[list[float]] = []
    device = torch.device("cpu")
    with torch.inference_mode():
        for start in range(0, len(records), PREDICT_BATCH):
            batch = records[start : start + PREDICT_BATCH]
            selections = []
            for offset, video in enumerate(batch):
                rgb, audio, n = _frames_of(video, start + offset)
                positions, real = frame_positions(n, student, rng)
                chosen = positions[real]
                selected = np.concatenate(
                    [_rows(rgb, chosen, rgb_dim, "rgb", start + offset), _rows(audio, chosen, audio_dim, "audio", start + offset)],
                    axis=1,
                )
                selections.append((len(positions), selected))
            slots = max(length for length, _ in selections)
            frames = np.zeros((len(batch), slots, rgb_dim + audio_dim), dtype=np.uint8)
            mask = np.zeros((len(batch), slots), dtype=bool)
            for row, (_, selected) in enumerate(selections):
                frames[row, : len(selected)] = selected
                mask[row, : len(selected)] = True
            scores = classify_batch(model, frames, None if mask.all() else mask, device)
            for video_scores in scores:
                pairs = top_k_pairs(video_scores, top_k)
                labels_out.append([label for label, _ in pairs])
                names_out.append([class_names[label] if class_names else "" for label, _ in pairs])
                scores_out.append([score for _, score in pairs])
    return pd.DataFrame({"video_id": ids, "labels": labels_out, "names": names_out, "scores": scores_out})


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def model_signature() -> Any:
    """Input: video_id (optional string), rgb/audio (arrays of arrays of ints); params top_k, seed; output: labels,
    names, scores."""
    from mlflow.models import ModelSignature
    from mlflow.types import DataType
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

    frames = Array(Array(DataType.long))
    inputs = Schema([
        ColSpec(DataType.string, "video_id", required=False),
        ColSpec(frames, "rgb"),
        ColSpec(frames, "audio"),
    ])  # fmt: skip
    outputs = Schema([
        ColSpec(DataType.string, "video_id"),
        ColSpec(Array(DataType.long), "labels"),
        ColSpec(Array(DataType.string), "names"),
        ColSpec(Array(DataType.double), "scores"),
    ])  # fmt: skip
    params = ParamSchema([ParamSpec("top_k", DataType.long, DEFAULT_TOP_K), ParamSpec("seed", DataType.long, 0)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def input_example(n_frames: int = 3, rgb_dim: int = RGB_DIM, audio_dim: int = AUDIO_DIM) -> pd.DataFrame:
    """A small request: one video of ``n_frames`` frames of ``rgb_dim`` + ``audio_dim`` bytes (a deterministic
    byte pattern)."""
    base = np.arange(n_frames * (rgb_dim + audio_dim), dtype=np.int64).reshape(n_frames, -1) % 256
    return pd.DataFrame(
        {"video_id": ["example"], "rgb": [base[:, :rgb_dim].tolist()], "audio": [base[:, rgb_dim:].tolist()]}
    )


def videos_frame(videos: list[tuple[str, np.ndarray]], rgb_dim: int = RGB_DIM) -> pd.DataFrame:
    """A request DataFrame from (id, uint8 frames [n, D]) pairs, the first ``rgb_dim`` bytes of a frame its rgb."""
    return pd.DataFrame({
        "video_id": [video_id for video_id, _ in videos],
        "rgb": [frames[:, :rgb_dim].tolist() for _, frames in videos],
        "audio": [frames[:, rgb_dim:].tolist() for _, frames in videos],
    })  # fmt: skip


def save_pyfunc(model_file: str | os.PathLike[str], path: str | os.PathLike[str], *, mlflow_model: Any = None) -> Path:
    """Write the pyfunc model folder ``path`` for the fewframes model file ``model_file`` (local)."""
    import numpy
    import torch

    import fewframes

    from fewframes.training.results import check_model_config, read_model_file

    package = Path(fewframes.__file__).parent
    rgb_dim, audio_dim = check_model_config(model_file, read_model_file(model_file)["model_config"]).widths
    requirements = [
        f"torch=={torch.__version__.split('+')[0]}", f"numpy=={numpy.__version__}", f"pandas=={pd.__version__}",
        f"mlflow=={mlflow.__version__}", "pyarrow",
    ]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="fewframes-pyfunc-") as tmp:
        entry = Path(tmp) / "fewframes_model.py"
        entry.write_text(_ENTRY_SCRIPT)
        code = Path(tmp) / "code" / "fewframes"
        import shutil

        shutil.copytree(package, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        with _quiet("mlflow"):
            mlflow.pyfunc.save_model(
                path=os.fspath(path),
                python_model=str(entry),
                artifacts={MODEL_FILE_ARTIFACT: os.fspath(model_file)},
                code_paths=[str(code)],
                signature=model_signature(),
                input_example=input_example(rgb_dim=rgb_dim, audio_dim=audio_dim),
                pip_requirements=requirements,
                mlflow_model=mlflow_model,
            )
    return Path(path)


def log_pyfunc(
    client: Any,
    run_id: str,
    experiment_id: str,
    model_file: str | os.PathLike[str],
    *,
    name: str = "model",
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Any:
    """Log ``model_file`` as an MLflow 3 logged model (output of run ``run_id``); returns the ``LoggedModel``.

    Uses ``client`` throughout (never MLflow's process-global tracking URI or active run), doing what
    ``mlflow.pyfunc.log_model`` does: create the logged model, link it as the run's output, save the model
    with its ``model_id`` in MLmodel, upload, mark READY.
    """
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model

    from fewframes import fsio

    logged = client.create_logged_model(
        experiment_id,
        name=name,
        source_run_id=run_id,
        params={str(k): str(v) for k, v in (params or {}).items()},
        tags={str(k): str(v) for k, v in (tags or {}).items()},
        model_type="fewframes",
    )
    try:
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        metadata = Model(
            artifact_path=logged.artifact_location, model_uuid=logged.model_id, run_id=run_id, model_id=logged.model_id
        )
        with tempfile.TemporaryDirectory(prefix="fewframes-logged-model-") as tmp, fsio.local_input_file(
            os.fspath(model_file)
        ) as local_file:
            folder = save_pyfunc(local_file, Path(tmp) / "model", mlflow_model=metadata)
            client.log_model_artifacts(logged.model_id, str(folder))
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    return client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LoopbackServer:
    """A server process answering on ``url`` (http://127.0.0.1:PORT); ``stop()`` (or leaving a ``with``) stops
    its whole process group: MLflow's servers fork workers, and stopping the group stops them all."""

    def __init__(self, url: str, process: Any, log_path: Path) -> None:
        self.url = url
        self.process = process
        self.log_path = log_path

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM the process group; SIGKILL it if it has not exited 15 s later."""
        import signal
        import subprocess

        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def __enter__(self) -> "LoopbackServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def answers(url: str, timeout_s: float = 2.0) -> bool:
    """Whether a GET of ``url`` answers 200 now."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200
    except OSError:  # URLError, refused, reset, timed out
        return False


def start_loopback_server(
    command: list[str],
    port: int,
    ready_path: str,
    log_path: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    start_timeout_s: float = 180.0,
    poll_s: float = 0.3,
) -> LoopbackServer:
    """Run ``command`` (a server that listens on 127.0.0.1:``port``) in its own process group, its output to
    ``log_path``, and wait until GET ``ready_path`` answers 200. Returns its ``LoopbackServer``; raises
    ``RuntimeError`` with the log's tail (and stops it) if it exits or does not answer within ``start_timeout_s``."""
    import shlex
    import subprocess
    import time

    log_path = Path(log_path)
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=None if env is None else dict(env), cwd=cwd,
            start_new_session=True,
        )  # fmt: skip
    server = LoopbackServer(url, process, log_path)
    deadline = time.monotonic() + start_timeout_s
    while not answers(url + ready_path):
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(
                f"{shlex.join(command)} did not answer {url}{ready_path} (exit {process.poll()}); "
                f"{log_path}:\n{server.log_tail()}"
            )
        time.sleep(poll_s)
    return server


def serve_model(
    model_uri: str,
    log_path: str | os.PathLike[str],
    *,
    tracking_uri: str | None = None,
    env: Mapping[str, str] | None = None,
    start_timeout_s: float = 180.0,
) -> LoopbackServer:
    """``mlflow models serve -m model_uri --env-manager local`` (one worker) on a free loopback port, answering
    ``/ping``: its ``LoopbackServer`` (``url``; ``stop()``, or use it in a ``with``). ``tracking_uri`` resolves
    ``models:/`` and ``runs:/`` URIs (else the environment's ``MLFLOW_TRACKING_URI``)."""
    import sys

    port = free_loopback_port()
    # mlflow runs `uvicorn` from PATH: this interpreter's bin folder (a venv's) first
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    server_env = dict(os.environ if env is None else env, PATH=path)
    server_env.setdefault("OMP_NUM_THREADS", "1")
    if tracking_uri is not None:
        server_env["MLFLOW_TRACKING_URI"] = tracking_uri
    command = [
        sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    return start_loopback_server(command, port, "/ping", log_path, env=server_env, start_timeout_s=start_timeout_s)


class _quiet:
    """Silence a logger below ERROR for a block (MLflow's notes about inferred environments)."""

    def __init__(self, name: str) -> None:
        import logging

        self.logger = logging.getLogger(name)

    def __enter__(self) -> None:
        self.level = self.logger.level
        self.logger.setLevel(40)

    def __exit__(self, *exc: Any) -> None:
        self.logger.setLevel(self.level)


__all__ = [
    "FewFramesPyfunc", "LoopbackServer", "MODEL_FILE_ARTIFACT", "answers", "classify_videos", "free_loopback_port",
    "input_example", "log_pyfunc", "model_signature", "save_pyfunc", "serve_model", "start_loopback_server",
    "videos_frame",
]  # fmt: skip
