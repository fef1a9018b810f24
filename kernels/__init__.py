"""Triton kernels for vidrestore, installed as ``vidrestore.kernels``."""
