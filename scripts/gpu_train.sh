#!/usr/bin/env bash
# On the offline GPU machine, once every piece is in $STAGE: join and check the zip, extract, decode the
# cache with all cores, train, and leave the run's small files and the best model (without optimizer
# state) in $OUT for the trip back.
#
#   OUT=/path SHA256=<hex> scripts/gpu_train.sh NAME MINUTES [train flags...]
#   e.g. scripts/gpu_train.sh seed-reference-h200 8 --preset seed --profile reference
#
# STATE_IN (default $STAGE/state): a folder with the previous lease's state (manifest.json and its pieces), restored
# into the run folder before training, which then resumes it. After every epoch the state goes to $OUT/state.
#
# MINUTES bounds the training steps (`tinyconv train --time-limit`): the run stops at the first epoch end
# past it and can be resumed later with the same command. Times of each phase go to $OUT/phases.txt.
set -euo pipefail
name=$1
minutes=$2
shift 2
stage=${STAGE:-/tmp/tinyconv-stage}
site=${SITE:-/tmp/site}
data=${DATA:-/tmp/tinyconv-data}
runs=${RUNS:-/tmp/tinyconv-runs}
py=${PYTHON:-python3}
export PYTHONPATH=$site KERAS_BACKEND=jax TINYCONV_DATA_DIR=$data PYTHONUNBUFFERED=1
phase() { echo "$(date +%s) $*" | tee -a "$OUT/phases.txt"; }

phase join
cat "$stage"/zip.* > "$stage/tiny-imagenet-200.zip"
echo "${SHA256}  $stage/tiny-imagenet-200.zip" | sha256sum -c -
phase extract
if command -v unzip > /dev/null; then
    # unzip (C) extracts in ~9 s where tinyconv download's checked Python extraction takes ~50 s; the zip's
    # sha256 was checked above, and prepare decodes (and so checks) every image
    mkdir -p "$data" && unzip -q -o "$stage/tiny-imagenet-200.zip" -d "$data"
else
    "$py" -m tinyconv download --url "$stage/tiny-imagenet-200.zip" --sha256 "$SHA256"
fi
phase prepare
"$py" -m tinyconv prepare
state_in=${STATE_IN:-$stage/state}
if [ -f "$state_in/manifest.json" ]; then
    # the previous lease's state (docs/gpu.md, "The run's state between leases"): checked, then training resumes it
    phase restore
    "$py" -m tinyconv state restore "$state_in" "$runs/$name"
fi
phase train
# After every backed-up epoch `state watch` packs the run's resumable state into $OUT/state (pieces <= 16 MiB and
# manifest.json, written last), so a lease killed at its limit still returns the newest complete epoch.
"$py" -m tinyconv train --out "$runs/$name" --time-limit "$minutes" "$@" > >(tee "$OUT/train.log") 2>&1 &
train_pid=$!
"$py" -m tinyconv state watch "$runs/$name" "$OUT/state" --pid "$train_pid" >> "$OUT/phases.txt" 2>&1 &
watch_pid=$!
wait "$train_pid" || true
wait "$watch_pid" || true
phase collect
if [ ! -f "$OUT/state/manifest.json" ]; then   # the state holds these files; without it, return them as before
    for f in config.json history.csv metrics.json; do
        if [ -f "$runs/$name/$f" ]; then cp "$runs/$name/$f" "$OUT/"; fi
    done
    if [ -f "$runs/$name/best.keras" ]; then cp "$runs/$name/best.keras" "$OUT/"; fi   # no optimizer state (~11 MB)
fi
phase done
"$py" -c "import jax, jaxlib, keras, numpy, sys; print('versions: python', sys.version.split()[0], 'jax', jax.__version__, 'jaxlib', jaxlib.__version__, 'keras', keras.__version__, 'numpy', numpy.__version__)" | tee -a "$OUT/phases.txt"
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi") | tee -a "$OUT/phases.txt"
