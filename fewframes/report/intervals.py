"""Paired bootstrap intervals between the run's configurations (``fewframes.stats``), from the per-video
predictions each evaluation wrote (``predictions.parquet`` in the row's ``evaluation_dir``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fewframes.report.configs import Config
from fewframes.stats import DEFAULT_RESAMPLES, DEFAULT_SEED, Interval, PairedBootstrap


class Intervals:
    """GAP@20 intervals of configurations and of contrasts between them; None where a model of the
    contrast has no per-video predictions (e.g. a run evaluated before they were written) or was evaluated
    on other test videos (nothing to pair)."""

    def __init__(self, rows: list[dict[str, Any]], resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> None:
        from fewframes.evaluation import PREDICTIONS_FILE, read_predictions

        self.resamples, self.seed = resamples, seed
        self.bootstrap = PairedBootstrap(resamples=resamples, seed=seed, metric="gap")
        self.missing: list[str] = []
        # The same order in both report paths (the step's and `fewframes report`'s): by model key.
        found = {}
        for row in sorted(rows, key=lambda r: str(r.get("model_key", ""))):
            folder = row.get("evaluation_dir")
            path = Path(folder) / PREDICTIONS_FILE if folder else None
            if path is None or not path.is_file():
                self.missing.append(str(row.get("model_key", "")))
            else:
                found[str(row["model_key"])] = read_predictions(path)
        # Pairs need the same videos: the set most models were evaluated on (normally all of them).
        sets = Counter(frozenset(p.video_ids) for p in found.values())
        common = max(sets, key=lambda videos: sets[videos]) if sets else frozenset()
        for key, predictions in found.items():
            if frozenset(predictions.video_ids) == common:
                self.bootstrap.add(key, predictions)
            else:
                self.missing.append(f"{key} (other test videos)")

    @property
    def num_videos(self) -> int:
        return len(self.bootstrap.video_ids or [])

    def has(self, config: Config | None) -> bool:
        return config is not None and all(key in self.bootstrap for key in config.model_keys)

    def contrast(self, terms: Sequence[tuple[float, Config | None]]) -> Interval | None:
        """The interval of sum(weight x configuration GAP) (seed means), or None if a model lacks predictions."""
        if not all(self.has(config) for _, config in terms):
            return None
        return self.bootstrap.contrast([(weight, self.bootstrap.side(config.model_keys)) for weight, config in terms])

    def difference(self, a: Config | None, b: Config | None) -> Interval | None:
        return self.contrast([(1.0, a), (-1.0, b)])

    def of(self, config: Config | None) -> Interval | None:
        return self.contrast([(1.0, config)])
