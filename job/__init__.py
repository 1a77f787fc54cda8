"""meli-sweep training job: the code every pod runs as `python -m job <step>`.

Light modules (configs, steps, errors, storage) import no torch, so the
workflow tooling and `make submit` work without it.
"""

__version__ = "0.1.0"
