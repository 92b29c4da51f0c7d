#!/usr/bin/env bash
# Two builds of ldlm-server measured in the same run, alternated round by round, so that drift
# on a shared machine hits both alike (BENCHMARKS.md reports ratios measured this way).
#
#   bench/ab.sh [--cluster] ROUNDS DIR_A DIR_B [-- LDLM_BENCH_ARGS...]
#
# DIR_A and DIR_B each hold an `ldlm-server` (e.g. target/release of two checkouts; copy the
# binary aside before rebuilding). Each round starts a fresh server of A, runs ldlm-bench
# against it, stops it, then does the same for B. Without --cluster the server is a single one
# with a state file; with --cluster it is a 3-node cluster on 127.0.0.1 and the bench's
# connections are spread over the three nodes. LDLM_BENCH_ARGS default to `-c 16 -d 5s`. The
# ldlm-bench used is $LDLM_BENCH, else DIR_B's, else target/release's. Prints every run, then
# each build's median and range and B's median against A's. Stops only what it started, by PID.
set -euo pipefail

cluster=false
if [[ ${1:-} == --cluster ]]; then cluster=true; shift; fi
if [[ $# -lt 3 ]]; then
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
rounds=$1 a=$2 b=$3
shift 3
[[ ${1:-} == -- ]] && shift
bench_args=("$@")
[[ ${#bench_args[@]} -gt 0 ]] || bench_args=(-c 16 -d 5s)

root=$(cd "$(dirname "$0")/.." && pwd)
bench=${LDLM_BENCH:-}
[[ -n $bench ]] || { [[ -x $b/ldlm-bench ]] && bench=$b/ldlm-bench; } || bench=$root/target/release/ldlm-bench
for binary in "$a/ldlm-server" "$b/ldlm-server" "$bench"; do
    [[ -x $binary ]] || { echo "ab.sh: missing $binary" >&2; exit 1; }
done

work=$(mktemp -d -t ldlm-ab.XXXXXX)
pids=()
stop() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
trap 'stop; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# Starts the server(s) of one build; sets `addresses` (for ldlm-bench -a). Not run in a
# subshell, so that `pids` reaches the trap.
start() {
    local server=$1/ldlm-server dir
    dir=$(mktemp -d -p "$work")
    if $cluster; then
        local peers=1=127.0.0.1:24901,2=127.0.0.1:24902,3=127.0.0.1:24903
        for id in 1 2 3; do
            "$server" --cluster_node_id "$id" --cluster_peers "$peers" \
                --cluster_data_dir "$dir/node-$id" -l "127.0.0.1:2491$id" \
                --ipc_socket_file "$dir/node-$id.sock" >"$dir/node-$id.log" 2>&1 &
            pids+=($!)
        done
        addresses=127.0.0.1:24911,127.0.0.1:24912,127.0.0.1:24913
    else
        "$server" -l 127.0.0.1:24910 --state_file "$dir/state" \
            --ipc_socket_file "$dir/server.sock" >"$dir/server.log" 2>&1 &
        pids+=($!)
        addresses=127.0.0.1:24910
    fi
}

# One run: a fresh server (or cluster) of the build, one ldlm-bench run; sets `rate`
# (cycles/s).
run() {
    start "$1"
    # Ready when a short run succeeds (a cluster has elected a leader); 30 s at most.
    for _ in $(seq 1 60); do
        "$bench" -a "$addresses" -c 1 -n 10 --warmup 0s -q >/dev/null 2>&1 && break
        sleep 0.5
    done
    rate=$("$bench" -a "$addresses" -q --json "${bench_args[@]}" |
        python3 -c 'import json, sys; print(round(json.load(sys.stdin)["cycles_per_second"]))')
    stop
}

results_a=() results_b=()
for round in $(seq 1 "$rounds"); do
    run "$a"
    ra=$rate
    run "$b"
    rb=$rate
    echo "round $round: A $ra  B $rb"
    results_a+=("$ra")
    results_b+=("$rb")
done

python3 - "${results_a[*]}" "${results_b[*]}" <<'EOF'
import statistics, sys
a = [float(x) for x in sys.argv[1].split()]
b = [float(x) for x in sys.argv[2].split()]
ma, mb = statistics.median(a), statistics.median(b)
print(f"A: median {ma:.0f}  range {min(a):.0f}-{max(a):.0f}")
print(f"B: median {mb:.0f}  range {min(b):.0f}-{max(b):.0f}")
print(f"B / A (medians): {mb / ma:.3f}  ({(mb / ma - 1) * 100:+.1f} %)")
EOF
