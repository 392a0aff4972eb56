"""Training: the teacher, serial and parallel students, from-scratch baselines; checkpoints, resume, DDP.

Public API (used by the pipeline's components)::

    train_teacher(store, model_config, train_config, *, out_dir, tracker=None, progress=True) -> TrainResult
    train_student(store, teacher, student_config, train_config, *, model_config=None, out_dir, tracker=None)
    train_parallel(store, model_config, student_config, train_config, *, out_dir, tracker=None) -> ParallelResult
    train_baseline(store, student_config, model_config, train_config, *, out_dir, tracker=None) -> TrainResult
    load_model(path) -> VideoClassifier

Under ``torchrun`` run ``python -m fewframes.training MODE --store ... --out ...`` (see ``__main__.py``).
"""

from __future__ import annotations

from fewframes.training.api import train_baseline, train_parallel, train_student, train_teacher
from fewframes.training.results import ParallelResult, TrainResult, load_model, save_model

__all__ = [
    "ParallelResult",
    "TrainResult",
    "load_model",
    "save_model",
    "train_baseline",
    "train_parallel",
    "train_student",
    "train_teacher",
]
