#!/usr/bin/env bash
# Prepare a GPU lease here, before its first call (docs/gpu.md, "A lease, call by call"); costs no device time.
#
#   scripts/lease_prepare.sh [NAME]          # NAME: the run, default seed-reference
#   ZIP=path/to/tiny-imagenet-200.zip scripts/lease_prepare.sh   # default: the path ../shared/data/assemble prints
#
#  1. wheels   keras, namex, optree and tinyconv into .whl/ (scripts/offline_bundle.sh); kept when built from
#              the same pyproject.toml and tinyconv files
#  2. pieces   the zip cut into pieces/zip.NN (scripts/split_file.sh); kept when pieces/ already holds that zip's
#  3. budget   every call's load, counted as the device tool counts it (the tracked files, the untracked files git
#               does not ignore, and what its carry names), against $LIMIT_BYTES (64 MiB): exit 1 with one line per
#               call over it, before anything is moved or any device time spent
#  4. state    results/NAME/state moved aside to $ASIDE (default /tmp/NAME-state-aside) if the repository keeps one:
#               the piece calls must not carry its 43 MB; call 7 needs it back (the printed `mv`); an $ASIDE that
#               exists already (an earlier lease's, never moved back) is refused, never overwritten
#  5. plan     the calls in order: carry, command (with the zip's sha256) and the `state keep` for after
#
# .whl/ and pieces/ are ignored by git, so a call carries only the pieces its carry names. The call that carries
# the wheels takes the shortest piece.
set -euo pipefail
name=${1:-seed-reference}
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
limit=${LIMIT_BYTES:-67108864}
aside=${ASIDE:-/tmp/$name-state-aside}
zip=${ZIP:-$("$repo/../shared/data/assemble" | tail -1)}

echo "1. wheels"
# built again only when what they are built from changed: pyproject.toml (the pins) and tinyconv's tracked files
fingerprint=$(git ls-files -z pyproject.toml tinyconv | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
if [ -f .whl/.fingerprint ] && [ "$(cat .whl/.fingerprint)" = "$fingerprint" ]; then
    echo ".whl/ already holds the wheels of this checkout"
else
    log=$(mktemp)
    bash scripts/offline_bundle.sh .whl > "$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; exit 1; }
    rm -f "$log"
    echo "$fingerprint" > .whl/.fingerprint
fi
ls .whl

echo "2. pieces of $zip"
sha=$(sha256sum "$zip" | cut -d' ' -f1)
if [ -f pieces/.sha256 ] && [ "$(cat pieces/.sha256)" = "$sha" ]; then
    echo "pieces/ already holds the pieces of $sha"
else
    rm -rf pieces
    bash scripts/split_file.sh "$zip" pieces ${PIECE_BYTES:-} > /dev/null
    echo "$sha" > pieces/.sha256
fi

echo "3. budget (a call may carry $limit bytes)"
# what every call carries: tracked files present in the tree and untracked files git does not ignore, but for the
# kept state, which the piece calls leave behind (step 4) and call 7 carries
state=results/$name/state
base=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } | { grep -zv "^$state/" || true; } \
        | xargs -0 -r stat -c %s -- 2>/dev/null | awk '{s += $1} END {print s + 0}')
size() { du -sb "$@" | awk '{s += $1} END {print s + 0}'; }
mapfile -t pieces < <(ls pieces/zip.* | sort)
shortest=$(for p in "${pieces[@]}"; do echo "$(stat -c %s "$p") $p"; done | sort -n | head -1 | cut -d' ' -f2)
calls=()      # "carry|command|bytes"
calls+=("[\".whl\", \"$shortest\"]|scripts/gpu_receive.sh $shortest .whl|$((base + $(size .whl "$shortest")))")
for p in "${pieces[@]}"; do
    [ "$p" = "$shortest" ] && continue
    calls+=("[\"$p\"]|scripts/gpu_receive.sh $p|$((base + $(size "$p")))")
done
kept_bytes=0
if [ -f "$state/manifest.json" ]; then kept_bytes=$(size "$state"); fi
train="OUT=\$OUT SHA256=$sha scripts/gpu_train.sh $name auto ${TRAIN_FLAGS:---preset seed --profile reference}"
calls+=("none|$train|$((base + kept_bytes))")
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

echo "4. state"
if [ "$kept_bytes" != 0 ]; then
    if [ -e "$aside" ]; then
        echo "lease_prepare: $aside exists (an earlier lease's state set aside?): move it back or away first; nothing moved" >&2
        exit 1
    fi
    mv "$state" "$aside"
    echo "moved $state (epoch $(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['epoch'])" "$aside/manifest.json")) to $aside"
else
    echo "no kept state in $state: the run starts fresh"
fi

echo "5. the calls, back to back (the machine goes back after 30 s idle)"
n=0
for call in "${calls[@]}"; do
    n=$((n + 1))
    rest=${call%|*}
    if [ "$n" = "${#calls[@]}" ] && [ "$kept_bytes" != 0 ]; then
        echo "   before call $n: mv $aside $state"
    fi
    printf '   call %d  carry %s\n           %s\n' "$n" "${rest%%|*}" "${rest#*|}"
done
echo "   then: .venv/bin/tinyconv state keep <files_at>/state $state --run runs/$name"
