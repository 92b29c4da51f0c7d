-- wrk script for REST TryLock+Unlock cycles (BENCHMARKS.md). Needs a session cookie:
--   LDLM_COOKIE=$(curl -s -i -X POST $ADDR/session | sed -n "s/^[Ss]et-[Cc]ookie: \\([^;]*\\).*/\\1/p")
--   wrk -t1 -c16 -d8s -s benches/wrk/trylock_unlock.lua http://$ADDR
-- TryLock+Unlock cycles over REST: each lock response queues the matching unlock.
local pending = {}
local n = 0
cookie = os.getenv("LDLM_COOKIE") or ""
function request()
  local job = table.remove(pending)
  if job then
    return wrk.format("POST", "/v1/unlock", {["Cookie"] = cookie}, '{"name":"' .. job[1] .. '","key":"' .. job[2] .. '"}')
  end
  n = n + 1
  local name = "wrk-" .. tostring(math.random(1, 1000000000)) .. "-" .. n
  return wrk.format("POST", "/v1/lock", {["Cookie"] = cookie}, '{"name":"' .. name .. '"}')
end
function response(status, headers, body)
  local name, key = string.match(body, '"name":"([^"]+)","key":"([^"]+)"')
  if key and key ~= "" then
    table.insert(pending, {name, key})
  end
end
