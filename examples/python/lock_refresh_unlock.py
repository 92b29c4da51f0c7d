"""Lock, refresh and unlock over gRPC with Python grpcio.

The stubs (ldlm_pb2.py, ldlm_pb2_grpc.py) are generated from proto/ldlm.proto; from the
repository root:

    stubs=$(tests/python/setup.sh)     # venv at target/pyenv, prints the stubs directory
    PYTHONPATH=$stubs target/pyenv/bin/python examples/python/lock_refresh_unlock.py localhost:3144

Options: --password PW (a server started with --password), --name NAME.
Exits 0 on success, 1 on any unexpected answer.
"""

import argparse
import sys

import grpc

import ldlm_pb2 as pb
import ldlm_pb2_grpc as rpc


def fail(what, response):
    print(f"unexpected answer to {what}: {response}", file=sys.stderr)
    sys.exit(1)


def renew(stub, name, key, seconds, metadata):
    """Extends the lease: `Renew` on LDLM and newer go-ldlm, `RefreshLock` on older go-ldlm
    (which answers UNIMPLEMENTED to `Renew`). Both take the same fields."""
    try:
        return stub.Renew(
            pb.RenewRequest(name=name, key=key, lock_timeout_seconds=seconds), metadata=metadata
        )
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.UNIMPLEMENTED:
            raise
        return stub.RefreshLock(
            pb.RefreshLockRequest(name=name, key=key, lock_timeout_seconds=seconds),
            metadata=metadata,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", help="the server's gRPC address, HOST:PORT")
    parser.add_argument("--password", help="the server's --password, if it has one")
    parser.add_argument("--name", default="example-python-lock")
    args = parser.parse_args()
    # The password travels as metadata "authorization" on every call.
    metadata = [("authorization", args.password)] if args.password else None

    channel = grpc.insecure_channel(args.address)
    grpc.channel_ready_future(channel).result(timeout=10)
    stub = rpc.LDLMStub(channel)

    # Lock: wait up to 5 s; hold with a 10 s lease (released 10 s after the last refresh).
    # Lock-domain errors come back with status OK and the `error` field set.
    r = stub.Lock(
        pb.LockRequest(name=args.name, wait_timeout_seconds=5, lock_timeout_seconds=10),
        metadata=metadata,
    )
    if not r.locked or r.HasField("error"):
        fail("Lock", r)
    key = r.key
    # fencing_token (field 5) is an LDLM addition: pass it to what the lock protects, so a
    # holder whose lease lapsed can be refused. (Stubs built from go-ldlm's proto ignore it.)
    print(f"locked {r.name}: key {key}, fencing token {r.fencing_token}")

    # Refresh well before the lease runs out (a long-running holder does this every lease/3).
    r = renew(stub, args.name, key, 10, metadata)
    if not r.locked or r.HasField("error") or r.key != key:
        fail("Renew", r)
    print("refreshed the lease to 10 s from now")

    # Unlock with the key.
    u = stub.Unlock(pb.UnlockRequest(name=args.name, key=key), metadata=metadata)
    if not u.unlocked or u.HasField("error"):
        fail("Unlock", u)
    print("unlocked")

    # The key is spent: a second unlock is a lock-domain error, not an exception.
    u = stub.Unlock(pb.UnlockRequest(name=args.name, key=key), metadata=metadata)
    if u.unlocked or u.error.code != pb.InvalidLockKey:
        fail("the second Unlock", u)
    print(f"a second unlock is refused: {pb.ErrorCode.Name(u.error.code)} ({u.error.message})")
    channel.close()


if __name__ == "__main__":
    main()
