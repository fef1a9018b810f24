"""The options: one table names every setting in every front end; each layer checks itself once; errors
name the option as the caller spelled it; old names still work; nothing is written before the options are
checked."""

from __future__ import annotations

import argparse
import re
import warnings
from pathlib import Path

import pytest

import vidrestore
from vidrestore.cli import build_parser, main
from vidrestore.errors import VidrestoreError
from vidrestore.options import (
    LAYERS,
    TABLE,
    EncodeOptions,
    EngineOptions,
    FilterOptions,
    JobOptions,
    OptionError,
    TemporalOptions,
    VideoOptions,
    build,
    spell,
)


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    out = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out |= _flags(sub)
        out |= {o for o in action.option_strings if action.help != argparse.SUPPRESS}
    return out


def test_every_setting_has_one_name_in_every_front_end():
    """A setting's Python keyword is its VapourSynth parameter, and its flag is the same name with dashes,
    except where the table records a historical spelling; every flag in the CLI comes from the table."""
    cli = _flags(build_parser())
    historical = {"encoder_opts": "--encoder-opt", "progress": "-q/--quiet"}
    for name, s in TABLE.items():
        flag = s.flag or (s.negate[0] if s.negate else None)
        if flag is not None:
            assert flag == historical.get(name, "--" + name.replace("_", "-")), name
            assert set(flag.split("/")) <= cli, name
    table_flags = {
        f for s in TABLE.values() for f in ((s.flag or "").split("/") + (s.negate or ("",))[0].split("/"))
    }
    own = {
        "-h",
        "--help",
        "--version",
        "-o",
        "--output",
        "--overwrite",
        "-q",
        "--quiet",
        "--weights-dir",
        "--json",
    }
    batch = {  # `vidrestore batch`'s own: which files, failures, where they run; not settings of a run
        "-r", "--recursive", "--ext", "--include", "--exclude", "--name", "--dry-run", "--max-attempts",
        "--halt-on-error", "--max-failures", "--ray", "--workers", "--workers-per-gpu", "--chunks",
        "--chunk-seconds",
    }  # fmt: skip
    assert cli - table_flags - own - batch == set()
    assert len(TABLE) == sum(len(layer.settings()) for layer in LAYERS)  # no name in two layers


def test_the_filter_takes_the_engine_and_temporal_settings_by_the_same_names():
    vs_names = {s.name for s in TABLE.values() if s.vapoursynth}
    assert {s.name for s in EngineOptions.settings()} - {"randomize_noise"} <= vs_names
    assert {s.name for s in TemporalOptions.settings()} <= vs_names
    assert not {s.name for s in EncodeOptions.settings() + JobOptions.settings()} & vs_names


@pytest.mark.parametrize(
    ("values", "python", "cli"),
    [
        ({"fidelity": "0.5"}, "fidelity must be a number, not '0.5'", "--fidelity must be a number"),
        ({"fidelity": 1.5}, "fidelity must be from 0 to 1, not 1.5", "--fidelity must be from 0 to 1"),
        ({"min_face": -1}, "min_face must be at least 0, not -1", "--min-face must be at least 0"),
        ({"frame_batch": 2.5}, "frame_batch must be an integer, not 2.5", "--frame-batch must be an integer"),
        ({"smooth": True}, "smooth must be a number, not True (bool)", "--smooth must be a number"),
        ({"start": "1:xx"}, "start must be seconds or [HH:]MM:SS[.ms], not '1:xx'", "--start must be"),
        ({"start": 3, "end": 2}, "end (2.0) must come after start (3.0)", "--end (2.0) must come after"),
        ({"encoder_opts": "tune=film"}, "encoder_opts must be a mapping", "--encoder-opt must be a mapping"),
        ({"progress": None}, "progress must be True or False, not None", "--quiet must be True or False"),
        ({"model": 14}, "model must be a string, not 14 (int)", "--model must be a string"),
    ],
)
def test_errors_name_the_option_as_the_caller_spelled_it(values, python, cli):
    with pytest.raises(OptionError, match=re.escape(python)) as err:
        VideoOptions.from_keywords(**values)
    assert str(err.value.spelled("cli")).startswith(cli)


def test_vapoursynth_spelling_and_unknown_names():
    with pytest.raises(OptionError, match="^detect_every must be at least 1, not 0$"):
        build((EngineOptions, TemporalOptions, FilterOptions), {"detect_every": 0}, "vapoursynth")
    with pytest.raises(VidrestoreError, match=r"unknown option\(s\): codec"):
        build((EngineOptions, TemporalOptions, FilterOptions), {"codec": "ffv1"}, "vapoursynth")
    assert spell("min_face", "cli") == "--min-face" and spell("progress", "cli") == "--quiet"


def test_times_paths_and_models_are_normalised():
    options = VideoOptions.from_keywords(
        start="0:01.5", end=3, report="r.json", model="v1.3", weights="w.pth"
    )
    assert options.job.start == 1.5 and options.job.end == 3.0
    assert options.job.report == Path("r.json") and options.engine.weights == Path("w.pth")
    assert options.engine.model == "gfpgan-v1.3"  # the old name is an alias of the registry's


def test_old_names_still_work_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="batch_size is deprecated; use face_batch"):
        options = VideoOptions.from_keywords(batch_size=3, min_eye_distance=7.0, max_frames=5)
    assert options.engine.face_batch == 3 and options.engine.min_face == 7.0 and options.job.frames == 5
    with pytest.raises(OptionError, match="was given twice"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        VideoOptions.from_keywords(batch_size=3, face_batch=4)


def test_cli_and_api_build_the_same_options(tmp_path):
    args = build_parser().parse_args(
        ["restore", "in.mp4", "-o", "out.mp4", "--batch-size", "3", "--no-smooth", "-q", "--no-triton"]
        + ["--encoder-opt", "tune=film", "--encoder-opt", "g=5", "--start", "1:00", "--min-face", "8"]
    )
    from vidrestore.options import from_arguments

    cli = VideoOptions(*from_arguments(args, VideoOptions.LAYERS))
    api = VideoOptions.from_keywords(
        face_batch=3,
        smooth=0,
        progress=False,
        kernels="torch",
        encoder_opts={"tune": "film", "g": 5},
        start=60,
        min_face=8,
    )
    assert cli == api
    assert cli.engine == EngineOptions(face_batch=3, kernels="torch", min_face=8.0)
    assert cli.temporal == TemporalOptions(smooth=0.0) and cli.temporal.window == 0
    assert cli.encode == EncodeOptions(encoder_opts={"tune": "film", "g": "5"})


def test_a_bad_report_path_fails_before_anything_is_written(tmp_path, capsys):
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    src.write_bytes(b"not looked at")
    for report, needle in ((tmp_path / "nowhere" / "r.json", "does not exist"), (tmp_path, "is a directory")):
        with pytest.raises(OptionError, match=needle):
            vidrestore.restore_video(src, dst, report=report)
        assert main(["restore", str(src), "-o", str(dst), "--report", str(report)]) == 2
        assert "--report" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_the_readme_shows_the_table_as_the_code_has_it():
    from vidrestore.options import markdown_table

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert markdown_table() in readme, "run: python -m vidrestore.options, and paste it into README.md"
