#!/usr/bin/env bash
# Prepare a GPU lease here, before its first call (docs/gpu.md, "A lease, call by call"); costs no device time.
#
#   scripts/lease_prepare.sh [NAME]          # NAME: the run, default seed-reference
#   ZIP=path/to/tiny-imagenet-200.zip scripts/lease_prepare.sh   # default: the path ../shared/data/assemble prints
#
#  1. wheels   keras, namex, optree, typing_extensions, simplejpeg and tinyconv into .whl/ (scripts/offline_bundle.sh); kept
#              when built from the same pyproject.toml, tinyconv files and offline_bundle.sh
#  2. data     the zip packed for the lease into pieces/tiny-imagenet-200.tar.xz (scripts/pack_data.py: train and
#              val, byte for byte, xz-compressed: 150 MB against the zip's 242); kept when made from the same zip
#  3. budget   every call's load, counted as the device tool counts it (the tracked files, the untracked files git
#              does not ignore, and what its carry names) without what step 4 sets aside; the pack cut into the
#              fewest pieces (pieces/pack.NN, scripts/split_file.sh) whose calls fit in $LIMIT_BYTES (64 MiB), the
#              wheels riding with one of them ($PIECE_BYTES overrides the size); exit 1 with one line per call
#              over it, before anything is moved or any device time spent
#  4. aside    what calls that do not need it must not carry: the run's kept state results/NAME/state (43 MB) moves to
#              pieces/state (ignored by git), which the train call names in its carry (STATE_IN=pieces/state), so no
#              step puts it back by hand before that call; models/ (the shipped models, 11 MB: no call needs them)
#              moves to $ASIDE (default /tmp/NAME-aside), back after the lease. An $ASIDE that exists already (an
#              earlier lease's, never moved back) is refused, never overwritten. Both are tracked by git, so
#              `git checkout -- models results/NAME/state` brings them back too. A run whose config.json is in
#              results/NAME/ but not its state (a run complete, or a state lost) is refused: only a run's first
#              lease starts it (FRESH=1 in its train call)
#  5. plan     the calls in order: carry, bytes, command (with the pack's sha256), and what to run after; the
#              last, a second train call with what the first leaves of the lease (docs/gpu.md)
#
# .whl/ and pieces/ are ignored by git, so a call carries only the pieces its carry names.
set -euo pipefail
name=${1:-seed-reference}
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
limit=${LIMIT_BYTES:-67108864}
aside=${ASIDE:-/tmp/$name-aside}
zip=${ZIP:-$("$repo/../shared/data/assemble" | tail -1)}
python=${PYTHON:-python3}
state=results/$name/state

echo "1. wheels"
# built again only when what they are built from changed: pyproject.toml (the pins), tinyconv's tracked files and
# the script that builds them
fingerprint=$(git ls-files -z pyproject.toml tinyconv scripts/offline_bundle.sh | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
if [ -f .whl/.fingerprint ] && [ "$(cat .whl/.fingerprint)" = "$fingerprint" ]; then
    echo ".whl/ already holds the wheels of this checkout"
else
    log=$(mktemp)
    bash scripts/offline_bundle.sh .whl > "$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; exit 1; }
    rm -f "$log"
    echo "$fingerprint" > .whl/.fingerprint
fi
ls .whl

echo "2. data: the pack of $zip"
pack=pieces/tiny-imagenet-200.tar.xz
zip_sha=$(sha256sum "$zip" | cut -d' ' -f1)
if [ -f pieces/.zip-sha256 ] && [ "$(cat pieces/.zip-sha256)" = "$zip_sha" ] && [ -f "$pack" ]; then
    echo "pieces/ already holds the pack of $zip_sha"
else
    rm -rf pieces/tiny-imagenet-200.tar.xz pieces/pack.[0-9]* pieces/.zip-sha256  # not pieces/state: a kept state's place
    "$python" scripts/pack_data.py "$zip" "$pack"
    echo "$zip_sha" > pieces/.zip-sha256
fi
sha=$(sha256sum "$pack" | cut -d' ' -f1)  # what the train call checks the joined pieces against

echo "3. budget (a call may carry $limit bytes)"
# what every call carries: tracked files present in the tree and untracked files git does not ignore, but for what
# step 4 sets aside (the kept state and models/)
base=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } | { grep -zv -e "^$state/" -e "^models/" || true; } \
        | xargs -0 -r stat -c %s -- 2>/dev/null | awk '{s += $1} END {print s + 0}')
