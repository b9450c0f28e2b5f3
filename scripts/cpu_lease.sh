#!/usr/bin/env bash
# A CPU session's share of a long run (docs/gpu.md, "Between GPU leases: the run goes on on a CPU"): the run that GPU
# leases advance (results/NAME/state) trains on here in the background, at the lowest priority, while the session
# works, and what it trained is kept in the repository as a lease's would be.
#
#   scripts/cpu_lease.sh NAME start [train flags...]   e.g. scripts/cpu_lease.sh seed-reference start --preset seed --profile reference --time-limit 115
#                                                      (--time-limit: train stops itself after the last epoch that fits)
#   scripts/cpu_lease.sh NAME status
#   scripts/cpu_lease.sh NAME stop                     before the session ends; then commit results/NAME
#
# start  restores the kept state results/NAME/state into runs/NAME (where runs/NAME holds no run yet; a run there
#        further along is continued as it is) and starts `tinyconv train --out runs/NAME FLAGS` under `nice -n 19`
#        (NICE), detached, its output in runs/NAME.lease.log after a header (date, CPU, software). Like a GPU lease's
#        train call it refuses to start the run afresh unless FRESH=1 says so (the run's first session): a state
#        that is missing would otherwise start the run over without a word. A run folder further along than the
#        kept state holds epochs not kept yet (a second start in one session): its log is continued, not begun
#        afresh, so that `stop` keeps the record of them all.
# status whether it trains, the step of the epoch under way (its last progress line) and the epochs done.
# stop   interrupts training (SIGINT: the epoch under way is lost, the last completed one is backed up), packs the
#        run's state as a lease returns it, and keeps it with `tinyconv state keep` (checked, the same run and no
#        earlier epoch; the log filed as results/NAME/leases/lease-NN.log), redraws the run's figure in the docs
#        (FIGURE, docs/figures/NAME.png, where it exists: scripts/plot_reference_runs.py, the run beside the other runs
#        of its name, results/NAME-*), then prints the commit to make, and the notebooks to make again after it where
#        their outputs show the run (`tinyconv notebooks --check`).
#
# The run's numbers do not depend on where a session ran: tests/test_jax_parity.py moves a run TensorFlow -> JAX ->
# TensorFlow through packed states and checks that both backends restore the same variables, bit for bit.
set -euo pipefail
name=$1
action=$2
shift 2
repo=$(cd "$(dirname "$0")/.." && pwd)
runs=${RUNS:-$repo/runs}
run=$runs/$name
kept=${KEPT:-$repo/results/$name/state}
log=$run.lease.log
pidfile=$run.pid
tinyconv=${TINYCONV:-$repo/.venv/bin/tinyconv}
python=${PYTHON:-$repo/.venv/bin/python}
figure=${FIGURE:-$repo/docs/figures/$name.png}

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2> /dev/null; }

case $action in
start)
    if running; then
        echo "cpu_lease: $name is training already (pid $(cat "$pidfile"); $log)" >&2
        exit 1
    fi
    continue_log=0  # the log: begun afresh, or continued where the run holds epochs not kept yet
    if [ -f "$kept/manifest.json" ]; then
        if [ -f "$run/config.json" ]; then
            # a run folder from earlier in this session: the kept state replaces it unless it is further along
            if ! "$tinyconv" state restore "$kept" "$run"; then
                echo "cpu_lease: continuing $run as it is"
                continue_log=1
            fi
        else
            "$tinyconv" state restore "$kept" "$run"
        fi
    elif [ -f "$run/config.json" ]; then
        echo "cpu_lease: no kept state at $kept; continuing $run as it is"
        continue_log=1
    elif [ -f "$(dirname "$kept")/config.json" ]; then
        echo "cpu_lease: $(dirname "$kept") holds the run but not its state ($kept): bring it back" \
             "(git checkout -- $kept) rather than start the run over" >&2
        exit 1
    elif [ "${FRESH:-}" != 1 ]; then
        echo "cpu_lease: no state of $name to continue ($kept/manifest.json); FRESH=1 starts the run" >&2
        exit 1
    fi
    mkdir -p "$runs"
    [ "$continue_log" = 1 ] || : > "$log"
    {
        echo "cpu_lease $name, $(date -u '+%Y-%m-%d %H:%M:%S UTC'), git $(git -C "$repo" rev-parse --short HEAD)"
        echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
        "$repo/.venv/bin/python" -c 'import platform, keras, numpy, tensorflow as tf
print(f"python {platform.python_version()}, keras {keras.__version__}, tensorflow {tf.__version__}, numpy {numpy.__version__}")' 2> /dev/null
        echo "train flags: $*"
    } >> "$log"
    # setsid: the training outlives the shell that started it; nice: the session's own work goes first. A new
    # session is a scheduling group of its own where the kernel groups by session (sched_autogroup_enabled), and
    # there a process's nice value only ranks it within its group: the group gets the same nice value too (measured
    # 2026-12-06: at nice 19 in its own group the training still took ~60 % of the 2 cores from the test suite)
    setsid nohup nice -n "${NICE:-19}" "$tinyconv" train --out "$run" "$@" >> "$log" 2>&1 < /dev/null &
    pid=$!
    echo $pid > "$pidfile"
    for _ in $(seq 50); do  # once setsid has made the new session (before, the group is still this shell's)
        if [ "$(ps -o sid= -p "$pid" | tr -d ' ')" = "$pid" ]; then
            echo "${NICE:-19}" 2> /dev/null > "/proc/$pid/autogroup" || true
            break
        fi
        sleep 0.1
    done
    echo "cpu_lease: $name training in the background (pid $pid, nice ${NICE:-19}); its log: $log"
    ;;
