"""Run `python -m job ...` in a forked child of the test process.

The child starts with torch and the job package already imported, so a run that is killed and
rerun several times costs its training only, not a Python start-up each time. It is a real
process: SIGKILL ends it at once, with no cleanup, as a preempted node or the OOM killer would.
The test process must not have run torch operations on more than one thread before forking
(OpenMP does not survive fork); comparing tensors by their bytes keeps it that way.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
import warnings


def start(argv: list[str], env: dict | None = None, log: str | os.PathLike | None = None, fault: str | None = None) -> int:
    """Fork a child that runs the job CLI with argv; its stdout and stderr go to `log`. Returns its pid.

    fault: a fault of tests/faults.py to install in the child, through the code's seams.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded process": the child only runs the job
        pid = os.fork()
    if pid:
        return pid
    code = 99
    try:
        for key, value in (env or {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        out = open(log or os.devnull, "a", buffering=1)
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        sys.stdout = sys.stderr = out
        logging.getLogger().handlers.clear()  # let the CLI configure logging onto this stderr
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)  # tests share two cores; one thread each is faster and as exact
        import faults
        from job import storage
        from job.__main__ import main

        storage.s3_client.cache_clear()
        on_batch = faults.install(fault, faults.out_of(argv)) if fault else None
        code = main(argv, on_batch=on_batch)
    except SystemExit as e:  # argparse
        code = e.code if isinstance(e.code, int) else 2
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
        finally:
            os._exit(code)


def wait(pid: int) -> int:
    """The child's exit code, or minus the signal that ended it (-9 for SIGKILL)."""
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def run(argv: list[str], env: dict | None = None, log: str | os.PathLike | None = None, fault: str | None = None) -> int:
    return wait(start(argv, env, log, fault))
