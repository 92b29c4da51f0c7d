"""Any-language compatibility: a Python grpcio client, with stubs generated from proto/ldlm.proto,
runs lock / refresh (both RPC names) / unlock / busy / wait-timeout / disconnect scenarios
against a running LDLM server.

Usage: PYTHONPATH=<stubs> python compat.py HOST:PORT
Prints one line per check and a closing "N passed, N failed" line; exits non-zero on failure.
"""

import re
import sys
import time

import grpc

import ldlm_pb2 as pb
import ldlm_pb2_grpc as rpc

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
ADDRESS = sys.argv[1]
passed = 0
failed = 0


def connect():
    # A separate connection (= a separate server session) per client: grpcio otherwise shares
    # one TCP connection between channels with equal target and options.
    channel = grpc.insecure_channel(ADDRESS, options=[("grpc.use_local_subchannel_pool", 1)])
    grpc.channel_ready_future(channel).result(timeout=5)
    return channel, rpc.LDLMStub(channel)


def check(what, condition, detail=""):
    global passed, failed
    if condition:
        passed += 1
        print(f"ok   {what}")
    else:
        failed += 1
        print(f"FAIL {what} {detail}")


def main():
    a_channel, a = connect()
    b_channel, b = connect()

    r = a.Lock(pb.LockRequest(name="py-lock", lock_timeout_seconds=5))
    check("Lock locks", r.locked and r.name == "py-lock" and not r.HasField("error"), r)
    check("key is a lower-case UUID v4", UUID4.match(r.key) is not None, r.key)
    check("fencing token is set", r.fencing_token > 0, r)
    key, token = r.key, r.fencing_token

    busy = b.TryLock(pb.TryLockRequest(name="py-lock"))
    check("TryLock of a held lock is busy, no error, empty key",
          not busy.locked and not busy.HasField("error") and busy.key == "" and busy.fencing_token == 0, busy)

    for method in (a.RefreshLock, a.Renew):
        request_type = pb.RefreshLockRequest if method is a.RefreshLock else pb.RenewRequest
        r = method(request_type(name="py-lock", key=key, lock_timeout_seconds=10))
        check(f"{request_type.__name__} refreshes", r.locked and r.key == key and not r.HasField("error"), r)

    r = b.Renew(pb.RenewRequest(name="py-lock", key="00000000-0000-4000-8000-000000000000", lock_timeout_seconds=10))
    check("Renew with a wrong key: LockDoesNotExistOrInvalidKey",
          not r.locked and r.error.code == pb.LockDoesNotExistOrInvalidKey
          and r.error.message == "lock does not exist or invalid key", r)

    r = b.Lock(pb.LockRequest(name="py-lock", wait_timeout_seconds=1))
    check("Lock wait timeout", not r.locked and r.error.code == pb.LockWaitTimeout
          and r.error.message == "timeout waiting to acquire lock", r)

    r = a.Lock(pb.LockRequest(name="py-lock", size=0))
    check("size 0 is InvalidLockSize", r.error.code == pb.InvalidLockSize, r)
    r = a.TryLock(pb.TryLockRequest(name="py-lock", size=2))
    check("size mismatch", r.error.code == pb.LockSizeMismatch and r.error.message == "lock size mismatch", r)
    r = a.TryLock(pb.TryLockRequest(name=""))
    check("empty name", r.error.code == pb.Unknown and r.error.message == "lock name cannot be empty", r)

    u = b.Unlock(pb.UnlockRequest(name="py-lock", key="wrong"))
    check("Unlock with a wrong key: InvalidLockKey", not u.unlocked and u.error.code == pb.InvalidLockKey, u)
    u = b.Unlock(pb.UnlockRequest(name="py-never", key=key))
    check("Unlock of an unknown lock: LockDoesNotExist", u.error.code == pb.LockDoesNotExist, u)
    # The key is the authority: another connection may unlock with it.
    u = b.Unlock(pb.UnlockRequest(name="py-lock", key=key))
    check("Unlock with the key from another connection", u.unlocked and not u.HasField("error"), u)

    r = b.Lock(pb.LockRequest(name="py-lock"))
    check("relock after unlock, token grew", r.locked and r.fencing_token > token, r)

    # Disconnect releases: b holds py-lock; a waits; closing b hands it to a.
    future = a.Lock.future(pb.LockRequest(name="py-lock", wait_timeout_seconds=10))
    time.sleep(0.3)
    b_channel.close()
    r = future.result(timeout=5)
    check("closing the holder's connection hands the lock to a waiter", r.locked, r)
    a_channel.close()

    c_channel, c = connect()
    deadline = time.time() + 5
    while True:
        r = c.TryLock(pb.TryLockRequest(name="py-lock"))
        if r.locked or time.time() > deadline:
            break
        time.sleep(0.05)
    check("closing the last holder frees the lock", r.locked, r)
    c_channel.close()

    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
