#!/usr/bin/env bash
# Stops the cluster that run-etcd-cluster.sh started in DIR and removes its files.
#
#   bench/etcd/stop-etcd-cluster.sh DIR
#
# Kills exactly the PIDs listed in DIR/etcd.pids (each only if it still is an etcd process),
# waits for them to exit, then removes the data dirs, logs and PID file, and DIR if it is then
# empty.
set -euo pipefail

dir=${1:?usage: stop-etcd-cluster.sh DIR (the directory run-etcd-cluster.sh printed)}
pids="$dir/etcd.pids"
[[ -f $pids ]] || { echo "no $pids: nothing to stop" >&2; exit 1; }

alive=()
while read -r pid; do
    [[ -n $pid ]] || continue
    if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == etcd ]]; then
        kill "$pid"
        alive+=("$pid")
    fi
done <"$pids"

# Wait (at most 10 s) for them to exit; then force.
for _ in $(seq 1 50); do
    still=()
    for pid in "${alive[@]}"; do
        [[ $(cat "/proc/$pid/comm" 2>/dev/null) == etcd ]] && still+=("$pid")
    done
    ((${#still[@]} == 0)) && break
    sleep 0.2
done
for pid in "${still[@]}"; do
    echo "etcd $pid did not stop on SIGTERM: SIGKILL" >&2
    kill -9 "$pid" 2>/dev/null || true
done

rm -rf "$dir"/etcd{1,2,3}.data "$dir"/etcd{1,2,3}.log "$pids"
rmdir "$dir" 2>/dev/null || echo "left $dir (not empty)" >&2
echo "etcd cluster in $dir stopped" >&2