size() { find "$@" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'; }  # the files' bytes, as a call counts
wheels=$(size .whl)
pack_bytes=$(stat -c %s "$pack")
piece_bytes=${PIECE_BYTES:-}
if [ -z "$piece_bytes" ]; then
    # the fewest equal pieces such that the call with the wheels fits; the other calls carry less
    room=$((limit - base - wheels))
    if [ "$room" -le 0 ]; then
        echo "lease_prepare: the repository ($base bytes) and .whl/ ($wheels) leave no room for data in a call of $limit bytes" >&2
        exit 1
    fi
    count=$(( (pack_bytes + room - 1) / room ))
    piece_bytes=$(( (pack_bytes + count - 1) / count ))
fi
# cut again unless the pieces there are of this size (the first one says: split makes all but the last that long)
# and join to the pack
joined=$( { cat pieces/pack.[0-9]* 2> /dev/null || true; } | sha256sum | cut -d' ' -f1)
first=$(( piece_bytes < pack_bytes ? piece_bytes : pack_bytes ))
if [ "$(stat -c %s pieces/pack.00 2> /dev/null)" != "$first" ] || [ "$joined" != "$sha" ]; then
    rm -f pieces/pack.[0-9]*
    bash scripts/split_file.sh "$pack" pieces "$piece_bytes" > /dev/null
fi
mapfile -t pieces < <(ls pieces/pack.[0-9]* | sort)
echo "${#pieces[@]} pieces of at most $piece_bytes bytes: ${pieces[*]}"
shortest=$(for p in "${pieces[@]}"; do echo "$(stat -c %s "$p") $p"; done | sort -n | head -1 | cut -d' ' -f2)
calls=()      # "carry|command|bytes"
calls+=("[\".whl\", \"$shortest\"]|scripts/gpu_receive.sh $shortest .whl|$((base + wheels + $(size "$shortest")))")
for p in "${pieces[@]}"; do
    [ "$p" = "$shortest" ] && continue
    calls+=("[\"$p\"]|scripts/gpu_receive.sh $p|$((base + $(size "$p")))")
done
kept_bytes=0
if [ -f "$state/manifest.json" ]; then kept_bytes=$(size "$state"); fi
if [ "$kept_bytes" = 0 ] && [ -f "results/$name/config.json" ]; then
    # the run has begun (its files are kept) but no state is here to continue: training it from epoch 1 again would
    # waste the lease (`state keep` refuses such a state)
    if [ -f "results/$name/metrics.json" ]; then
        echo "lease_prepare: results/$name/ holds a complete run (metrics.json); nothing to train" >&2
    elif [ -f pieces/state/manifest.json ]; then
        echo "lease_prepare: $state is missing and pieces/state holds a state (an earlier lease's, never kept or put back):" \
             "mv pieces/state $state, or keep what that lease returned, first; nothing moved" >&2
    else
        echo "lease_prepare: results/$name/ holds a run but $state is missing: git checkout -- $state; nothing moved" >&2
    fi
    exit 1
fi
flags=${TRAIN_FLAGS:---preset seed --profile reference}
if [ "$kept_bytes" = 0 ]; then
    # the run's first lease: its train call starts the run (gpu_train.sh refuses to without FRESH=1)
    train="FRESH=1 OUT=\$OUT SHA256=$sha scripts/gpu_train.sh $name auto $flags"
    calls+=("none|$train|$base")
else
    # the kept state rides with the train call alone (the calls before it would be over the limit with it)
    train="STATE_IN=pieces/state OUT=\$OUT SHA256=$sha scripts/gpu_train.sh $name auto $flags"
    calls+=("[\"pieces/state\"]|$train|$((base + kept_bytes))")
fi
over=0
for call in "${calls[@]}"; do
    bytes=${call##*|}
    if [ "$bytes" -gt "$limit" ]; then
        echo "lease_prepare: a call would carry $bytes bytes, over the $limit a call takes: ${call%%|*}" >&2
        over=1
    fi
done
[ "$over" = 0 ] || exit 1
echo "every call fits: the largest carries $(for call in "${calls[@]}"; do echo "${call##*|}"; done | sort -n | tail -1) bytes"

echo "4. aside"
if [ -e "$aside" ]; then
    echo "lease_prepare: $aside exists (an earlier lease's, never moved back?): move it back or away first; nothing moved" >&2
    exit 1
fi
mkdir -p "$aside"
if [ "$kept_bytes" != 0 ]; then
    rm -rf pieces/state  # an earlier lease's copy, kept since into $state (checked above: $state is here)
    mv "$state" pieces/state
    echo "moved $state (epoch $("$python" -c "import json, sys; print(json.load(open(sys.argv[1]))['epoch'])" pieces/state/manifest.json)) to pieces/state, the train call's carry"
else
    echo "no kept state in $state: the run starts fresh (FRESH=1 in the train call)"
fi
back="rmdir $aside"
if [ -d models ]; then
    mv models "$aside/models"
    back="mv $aside/models models && $back"
    echo "moved models/ to $aside/models"
fi

echo "5. the calls, back to back (the machine goes back after 30 s idle)"
n=0
for call in "${calls[@]}"; do
    n=$((n + 1))
    rest=${call%|*}
    if [ "$n" = "${#calls[@]}" ]; then
        # a call may run 600 s and the lease's time may be shorter than that by now (each failed start costs)
        printf '   call %d  carry %s  (%d bytes); timeout_s = min(600, budget_left_s of call %d'"'"'s reply)\n           %s\n' \
            "$n" "${rest%%|*}" "${call##*|}" "$((n - 1))" "CALL_S=<min(570, budget_left_s - 15)> ${rest#*|}"
    else
        printf '   call %d  carry %s  (%d bytes)\n           %s\n' "$n" "${rest%%|*}" "${call##*|}" "${rest#*|}"
    fi
done
# what the train call leaves of the lease's 15 minutes goes to a second train call on the same machine, issued at
# once (30 s idle gives the machine back): the run, data and compiled step are still there
printf '   call %d  carry none, at once if the reply of call %d shows lease.budget_left_s >= 90 (else give_back);' \
    "$((n + 1))" "$n"
echo " timeout_s = min(600, budget_left_s)"
echo "           CALL_S=<min(570, budget_left_s - 15)> $train"   # the same machine: its data, run and form are there
echo "   then: $back"
echo "   then, for each train call in turn: .venv/bin/tinyconv state keep <files_at>/state $state --run runs/$name"
if [ "$kept_bytes" != 0 ]; then
    echo "   (no train call's state kept, e.g. the lease ended before call $n: mv pieces/state $state instead)"
fi
if [ -f "docs/figures/$name.png" ]; then  # the run's figure in docs/results.md, beside the other runs of its name
    runs="results/$name"
    for folder in results/"$name"-*; do [ -f "$folder/history.csv" ] && runs="$runs $folder"; done
    echo "   then: .venv/bin/python scripts/plot_reference_runs.py docs/figures/$name.png $runs (commit it with the run)"
fi
