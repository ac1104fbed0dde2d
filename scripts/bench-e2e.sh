#!/usr/bin/env bash
# End-to-end throughput (issue "Gateway 3/3"): N notifications submitted through the HTTP API in
# batches of 10,000 tokens, delivered by `pushgate serve` to `pushgate mock-apns`, until the
# simulator has acknowledged them all. Reports the rate, the gateway's CPU per notification
# (user+sys from /proc) and its peak RSS.
# Pinning: the simulator on CPU 1; the gateway and curl on CPU 0.
# Usage: scripts/bench-e2e.sh [N (200000)]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200000}
cargo build --release -q -p pushgate
BIN=target/release/pushgate
FIX=crates/apns-mock/fixtures
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
KEY=bench-key-0123456789
HASH=$(printf '%s' "$KEY" | sha256sum | cut -d' ' -f1)

taskset -c 1 "$BIN" mock-apns --listen 127.0.0.1:24197 --stats 127.0.0.1:24198 --ca-out "$tmp/ca.pem" \
  --jwt-key "$FIX/AuthKey_ABC123DEFG.pub.pem" --record-limit 0 > "$tmp/mock.log" 2>&1 &
for _ in $(seq 100); do [ -s "$tmp/ca.pem" ] && break; sleep 0.05; done
cp "$FIX/AuthKey_ABC123DEFG.p8" "$tmp/"
cat > "$tmp/pushgate.toml" <<TOML
[server]
listen = "127.0.0.1:24080"
[storage]
sqlite = "spool.db"
[[api_keys]]
name = "bench"
key_sha256 = "$HASH"
admin = true
[[apps]]
name = "bench"
topic = "com.example.bench"
environment = "sandbox"
endpoint = "https://127.0.0.1:24197"
ca_file = "ca.pem"
key_file = "AuthKey_ABC123DEFG.p8"
key_id = "ABC123DEFG"
team_id = "TEAM123456"
TOML
RUST_LOG=warn taskset -c 0 "$BIN" serve --config "$tmp/pushgate.toml" > "$tmp/serve.log" 2>&1 &
GW=$!
for _ in $(seq 100); do grep -q listening "$tmp/serve.log" 2>/dev/null && break; sleep 0.05; done
python3 - "$tmp" <<'PY'
import json, sys
tmp = sys.argv[1]
body = "A notification of about one hundred and fifty bytes, like most alerts: who, what, why."
for b in range(20):
    tokens = ["%064x" % (b * 10000 + i) for i in range(10000)]
    json.dump({"app": "bench", "tokens": tokens, "alert": {"title": "Hello", "body": body}}, open(f"{tmp}/batch{b}.json", "w"))
PY
batches=$(( (N + 9999) / 10000 ))
cpu() { awk '{print $14+$15}' "/proc/$GW/stat"; }
if [ -n "${PROFILE:-}" ]; then
  # PROFILE=out.data: sample the gateway's CPU (software clock) for `perf report`.
  perf record -e cpu-clock -F 999 -o "$PROFILE" -p "$GW" > /dev/null 2>&1 &
  PERF=$!
fi
c0=$(cpu); t0=$(date +%s.%N)
for b in $(seq 0 $((batches - 1))); do
  f="$tmp/batch$((b % 20)).json"
  taskset -c 0 curl -sf -o /dev/null -H "Authorization: Bearer $KEY" -H 'content-type: application/json' --data-binary "@$f" http://127.0.0.1:24080/v1/notifications
done
t1=$(date +%s.%N)
while :; do
  n=$(curl -sf http://127.0.0.1:24198/stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["accepted"])')
  [ "$n" -ge "$N" ] && break
  sleep 0.05
done
t2=$(date +%s.%N); c1=$(cpu)
rss=$(awk '/VmHWM/ {print $2}' "/proc/$GW/status")
if [ -n "${PROFILE:-}" ]; then kill -INT "$PERF"; wait "$PERF" 2>/dev/null || true; fi
python3 - "$N" "$t0" "$t1" "$t2" "$c0" "$c1" "$rss" <<'PY'
import sys
n, t0, t1, t2, c0, c1, rss = int(sys.argv[1]), *map(float, sys.argv[2:7]), int(sys.argv[7])
print(f"{n} notifications: accepted in {t1-t0:.2f} s ({n/(t1-t0):,.0f}/s), "
      f"delivered in {t2-t0:.2f} s ({n/(t2-t0):,.0f}/s); gateway CPU {(c1-c0)/100:.2f} s = "
      f"{(c1-c0)*10000/n:.1f} µs/notification; peak RSS {rss/1024:.0f} MB")
PY
curl -sf http://127.0.0.1:24198/stats; echo
