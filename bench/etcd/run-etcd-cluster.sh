#!/usr/bin/env bash
# Starts a 3-member etcd cluster on 127.0.0.1 for etcd-lock-bench (see README.md).
#
#   bench/etcd/run-etcd-cluster.sh [DIR]
#
# Members etcd1..etcd3: client ports 23791-23793, peer ports 23801-23803. Their data dirs, logs
# and the PID file (etcd.pids) go under DIR (created if missing; a fresh `mktemp -d` if not
# given). Default etcd settings otherwise: the WAL is fsynced as etcd always does.
# Prints the client endpoint list on stdout once every member answers its health check; the
# last line of stderr tells how to stop the cluster (stop-etcd-cluster.sh DIR).
set -euo pipefail

command -v etcd >/dev/null || { echo "etcd not found: apt-get install -y etcd-server etcd-client" >&2; exit 1; }
command -v etcdctl >/dev/null || { echo "etcdctl not found: apt-get install -y etcd-client" >&2; exit 1; }

dir=${1:-$(mktemp -d -t etcd-bench.XXXXXX)}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
pids="$dir/etcd.pids"
if [[ -e $pids ]]; then
    echo "$pids exists: a cluster may still run there (stop-etcd-cluster.sh $dir)" >&2
    exit 1
fi

host=127.0.0.1
cluster="etcd1=http://$host:23801,etcd2=http://$host:23802,etcd3=http://$host:23803"
endpoints="$host:23791,$host:23792,$host:23793"

: >"$pids"
for i in 1 2 3; do
    etcd --name "etcd$i" \
        --data-dir "$dir/etcd$i.data" \
        --listen-client-urls "http://$host:2379$i" \
        --advertise-client-urls "http://$host:2379$i" \
        --listen-peer-urls "http://$host:2380$i" \
        --initial-advertise-peer-urls "http://$host:2380$i" \
        --initial-cluster "$cluster" \
        --initial-cluster-token etcd-lock-bench \
        --initial-cluster-state new \
        >"$dir/etcd$i.log" 2>&1 &
    echo $! >>"$pids"
done

# Wait (at most 30 s) until all three members report healthy.
for _ in $(seq 1 60); do
    if etcdctl --endpoints "$endpoints" --command-timeout=2s endpoint health >/dev/null 2>&1; then
        echo "etcd cluster up in $dir (PIDs $(tr '\n' ' ' <"$pids")); stop with: $(dirname "$0")/stop-etcd-cluster.sh $dir" >&2
        echo "$endpoints"
        exit 0
    fi
    sleep 0.5
done
echo "etcd cluster did not become healthy within 30 s; logs in $dir/etcd*.log" >&2
etcdctl --endpoints "$endpoints" --command-timeout=2s endpoint health >&2 || true
exit 1
