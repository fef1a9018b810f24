"""Model definitions whose parameter names match the published checkpoints."""
