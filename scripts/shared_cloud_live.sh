#!/usr/bin/env bash
# One `ecspec cloud serve` process serving 64 concurrent edges (SmolLM2, loopback, closed
# loop), live on this machine (BENCHMARKS.md, "A shared cloud", live): `ecspec load --cloud`
# runs each system at 1 edge (the outputs served alone) and at 64 edges (batched), checking
# every greedy output against its prompt's alone output; while the 64 edges run, a request
# needing more KV cache than is left is answered `busy`; the server's peak RSS and its
# /metrics are recorded.
#
# usage: scripts/shared_cloud_live.sh OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/shared_cloud_live.sh OUT_DIR}
mkdir -p "$out"
ecspec=${ECSPEC_BIN:-target/release/ecspec}
port=${PORT:-7979}
mport=${METRICS_PORT:-9191}
# 64 sessions reserve about 64 x 130 positions x 45 KiB = 374 MB; a 4,096-token request
# (189 MB) then does not fit until they end.
"$ecspec" cloud serve --listen "127.0.0.1:$port" --kv-budget 400MiB --max-waiting 0 \
  --metrics-listen "127.0.0.1:$mport" 2> "$out/server.log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -sf "127.0.0.1:$mport/metrics" > /dev/null && break
  sleep 0.5
done
# Peak resident memory of the server while it serves.
( peak=0; while kill -0 $server 2>/dev/null; do
    rss=$(ps -o rss= -p $server 2>/dev/null | tr -d ' ' || echo 0)
    [ "${rss:-0}" -gt "$peak" ] && peak=$rss && echo "$peak" > "$out/peak_rss_kib"
    sleep 1
  done ) &
# The busy check: once 48 sessions run, ask for 4,096 tokens.
( for _ in $(seq 600); do
    n=$(curl -sf "127.0.0.1:$mport/metrics" | awk '/^ecspec:num_requests_running /{print $2}')
    if [ "${n:-0}" -ge 48 ]; then
      "$ecspec" generate --cloud "127.0.0.1:$port" --no-link --max-tokens 4096 \
        --prompt "Tell me a long story." > "$out/busy.txt" 2>&1 || true
      break
    fi
    sleep 1
  done ) &
ECSPEC_DATA_DIR=/nonexistent "$ecspec" load --cloud "127.0.0.1:$port" \
  --systems "${SYSTEMS:-ecspec,cloud-only}" --concurrency 1,64 --requests 64 --max-tokens 12 \
  --scenario loopback --csv "$out/load.csv" --json "$out/load.json" > "$out/load.md"
curl -sf "127.0.0.1:$mport/metrics" > "$out/metrics.txt"
wait %3 2>/dev/null || true
echo "peak RSS: $(cat "$out/peak_rss_kib") KiB"; cat "$out/busy.txt" | tail -2
