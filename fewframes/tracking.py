"""MLflow tracking behind a small class, so the library runs the same with tracking on or off.

``Tracker.start(None, ...)`` (or ``""``) gives a disabled tracker whose methods do nothing; any other URI
starts an MLflow run there: ``sqlite:///path/mlflow.db`` works without a server (the local default), an
``http(s)://host:port`` URI talks to an MLflow server.

Choices:

- ``MlflowClient`` is used explicitly, never MLflow's fluent "active run" stack, so several trackers (a
  pipeline's parent run and a component's child run) coexist in one process and in KFP subprocesses.
  Child runs carry the tag ``mlflow.parentRunId``.
- MLflow params are immutable. Logging a key again with the same value (a resumed run) is skipped; with
  another value it raises ``TrackingError`` naming the key and both values. Nested dicts are flattened
  to dotted keys (``train.epochs``).
- ``log_model_file`` logs a fewframes model file as an MLflow 3 logged model: a pyfunc "model from code"
  (``fewframes.serving``), nothing pickled, with a signature and an input example, through the run's
  client rather than MLflow's process-global tracking URI and active run.
- For ``sqlite:`` URIs a new experiment keeps its artifacts in ``mlartifacts/`` next to the database
  (MLflow's default, ``./mlruns``, would follow whatever folder a KFP subprocess happens to run in).
- Failures of MLflow calls become ``TrackingError`` naming the call and the tracking URI.
- ``start(..., run_id=...)`` re-attaches to an existing run (resuming after preemption).

mlflow is imported inside the functions that use it: the core library imports without it.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from fewframes.errors import TrackingError

PARENT_RUN_TAG = "mlflow.parentRunId"
HEALTH_TIMEOUT_S = 5.0
CHAMPION_ALIAS = "champion"
MODEL_ID_TAG = "fewframes.model_id"  # on a registered model version: the logged model it is
# The MLflow UI's saved ("shared") views of an experiment are experiment tags with this prefix; the page
# ``#/experiments/<id>/runs?viewStateShareKey=<name>`` opens one. fewframes saves MODELS_VIEW on every
# experiment it uses: the models' own runs only, best test GAP first, with their metric and parameter columns
# (the UI's default columns show no metric).
SHARED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."
MODELS_VIEW = "fewframes-models"
MODELS_VIEW_METRICS = ("gap", "map", "hit_at_1", "perr", "gflops", "latency_ms_p50", "throughput_videos_s",
                       "speedup_e2e", "best_val_gap")
MODELS_VIEW_PARAMS = ("k", "frame_selection", "loss", "mode", "family", "seed", "train_fraction")
SYSTEM_METRICS_INTERVAL_S = 5.0
# The experiment tag the MLflow UI reads for the experiment's type; this value is its "machine learning"
# (model training) type, which opens on the runs table rather than the GenAI overview.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
# Characters MLflow 3 refuses in a logged model's name (mlflow.utils.validation._validate_logged_model_name);
# a model key can hold one (``teacher-frac0.5``, a teacher on half the data).
LOGGED_MODEL_NAME_BAD_CHARS = ("/", ":", ".", "%", '"', "'")

# Bounded MLflow HTTP calls (docs/faults.md). MLflow 3's defaults (7 retries, backoff factor 2, jitter 1 s,
# 120 s per request) make a dead server look like a hang for about 8 minutes. These values end a call to a
# dead server (connection refused) in a few seconds and to a hung one in under a minute (3 tries x 15 s + 3 s
# of backoff). They are set in the environment unless it already sets them, so the KFP steps this process
# starts inherit them; a user's own values win.
HTTP_LIMITS: dict[str, str] = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}


def bound_http_retries() -> None:
    """Put :data:`HTTP_LIMITS` in the environment (where not set) before any MLflow client call."""
    for name, value in HTTP_LIMITS.items():
        os.environ.setdefault(name, value)


def _is_http(uri: str) -> bool:
    return urlparse(uri).scheme in ("http", "https")


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///path`` URI (None for other schemes or in-memory)."""
    if not uri.startswith("sqlite:"):
        return None
    path = uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else ""
    if not path or path == ":memory:":
        return None
    # sqlite:////abs/path -> "/abs/path"; sqlite:///rel/path -> "rel/path"
    return Path(path)


