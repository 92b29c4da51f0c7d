#!/usr/bin/env bash
# Prepares the Python gRPC client used by the end-to-end tests.
#
# Usage: tests/python/setup.sh [VENV_DIR]     (default: <repo>/target/pyenv)
#
# Creates a virtualenv at VENV_DIR, installs requirements.txt into it, and generates the Python
# stubs for proto/ldlm.proto (ldlm_pb2.py, ldlm_pb2_grpc.py) into VENV_DIR/stubs with grpcio-tools
# (no system protoc). Idempotent: pip runs only when requirements.txt changed (or the venv is
# broken), and the stubs are regenerated only when ldlm.proto or the requirements changed.
# Safe to run concurrently (serialised with flock when available).
#
# stdout carries exactly one line, the stubs directory, so callers can do
#   stubs=$(tests/python/setup.sh) && PYTHONPATH=$stubs "$venv/bin/python" ...
# Everything else (pip's output, errors) goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${1:-$repo/target/pyenv}"
requirements="$here/requirements.txt"
proto="$repo/proto/ldlm.proto"
python="${PYTHON:-python3}"

mkdir -p "$venv"
venv="$(cd "$venv" && pwd)"
stubs="$venv/stubs"

# Serialise concurrent runs (e.g. several test binaries starting at once).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$venv/.setup.lock"
    flock 9
fi

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv" >&2
fi

req_hash="$(hash_of "$requirements")"
req_stamp="$venv/.requirements.sha256"
if [ "$(cat "$req_stamp" 2>/dev/null)" != "$req_hash" ] ||
    ! "$venv/bin/python" -c 'import grpc, grpc_tools' >/dev/null 2>&1; then
    rm -f "$req_stamp"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
    echo "$req_hash" >"$req_stamp"
fi

stubs_hash="$(hash_of "$proto" "$requirements")"
stubs_stamp="$stubs/.source.sha256"
if [ "$(cat "$stubs_stamp" 2>/dev/null)" != "$stubs_hash" ] ||
    [ ! -f "$stubs/ldlm_pb2.py" ] || [ ! -f "$stubs/ldlm_pb2_grpc.py" ]; then
    rm -rf "$stubs"
    mkdir -p "$stubs"
    (
        cd "$repo"
        "$venv/bin/python" -m grpc_tools.protoc -I proto \
            --python_out="$stubs" --grpc_python_out="$stubs" proto/ldlm.proto >&2
    )
    echo "$stubs_hash" >"$stubs_stamp"
fi

echo "$stubs"
