#!/usr/bin/env bash
# The LDLM REST API step by step with curl: create a session, lock, renew, unlock, end the
# session (plus a second session that finds the lock busy, and a refused second unlock).
#
# Usage: examples/curl/rest_flow.sh HOST:PORT
#   HOST:PORT is the server's --rest_listen_address (an http:// or https:// prefix is kept).
#   LDLM_PASSWORD=secret for a server started with --password (Basic auth, any user name).
#
# Needs curl, and jq or python3 to read JSON. Prints each request and answer; exits non-zero on
# any unexpected status or body.
#
# REST facts worth knowing: the session is a cookie (`ldlm-session`), and it owns the locks taken
# through it (ending it, or letting it idle out, releases them); POST /v1/lock never waits (it
# is TryLock); lock-domain errors are HTTP 200 with an "error" object in the body.
set -euo pipefail

address="${1:?usage: $0 HOST:PORT (the REST address of the server)}"
case "$address" in
http://* | https://*) base="${address%/}" ;;
*) base="http://$address" ;;
esac

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
auth=()
if [ -n "${LDLM_PASSWORD:-}" ]; then
    auth=(-u ":$LDLM_PASSWORD")
fi
name="example-rest-$$"

# field PATH: a field of the last answer's JSON body ("error.code" for nested ones), as text;
# empty when absent.
field() {
    if command -v jq >/dev/null 2>&1; then
        jq -r --arg path "$1" \
            'getpath($path | split(".")) | if . == null then "" else tostring end' "$work/body"
    else
        python3 - "$work/body" "$1" <<'PY'
import json, sys
value = json.load(open(sys.argv[1]))
for part in sys.argv[2].split("."):
    value = value.get(part) if isinstance(value, dict) else None
if value is None:
    print("")
elif isinstance(value, bool):
    print("true" if value else "false")
elif isinstance(value, (dict, list)):
    print(json.dumps(value))
else:
    print(value)
PY
    fi
}

# call JAR METHOD PATH EXPECTED_STATUS [JSON_BODY]: sends the request with that session's cookie
# jar; the answer's body is left in $work/body.
call() {
    local jar="$work/$1" method="$2" path="$3" expected="$4" status
    local args=(-sS "${auth[@]}" -b "$jar" -c "$jar" -X "$method" -o "$work/body" -w '%{http_code}')
    if [ $# -ge 5 ]; then
        args+=(-H 'Content-Type: application/json' --data "$5")
    fi
    status="$(curl "${args[@]}" "$base$path")"
    echo "[$1] $method $path ${5:-} -> $status $(cat "$work/body")"
    if [ "$status" != "$expected" ]; then
        echo "FAIL: expected HTTP $expected, got $status" >&2
        exit 1
    fi
}

# expect FIELD VALUE: the last answer's FIELD must be VALUE.
expect() {
    local got
    got="$(field "$1")"
    if [ "$got" != "$2" ]; then
        echo "FAIL: expected $1 = '$2', got '$got'" >&2
        exit 1
    fi
}

# 1. A session: the server sets the ldlm-session cookie (kept in the jar).
call alice POST /session 201
[ -n "$(field session_id)" ] || { echo "FAIL: no session_id" >&2; exit 1; }

# 2. Lock with a 30-second lease. The answer carries the key and the fencing token.
call alice POST /v1/lock 200 "{\"name\": \"$name\", \"lock_timeout_seconds\": 30}"
expect locked true
key="$(field key)"
token="$(field fencingToken)"
[ -n "$key" ] || { echo "FAIL: no key" >&2; exit 1; }
echo "locked $name: key $key, fencing token $token"

# 3. Another session finds it busy: locked false, and no error.
call bob POST /session 201
call bob POST /v1/lock 200 "{\"name\": \"$name\"}"
expect locked false
expect error ""

# 4. Renew: a new 60-second lease from now (POST /v1/refreshlock is the older name).
call alice POST /v1/renew 200 "{\"name\": \"$name\", \"key\": \"$key\", \"lock_timeout_seconds\": 60}"
expect locked true
expect key "$key"

# 5. Unlock with the key; a second unlock is a lock-domain error (still HTTP 200).
call alice POST /v1/unlock 200 "{\"name\": \"$name\", \"key\": \"$key\"}"
expect unlocked true
call alice POST /v1/unlock 200 "{\"name\": \"$name\", \"key\": \"$key\"}"
expect unlocked false
expect error.code InvalidLockKey

# 6. Now the other session gets it (with a larger fencing token); ending that session
#    releases what it holds.
call bob POST /v1/lock 200 "{\"name\": \"$name\"}"
expect locked true
if [ -n "$token" ] && [ "$(field fencingToken)" -le "$token" ]; then
    echo "FAIL: the fencing token did not grow" >&2
    exit 1
fi
call bob DELETE /session 200
call alice POST /v1/lock 200 "{\"name\": \"$name\"}"
expect locked true

# 7. End the session (its lock is released with it). The cookie is now spent.
call alice DELETE /session 200
call alice POST /v1/lock 401 "{\"name\": \"$name\"}"

echo "REST flow OK"
