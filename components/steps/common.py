"""What every step shares: the step result, error reporting, the tracking artifact, model/row files and keys."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from fewframes.config import ConfigError
from fewframes.errors import FewframesError, PipelineError
from fewframes.runs import TrackingContext

# the one-line cause instead of KFP's "task failed".
ERROR_FILE_ENV = "FEWFRAMES_STEP_ERROR_FILE"
# `fewframes run` sets this so two parallel local tasks do not oversubscribe the CPU cores.
TORCH_THREADS_ENV = "FEWFRAMES_TORCH_THREADS"
# "1": a step process ends with Python's full interpreter teardown (see _exit_fast_after_kfp_outputs).
FULL_TEARDOWN_ENV = "FEWFRAMES_FULL_TEARDOWN"

MODEL_INFO_FILE = "model.json"
ROW_FILE = "row.json"
BENCHMARK_FILE = "benchmark.json"

_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass
class StepResult:
    """What a step hands back to its KFP component: scalar metrics (KFP Metrics) and artifact metadata."""

    metrics: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


def reports_errors(step: str) -> Callable[[_F], _F]:
    """Decorator: a FewframesError/ConfigError also goes to the error file named by ``ERROR_FILE_ENV``."""

    def decorate(function: _F) -> _F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from . import warm

            if warm.enabled():  # a local run's warm server: the step runs in a fork of it (warm.py)
                done, result = warm.call(wrapper, args, kwargs)
                if done:
                    return result
            try:
                args = tuple(_resolved(value) for value in args)
                kwargs = {name: _resolved(value) for name, value in kwargs.items()}
                return function(*args, **kwargs)
            except (FewframesError, ConfigError) as exc:
                error_file = os.environ.get(ERROR_FILE_ENV)
                if error_file:
                    with open(error_file, "a") as handle:
                        handle.write(f"{step}: {exc}\n")
                raise

        return wrapper  # type: ignore[return-value]

    return decorate


def _exit_fast_after_kfp_outputs() -> None:
    """In a KFP executor process (``python -m kfp.dsl.executor_main``), end the process with ``os._exit(0)``
    once the executor has written its outputs, skipping the interpreter's teardown of torch, mlflow and
    SQLAlchemy (about 1 CPU-second and several seconds of wall time a step on a busy machine: issue 11).

    KFP's executor writes every output (the executor output file with the artifacts' metadata and the
    function's return value) before ``executor_main`` returns, so after that nothing is left but teardown.
    The handler is registered when this package is imported, before torch or mlflow are, so it runs last of
    the atexit handlers (LIFO): theirs (MLflow's telemetry flush, multiprocessing's, temp-folder
    finalizers registered after it) still run. It exits early only when the executor output file was
    written by this process and no exception reached the top level (``sys.last_value``); otherwise the
    normal exit and its status stand. Elsewhere (tests, the CLI, ``import``) it does nothing, and
    ``FEWFRAMES_FULL_TEARDOWN=1`` turns it off (``benchmarks/step_overhead.py`` compares both).
    """
    import sys

    if os.environ.get(FULL_TEARDOWN_ENV) == "1":
        return
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is None or spec.name != "kfp.dsl.executor_main" or _exit_fast_after_kfp_outputs.registered:
        return
    try:
        index = sys.argv.index("--executor_input")
        output_file = json.loads(sys.argv[index + 1])["outputs"]["outputFile"]
    except (ValueError, IndexError, KeyError, TypeError, json.JSONDecodeError):
        return
    import atexit
    import time

    started = time.time()

    def exit_now() -> None:
        if hasattr(sys, "last_value"):  # an uncaught exception: keep Python's exit status
            return
        try:
            if os.stat(output_file).st_mtime < started - 1:
                return
        except OSError:
            return
        import logging

        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(0)

    atexit.register(exit_now)
    _exit_fast_after_kfp_outputs.registered = True


_exit_fast_after_kfp_outputs.registered = False  # type: ignore[attr-defined]


def _limit_threads() -> None:
    threads = os.environ.get(TORCH_THREADS_ENV)
    if threads:
        import torch

        torch.set_num_threads(max(1, int(threads)))


# In a ``store`` artifact whose frame store lives elsewhere (on GCS, written by ingest-split with a
# ``store_root``): {"uri": ...}. The artifact KFP downloads into each pod is this small file, not the store.
STORE_LOCATION_FILE = "location.json"


def store_location(artifact_path: str | os.PathLike[str]) -> str:
    """The frame store a ``store`` artifact stands for: the URI it points to, read in place (frame-sparse
    ranged reads on ``gs://``), or the artifact folder itself when the store was written into it."""
    pointer = Path(artifact_path) / STORE_LOCATION_FILE
    if pointer.is_file():
        return str(json.loads(pointer.read_text())["uri"])
    return str(artifact_path)


@dataclass(frozen=True)
class PendingTracking(TrackingContext):
    """A ``TrackingContext`` not yet looked up in MLflow: ``reports_errors`` resolves it where the step runs.

    In a local run with the warm server, the step's KFP executor process only forwards its arguments to a
    fork that already has mlflow loaded: resolving there (``import mlflow`` + opening the store, about 2
    CPU-seconds) would make every step pay the import the warm server exists to save (issue 11)."""

    def resolve(self) -> TrackingContext:
        from fewframes.runs import resolve_tracking

        return resolve_tracking(self.uri, self.experiment, self.parent_run_id)


def _resolved(value: Any) -> Any:
    return value.resolve() if isinstance(value, PendingTracking) else value


def tracking_context(tracking_uri: str, experiment: str, parent_run_id: str) -> TrackingContext:
    """Where this step logs (``fewframes.runs.resolve_tracking``): from the stable coordinates every step
    takes as parameters, not from start-tracking's output, so that KFP can serve the step from its cache.
    With a warm step server the lookup is left to the step's fork (``PendingTracking``)."""
    from . import warm

    if warm.enabled():
        return PendingTracking(tracking_uri, experiment, parent_run_id)
    from fewframes.runs import resolve_tracking

    return resolve_tracking(tracking_uri, experiment, parent_run_id)


# The grid's controls (role "control"): the student architecture warm-started from the teacher's classifier and
# trained with L_CE alone (StudentConfig.loss WARM_START_LOSS), and the trained teacher fed k uniform frames.
WARM_START, TEACHER_ON_K = "warm_start", "teacher_on_k"
CONTROLS: tuple[str, ...] = (WARM_START, TEACHER_ON_K)
WARM_START_LOSS = "ce"  # config.CONTROL_LOSSES: the student starts from its teacher's classifier, L_CE alone
ROLES: tuple[str, ...] = ("teacher", "student", "baseline", "control")


def model_key(role: str, /, k: int = 0, **spec: Any) -> str:
    """One readable name per model of a pipeline run (the join key of evaluate, benchmark and report)."""
    fraction = float(spec.get("train_fraction", 1.0))
    suffix = "" if fraction >= 1.0 else f"-frac{fraction:g}"
    if spec.get("repeat"):  # an extra seed of a configuration the pipeline's own seed also trains
        suffix += f"-seed{int(spec['seed'])}"
    if role == "teacher":
        return "teacher" + suffix
    if role == "control":
        return f"control-{spec['control']}-k{k}{suffix}"
    if role == "student":
        return f"student-{spec['mode']}-{spec['loss']}-{spec.get('matching', 'final')}-k{k}{suffix}"
    return f"baseline-{spec['frame_selection']}-k{k}{suffix}"


def model_params(
    role: str,
    k: int | None = None,
    frame_selection: str = "",
    loss: str = "",
    mode: str = "",
    matching: str = "",
    train_fraction: float = 1.0,
    teacher_run_id: str = "",
    seed: int | str = "",
    family: str = "",
    control: str = "",
) -> dict[str, Any]:
    """The same parameter names on every run about a model (``fewframes.runs.MODEL_PARAMS``): ``role`` one of
    ``ROLES``, ``control`` one of ``CONTROLS`` for role control (else blank), ``family`` the model family."""
    return {
        "role": role,
        "family": family,
        "control": control,
        "k": "" if k is None else int(k),
        "frame_selection": frame_selection,
        "loss": loss,
        "mode": mode,
        "matching": matching,
        "train_fraction": float(train_fraction),
        "teacher_run_id": teacher_run_id,
        "seed": seed,
    }


def _write_model_info(model_dir: Path, model_file: Path, info: dict[str, Any]) -> dict[str, Any]:
    info = {**info, "model_file": os.path.relpath(model_file, model_dir)}
    _write_json(model_dir / MODEL_INFO_FILE, info)
    return info


def read_model_info(model_dir: str | os.PathLike[str], what: str = "model") -> dict[str, Any]:
    """The ``model.json`` a training step left in its model directory; a clear error when it is missing."""
    path = Path(model_dir) / MODEL_INFO_FILE
    if not path.is_file():
        raise PipelineError(f"{what} artifact {model_dir} is missing or incomplete (no {MODEL_INFO_FILE})")
    info = json.loads(path.read_text())
    if not (Path(model_dir) / info["model_file"]).is_file():
        raise PipelineError(f"{what} artifact {model_dir} is missing its model file {info['model_file']}")
    return info


def _write_json(path: Path, payload: Any) -> None:
    """Atomic JSON write (``fsio.write_bytes_atomic``: a unique temp name beside it, then rename)."""
    _atomic_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str))


def _atomic_text(path: Path, text: str) -> None:
    """``fsio.write_bytes_atomic``: the temp file gets a unique name and is removed if the write fails."""
    from fewframes.fsio import write_bytes_atomic

    write_bytes_atomic(path, text.encode())


_exit_fast_after_kfp_outputs()
