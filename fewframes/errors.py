"""Errors that the CLI turns into one line naming the file, field or flag, and a non-zero exit."""


class FewframesError(Exception):
    """Base class: the message is complete and fit to show a user as one line."""


class DataError(FewframesError):
    """Bad input data: a TFRecord shard, a record, a frame store. The message names the file and record."""


class StoreError(DataError):
    """A frame store is missing, incomplete or inconsistent."""


class TrackingError(FewframesError):
    """The MLflow tracking server is unreachable or refused a call."""


class PipelineError(FewframesError):
    """A pipeline parameter, artifact or KFP host is wrong."""


class ModelError(FewframesError):
    """A model's input tensors or checkpoint do not fit its configuration. The message names the tensor."""


class TrainingError(FewframesError):
    """A training run's arguments, teacher or output folder do not fit (e.g. resuming with other settings)."""


class EvaluationError(FewframesError):
    """Scores, labels or a model's outputs do not fit the evaluation data. The message names the array."""


class BenchmarkError(FewframesError):
    """A benchmark, export or predict argument (model file, source, flag) is wrong. The message names it."""


class StorageError(FewframesError):
    """A local or gs:// path cannot be read or written (missing bucket, object or credentials). Names the path."""
