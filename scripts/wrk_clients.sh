# Shared by the limiter benchmarks (sourced): a wrk script that sends a distinct
# X-Forwarded-For client per request, a wrk run that reports admitted req/s and p99, and a
# median.

# clients_lua CLIENTS -> the path of a wrk script cycling through CLIENTS clients per thread.
clients_lua() {
  local lua
  lua=$(mktemp)
  cat > "$lua" <<LUAEOF
local clients = $1
local counter = 0
local thread_base = 0
setup = function(thread)
  thread_base = thread_base + 1
  thread:set("base", thread_base)
end
request = function()
  counter = counter + 1
  local n = (base or 0) * clients + counter % clients
  local ip = string.format("10.%d.%d.%d", math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
  return wrk.format("GET", nil, { ["X-Forwarded-For"] = ip })
end
LUAEOF
  echo "$lua"
}

# wrk_run URL CONNECTIONS SECONDS LUA -> "admitted_rps p99_ms" (refused requests subtracted)
wrk_run() {
  wrk -t2 -c"$2" -d"${3}s" --latency -s "$4" "$1" 2>/dev/null \
    | awk '/requests in/ {n=$1} /Non-2xx/ {refused=$5} /Requests\/sec/ {rps=$2} /^ +99%/ {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; p99=v} END {if (refused > 0) rps = rps * (n - refused) / n; print rps, p99}'
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
