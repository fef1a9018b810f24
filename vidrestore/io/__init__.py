"""Reading and writing media: video through PyAV, still images through OpenCV.

Video: :class:`VideoSource` decodes (``source.py``), :class:`VideoSink` encodes from the source's
:class:`SourceDescription` (``sink.py``), the other streams are routed by ``routes.py``, colour conversion is
``colour.py``, path checks are ``paths.py``, the alpha plane and HDR10 metadata are ``carry.py``, and
interlaced sources go through ``interlace.py`` (with FFmpeg's field filters in ``fields.py``).
NVDEC/NVENC (probed, chosen, their settings mapped) are ``hardware.py``.
"""

from vidrestore.io.paths import check_output_path
from vidrestore.io.sink import VideoSink
from vidrestore.io.source import SourceDescription, SourceFrame, StreamTemplate, VideoInfo, VideoSource

__all__ = [
    "SourceDescription",
    "SourceFrame",
    "StreamTemplate",
    "VideoInfo",
    "VideoSink",
    "VideoSource",
    "check_output_path",
]
