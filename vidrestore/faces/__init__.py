"""Faces in frames: detection, tracking and smoothing, alignment to the model's template, and paste-back."""
