#!/usr/bin/env bash
# Limiter overhead over real HTTP: the same trivial handler without (/bench/plain) and with
# (/bench/limited) the rate-limit layer, served by a release build, loaded by wrk with a
# distinct X-Forwarded-For per request (many clients), alternating A/B rounds in one run.
# Only admitted requests count (a refused one is subtracted from wrk's total).
# usage: scripts/bench_limiter.sh [rounds] [seconds]
#   LIMIT=20 CLIENTS=131072 scripts/bench_limiter.sh ...   the default policy (20 per 60 s)
#       with 2 x CLIENTS distinct clients (default: LIMIT=1000000, CLIENTS=65536)
#   B_PATH=/bench/plain scripts/bench_limiter.sh ...   an A/A control run (the noise band)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-5}"
SECS="${2:-5}"
LIMIT="${LIMIT:-1000000}"
CLIENTS="${CLIENTS:-65536}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/herald-target}"
cargo bench --bench limiter --no-run >/dev/null 2>&1
BIN=$(ls -t "$CARGO_TARGET_DIR"/release/deps/limiter-* | grep -v '\.d$' | head -1)
PORT=18080
BENCH_MAX_REQUESTS="$LIMIT" "$BIN" serve "$PORT" >/dev/null 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done

. scripts/wrk_clients.sh
LUA=$(clients_lua "$CLIENTS")
run() { wrk_run "http://127.0.0.1:$PORT$1" "$2" "$SECS" "$LUA"; } # path connections

for C in 64 256; do
  : > /tmp/plain_rps; : > /tmp/plain_p99; : > /tmp/lim_rps; : > /tmp/lim_p99; : > /tmp/ratio
  for r in $(seq 1 "$ROUNDS"); do
    read -r prps pp99 <<<"$(run /bench/plain "$C")"
    read -r lrps lp99 <<<"$(run "${B_PATH:-/bench/limited}" "$C")"
    echo "$prps" >> /tmp/plain_rps; echo "$pp99" >> /tmp/plain_p99
    echo "$lrps" >> /tmp/lim_rps; echo "$lp99" >> /tmp/lim_p99
    awk -v a="$lrps" -v b="$prps" 'BEGIN {print a/b}' >> /tmp/ratio
    echo "  c=$C round $r: plain $prps req/s p99 ${pp99} ms | limited $lrps req/s p99 ${lp99} ms"
  done
  echo "connections=$C medians over $ROUNDS rounds: plain $(median </tmp/plain_rps) req/s, p99 $(median </tmp/plain_p99) ms; limited $(median </tmp/lim_rps) req/s, p99 $(median </tmp/lim_p99) ms; throughput ratio $(median </tmp/ratio)"
done
curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^rate_limit_checks_total' || true
