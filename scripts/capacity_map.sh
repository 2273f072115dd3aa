#!/usr/bin/env bash
# The shared cloud's capacity map (BENCHMARKS.md, "A shared cloud"): `ecspec load` on the
# virtual clock — the family's real models decide every token and acceptance, the batched
# A100 profiles decide the cloud's pass times, a Jetson Orin Nano profile the edge's drafting
# — for cloud-only, fixed-K speculation and ECSpec (load-aware and not), across link RTTs and
# closed-loop loads. Short built-in prompts keep the real CPU compute small.
#
# usage: scripts/capacity_map.sh OUT_DIR [PROFILE…]   (default profiles: a100-14b-batched a100-7b-batched)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/capacity_map.sh OUT_DIR [PROFILE…]}
shift || true
profiles=("${@:-a100-14b-batched a100-7b-batched}")
# shellcheck disable=SC2206
profiles=(${profiles[@]})
mkdir -p "$out"
ecspec=${ECSPEC_BIN:-target/release/ecspec}
rtts=${RTTS:-"5 14 60 100"}
systems=${SYSTEMS:-cloud-only,static:fixed:4,ecspec,ecspec-unaware}
loads=${LOADS:-1,4,16}
for profile in "${profiles[@]}"; do
  for rtt in $rtts; do
    name="$profile-${rtt}ms"
    [ -s "$out/$name.json" ] && { echo "$name: done already"; continue; }
    echo "== $name"
    # No shared data: the load generator's six short built-in prompts.
    ECSPEC_DATA_DIR=/nonexistent "$ecspec" load --clock virtual \
      --edge-profile jetson-orin-nano --cloud-profile "$profile" \
      --scenario "scripts/scenarios/near-${rtt}ms.toml" \
      --systems "$systems" --concurrency "$loads" --requests "${REQUESTS:-16}" --max-tokens 24 \
      --slo-tpot-ms "${SLO_TPOT_MS:-40}" --threads "${THREADS:-2}" \
      --csv "$out/$name.csv" --json "$out/$name.json" --plot "$out/$name.png" \
      > "$out/$name.md"
  done
done
