"""Rate limiting with a lock: admit at most LIMIT requests per WINDOW seconds.

The lock has size LIMIT (a counting semaphore) and every admitted request takes one slot with
a lease of WINDOW seconds and never unlocks it: the slot frees itself when the lease expires.
So in any WINDOW seconds at most LIMIT requests get in, across every process that uses the same
lock name, with no bookkeeping in the clients. Refused requests cost one TryLock.

From the repository root:

    stubs=$(tests/python/setup.sh)
    PYTHONPATH=$stubs target/pyenv/bin/python examples/python/rate_limit.py localhost:3144

Options: --limit N (5), --window SECONDS (1), --windows K (3: how long to run),
--password PW. Prints what was admitted in each window; exits 0 when the limit held.
"""

import argparse
import math
import os
import sys
import time

import grpc

import ldlm_pb2 as pb
import ldlm_pb2_grpc as rpc


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", help="the server's gRPC address, HOST:PORT")
    parser.add_argument("--limit", type=int, default=5, help="requests admitted per window")
    parser.add_argument("--window", type=int, default=1, help="window length in seconds")
    parser.add_argument("--windows", type=int, default=3, help="how many windows to run")
    parser.add_argument("--password", help="the server's --password, if it has one")
    args = parser.parse_args()
    metadata = [("authorization", args.password)] if args.password else None

    channel = grpc.insecure_channel(args.address)
    grpc.channel_ready_future(channel).result(timeout=10)
    stub = rpc.LDLMStub(channel)
    name = f"example-rate-limit-{os.getpid()}-{time.time_ns()}"

    def admit():
        # One request: take a slot for WINDOW seconds, or be refused. Never unlock.
        r = stub.TryLock(
            pb.TryLockRequest(name=name, size=args.limit, lock_timeout_seconds=args.window),
            metadata=metadata,
        )
        if r.HasField("error"):
            print(f"TryLock failed: {r.error}", file=sys.stderr)
            sys.exit(1)
        return r.locked

    # Offer requests for WINDOWS windows, about 50 a second: far more than the limit.
    calls = []  # (sent, received, admitted)
    start = time.monotonic()
    while time.monotonic() < start + args.windows * args.window:
        sent = time.monotonic()
        locked = admit()
        calls.append((sent, time.monotonic(), locked))
        time.sleep(0.02)

    first_sent = calls[0][0]
    admitted = [0] * args.windows
    refused = [0] * args.windows
    for _, received, locked in calls:
        window = min(int((received - first_sent) // args.window), args.windows - 1)
        if locked:
            admitted[window] += 1
        else:
            refused[window] += 1
    for window in range(args.windows):
        print(
            f"window {window}: admitted {admitted[window]}, refused {refused[window]} "
            f"(limit {args.limit} per {args.window} s)"
        )

    problems = []
    # The lock was fresh: the first LIMIT requests got in, and the next one was refused unless
    # a lease could already have run out (no slot comes back before WINDOW seconds).
    if not all(locked for _, _, locked in calls[: args.limit]):
        problems.append(f"the first {args.limit} requests were not all admitted")
    if len(calls) > args.limit:
        _, received, locked = calls[args.limit]
        if locked and received < first_sent + args.window:
            problems.append(f"request {args.limit + 1} got in before any lease could expire")
    # Each slot is granted at most once per WINDOW seconds: a bound that holds whatever the
    # network and scheduling delays were (less 10 ms for the server's millisecond timer ticks).
    total = sum(admitted)
    span = calls[-1][1] - first_sent
    bound = args.limit * (math.floor(span / (args.window - 0.01)) + 1)
    if total > bound:
        problems.append(f"admitted {total} in {span:.2f} s: more than {bound}")
    # Expired leases gave their slots back: more than LIMIT got in overall.
    if span > args.window and total <= args.limit:
        problems.append("no slot came back after its lease expired")
    # Exiting closes the connection: the server ends the session and frees its slots.
    channel.close()
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"the limit held: {total} admitted in {span:.2f} s (at most {bound} allowed)")


if __name__ == "__main__":
    main()
