#!/usr/bin/env bash
# The limiter with its windows in Redis against the same limiter in process, over real HTTP:
# two release servers of `cargo bench --bench limiter -- serve` side by side (the second with
# BENCH_REDIS_URL), the same limited handler, wrk with a distinct X-Forwarded-For client per
# request, alternating A/B rounds in one run. Then the Redis memory one tracked client costs.
# usage: scripts/bench_limiter_redis.sh [rounds] [seconds]   (REDIS_URL, default the local one)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-5}"
SECS="${2:-5}"
REDIS="${REDIS_URL:-redis://127.0.0.1:6379}"
CLIENTS="${CLIENTS:-65536}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/herald-target}"
cargo bench --bench limiter --no-run >/dev/null 2>&1
BIN=$(ls -t "$CARGO_TARGET_DIR"/release/deps/limiter-* | grep -v '\.d$' | head -1)
"$BIN" serve 18080 >/dev/null 2>&1 &
MEM=$!
BENCH_REDIS_URL="$REDIS" "$BIN" serve 18081 >/dev/null 2>&1 &
RED=$!
trap 'kill $MEM $RED 2>/dev/null || true' EXIT
for port in 18080 18081; do
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
done
for _ in $(seq 1 100); do curl -s "http://127.0.0.1:18081/health" | grep -q '"redis":"ok"' && break; sleep 0.1; done

. scripts/wrk_clients.sh
LUA=$(clients_lua "$CLIENTS")
run() { wrk_run "http://127.0.0.1:$1/bench/limited" "$2" "$SECS" "$LUA"; } # port connections

for C in 64; do
  : > /tmp/m_rps; : > /tmp/m_p99; : > /tmp/r_rps; : > /tmp/r_p99; : > /tmp/ratio
  for r in $(seq 1 "$ROUNDS"); do
    read -r mrps mp99 <<<"$(run 18080 "$C")"
    read -r rrps rp99 <<<"$(run 18081 "$C")"
    echo "$mrps" >> /tmp/m_rps; echo "$mp99" >> /tmp/m_p99
    echo "$rrps" >> /tmp/r_rps; echo "$rp99" >> /tmp/r_p99
    awk -v a="$rrps" -v b="$mrps" 'BEGIN {print a/b}' >> /tmp/ratio
    echo "  c=$C round $r: in process $mrps req/s p99 ${mp99} ms | redis $rrps req/s p99 ${rp99} ms"
  done
  echo "connections=$C medians over $ROUNDS rounds: in process $(median </tmp/m_rps) req/s, p99 $(median </tmp/m_p99) ms; redis $(median </tmp/r_rps) req/s, p99 $(median </tmp/r_p99) ms; throughput ratio $(median </tmp/ratio)"
done
curl -s "http://127.0.0.1:18081/metrics" | grep -E '^rate_limit_(backend_errors_total|failures_total)' || echo "no backend errors"

# Memory per tracked client: one client's window after 1 and after 20 admitted requests.
for n in 1 20; do
  for i in $(seq 1 "$n"); do curl -s -o /dev/null -H "X-Forwarded-For: 192.0.2.$n" "http://127.0.0.1:18081/bench/limited"; done
done
HOST_PORT=${REDIS#redis://}
for key in $(redis-cli -u "$REDIS" --scan --pattern 'herald-bench-*rl:*' | head -100000 | shuf -n 3); do
  echo "a window: $(redis-cli -u "$REDIS" ZCARD "$key") instants, $(redis-cli -u "$REDIS" MEMORY USAGE "$key") bytes"
done
echo "keys in Redis after the run: $(redis-cli -u "$REDIS" --scan --pattern 'herald-bench-*rl:*' | wc -l), used_memory $(redis-cli -u "$REDIS" INFO memory | grep '^used_memory:' | tr -d '\r')"
: "${HOST_PORT}"
