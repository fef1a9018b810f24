"""Restoration networks: architectures with checkpoint-compatible names, and their loaders."""
