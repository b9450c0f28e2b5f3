#!/usr/bin/env bash
# A GPU lease's training call (docs/gpu.md, "A lease, call by call"), run in the repository's root on the offline GPU
# machine once the dataset's pieces are in $STAGE (scripts/gpu_receive.sh):
#
#   OUT=/path SHA256=<hex> scripts/gpu_train.sh NAME MINUTES|auto [train flags...]
#   e.g. OUT=$OUT SHA256=<hex> scripts/gpu_train.sh seed-reference auto --preset seed --profile reference
#
#  1. data     join the pieces of the pack (scripts/pack_data.py), check its sha256, extract, decode the train and
#              val caches with every core (skipped when an earlier call on this machine prepared the same pack)
#  2. state    restore the run's state from $STATE_IN (default results/NAME/state, the one place it lives in the
#              repository between leases) when it holds a manifest: training then continues that run. Skipped when
#              the run is on this machine already: a later train call of the same lease continues it from there.
#              With neither, the call stops at once unless FRESH=1 says to start the run (its first lease): a state
#              left aside by lease_prepare.sh would otherwise start the run over without a word
#  3. forms    at most $FORMS_S seconds (default 120; 0 skips) timing the depthwise conv's forms in the whole train
#              step (benchmarks/gpu_profile.py --choose); the fastest whose numbers agree is used. Skipped, and the
#              two minutes go to training, when the form is known: TINYCONV_DEPTHWISE given; the form an earlier
#              call on this machine trained with ($RUNS/NAME.form); or the form of the run's newest session on the
#              same kind of device (sessions.jsonl, restored with the state; sessions on a CPU between do not count)
#  4. sync     with $SYNC_S > 0 (default 0: skipped), at most that many seconds of benchmarks/fit_loop_sync.py on the
#              real data and the run's recipe: the fit loop's train images/s with and without a host round trip per
#              step ($SYNC_ROUNDS rounds, default 2), once per kind of GPU; skipped by a later call on this machine
#  5. train    `tinyconv train --time-limit`, with `tinyconv state watch` beside it packing the run's complete
#              resumable state into $OUT/state after every epoch (pieces <= 16 MiB + manifest.json, written last), so a
#              call killed at its limit still returns the newest epoch
#
# MINUTES bounds the training steps; `auto` takes what is left of the call: $CALL_S (default 570 s: the device tool's
# 600 s a call less a margin) minus the time spent so far minus $MARGIN_S (default 30 s: what the time limit does not
# count, which is the start before epoch 1 and the exit and last pack after the stop; on the H100 lease of 2026-11-26
# they took 35 s together: 421 s of train phase, 386 s of epochs. So a call ends ~575 s in, and the call's 30 s
# above is what is left for an epoch that runs long; if the kill comes first, the epoch before it was returned).
# Everything the call prints goes to $OUT/lease.log, one file. What comes back of $OUT is at most 8 files and 64 MiB
# together: the log and one state (the seed's: a manifest and 3 pieces, 43 MB). For the fraction of a second in
# which a new state is written beside the old one (the old removed once the new manifest is in place) $OUT holds
# more (9 files, ~86 MB): a kill in that instant could bring back an incomplete set, which `state keep` refuses;
# MARGIN_S keeps the call's own end clear of the kill.
set -euo pipefail
name=$1
minutes=$2
shift 2
started=$(date +%s)
repo=$(cd "$(dirname "$0")/.." && pwd)
stage=${STAGE:-/tmp/tinyconv-stage}
site=${SITE:-/tmp/site}
data=${DATA:-/tmp/tinyconv-data}
runs=${RUNS:-/tmp/tinyconv-runs}
py=${PYTHON:-python3}
state_in=${STATE_IN:-$repo/results/$name/state}
case $state_in in /*) ;; *) state_in=$repo/$state_in ;; esac  # STATE_IN=pieces/state: the train call's carry
forms_s=${FORMS_S:-120}
sync_s=${SYNC_S:-0}
call_s=${CALL_S:-570}
margin_s=${MARGIN_S:-30}
# tinyconv from this checkout (the committed code the lease was prepared with), keras and its two small
# dependencies from the wheels gpu_receive.sh installed into $SITE
export PYTHONPATH=$repo:$site KERAS_BACKEND=jax TINYCONV_DATA_DIR=$data PYTHONUNBUFFERED=1
# JAX's persistent compilation cache, on the machine: the forms' phase compiles the run's own train step in each form
# (gpu_profile.py --choose), so training loads the chosen form's step from here instead of compiling it again (on a
# CPU, the seed's reference step: 47.6 s compiled, 0.6 s loaded); on a GPU the forms also share XLA's per-fusion
# autotuning results through it (JAX's default jax_persistent_cache_enable_xla_caches)
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/tinyconv-jax-cache}
mkdir -p "$OUT"
log=$OUT/lease.log
exec > >(tee -a "$log") 2>&1   # the call's output shows it too
phase() { echo "$(date +%s) phase $* (+$(( $(date +%s) - started )) s)"; }

if [ ! -f "$runs/$name/config.json" ] && [ ! -f "$state_in/manifest.json" ] && [ "${FRESH:-0}" != 1 ]; then
    # checked before any device time goes to the data: a lease continues the kept run, and a state moved aside and
    # not put back (lease_prepare.sh) must not silently become a new run from epoch 1
    echo "gpu_train.sh: no state to continue ($state_in/manifest.json is missing) and no run $name on this machine;" \
         "carry the kept state (lease_prepare.sh prints how), or, on the run's first lease only, set FRESH=1" >&2
    exit 1
fi
# found, not imported: importing Keras and JAX would cost seconds of the lease here
if [ ! -f "$data/.pack-sha256" ] && ! PYTHONPATH=$site "$py" -c "import importlib.util as u, sys; sys.exit(u.find_spec('keras') is None)" 2> /dev/null; then
    # gpu_receive.sh with the wheels (call 1) never ran on this machine: a fresh one, the warm one having gone back
    echo "gpu_train.sh: no keras in $site: this machine did not receive the wheels (call 1: scripts/gpu_receive.sh" \
         "PIECE .whl); it is not the machine the pieces went to" >&2
    exit 1
fi

phase data
if [ -f "$data/.pack-sha256" ] && [ "$(cat "$data/.pack-sha256")" = "$SHA256" ]; then
    echo "the pack $SHA256 was extracted and prepared by an earlier call on this machine"
else
    if ! compgen -G "$stage/pack.*" > /dev/null; then
        # e.g. a second train call that found a fresh machine: the one with the data went back after 30 s idle
        echo "gpu_train.sh: no pieces of the pack in $stage: this machine received none (scripts/gpu_receive.sh)" >&2
        exit 1
    fi
    cat "$stage"/pack.* > "$stage/tiny-imagenet-200.tar.xz"
    if ! echo "${SHA256}  $stage/tiny-imagenet-200.tar.xz" | sha256sum -c --status -; then
        # a piece call that went to another machine (this one was fresh), or one not made: send the missing again
        echo "gpu_train.sh: the pieces in $stage ($(cd "$stage" && ls pack.* | tr '\n' ' ')) do not join into the" \
             "pack $SHA256: one is missing or damaged; send the missing piece calls again" >&2
        rm -f "$stage/tiny-imagenet-200.tar.xz"
        exit 1
    fi
    mkdir -p "$data"
    # the pack (scripts/pack_data.py): train and val of the official zip, byte for byte; its sha256 was checked
    # above, and prepare decodes (and so checks) every image. xz's tar where there is one (8 s on a 2-core CPU),
    # else Python's (17 s there)
    if command -v xz > /dev/null; then
        tar -xJf "$stage/tiny-imagenet-200.tar.xz" -C "$data"
    else
        "$py" -m tarfile --filter data -e "$stage/tiny-imagenet-200.tar.xz" "$data"
    fi
    "$py" -m tinyconv prepare --split train --split val  # the pack has no test split: training never reads it
    echo "$SHA256" > "$data/.pack-sha256"
fi

if [ -f "$runs/$name/config.json" ]; then
    # a later train call of the same lease (the machine still warm): the run on this machine is where the last
    # call left it, ahead of the repository's state, so it goes on from there
    echo "continuing the run an earlier call trained on this machine ($runs/$name)"
    continuing=1
elif [ -f "$state_in/manifest.json" ]; then
    phase restore
    "$py" -m tinyconv state restore "$state_in" "$runs/$name"
fi

# the sync phase measures the run's recipe (the train flags' --profile, else the reference's) and preset
profile=()
preset=()
for ((i = 1; i < $#; i++)); do
    j=$((i + 1))
    if [ "${!i}" = --profile ]; then profile=(--profile "${!j}"); fi
    if [ "${!i}" = --preset ]; then preset=(--preset "${!j}"); fi
done

mkdir -p "$runs"  # a first lease has restored nothing there yet
form_file=$runs/$name.form  # the form this machine's calls train with: a later call of the lease reads it
if [ -n "${TINYCONV_DEPTHWISE:-}" ]; then
    # a form chosen by an earlier lease on the same kind of GPU (its lease.log): the two minutes go to training
    echo "depthwise form given: $TINYCONV_DEPTHWISE"
elif [ -f "$form_file" ]; then
    # an earlier call of this lease measured the forms (or was given one) on this very machine
    TINYCONV_DEPTHWISE=$(cat "$form_file")
    export TINYCONV_DEPTHWISE
    echo "depthwise form of an earlier call on this machine: $TINYCONV_DEPTHWISE"
elif last_form=$("$py" - "$runs/$name/sessions.jsonl" <<'PY'
# the depthwise form of the run's newest session on this kind of device (exit 1 when there is none): sessions on
# other machines between (a CPU session of the run, another kind of GPU) do not make the form unknown
import sys
from pathlib import Path
from tinyconv.training.run_state import known_form
if not Path(sys.argv[1]).is_file():
    sys.exit(1)  # a new run: nothing recorded
from tinyconv import runtime  # JAX starts only when there are sessions to compare devices with
form = known_form(sys.argv[1], runtime.describe_device())
if form is None:
    sys.exit(1)  # never on this kind of device, or its measurement failed or was never made: measure here
print(form)
PY
); then
    TINYCONV_DEPTHWISE=$last_form
    export TINYCONV_DEPTHWISE
    echo "depthwise form of the run's newest session on this kind of device: $TINYCONV_DEPTHWISE"
elif [ "$forms_s" != 0 ]; then
    phase forms
    forms_json=$runs/$name.forms.json
    # the fastest agreeing form of the 9x9 depthwise conv; on failure training keeps the default form (cuDNN)
    # (the run's own train step: gpu_profile.py builds it from the train flags, as `tinyconv train` does)
    if "$py" "$repo/benchmarks/gpu_profile.py" --choose --budget-s "$forms_s" --json "$forms_json" ${FORMS_FLAGS:-} \
            -- "$@"; then
        TINYCONV_DEPTHWISE=$("$py" -c "import json, sys; print(json.load(open(sys.argv[1]))['chosen'])" "$forms_json")
        echo "forms: $(cat "$forms_json")"
        echo "chosen depthwise form: $TINYCONV_DEPTHWISE"
    else
        TINYCONV_DEPTHWISE=auto  # the default form; not measured again by a later call on this machine
        echo "forms: the measurement failed; training with the default form"
    fi
    export TINYCONV_DEPTHWISE
fi
if [ -n "${TINYCONV_DEPTHWISE:-}" ]; then echo "$TINYCONV_DEPTHWISE" > "$form_file"; fi

if [ "$sync_s" != 0 ] && [ -n "${continuing:-}" ]; then
    # measured once per lease, by its first train call: a second call spends its minutes on training
    echo "sync: measured by an earlier call on this machine; skipped"
elif [ "$sync_s" != 0 ]; then
    # the fit loop's train images/s with and without a host round trip per step, on the real data and the run's
    # recipe (2 epochs of 50 images a class: the second epoch's steps are timed), within $SYNC_S seconds
    phase sync
    timeout "$sync_s" "$py" "$repo/benchmarks/fit_loop_sync.py" --data-dir "$data" "${profile[@]}" "${preset[@]}" \
        --epochs 2 --rounds "${SYNC_ROUNDS:-2}" --set max_train_per_class=50 ${SYNC_FLAGS:-} \
        || echo "sync: stopped (its $SYNC_S s budget, or a failure); training goes on"
fi

if [ "$minutes" = auto ]; then
    left=$(( call_s - ($(date +%s) - started) - margin_s ))
    minutes=$("$py" -c "import sys; print(max(0.1, int(sys.argv[1]) / 60))" "$left")
fi
# the device and software of this lease, in its log before training (a call killed at its limit keeps them too):
# `tinyconv state keep` files the log in results/NAME/leases/
"$py" -c "import jax, jaxlib, keras, numpy, sys; print('versions: python', sys.version.split()[0], 'jax', jax.__version__, 'jaxlib', jaxlib.__version__, 'keras', keras.__version__, 'numpy', numpy.__version__, 'devices', jax.devices())"
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi")
phase "train ($minutes min)"
"$py" -m tinyconv train --out "$runs/$name" --time-limit "$minutes" "$@" &
train_pid=$!
"$py" -m tinyconv state watch "$runs/$name" "$OUT/state" --pid "$train_pid" &
watch_pid=$!
status=0
wait "$train_pid" || status=$?
wait "$watch_pid" || true
phase "done (train exit $status)"
exit "$status"
