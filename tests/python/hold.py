"""Takes a lock and keeps its connection open until killed: used to freeze a client (SIGSTOP)
and check that the server drops it when it stops answering keepalive pings.

Usage: PYTHONPATH=<stubs> python hold.py HOST:PORT NAME
Prints "locked <key>" once the lock is held.
"""

import sys
import time

import grpc

import ldlm_pb2 as pb
import ldlm_pb2_grpc as rpc

channel = grpc.insecure_channel(sys.argv[1], options=[("grpc.use_local_subchannel_pool", 1)])
stub = rpc.LDLMStub(channel)
response = stub.Lock(pb.LockRequest(name=sys.argv[2]))
if not response.locked:
    print(f"not locked: {response}", flush=True)
    sys.exit(1)
print(f"locked {response.key}", flush=True)
while True:
    time.sleep(1)
