"""vidrestore: video face restoration with GFP-GAN."""

__version__ = "0.1.0"

__all__ = ["RestoreOptions", "VideoOptions", "restore_video"]


def __getattr__(name: str):
    """Import the engine lazily: ``import vidrestore`` stays cheap for the CLI's --help and errors."""
    if name in ("restore_video", "VideoOptions"):
        from vidrestore import pipeline

        return getattr(pipeline, name)
    if name == "RestoreOptions":
        from vidrestore.engine import RestoreOptions

        return RestoreOptions
    raise AttributeError(f"module 'vidrestore' has no attribute {name!r}")
