"""Per-process CPU log for ``benchmarks/run_breakdown.py``: with this folder on ``PYTHONPATH`` and ``CPU_LOG``
set to a file, every Python process of a run appends one JSON line when it ends (its argv, whether it is a
fork of the process that started, its own CPU seconds and those of the children it waited for).

Processes that end with ``os._exit`` (KFP executors after their outputs, the warm server's forks) are
caught by wrapping ``os._exit``; the others by ``atexit``. Not part of the library: a measuring aid only.
"""

import atexit
import json
import os
import resource
import sys

_LOG = os.environ.get("CPU_LOG")
_PID = os.getpid()


def _log(how: str) -> None:
    if not _LOG:
        return
    own, waited = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    line = {
        "pid": os.getpid(), "forked": os.getpid() != _PID, "argv": " ".join(sys.argv)[:200],
        "self": round(own.ru_utime + own.ru_stime, 3), "children": round(waited.ru_utime + waited.ru_stime, 3),
        "how": how,
    }
    with open(_LOG, "a") as handle:
        handle.write(json.dumps(line) + "\n")


_exit = os._exit


def _logged_exit(status: int) -> None:
    _log("_exit")
    _exit(status)


if _LOG:
    os._exit = _logged_exit
    atexit.register(_log, "atexit")
