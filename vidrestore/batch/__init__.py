"""Restoring whole archives: plan, manifest, executors (see ARCHITECTURE.md).

``run_batch(inputs, output_dir, **options)`` is the Python API of ``vidrestore batch``. Imports are lazy, so a
Ray actor importing one module of this package pays for torch only if that module needs it.
"""

__all__ = ["BatchReport", "run_batch"]

_LAZY = {"run_batch": "vidrestore.batch.driver", "BatchReport": "vidrestore.batch.report"}


def __getattr__(name: str):
    import importlib

    if name not in _LAZY:
        raise AttributeError(f"module 'vidrestore.batch' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
