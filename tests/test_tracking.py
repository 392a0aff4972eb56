"""fewframes.tracking against a real ``mlflow server`` on loopback and a local SQLite store."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")

from fewframes.errors import TrackingError
from fewframes.tracking import PARENT_RUN_TAG, Tracker, check_tracking_uri, flatten_params


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_runs_params_metrics_artifacts_and_parent_link_on_a_real_server(mlflow_server: str, tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with Tracker.start(mlflow_server, "fewframes-test", "pipeline", params={"preset": "tiny"}, tags={"k": 6}) as parent:
        assert parent.enabled and parent.run_id
        with Tracker.start(
            mlflow_server, "fewframes-test", "train-teacher", parent_run_id=parent.run_id, params={"train": {"epochs": 2}}
        ) as child:
            for step, gap in enumerate((0.1, 0.25, 0.4)):
                child.log_metrics({"val_gap": gap, "loss": 1.0 / (step + 1)}, step=step)
            child.log_metric("test_gap", 0.5)
            child.log_dict({"gap": 0.5}, "metrics.json")
            child.log_text("hello", "notes/readme.md")
            report = tmp_path / "per_class_ap.csv"
            report.write_text("class,ap\n0,0.5\n")
            child.log_artifact(report, artifact_path="tables")
            fig, ax = plt.subplots()
            ax.plot([0, 1], [0, 1])
            child.log_figure(fig, "plots/line.png")
            plt.close(fig)
            child.set_tags({"stage": "teacher"})

    client = _client(mlflow_server)
    parent_run = client.get_run(parent.run_id)
    child_run = client.get_run(child.run_id)
    assert parent_run.info.status == "FINISHED" and child_run.info.status == "FINISHED"
    assert parent_run.info.run_name == "pipeline" and child_run.info.run_name == "train-teacher"
    assert parent_run.data.params == {"preset": "tiny"}
    assert parent_run.data.tags["k"] == "6"
    assert child_run.data.tags[PARENT_RUN_TAG] == parent.run_id
    assert child_run.data.tags["stage"] == "teacher"
    assert child_run.data.params == {"train.epochs": "2"}
    history = client.get_metric_history(child.run_id, "val_gap")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(0, 0.1), (1, 0.25), (2, 0.4)]
    assert child_run.data.metrics["test_gap"] == 0.5
    artifacts = {a.path for a in client.list_artifacts(child.run_id)}
    assert {"metrics.json", "notes", "tables", "plots"} <= artifacts
    assert [a.path for a in client.list_artifacts(child.run_id, "plots")] == ["plots/line.png"]
    downloaded = Path(client.download_artifacts(child.run_id, "metrics.json", str(tmp_path / "dl")))
    assert json.loads(downloaded.read_text()) == {"gap": 0.5}
    table = Path(client.download_artifacts(child.run_id, "tables/per_class_ap.csv", str(tmp_path / "dl")))
    assert table.read_text() == "class,ap\n0,0.5\n"


def test_failed_run_is_marked_failed(mlflow_server: str) -> None:
    with pytest.raises(RuntimeError):
        with Tracker.start(mlflow_server, "fewframes-test", "crashes") as tracker:
            raise RuntimeError("training blew up")
    assert _client(mlflow_server).get_run(tracker.run_id).info.status == "FAILED"


def test_params_same_value_skipped_other_value_refused_and_resume(mlflow_server: str) -> None:
    tracker = Tracker.start(mlflow_server, "fewframes-test", "resumable", params={"lr": 0.001, "ks": (6, 30)})
    tracker.log_params({"lr": 0.001})  # a resumed run logs its params again: fine
    with pytest.raises(TrackingError, match="'lr'.*0.001.*0.01"):
        tracker.log_params({"lr": 0.01})
    tracker.end("KILLED")
    # Re-attach after preemption: params already there are known, the run goes back to RUNNING.
    resumed = Tracker.start(mlflow_server, "fewframes-test", "resumable", run_id=tracker.run_id, params={"lr": 0.001})
    assert _client(mlflow_server).get_run(tracker.run_id).info.status == "RUNNING"
    with pytest.raises(TrackingError, match="'ks'"):
        resumed.log_params({"ks": [6]})
    resumed.log_metric("epoch", 3, step=3)
    resumed.end()
    run = _client(mlflow_server).get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.001", "ks": "[6, 30]"}


def test_logged_model_names_are_the_runs_model_key_and_unique_per_run(mlflow_server: str) -> None:
    """A model run's logged models are named by its model key (tag ``fewframes.model_key``); a second,
    secondary model of the run (a parallel run's co-trained teacher) gets ``<key>-<role>``; a run without a
    key names them by role. The torchrun path re-attaches to the run and reads the same tag."""
    key = "student-parallel-rep-final-k10"
    with Tracker.start(mlflow_server, "fewframes-test", "model", tags={"fewframes.model_key": key}) as tracker:
        names = (tracker.model_name("student"), tracker.model_name("teacher", secondary=True))
        reattached = Tracker.start(mlflow_server, "fewframes-test", "model", run_id=tracker.run_id)
        assert reattached.model_name("student") == key
    assert names == (key, f"{key}-teacher")
    with Tracker.start(mlflow_server, "fewframes-test", "no-key") as plain:
        assert plain.model_name("teacher") == "teacher"


def test_sqlite_uri_works_without_a_server_and_keeps_artifacts_beside_the_database(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'tracking' / 'mlflow.db'}"
    with Tracker.start(uri, "local", "run", params={"a": 1}) as tracker:
        tracker.log_metric("gap", 0.3, step=1)
        tracker.log_dict({"x": 1}, "x.json")
        child = tracker.start_child("child")
        child.end()
    run = _client(uri).get_run(tracker.run_id)
    assert run.data.metrics["gap"] == 0.3 and run.data.params == {"a": "1"}
    assert _client(uri).get_run(child.run_id).data.tags[PARENT_RUN_TAG] == tracker.run_id
    assert list((tmp_path / "tracking" / "mlartifacts").rglob("x.json"))


def test_unreachable_server_fails_fast() -> None:
    from mlflow_server import free_port

    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(TrackingError, match="unreachable"):
        check_tracking_uri(uri)
    with pytest.raises(TrackingError, match="127.0.0.1"):
        Tracker.start(uri, "e", "r")
    assert time.monotonic() - started < 10


def test_unroutable_server_times_out_quickly() -> None:
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): connections hang or fail, never succeed.
    started = time.monotonic()
    with pytest.raises(TrackingError, match="192.0.2.1"):
        check_tracking_uri("http://192.0.2.1:5000", timeout_s=1.0)
    assert time.monotonic() - started < 5


def test_disabled_tracker_does_nothing(tmp_path: Path) -> None:
    for uri in (None, ""):
        tracker = Tracker.start(uri, "e", "r", params={"a": 1})
        assert not tracker.enabled and tracker.run_id is None
        with tracker:
            tracker.log_params({"a": 2})
            tracker.log_metrics({"gap": 0.1}, step=1)
            tracker.log_metric("gap", 0.2)
            tracker.log_artifact(tmp_path / "does-not-exist")
            tracker.log_dict({}, "x.json")
            tracker.log_text("", "x.txt")
            tracker.log_figure(object(), "x.png")
            assert tracker.log_model_file(tmp_path / "does-not-exist.pt") is None
            tracker.set_tags({"a": 1})
        assert not tracker.start_child("c").enabled
    assert list(tmp_path.iterdir()) == []
    check_tracking_uri(None)


def test_bad_inputs_raise_tracking_errors(mlflow_server: str, tmp_path: Path) -> None:
    with Tracker.start(mlflow_server, "fewframes-test", "bad-inputs") as tracker:
        with pytest.raises(TrackingError, match="missing.txt"):
            tracker.log_artifact(tmp_path / "missing.txt")
        with pytest.raises(TrackingError, match="'gap' must be a number"):
            tracker.log_metrics({"gap": "high"})
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(TrackingError, match="cannot create folder"):
        check_tracking_uri(f"sqlite:///{blocker / 'sub' / 'mlflow.db'}")


def test_flatten_params() -> None:
    assert flatten_params({"model": {"hidden": 16, "layers": 2}, "ks": (6, 30), "name": "t"}) == {
        "model.hidden": "16",
        "model.layers": "2",
        "ks": "[6, 30]",
        "name": "t",
    }


def test_core_library_imports_without_mlflow() -> None:
    code = (
        "import sys; import fewframes.tracking, fewframes.metrics, fewframes.evaluation; "
        "bad = [m for m in ('mlflow', 'tensorflow', 'kfp', 'matplotlib') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_constructor_is_not_a_way_to_start_a_run() -> None:
    with pytest.raises(TypeError):
        Tracker("sqlite:///x.db", "experiment", run_name="r")  # type: ignore[misc]


def test_system_metrics_sampled_while_a_training_run_lasts(
    mlflow_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``system_metrics=True`` (training steps): MLflow's monitor logs system/* metrics into the run until it ends."""
    pytest.importorskip("psutil")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")  # the test's cadence, not the default 5 s
    with Tracker.start(mlflow_server, "system-metrics", "train", system_metrics=True) as tracker:
        time.sleep(2.0)
    metrics = mlflow.MlflowClient(mlflow_server).get_run(tracker.run_id).data.metrics
    assert any(name.startswith("system/cpu_utilization") for name in metrics), sorted(metrics)


def test_experiment_is_a_model_training_experiment_and_existing_runs_take_test_metrics(mlflow_server: str) -> None:
    """New and pre-existing experiments get the UI's model-training type; ``Tracker.existing`` adds metrics
    to a finished run (the evaluate step into a model's run) without changing its status."""
    from fewframes.tracking import (
        EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND, MODELS_VIEW, SHARED_VIEW_TAG_PREFIX, models_view_state,
    )  # fmt: skip

    client = mlflow.MlflowClient(mlflow_server)
    old = client.create_experiment("made-by-hand")
    with Tracker.start(mlflow_server, "made-by-hand", "model") as tracker:
        pass
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    # ... and the saved UI view of the models (tests/test_mlflow_layout.py runs its filter on a real run).
    assert json.loads(client.get_experiment(old).tags[SHARED_VIEW_TAG_PREFIX + MODELS_VIEW]) == models_view_state()
    finished = client.get_run(tracker.run_id).info
    Tracker.existing(mlflow_server, tracker.run_id).log_metrics({"gap": 0.5})
    run = client.get_run(tracker.run_id)
    assert run.data.metrics["gap"] == 0.5
    assert (run.info.status, run.info.end_time) == (finished.status, finished.end_time)


def test_a_model_key_mlflow_refuses_as_a_name_is_logged_and_found_again(tmp_path: Path) -> None:
    """A teacher on half the data has the key ``teacher-frac0.5``; MLflow 3 refuses ``.`` in a logged model's
    name (the paper pipeline exited 2 on it in its first Table 3 teacher). The model is logged as
    ``teacher-frac0_5``, the run keeps the key in its tag, and the key still finds the model among a parallel
    run's two (``logged_model_of``, what test metrics and the champion's registration use)."""
    import torch

    from fewframes.config import PRESETS
    from fewframes.models import build_model
    from fewframes.run_results import logged_model_of
    from fewframes.training.results import save_model
    from fewframes.tracking import logged_model_name

    config = PRESETS["tiny"].model_config()
    torch.manual_seed(0)
    save_model(build_model(config), tmp_path / "teacher.pt", config, role="teacher")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    key = "teacher-frac0.5"
    with Tracker.start(uri, "names", "model", tags={"fewframes.model_key": key}) as tracker:
        secondary = tracker.log_model_file(tmp_path / "teacher.pt", tracker.model_name("teacher", secondary=True))
        main = tracker.log_model_file(tmp_path / "teacher.pt", tracker.model_name("teacher"))
    client = _client(uri)
    assert client.get_logged_model(main).name == "teacher-frac0_5" == logged_model_name(key)
    assert client.get_logged_model(secondary).name == "teacher-frac0_5-teacher"
    assert client.get_run(tracker.run_id).data.tags["fewframes.model_key"] == key
    assert logged_model_of(uri, tracker.run_id, key) == main
    assert logged_model_name('a/b:c.d%e"f\'g') == "a_b_c_d_e_f_g"
