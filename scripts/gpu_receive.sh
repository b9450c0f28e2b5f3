#!/usr/bin/env bash
# On the offline GPU machine: keep one piece of the dataset's pack (and install the wheels, once).
#
#   scripts/gpu_receive.sh PIECE_FILE [WHEEL_DIR]
#
# Pieces collect in $STAGE (default /tmp/tinyconv-stage); wheels install into $SITE (default /tmp/site),
# to be put on PYTHONPATH. Prints what the machine has: GPU, Python, JAX, Keras.
set -euo pipefail
stage=${STAGE:-/tmp/tinyconv-stage}
site=${SITE:-/tmp/site}
mkdir -p "$stage"
cp "$1" "$stage/"
if [ -n "${2:-}" ]; then
    wheels=("$2"/*.whl)
    if python3 -c "import typing_extensions" 2> /dev/null; then
        # the machine's own (beside PyTorch) stays in charge: $SITE comes first on PYTHONPATH and would shadow it
        wheels=($(printf '%s\n' "${wheels[@]}" | grep -v '/typing_extensions-'))
    fi
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "${wheels[@]}"
fi
ls -l "$stage"
if [ -d "$site" ]; then
    export PYTHONPATH=$site KERAS_BACKEND=${KERAS_BACKEND:-jax}  # without it Keras picks TensorFlow, absent there
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    python3 -c "import sys, jax, keras; print('python', sys.version.split()[0], '| jax', jax.__version__, jax.devices(), '| keras', keras.__version__)"
fi
