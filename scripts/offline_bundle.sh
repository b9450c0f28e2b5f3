#!/usr/bin/env bash
# Build the wheels an offline GPU machine with JAX but no TensorFlow lacks, into one folder (default .whl/).
#
#   scripts/offline_bundle.sh [DIR]        # then, on the GPU machine (Python 3.12, x86_64):
#   python3 -m pip install --no-index --no-deps --target /tmp/site DIR/*.whl && export PYTHONPATH=/tmp/site
#
# What the GPU machines of docs/gpu.md lack: keras and its two small pure dependencies namex and optree
# (optree is compiled: the cp312 manylinux wheel), simplejpeg (compiled; tinyconv prepare decodes the JPEGs with
# it, as TensorFlow does), and tinyconv itself; and optree's typing_extensions, which they
# have beside PyTorch, for a machine without it (gpu_receive.sh installs it only there). numpy, h5py, ml-dtypes, rich,
# absl-py, packaging, pillow, matplotlib and tqdm are there. The folder is about 3 MB, far under the 64 MiB
# a call may carry. Versions are the ones pyproject.toml pins (keras) and the venv resolved (namex, optree).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.whl}
python=${PYTHON:-.venv/bin/python}
keras_version=$("$python" -c "import keras; print(keras.__version__)")
namex_version=$("$python" -m pip show namex | awk '/^Version:/ {print $2}')
optree_version=$("$python" -m pip show optree | awk '/^Version:/ {print $2}')
# optree's one dependency: the GPU machines have it beside PyTorch, but gpu_receive.sh installs it where not
typing_version=$("$python" -m pip show typing_extensions | awk '/^Version:/ {print $2}')
simplejpeg_version=$("$python" -m pip show simplejpeg | awk '/^Version:/ {print $2}')
rm -rf "$out" && mkdir -p "$out"
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$out" \
    "keras==$keras_version" "namex==$namex_version" "optree==$optree_version" "typing_extensions==$typing_version" \
    "simplejpeg==$simplejpeg_version"
# built in pip's isolated build environment, with the setuptools pyproject.toml asks for (>= 77 reads its SPDX
# license; a venv's own setuptools may be older: with --no-build-isolation this step failed)
"$python" -m pip wheel --quiet --no-deps -w "$out" .
ls -l "$out"
du -sh "$out"