status)
    if running; then
        echo "training (pid $(cat "$pidfile"))"
        # the epoch under way, as its last progress line says (tinyconv.training.callbacks.EpochProgress); none
        # yet after Keras' "Epoch N/M" header, so that a new epoch does not show the last one's line
        tr '\r' '\n' < "$log" | awk '/^Epoch [0-9]+\/[0-9]+/ { line = "" } /^epoch [0-9]+\/[0-9]+: step / { line = $0 }
                                     END { if (line != "") print line }'
    else
        echo "not training"
    fi
    if [ -f "$run/history.csv" ]; then
        # the columns by name: epoch_s (the epoch's wall time, validation included) and val_top1
        awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
                 { n++; s = $col["epoch_s"]; top1 = $col["val_top1"] }
                 END { if (n) printf "epochs done: %d; the last took %.0f min, val top-1 %.2f %%\n", n, s / 60, 100 * top1
                       else print "epochs done: 0" }' "$run/history.csv"
    fi
    if [ -f "$log" ]; then tr '\r' '\n' < "$log" | grep -v '^I0000' | tail -n 3; fi
    ;;
stop)
    if running; then
        pid=$(cat "$pidfile")
        kill -INT "$pid"
        for _ in $(seq 600); do kill -0 "$pid" 2> /dev/null || break; sleep 0.5; done
        if kill -0 "$pid" 2> /dev/null; then
            echo "cpu_lease: $name's training (pid $pid) did not stop within 5 minutes of SIGINT" >&2
            exit 1
        fi
    fi
    rm -f "$pidfile"
    if [ ! -f "$run/config.json" ]; then
        echo "cpu_lease: no run at $run to keep" >&2
        exit 1
    fi
    returned=$(mktemp -d "${TMPDIR:-/tmp}/cpu-lease-XXXXXX")
    "$tinyconv" state pack "$run" "$returned/state"
    cp "$log" "$returned/lease.log"
    # restored into a scratch folder: the run folder here stays as training left it
    "$tinyconv" state keep "$returned/state" "$kept" --run "$returned/run"
    rm -rf "$returned"
    commit=$(dirname "$kept")  # results/NAME: the run's files beside its state
    if [ -f "$figure" ]; then
        specs=()
        for folder in "$commit" "$(dirname "$commit")/$name"-*; do
            [ -f "$folder/history.csv" ] && specs+=("${folder#"$repo"/}=$folder")  # labelled as the repository names it
        done
        if "$python" "$repo/scripts/plot_reference_runs.py" "$figure" "${specs[@]}"; then
            echo "cpu_lease: redrew $figure"
            commit="$commit $figure"
        else
            echo "cpu_lease: could not redraw $figure (the state is kept all the same)" >&2
        fi
    fi
    echo "cpu_lease: kept; now: git add -A $commit && git commit -m \"$name: epoch N of the run (CPU session of $(date -u +%F))\""
    # notebook 04 draws the most advanced run under results/ (docs/gpu.md), so its record names the run's files:
    # once they change, its committed outputs (and those of the notebooks reading its run) are stale, and
    # tests/test_notebooks.py fails until they are made again, after the commit (a record names committed files)
    if ! stale=$("$tinyconv" notebooks --check 2>&1); then
        echo "cpu_lease: then make the notebooks that show the run again, and commit notebooks/ (tinyconv notebooks --check):"
        echo "$stale"
    fi
    ;;
*)
    echo "cpu_lease: unknown action '$action' (start, status or stop)" >&2
    exit 2
    ;;
esac
