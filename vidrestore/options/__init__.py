"""Every setting, once: layered option objects and the one table that names each setting everywhere.

A job composes layers instead of inheriting them: :class:`EngineOptions` (model, device, detection,
paste, kernels), :class:`TemporalOptions` (tracking, smoothing, batching of frames), :class:`EncodeOptions`
(the output video), :class:`JobOptions` (what one ``vidrestore restore`` run does), :class:`ImageOptions`
(stills) and :class:`FilterOptions` (the VapourSynth filter's scheduling). Each layer checks its own values
once, when it is made.

A setting's name is its Python keyword and its VapourSynth parameter; its CLI flag is the same name with
dashes (a few flags keep their historical spelling, recorded in the table). Old names still work as
deprecated aliases. An error names the option as the caller spelled it: ``--min-face`` on the command line,
``min_face`` in Python and in a VapourSynth script.
"""

from vidrestore.options.flags import add_arguments, from_arguments, markdown_table
from vidrestore.options.kinds import Choice, FilePath, Flag, KeyValues, Kind, Number, Seconds, Text
from vidrestore.options.layers import (
    LAYERS,
    EncodeOptions,
    EngineOptions,
    FilterOptions,
    ImageOptions,
    JobOptions,
    TemporalOptions,
    VideoOptions,
    build,
    canonical_keywords,
)
from vidrestore.options.table import TABLE, Front, Layer, OptionError, Setting, setting, spell

__all__ = [
    "LAYERS",
    "TABLE",
    "Choice",
    "EncodeOptions",
    "EngineOptions",
    "FilePath",
    "FilterOptions",
    "Flag",
    "Front",
    "ImageOptions",
    "JobOptions",
    "KeyValues",
    "Kind",
    "Layer",
    "Number",
    "OptionError",
    "Seconds",
    "Setting",
    "TemporalOptions",
    "Text",
    "VideoOptions",
    "add_arguments",
    "build",
    "canonical_keywords",
    "from_arguments",
    "markdown_table",
    "setting",
    "spell",
]
