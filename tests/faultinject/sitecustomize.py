"""Installs the fault named by MELI_FAULT in a `python -m job train` process (see tests/faults.py).

Python imports this module at start-up when tests/faultinject is on PYTHONPATH; a test sets both for
the processes of a local sweep. Only train processes get the fault: the per-batch callback reaches
the training loop through train.main's on_batch argument.
"""

import os
import sys

if os.environ.get("MELI_FAULT") and sys.argv[1:2] == ["train"]:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/, for faults
    import faults

    from job import train

    _on_batch = faults.install(os.environ["MELI_FAULT"], faults.out_of(sys.argv))
    _main = train.main
    train.main = lambda args, on_batch=None: _main(args, on_batch=_on_batch)
