"""Early stopping (``TrainConfig.patience``, ``min_delta``): one rule for teachers, serial students, parallel
pairs and baselines. Real frame store, real models, CPU.

A plateau is made exact with a learning rate of 1e-30 (0 is refused): Adam's step is lr times a direction of
size about 1, far below float32's resolution of the weights, so they never move and every epoch's validation
GAP is the first one's (dropout only acts in training).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fewframes.config import ConfigError, StudentConfig, TrainConfig
from fewframes.data.store import FrameStore
from fewframes.distributed import DistContext
from fewframes.training import load_model, train_baseline, train_parallel, train_student, train_teacher
from fewframes.training.data import open_training_data, val_batches
from fewframes.training.loop import collect_predictions, validation_metrics
from training_helpers import SMALL_BATCH, SMALL_VIDEOS, build_tiny_store, tiny_model_config, tiny_train_config


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_store(tmp_path_factory.mktemp("early") / "store", videos=SMALL_VIDEOS)


STILL = 1e-30  # a learning rate whose steps do not change any weight


def config(**changes: object) -> TrainConfig:
    return tiny_train_config(batch_size=SMALL_BATCH, **changes)


def validation_gap(model_path: Path, store: Path, train_config: TrainConfig) -> float:
    """The validation GAP of the model saved at ``model_path``, computed afresh."""
    model = load_model(model_path)
    ctx = DistContext(device=torch.device("cpu"))
    data = open_training_data(FrameStore.open(store), train_config)
    student = model.student_config
    strategy, k = (student.frame_selection, student.k) if student else ("all", None)
    batches = val_batches(data, train_config, ctx, strategy=strategy, k=k)
    return validation_metrics(collect_predictions(model, batches, ctx, train_config))["gap"]


def test_patience_and_min_delta_are_checked() -> None:
    with pytest.raises(ConfigError, match="TrainConfig.patience"):
        TrainConfig(patience=-1)
    with pytest.raises(ConfigError, match="TrainConfig.min_delta"):
        TrainConfig(min_delta=float("nan"))


def test_teacher_stops_after_patience_epochs_on_a_plateau(store: Path, tmp_path: Path) -> None:
    result = train_teacher(store, tiny_model_config(), config(epochs=6, patience=2, learning_rate=STILL),
                           out_dir=tmp_path, progress=False)
    gaps = [record["val_gap"] for record in result.history]
    assert len(gaps) == 3 and len(set(gaps)) == 1  # epoch 1 sets the best, epochs 2 and 3 do not beat it
    assert result.epochs_run == 3 and result.stopped_early and result.best_epoch == 1
    assert result.stages == [{"stage": "ce", "epochs_run": 3, "max_epochs": 6, "stopped_early": True}]
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["stopped_early"] is True and saved["epochs_run"] == 3 and saved["max_epochs"] == 6


def test_stopped_run_keeps_its_best_epoch_not_its_last(store: Path, tmp_path: Path) -> None:
    # Uniform-6 on this store, seed 0, one thread: validation GAP 0.538, then 0.527 (measured), so patience 1
    # stops after epoch 2 with epoch 1 the best.
    train_config = config(epochs=4, patience=1)
    result = train_baseline(store, StudentConfig(k=6), tiny_model_config(), train_config, out_dir=tmp_path,
                            progress=False)
    gaps = [record["val_gap"] for record in result.history]
    assert result.stopped_early and result.epochs_run == len(gaps) < 4
    assert result.best_val_gap == max(gaps) and gaps[result.best_epoch - 1] == result.best_val_gap
    assert result.best_epoch < result.epochs_run
    assert all(gap <= result.best_val_gap for gap in gaps[result.best_epoch:])
    # The file holds the best epoch's weights: evaluated again it scores the best GAP, not the last epoch's.
    assert validation_gap(result.model_path, store, train_config) == pytest.approx(result.best_val_gap, abs=1e-6)
    last = torch.load(sorted((tmp_path / "checkpoints").glob("ckpt-*.pt"))[-1], weights_only=True)
    saved = torch.load(result.model_path, weights_only=True)
    assert saved["metrics"]["epoch"] == result.best_epoch
    assert any(not torch.equal(saved["state_dict"][name], value) for name, value in last["models"]["baseline"].items())


def test_improving_run_goes_to_the_maximum_unchanged(store: Path, tmp_path: Path) -> None:
    # The teacher improves every epoch here (0.51, 0.55, 0.63, 0.66 measured): patience 1 never fires, and the
    # run is the very run without early stopping.
    with_patience = train_teacher(store, tiny_model_config(), config(epochs=4, patience=1),
                                  out_dir=tmp_path / "patience", progress=False)
    without = train_teacher(store, tiny_model_config(), config(epochs=4), out_dir=tmp_path / "off", progress=False)
    assert with_patience.epochs_run == 4 and not with_patience.stopped_early
    assert with_patience.history == without.history and with_patience.best_epoch == without.best_epoch == 4
    assert without.stages == [{"stage": "ce", "epochs_run": 4, "max_epochs": 4, "stopped_early": False}]


def test_two_stage_student_stops_each_stage_and_the_last_stage_gets_the_epochs_left(
    store: Path, tmp_path: Path
) -> None:
    teacher = train_teacher(store, tiny_model_config(), config(epochs=1), out_dir=tmp_path / "teacher",
                            progress=False)
    result = train_student(
        store, teacher.model_path, StudentConfig(k=6, loss="rep", rep_stage_epochs=3),
        config(epochs=6, patience=1, learning_rate=STILL), out_dir=tmp_path / "student", progress=False,
    )
    # Stage 1 (max 3) stops after 2 epochs; stage 2 may use the 4 left of 6, stops after 1.
    assert [record["stage"] for record in result.history] == ["rep", "rep", "ce"]
    assert result.stages == [
        {"stage": "rep", "epochs_run": 2, "max_epochs": 3, "stopped_early": True},
        {"stage": "ce", "epochs_run": 1, "max_epochs": 4, "stopped_early": True},
    ]
    assert result.epochs_run == 3 and result.stopped_early


def test_parallel_stops_when_neither_model_improves(store: Path, tmp_path: Path) -> None:
    result = train_parallel(store, tiny_model_config(), StudentConfig(k=6), config(epochs=5, patience=1,
                            learning_rate=STILL), out_dir=tmp_path, progress=False)
    assert result.teacher.epochs_run == result.student.epochs_run == 2
    assert result.teacher.stopped_early and result.student.stopped_early
    assert result.teacher.best_epoch == result.student.best_epoch == 1
