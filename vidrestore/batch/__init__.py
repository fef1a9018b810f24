"""Restoring whole archives: plan, manifest, executors (see ARCHITECTURE.md)."""
