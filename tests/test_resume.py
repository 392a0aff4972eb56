"""Kill a real training process with SIGKILL mid-epoch, start it again with the same arguments, and get
exactly what an uninterrupted run with the same seed gets: the same per-epoch history (losses, validation
GAP/mAP, learning rates), the same best epoch and bit-identical best-model weights.

Every run is a real ``python -m fewframes.training`` process on a real frame store (48 training videos,
batch 8: 6 optimizer steps an epoch, a checkpoint every 2 steps), 2 epochs. The kill comes as soon as the
checkpoint of step 8 appears, i.e. in the middle of epoch 2, after a best model was saved in epoch 1.

Two runs cover the loop's paths: parallel training (a teacher on all frames and a student, two best
models, one shared classifier, paired batches) and serial (a) (a stage of paired batches, then a stage of
plain L_CE batches with a fresh optimizer, the kill landing in the second). Removing the loop's RNG
restore makes them fail (checked). A third, serial (a) with early stopping, is killed right after the
checkpoint that records stage 1's early stop, so the restart must carry on with stage 2.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from fewframes.checkpoint import CheckpointDir
from fewframes.config import TrainConfig
from fewframes.training import train_teacher
from training_helpers import (
    SMALL_BATCH,
    SMALL_STEPS_PER_EPOCH,
    SMALL_VIDEOS,
    one_thread_env,
    build_tiny_store,
    run_training_process,
    tiny_model_config,
    training_command,
)

EPOCHS = 2
CHECKPOINT_EVERY = 2
KILL_AT_STEP = SMALL_STEPS_PER_EPOCH + CHECKPOINT_EVERY  # a mid-epoch checkpoint of epoch 2


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_store(tmp_path_factory.mktemp("resume") / "store", videos=SMALL_VIDEOS)


def train_config() -> dict:
    return {"epochs": EPOCHS, "batch_size": SMALL_BATCH, "learning_rate": 5e-3, "seed": 3, "device": "cpu",
            "checkpoint_every_steps": CHECKPOINT_EVERY}


def model_config() -> dict:
    return tiny_model_config().to_dict()


def run_until_killed(command: list[str], out: Path, timeout: float = 120, kill_at_step: int = KILL_AT_STEP) -> dict:
    """Start ``command``, SIGKILL it once the checkpoint of step ``kill_at_step`` exists; the newest
    checkpoint (what the restart resumes from)."""
    checkpoints = CheckpointDir(out / "checkpoints")
    trigger = checkpoints.path_for(kill_at_step)
    with open(out.parent / f"{out.name}-killed.stderr", "w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=one_thread_env())
        deadline = time.monotonic() + timeout
        while not trigger.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (out / "result.json").exists()
    return checkpoints.latest()


def assert_same_run(resumed_dir: Path, reference_dir: Path, model_file: str, epochs: int = EPOCHS) -> None:
    resumed = json.loads((resumed_dir / "result.json").read_text())
    reference = json.loads((reference_dir / "result.json").read_text())
    assert len(reference["history"]) == epochs
    assert resumed["history"] == reference["history"]
    assert resumed["best"] == reference["best"]
    assert resumed["stages"] == reference["stages"]
    resumed_model = torch.load(resumed_dir / model_file, weights_only=True)
    reference_model = torch.load(reference_dir / model_file, weights_only=True)
    assert resumed_model["metrics"] == reference_model["metrics"]
    assert resumed_model["state_dict"].keys() == reference_model["state_dict"].keys()
    for name, tensor in reference_model["state_dict"].items():
        assert torch.equal(resumed_model["state_dict"][name], tensor), name


def kill_resume_and_compare(
    mode: str, store: Path, tmp_path: Path, model_files: list[str], *, kill_at_step: int = KILL_AT_STEP,
    epochs: int = EPOCHS, **configs,
) -> dict:
    """Kill a run once the checkpoint of ``kill_at_step`` appears, restart it, compare it with an uninterrupted
    run; the checkpoint the restart resumed from."""
    reference_dir, resumed_dir = tmp_path / "uninterrupted", tmp_path / "resumed"
    resumed_dir.mkdir()
    # The uninterrupted run goes alongside the one to be killed (one thread each: the same arithmetic).
    reference = subprocess.Popen(training_command(mode, store, reference_dir, **configs), env=one_thread_env(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    command = training_command(mode, store, resumed_dir, **configs)
    resumed_from = run_until_killed(command, resumed_dir, kill_at_step=kill_at_step)
    run_training_process(command)  # the same arguments again
    _, reference_errors = reference.communicate(timeout=180)
    assert reference.returncode == 0, reference_errors[-3000:]
    for model_file in model_files:
        assert_same_run(resumed_dir, reference_dir, model_file, epochs)
    return resumed_from


def assert_mid_epoch_two(checkpoint: dict) -> None:
    position = checkpoint["position"]
    assert position["epoch"] == 1 and 0 < position["batches_done"] < SMALL_STEPS_PER_EPOCH, position


def test_two_stage_serial_student_killed_in_stage_two_resumes_to_the_same_result(
    store: Path, tmp_path: Path
) -> None:
    # Serial (a): epoch 1 is stage 1 (L_rep, classifier frozen), epoch 2 stage 2 (L_CE, a fresh Adam), so
    # the kill lands in stage 2 and the restart must skip stage 1 and restore stage 2's optimizer.
    teacher = train_teacher(store, tiny_model_config(), TrainConfig.from_dict({**train_config(), "epochs": 1}),
                            out_dir=tmp_path / "teacher", progress=False)
    assert_mid_epoch_two(kill_resume_and_compare(
        "student", store, tmp_path, ["student.pt"], teacher=str(teacher.model_path),
        student_config={"k": 6, "loss": "rep", "rep_stage_epochs": 1}, train_config=train_config(),
    ))


def test_student_killed_after_an_early_stop_decision_resumes_to_the_same_result(store: Path, tmp_path: Path) -> None:
    # Serial (a), 5 epochs at most, stage 1 at most 3, patience 1 and min_delta 1 (no GAP beats another by 1,
    # so only epoch 1 improves): stage 1 stops after epoch 2, stage 2 after epoch 3. The kill comes once the
    # checkpoint of epoch 2's end (written with the stop decision) exists; the restart must go on with stage 2
    # (fresh optimizer, its own count), not resume stage 1.
    teacher = train_teacher(store, tiny_model_config(), TrainConfig.from_dict({**train_config(), "epochs": 1}),
                            out_dir=tmp_path / "teacher", progress=False)
    resumed_from = kill_resume_and_compare(
        "student", store, tmp_path, ["student.pt"], teacher=str(teacher.model_path), epochs=3,
        kill_at_step=2 * SMALL_STEPS_PER_EPOCH,
        student_config={"k": 6, "loss": "rep", "rep_stage_epochs": 3},
        train_config={**train_config(), "epochs": 5, "patience": 1, "min_delta": 1.0},
    )
    progress = resumed_from["progress"]
    assert resumed_from["position"]["global_step"] >= 2 * SMALL_STEPS_PER_EPOCH
    assert progress["stages"][0] == {"stage": "rep", "epochs_run": 2, "max_epochs": 3, "stopped_early": True}
    result = json.loads((tmp_path / "resumed" / "result.json").read_text())
    assert [record["stage"] for record in result["history"]] == ["rep", "rep", "ce"]
    assert result["stopped_early"] and result["epochs_run"] == 3


def test_parallel_teacher_and_student_killed_mid_epoch_resume_to_the_same_result(store: Path, tmp_path: Path) -> None:
    # The teacher (all frames, L_CE) and the student train together: both best models must match.
    assert_mid_epoch_two(kill_resume_and_compare(
        "parallel", store, tmp_path, ["teacher.pt", "student.pt"], model_config=model_config(),
        student_config={"k": 6, "loss": "rep_pred_ce"}, train_config=train_config(),
    ))


def test_a_checkpoint_write_cut_by_a_kill_leaves_no_temp_file_behind(tmp_path: Path) -> None:
    """A kill during ``torch.save`` leaves ``.ckpt-<step>.pt.<random>.tmp`` (the rename never came); the next
    save removes it, and ``latest`` never reads it."""
    checkpoints = CheckpointDir(tmp_path / "checkpoints")
    checkpoints.save({"position": {"epoch": 0}}, 2)
    interrupted = checkpoints.directory / ".ckpt-00000004.pt.k1ll3d.tmp"
    interrupted.write_bytes(b"half a checkpoint")
    assert checkpoints.steps() == [2] and checkpoints.latest()["position"] == {"epoch": 0}
    checkpoints.save({"position": {"epoch": 1}}, 4)
    assert sorted(p.name for p in checkpoints.directory.iterdir()) == ["ckpt-00000002.pt", "ckpt-00000004.pt"]
