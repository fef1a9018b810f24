"""vidrestore: video face restoration with GFP-GAN and other restorers."""

__version__ = "0.1.0"

__all__ = [
    "EngineOptions",
    "FaceRestorer",
    "FaceStream",
    "TemporalOptions",
    "VideoOptions",
    "restore_video",
]

_LAZY = {
    "restore_video": "vidrestore.pipeline",
    "FaceRestorer": "vidrestore.engine",
    "FaceStream": "vidrestore.stream",
    "EngineOptions": "vidrestore.options",
    "TemporalOptions": "vidrestore.options",
    "VideoOptions": "vidrestore.options",
}


def __getattr__(name: str):
    """Import lazily: ``import vidrestore`` stays cheap for the CLI's --help and errors."""
    import importlib

    if name == "RestoreOptions":  # the engine's options before they were layered
        import warnings

        warnings.warn("vidrestore.RestoreOptions is deprecated; use EngineOptions", DeprecationWarning, 2)
        name = "EngineOptions"
    if name not in _LAZY:
        raise AttributeError(f"module 'vidrestore' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
