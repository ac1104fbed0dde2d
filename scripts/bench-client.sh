#!/usr/bin/env bash
# The client-library benchmark (issue "Foundation 3/3") and the simulator's speed (issue
# "Foundation 2/3"), in one run against one simulator process:
#   1. h2load -c 4 -m 100 against `pushgate mock-apns`: the raw HTTP/2 ceiling of this machine,
#      and the simulator's CPU per request;
#   2. the `blast` example: N notifications through apns::Pool (4 connections);
#   3. the same two on a simulator with --goaway-every 1000 --fail-rate 0.01, checking that
#      every notification ends delivered or with its injected failure.
# Pinning: the simulator on CPU 1, the load (h2load or blast) on CPU 0.
# Usage: scripts/bench-client.sh [N (100000)]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
FIX=crates/apns-mock/fixtures
TOKEN=6a3c8f0e9d1b2a4c5e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5
cargo build --release -q -p pushgate
cargo build --release -q -p apns --example blast
BIN=target/release
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
printf '%s' '{"aps":{"alert":{"title":"Hello","body":"A notification of about two hundred bytes, like most alerts: who sent it, what it is about, and a line of detail so the user knows why it matters."}}}' > "$tmp/body.json"

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

run_case() {
  local label=$1; shift
  rm -f "$tmp/ca.pem"
  taskset -c 1 "$BIN/pushgate" mock-apns --listen 127.0.0.1:22197 --stats 127.0.0.1:22198 \
    --ca-out "$tmp/ca.pem" --record-limit 0 "$@" > "$tmp/mock.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do [ -s "$tmp/ca.pem" ] && break; sleep 0.05; done
  local auth
  auth=$("$BIN/examples/blast" --print-token --ca "$tmp/ca.pem" --key "$FIX/AuthKey_ABC123DEFG.p8")
  if [ "$label" = clean ]; then
  echo "== $label: h2load -c 4 -m 100 -n $N"
  local t0; t0=$(cpu_ticks "$pid")
  taskset -c 0 h2load -c 4 -m 100 -n "$N" -H "apns-topic: com.example.demo" -H "apns-push-type: alert" \
    -H "authorization: $auth" -d "$tmp/body.json" "https://127.0.0.1:22197/3/device/$TOKEN" \
    | grep -E "^finished in|^requests:|^status codes:"
  local t1; t1=$(cpu_ticks "$pid")
  echo "simulator CPU: $(( (t1 - t0) * 10 )) ms for $N requests = $(awk -v t=$((t1-t0)) -v n="$N" 'BEGIN{printf "%.1f", t*10000/n}') µs/request"
  curl -sf -X POST http://127.0.0.1:22198/reset
  fi  # h2load does not survive GOAWAY, so it only measures the clean simulator
  echo "== $label: apns::Pool (blast), 4 connections, 400 sending tasks"
  taskset -c 0 "$BIN/examples/blast" --endpoint https://127.0.0.1:22197 --ca "$tmp/ca.pem" --key "$FIX/AuthKey_ABC123DEFG.p8" \
    --count "$N" --connections 4 --concurrency 400
  echo "simulator: $(curl -sf http://127.0.0.1:22198/stats)"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

run_case "clean"
run_case "faults" --goaway-every 1000 --fail-rate 0.01
