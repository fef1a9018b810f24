"""Restoring whole archives: plan, manifest, executors (see ARCHITECTURE.md).

``run_batch(inputs, output_dir, **options)`` is the Python API of ``vidrestore batch``.
"""

from vidrestore.batch.driver import run_batch
from vidrestore.batch.report import BatchReport

__all__ = ["BatchReport", "run_batch"]
