"""Teacher outputs computed once (``fewframes.training.teacher_cache``): a serial student trained from the cache
trains as one with the live teacher does; the cache sits beside the teacher file, is built once and reused.

A real frame store, real models and losses, CPU; gs:// paths on a real GCS emulator on 127.0.0.1.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from store_helpers import gcs_emulator

from fewframes import fsio
from fewframes.config import StudentConfig
from fewframes.data.store import FrameStore
from fewframes.training import load_model, train_student, train_teacher
from fewframes.training.teacher_cache import CACHE_PREFIX, _publish_local, read_teacher_outputs
from training_helpers import SMALL_BATCH, SMALL_VIDEOS, build_tiny_store, tiny_model_config, tiny_train_config

BUCKET = "fewframes-teacher-cache"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_store(tmp_path_factory.mktemp("cache") / "store", videos=SMALL_VIDEOS)


@pytest.fixture(scope="module")
def teacher_file(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    result = train_teacher(store, tiny_model_config(), config(epochs=1), out_dir=tmp_path_factory.mktemp("teacher"),
                           progress=False)
    return Path(result.model_path)


def config(**changes: object):
    return tiny_train_config(batch_size=SMALL_BATCH, **changes)


def fresh_teacher(teacher_file: Path, folder: Path) -> Path:
    """A copy of the teacher file alone in ``folder`` (so each test sees its own cache files)."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(teacher_file, folder / "teacher.pt"))


def cache_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"{CACHE_PREFIX}*.pt"))


@pytest.mark.parametrize(
    "student_config",
    [StudentConfig(k=6, loss="rep_pred_ce", frame_selection="random"), StudentConfig(k=6, loss="rep", rep_stage_epochs=1)],
    ids=["rep_pred_ce-random", "rep-two-stages"],
)
def test_student_from_the_cache_trains_as_with_the_live_teacher(
    store: Path, teacher_file: Path, tmp_path: Path, student_config: StudentConfig
) -> None:
    # Same seed, same batches, same student frames (random selection too), same dropout masks: the teacher is
    # in eval mode, so its outputs are deterministic and only float rounding separates the two (the cache's
    # batches pad the videos differently). Measured: losses within 1e-7 relative, weights within 1e-5,
    # validation GAP equal.
    teacher = fresh_teacher(teacher_file, tmp_path / "teacher")
    cached = train_student(store, teacher, student_config, config(epochs=2), out_dir=tmp_path / "cached",
                           progress=False)
    live = train_student(store, teacher, student_config, config(epochs=2, cache_teacher_outputs=False),
                         out_dir=tmp_path / "live", progress=False)
    assert len(cache_files(teacher.parent)) == 1
    assert cached.best_epoch == live.best_epoch
    assert len(cached.history) == len(live.history) == 2
    for from_cache, from_teacher in zip(cached.history, live.history):
        assert from_cache.keys() == from_teacher.keys()
        for key, value in from_teacher.items():
            assert from_cache[key] == (pytest.approx(value, rel=1e-5, abs=1e-6) if isinstance(value, float) else value), key
    cached_weights = torch.load(cached.model_path, weights_only=True)["state_dict"]
    live_weights = torch.load(live.model_path, weights_only=True)["state_dict"]
    for name, value in live_weights.items():
        torch.testing.assert_close(cached_weights[name], value, atol=1e-4, rtol=0), name


def test_cache_holds_the_teacher_outputs_and_is_reused_by_every_student(
    store: Path, teacher_file: Path, tmp_path: Path
) -> None:
    teacher = fresh_teacher(teacher_file, tmp_path / "teacher")
    train_student(store, teacher, StudentConfig(k=6, loss="rep_ce"), config(epochs=1), out_dir=tmp_path / "k6",
                  progress=False)
    (cache,) = cache_files(teacher.parent)
    built = cache.stat().st_mtime_ns
    # Its rows are the frozen teacher's E_T and logits on all frames of each training video, read alone.
    outputs = read_teacher_outputs(str(cache), cache.name[len(CACHE_PREFIX):-3])
    frame_store = FrameStore.open(store)
    reference = load_model(teacher)
    assert len(outputs.video_indices) == 48 and outputs.encoding.dtype == torch.float32
    for row, index in enumerate(outputs.video_indices.tolist()[:5]):
        frames = torch.from_numpy(frame_store.read_video(index)).unsqueeze(0)
        with torch.no_grad():
            expected = reference(frames)
        torch.testing.assert_close(outputs.encoding[row], expected.encoding[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(outputs.logits[row], expected.logits[0], atol=1e-5, rtol=0)
    # Another student of the grid (other k, other loss, other selection) reuses the very file.
    train_student(store, teacher, StudentConfig(k=10, loss="rep", frame_selection="first"), config(epochs=2),
                  out_dir=tmp_path / "k10", progress=False)
    assert cache_files(teacher.parent) == [cache] and cache.stat().st_mtime_ns == built
    # Other training videos (a train_fraction subset) are another key, hence another file.
    train_student(store, teacher, StudentConfig(k=6, loss="rep_ce"), config(epochs=1, train_fraction=0.5),
                  out_dir=tmp_path / "half", progress=False)
    assert len(cache_files(teacher.parent)) == 2
    # Intermediate matching uses the live teacher and logs which one it used.
    result = train_student(store, teacher, StudentConfig(k=6, loss="rep_ce", matching="intermediate"),
                           config(epochs=1), out_dir=tmp_path / "intermediate", progress=False)
    assert len(cache_files(teacher.parent)) == 2 and result.history[0]["train_rep_intermediate"] > 0


def test_the_first_builder_wins_and_the_file_is_never_replaced(tmp_path: Path) -> None:
    target = tmp_path / f"{CACHE_PREFIX}key.pt"
    _publish_local(target, {"format": "x", "who": "first"})
    _publish_local(target, {"format": "x", "who": "second"})
    assert torch.load(target, weights_only=True)["who"] == "first"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temp file left behind


def test_gcs_teacher_gets_its_cache_beside_it_on_gcs(store: Path, teacher_file: Path, tmp_path: Path) -> None:
    with gcs_emulator(BUCKET):
        teacher = f"gs://{BUCKET}/run/teacher/teacher.pt"
        fsio.upload_file(teacher_file, teacher)
        out = f"gs://{BUCKET}/run/student"
        result = train_student(store, teacher, StudentConfig(k=6, loss="rep_ce"), config(epochs=1), out_dir=out,
                               progress=False)
        names = [path.rsplit("/", 1)[-1] for path in fsio.listdir(f"gs://{BUCKET}/run/teacher")]
        assert sorted(names)[0] == "teacher.pt" and sum(n.startswith(CACHE_PREFIX) for n in names) == 1
        assert fsio.exists(f"{out}/student.pt")
        assert json.loads(fsio.read_bytes(f"{out}/result.json"))["epochs_run"] == result.epochs_run == 1


def test_a_student_view_read_alone_draws_the_paired_loaders_random_frames(store: Path) -> None:
    from fewframes.data.loader import make_loader, make_paired_loader

    indices = list(range(12))
    common = dict(k=6, batch_size=4, shuffle=True, seed=5, epoch=2)
    paired = [student for _, student in make_paired_loader(store, indices, strategy="random", **common)]
    alone = list(make_loader(store, indices, strategy="random", rng_view=1, **common))
    other = list(make_loader(store, indices, strategy="random", **common))
    assert all(torch.equal(a.positions, p.positions) and torch.equal(a.frames, p.frames) for a, p in zip(alone, paired))
    assert any(not torch.equal(o.positions, p.positions) for o, p in zip(other, paired))
