"""Measurements of the product: ``vidrestore eval temporal`` and its ground-truth clips."""
