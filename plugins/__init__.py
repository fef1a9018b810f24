"""Host integrations (VapourSynth first), installed as ``vidrestore.plugins``."""