def check_tracking_uri(uri: str | None, timeout_s: float = HEALTH_TIMEOUT_S) -> None:
    """Fail now, with one clear line, if tracking at ``uri`` cannot work (``None``/``""``: tracking off).

    http(s): the server's ``/health`` must answer within ``timeout_s``. sqlite: the database's folder must
    exist or be creatable. Other schemes (``file:``, ``databricks``...) are left to MLflow.
    """
    if not uri:
        return
    bound_http_retries()
    if _is_http(uri):
        health = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(health, timeout=timeout_s) as response:
                if response.status != 200:
                    raise TrackingError(f"--tracking-uri {uri}: /health answered HTTP {response.status}")
        except urllib.error.HTTPError as exc:
            raise TrackingError(f"--tracking-uri {uri}: /health answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(f"--tracking-uri {uri}: MLflow server unreachable ({reason})") from None
        return
    database = _sqlite_path(uri)
    if database is not None:
        folder = database.parent if str(database.parent) else Path(".")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(f"--tracking-uri {uri}: cannot create folder {folder} ({exc.strerror})") from None
        if not os.access(folder, os.W_OK):
            raise TrackingError(f"--tracking-uri {uri}: folder {folder} is not writable")


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts to dotted keys, values as the strings MLflow stores (lists/tuples as JSON)."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, prefix=f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(list(value))
        else:
            flat[name] = str(value)
    return flat


def logged_model_name(name: str) -> str:
    """``name`` (a model key) as MLflow accepts it for a logged model: each character MLflow refuses becomes
    ``_`` (``teacher-frac0.5`` -> ``teacher-frac0_5``); the run's ``fewframes.model_key`` tag keeps the key."""
    return "".join("_" if c in LOGGED_MODEL_NAME_BAD_CHARS else c for c in name) or "model"


class Tracker:
    """One MLflow run (or nothing, when disabled). Create with ``Tracker.start``; use as a context manager.

    The constructor is keyword-only and only wraps an existing client and run: ``Tracker(uri, ...)`` is an
    error on purpose (use ``Tracker.start(uri, experiment, run_name)``).
    """

    def __init__(
        self,
        *,
        client: Any = None,
        run_id: str | None = None,
        experiment_id: str | None = None,
        tracking_uri: str | None = None,
        experiment: str | None = None,
    ) -> None:
        self._client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.experiment = experiment
        self.tracking_uri = tracking_uri
        self._params: dict[str, str] = {}
        self._tags: dict[str, str] = {}
        self._ended = False
        self._owns_status = True  # False: a run someone else started and ends (``existing``)
        self._system_metrics: Any = None

    # -- creation -----------------------------------------------------------------------------------

    @classmethod
    def disabled(cls) -> Tracker:
        """A tracker that records nothing."""
        return cls()

    @classmethod
    def start(
        cls,
        tracking_uri: str | None,
        experiment: str,
        run_name: str,
        *,
        parent_run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        system_metrics: bool = False,
    ) -> Tracker:
        """Start (or with ``run_id`` re-attach to) a run in ``experiment``; disabled if ``tracking_uri`` is empty.

        ``system_metrics``: sample CPU, memory, disk, network (and GPU) into the run's ``system/*`` metrics
        until it ends (MLflow's ``SystemMetricsMonitor``; skipped when psutil is missing).
        """
        if not tracking_uri:
            return cls.disabled()
        check_tracking_uri(tracking_uri)
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri)
        tracker = cls(client=client, tracking_uri=tracking_uri, experiment=experiment)
        with tracker._mlflow_call("start run"):
            if run_id:
                run = client.get_run(run_id)
                client.update_run(run_id, status="RUNNING")
                tracker._params = dict(run.data.params)
                tracker._tags = dict(run.data.tags)
                tracker.experiment_id = run.info.experiment_id
                tracker.run_id = run_id
            else:
                tracker.experiment_id = _get_or_create_experiment(client, experiment, tracking_uri)
                all_tags = {str(k): str(v) for k, v in (tags or {}).items()}
                if parent_run_id:
                    all_tags[PARENT_RUN_TAG] = parent_run_id
                run = client.create_run(tracker.experiment_id, run_name=run_name, tags=all_tags)
                tracker._tags = dict(all_tags)
                tracker.run_id = run.info.run_id
        if run_id and tags:
            tracker.set_tags(tags)
        if params:
            tracker.log_params(params)
        if system_metrics:
            tracker._start_system_metrics()
        return tracker

    @classmethod
    def existing(cls, tracking_uri: str | None, run_id: str | None) -> Tracker:
        """A tracker that logs into the existing run ``run_id`` without touching its status (``end`` does
        nothing): e.g. the evaluate step adding test metrics to a finished model run. Disabled if either is empty."""
        if not tracking_uri or not run_id:
            return cls.disabled()
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri)
        tracker = cls(client=client, tracking_uri=tracking_uri, run_id=run_id)
        with tracker._mlflow_call("get run"):
            run = client.get_run(run_id)
        tracker.experiment_id = run.info.experiment_id
        tracker._params = dict(run.data.params)
        tracker._tags = dict(run.data.tags)
        tracker._owns_status = False
        return tracker

    def _start_system_metrics(self) -> None:
        try:
            import psutil  # noqa: F401  (MLflow's monitor needs it)
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
        except ImportError:
            return
        # Every SYSTEM_METRICS_INTERVAL_S: short enough that a short training run gets samples.
        self._system_metrics = SystemMetricsMonitor(
            self.run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S, tracking_uri=self.tracking_uri
        )
        with quiet_logger("mlflow.system_metrics"):
            self._system_metrics.start()

    def start_child(self, run_name: str, **kwargs: Any) -> Tracker:
        """A run nested under this one (same server and experiment); disabled if this one is."""
        if not self.enabled:
            return Tracker.disabled()
        return Tracker.start(self.tracking_uri, self.experiment or "", run_name, parent_run_id=self.run_id, **kwargs)

    # -- state --------------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """True when this tracker records to an MLflow run."""
        return self._client is not None

    @property
    def active(self) -> bool:
        return self.enabled and not self._ended

    @contextmanager
    def _mlflow_call(self, what: str) -> Iterator[None]:
        from mlflow.exceptions import MlflowException

        try:
            yield
        except MlflowException as exc:
            first_line = str(exc.message if hasattr(exc, "message") else exc).splitlines()[0][:300]
            raise TrackingError(f"MLflow {what} failed at {self.tracking_uri}: {first_line}") from None
        except OSError as exc:  # connection refused/reset while the run is going on
            raise TrackingError(f"MLflow {what} failed at {self.tracking_uri}: {exc}") from None

    # -- logging ------------------------------------------------------------------------------------

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params (nested dicts flattened). Same value again: skipped; another value: TrackingError."""
        if not self.active:
            return
        from mlflow.entities import Param

        new: dict[str, str] = {}
        for key, value in flatten_params(params).items():
            known = self._params.get(key)
            if known is None:
                new[key] = value
            elif known != value:
                raise TrackingError(
                    f"MLflow param {key!r} of run {self.run_id} is already {known!r}; refusing to change it to {value!r}"
                )
        items = list(new.items())
        with self._mlflow_call("log_params"):
            for start in range(0, len(items), 100):  # MLflow's per-request param limit
                chunk = items[start : start + 100]
                self._client.log_batch(self.run_id, params=[Param(k, v) for k, v in chunk])
        self._params.update(new)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None, *, model_id: str | None = None) -> None:
        """Log numeric metrics at ``step`` (None: step 0, as MLflow); ``model_id``: also the metrics of that
        logged model (shown on its page)."""
        if not self.active or not metrics:
            return
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        entities = []
        for name, value in metrics.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise TrackingError(f"metric {name!r} must be a number, got {value!r}") from None
            entities.append(Metric(str(name), number, timestamp, int(step or 0), model_id=model_id))
        with self._mlflow_call("log_metrics"):
            for start in range(0, len(entities), 1000):  # MLflow's per-request metric limit
                self._client.log_batch(self.run_id, metrics=entities[start : start + 1000])

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        """Log one metric value at ``step``."""
        self.log_metrics({name: value}, step=step)

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Upload a file, or a folder's contents, under ``artifact_path``."""
        if not self.active:
            return
        local = Path(path)
        if not local.exists():
            raise TrackingError(f"artifact {local} does not exist")
        with self._mlflow_call(f"log_artifact {local.name}"):
            if local.is_dir():
                self._client.log_artifacts(self.run_id, str(local), artifact_path)
            else:
                self._client.log_artifact(self.run_id, str(local), artifact_path)

    def log_dict(self, obj: Any, name: str) -> None:
        """Store ``obj`` as a JSON (or YAML, by extension) artifact file ``name``."""
        if not self.active:
            return
        with self._mlflow_call(f"log_dict {name}"):
            self._client.log_dict(self.run_id, obj, name)

    def log_text(self, text: str, name: str) -> None:
        """Store ``text`` as the artifact file ``name``."""
        if not self.active:
            return
        with self._mlflow_call(f"log_text {name}"):
            self._client.log_text(self.run_id, text, name)

    def log_figure(self, fig: Any, name: str) -> None:
        """Store a matplotlib figure as the image artifact ``name`` (e.g. ``plots/gap.png``)."""
        if not self.active:
            return
        with self._mlflow_call(f"log_figure {name}"):
            self._client.log_figure(self.run_id, fig, name)

    def model_name(self, role: str, secondary: bool = False) -> str:
        """The name to log a model of this run under: the run's model key (tag ``fewframes.model_key``, e.g.
        ``student-serial-rep-final-k10``), ``<key>-<role>`` for a ``secondary`` model (a parallel run's
        co-trained teacher), so names are readable and unique per run; ``role`` when the run has no key.
        ``log_model_file`` logs it as ``logged_model_name`` of it (a key's ``.`` becomes ``_``)."""
        from fewframes.runs import TAG_MODEL_KEY

        key = self._tags.get(TAG_MODEL_KEY, "")
        if not key:
            return role
        return f"{key}-{role}" if secondary else key

    def log_model_file(
        self, model_file: str | os.PathLike[str], name: str = "model", params: Mapping[str, Any] | None = None
    ) -> str | None:
        """Log a fewframes model file as an MLflow 3 logged model (pyfunc, see ``fewframes.serving``), output of
        this run; returns its ``model_id`` (None when disabled). Its params default to this run's params."""
        if not self.active:
            return None
        from fewframes.serving import log_pyfunc

        with self._mlflow_call(f"log model {name}"):
            logged = log_pyfunc(
                self._client, self.run_id, self.experiment_id or "", model_file, name=logged_model_name(name),
                params=dict(self._params) if params is None else flatten_params(params),
            )  # fmt: skip
        return logged.model_id

    def register_model(self, model_id: str, name: str, alias: str = CHAMPION_ALIAS) -> str | None:
        """Register the logged model ``model_id`` as a new version of ``name`` and point ``alias`` at it.

        Returns the version (None when disabled); ``models:/NAME@ALIAS`` then resolves to this model.
        """
        if not self.active:
            return None
        from mlflow.exceptions import MlflowException

        with self._mlflow_call(f"register model {name}"):
            try:
                self._client.create_registered_model(name)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            # The model's artifact location as the source: a ``models:/<id>`` source would be resolved by a
            # local (sqlite) registry through MLflow's process-global tracking URI, not this client's.
            logged = self._client.get_logged_model(model_id)
            # MLflow's own registry stores no model_id (the source links them): the tag keeps the logged model's id.
            # The version's run is the one that logged the model (the model's own run), as the UI links it.
            version = self._client.create_model_version(
                name, source=logged.artifact_location, run_id=logged.source_run_id or self.run_id, model_id=model_id,
                tags={MODEL_ID_TAG: model_id},
            )
            self._client.set_registered_model_alias(name, alias, version.version)
        return str(version.version)

    def log_dataset(
        self, frame: Any, source: str, name: str, context: str = "training", digest: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Log a pandas DataFrame describing a data set (e.g. a split's videos) as this run's dataset input,
        with ``source`` (the frame store's URI) as where it came from and ``tags`` on the input (its context too)."""
        if not self.active:
            return
        import mlflow.data
        from mlflow.entities import DatasetInput, InputTag

        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MLflow's hint about integer columns and missing values
            dataset = mlflow.data.from_pandas(frame, source=source, name=name, digest=digest)
        input_tags = [InputTag("mlflow.data.context", context)] + [InputTag(k, str(v)) for k, v in (tags or {}).items()]
        inputs = [DatasetInput(dataset._to_mlflow_entity(), tags=input_tags)]
        try:
            with self._mlflow_call(f"log_input {name}"):
                self._client.log_inputs(self.run_id, inputs)
        except TrackingError:
            # Parallel steps log the same dataset (the store's train split) at once: on a SQLite store the
            # second insert of its row fails on the unique key. The row exists now; linking it again works.
            with self._mlflow_call(f"log_input {name}"):
                self._client.log_inputs(self.run_id, inputs)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set (or overwrite) run tags."""
        if not self.active:
            return
        from mlflow.entities import RunTag

        with self._mlflow_call("set_tags"):
            self._client.log_batch(self.run_id, tags=[RunTag(str(k), str(v)) for k, v in tags.items()])

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run FINISHED, FAILED or KILLED. Idempotent."""
        if not self.active:
            return
        if status not in ("FINISHED", "FAILED", "KILLED"):
            raise TrackingError(f"run status must be FINISHED, FAILED or KILLED, got {status!r}")
        if self._system_metrics is not None:
            with quiet_logger("mlflow.system_metrics"):
                self._system_metrics.finish()
            self._system_metrics = None
        if self._owns_status:
            with self._mlflow_call("end run"):
                self._client.set_terminated(self.run_id, status=status)
        self._ended = True

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.end("FAILED" if exc_type is not None else "FINISHED")

    def __repr__(self) -> str:
        if not self.enabled:
            return "Tracker(disabled)"
        return f"Tracker(run_id={self.run_id!r}, experiment={self.experiment!r}, uri={self.tracking_uri!r})"


@contextmanager
def quiet_logger(name: str, level: int = logging.ERROR) -> Iterator[None]:
    """Logger ``name`` shows only records at ``level`` and above for the block, then is put back."""
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def models_view_state() -> dict[str, Any]:
    """The MLflow UI view state of ``MODELS_VIEW`` (the fields of the UI's ExperimentPageUIState and search
    facets): model runs only (tag ``fewframes.model_run``), best test GAP first, metric and param columns."""
    from fewframes.runs import TAG_MODEL_RUN

    columns = ["attributes.`Models`", "attributes.`Dataset`"]
    columns += [f"metrics.`{name}`" for name in MODELS_VIEW_METRICS]
    columns += [f"params.`{name}`" for name in MODELS_VIEW_PARAMS]
    return {
        "searchFilter": f"tags.`{TAG_MODEL_RUN}` = 'true'",
        "orderByKey": "metrics.`gap`",
        "orderByAsc": False,
        "selectedColumns": columns,
    }


def models_view_url(ui_url: str, experiment_id: str) -> str:
    """The address of ``MODELS_VIEW`` on the MLflow UI at ``ui_url`` (in the UI's model-training mode)."""
    return (f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs"
            f"?workflowType=machine_learning&viewStateShareKey={MODELS_VIEW}")


def _save_models_view(client: Any, experiment: Any) -> None:
    tag = SHARED_VIEW_TAG_PREFIX + MODELS_VIEW
    if tag not in (experiment.tags or {}):  # a user may have changed it in the UI: theirs stays
        client.set_experiment_tag(experiment.experiment_id, tag, json.dumps(models_view_state()))


def _get_or_create_experiment(client: Any, name: str, tracking_uri: str) -> str:
    from mlflow.exceptions import MlflowException

    if not name:
        raise TrackingError("MLflow experiment name must not be empty")
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        if existing.lifecycle_stage == "deleted":
            raise TrackingError(f"MLflow experiment {name!r} at {tracking_uri} is deleted; restore it or pick another")
        if EXPERIMENT_KIND_TAG not in (existing.tags or {}):  # made before fewframes set it, or by hand
            client.set_experiment_tag(existing.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
        _save_models_view(client, existing)
        return existing.experiment_id
    database = _sqlite_path(tracking_uri)
    location = (database.resolve().parent / "mlartifacts").as_uri() if database is not None else None
    try:
        return client.create_experiment(
            name, artifact_location=location,
            tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND, SHARED_VIEW_TAG_PREFIX + MODELS_VIEW: json.dumps(models_view_state())},
        )
    except MlflowException:
        # Another process created it in between (parallel KFP components).
        existing = client.get_experiment_by_name(name)
        if existing is None:
            raise
        return existing.experiment_id


__all__ = ["CHAMPION_ALIAS", "MODELS_VIEW", "MODEL_ID_TAG", "SHARED_VIEW_TAG_PREFIX", "models_view_state", "models_view_url", "EXPERIMENT_KIND_TAG", "MODEL_TRAINING_KIND", "PARENT_RUN_TAG", "Tracker", "check_tracking_uri", "flatten_params"]
