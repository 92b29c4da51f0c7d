#!/usr/bin/env bash
# LDLM's 3-node cluster beside a 3-member etcd cluster, measured in the same run on the same
# machine, with the same shape of load (BENCHMARKS.md "Cluster mode: beside etcd").
#
#   bench/etcd/compare.sh [ROUNDS] [SECONDS]      (defaults: 3 rounds of 5 s per row)
#
# Needs the release binaries (cargo build --release -p ldlm-cli -p ldlm-bench), etcd-lock-bench
# (see README.md here) and Debian's etcd-server and etcd-client. Both clusters run at once, on
# 127.0.0.1, with their data under one temporary directory (the same disk); each row runs LDLM
# then etcd, round after round, so drift on the machine hits both alike. Rows:
#   1. TryLock+Unlock on distinct names, 16 connections   | etcd Lock+Unlock, 16 clients
#   2. the same, 16 connections x 16 in flight            | etcd, 50 clients
#   3. blocking Lock+Unlock, 16 clients on one name       | etcd, 16 clients on one name
# Every client of both is spread over the three nodes. Prints one line per run, then the
# medians and their ratios. Stops everything it started (by PID) when it ends.
set -euo pipefail

rounds=${1:-3}
seconds=${2:-5}
root=$(cd "$(dirname "$0")/../.." && pwd)
server=$root/target/release/ldlm-server
bench=$root/target/release/ldlm-bench
etcd_bench=${ETCD_LOCK_BENCH:-/work/etcd-target/release/etcd-lock-bench}
for binary in "$server" "$bench" "$etcd_bench"; do
    [[ -x $binary ]] || { echo "missing $binary (see the header of $0)" >&2; exit 1; }
done

dir=$(mktemp -d -t ldlm-vs-etcd.XXXXXX)
ldlm_pids=()
cleanup() {
    for pid in "${ldlm_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait "${ldlm_pids[@]}" 2>/dev/null || true
    [[ -e $dir/etcd/etcd.pids ]] && "$root/bench/etcd/stop-etcd-cluster.sh" "$dir/etcd" >/dev/null 2>&1
    rm -rf "$dir"
}
trap cleanup EXIT

peers=1=127.0.0.1:24701,2=127.0.0.1:24702,3=127.0.0.1:24703
for id in 1 2 3; do
    "$server" --cluster_node_id "$id" --cluster_peers "$peers" \
        --cluster_data_dir "$dir/ldlm-$id" -l "127.0.0.1:2471$id" \
        --ipc_socket_file "$dir/ldlm-$id.sock" >"$dir/ldlm-$id.log" 2>&1 &
    ldlm_pids+=($!)
done
ldlm=127.0.0.1:24711,127.0.0.1:24712,127.0.0.1:24713
etcd=$("$root/bench/etcd/run-etcd-cluster.sh" "$dir/etcd")

# Wait until the LDLM cluster grants (a leader is elected).
for _ in $(seq 1 60); do
    if "$bench" -a "$ldlm" -c 1 -n 10 --warmup 0s -q >/dev/null 2>&1; then break; fi
    sleep 0.5
done

json_field() { python3 -c "import json,sys; print(round(json.load(sys.stdin)['$1']))"; }
run_ldlm() { "$bench" -a "$ldlm" -d "${seconds}s" -q --json "$@" | json_field cycles_per_second; }
run_etcd() { "$etcd_bench" -a "$etcd" -d "${seconds}s" --json "$@" 2>/dev/null | json_field cycles_per_second; }

declare -A results
rows=(1 2 3)
for round in $(seq 1 "$rounds"); do
    for row in "${rows[@]}"; do
        case $row in
            1) l=$(run_ldlm -c 16); e=$(run_etcd -w distinct -c 16) ;;
            2) l=$(run_ldlm -c 16 -f 16); e=$(run_etcd -w distinct -c 50) ;;
            3) l=$(run_ldlm -c 16 -w contended); e=$(run_etcd -w contended -c 16) ;;
        esac
        echo "round $round row $row: ldlm $l/s etcd $e/s"
        results[$row]+="$l $e,"
    done
done

echo
echo "medians over $rounds round(s) of ${seconds} s (cycles or hand-offs per second):"
for row in "${rows[@]}"; do
    python3 - "$row" "${results[$row]}" <<'EOF'
import statistics, sys
row, runs = sys.argv[1], [r.split() for r in sys.argv[2].strip(",").split(",")]
ldlm = statistics.median(float(l) for l, _ in runs)
etcd = statistics.median(float(e) for _, e in runs)
names = {"1": "TryLock+Unlock, 16 conns     vs etcd 16 clients",
         "2": "TryLock+Unlock, 16x16 flight vs etcd 50 clients",
         "3": "contended, 16 clients        vs etcd 16 clients"}
print(f"  {names[row]}: ldlm {ldlm:.0f}  etcd {etcd:.0f}  ratio {ldlm / etcd:.2f}x")
EOF
done
