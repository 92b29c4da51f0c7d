"""Primary/secondary failover with a lock: whoever holds it is the primary.

Two worker processes race for the lock "example-failover-<pid>". The winner is the primary: it
keeps the lock (renewing a short lease) for as long as it lives. The other blocks in Lock as the
secondary. When the primary dies its connection closes and the server releases the lock at once
(a primary that hangs instead loses it when its lease runs out): the secondary's Lock returns and
it takes over, with a larger fencing token, so anything still listening to the old primary can
tell them apart.

This script runs the whole scenario: it starts both workers, checks that exactly one is primary
(for longer than the lease, so the renewal works), kills the primary (SIGKILL) and checks that
the secondary takes over. From the repository root:

    stubs=$(tests/python/setup.sh)
    PYTHONPATH=$stubs target/pyenv/bin/python examples/python/failover.py localhost:3144

A worker alone: failover.py ADDRESS --worker ID --name NAME. Exits 0 on success.
"""

import argparse
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import grpc

import ldlm_pb2 as pb
import ldlm_pb2_grpc as rpc

LEASE_SECONDS = 2


def worker(args):
    """Blocks until it holds the lock, then stays primary (renewing) until killed."""
    metadata = [("authorization", args.password)] if args.password else None
    channel = grpc.insecure_channel(args.address)
    grpc.channel_ready_future(channel).result(timeout=10)
    stub = rpc.LDLMStub(channel)
    print(f"{args.worker} standby", flush=True)
    r = stub.Lock(
        pb.LockRequest(name=args.name, lock_timeout_seconds=LEASE_SECONDS), metadata=metadata
    )
    if not r.locked or r.HasField("error"):
        print(f"{args.worker} error {r}", flush=True)
        sys.exit(1)
    print(f"{args.worker} primary {r.fencing_token}", flush=True)
    while True:
        # Renew every third of the lease: two renewals may fail before the lease runs out.
        time.sleep(LEASE_SECONDS / 3)
        renewed = stub.Renew(
            pb.RenewRequest(name=args.name, key=r.key, lock_timeout_seconds=LEASE_SECONDS),
            metadata=metadata,
        )
        if not renewed.locked or renewed.HasField("error"):
            # Lost it: stop acting as primary at once.
            print(f"{args.worker} lost {renewed}", flush=True)
            sys.exit(1)


def expect(events, what, timeout):
    """The next (worker, word, rest) event matching `what`, or None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            event = events.get(timeout=left)
        except queue.Empty:
            return None
        print(f"  [{event[0]}] {event[1]} {event[2]}".rstrip())
        if event[1] in ("error", "lost", "exited"):
            raise SystemExit(f"worker {event[0]} failed: {event[1]} {event[2]}")
        if what(event):
            return event


def run(args):
    name = args.name or f"example-failover-{os.getpid()}"
    events = queue.Queue()
    workers = {}
    command = [sys.executable, os.path.abspath(__file__), args.address, "--name", name]
    if args.password:
        command += ["--password", args.password]

    def read(worker_id, process):
        for line in process.stdout:
            parts = line.split(maxsplit=2)
            if len(parts) >= 2:
                events.put((worker_id, parts[1], parts[2].strip() if len(parts) > 2 else ""))
        if process.wait() not in (0, -signal.SIGKILL, -signal.SIGTERM):
            events.put((worker_id, "exited", str(process.returncode)))

    try:
        for worker_id in ("a", "b"):
            process = subprocess.Popen(
                command + ["--worker", worker_id], stdout=subprocess.PIPE, text=True
            )
            workers[worker_id] = process
            threading.Thread(target=read, args=(worker_id, process), daemon=True).start()

        first = expect(events, lambda e: e[1] == "primary", 20)
        if first is None:
            raise SystemExit("nobody became primary")
        primary, token = first[0], int(first[2])
        secondary = "b" if primary == "a" else "a"
        print(f"{primary} is primary (fencing token {token}), {secondary} is secondary")

        # Longer than the lease: the primary keeps the lock by renewing, the secondary waits.
        hold = LEASE_SECONDS + 1
        if expect(events, lambda e: e[1] == "primary", hold) is not None:
            raise SystemExit("two primaries")
        print(f"after {hold} s {primary} is still the only primary")

        workers[primary].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        print(f"killed {primary}")
        takeover = expect(events, lambda e: e[1] == "primary", 15)
        if takeover is None or takeover[0] != secondary:
            raise SystemExit(f"{secondary} did not take over")
        new_token = int(takeover[2])
        if new_token <= token and not (new_token == 0 and token == 0):
            raise SystemExit(f"the fencing token did not grow: {token} -> {new_token}")
        print(
            f"{secondary} took over after {time.monotonic() - killed:.2f} s "
            f"(fencing token {token} -> {new_token})"
        )
    finally:
        for process in workers.values():
            if process.poll() is None:
                process.kill()
            process.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", help="the server's gRPC address, HOST:PORT")
    parser.add_argument("--password", help="the server's --password, if it has one")
    parser.add_argument("--worker", help="run as one worker with this id")
    parser.add_argument("--name", help="the lock name (default: unique per run)")
    args = parser.parse_args()
    if args.worker:
        worker(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
