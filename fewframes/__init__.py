"""fewframes: teacher-student distillation that classifies videos from k of N frames.

The core library imports with torch, numpy and pyarrow alone; kfp, mlflow, tensorflow and
google-cloud-storage are imported inside the functions that need them.
"""

__version__ = "0.1.0"
