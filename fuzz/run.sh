#!/usr/bin/env bash
# Runs fuzz targets one after another, one libFuzzer job each, nice'd, from the seeds
# (fuzz/seeds/<target>, written first by fuzz/examples/write_seeds.rs from the project's own
# encoders; not committed) plus the growing local corpus (fuzz/corpus/<target>, not committed).
#   fuzz/run.sh [RUNS] [TARGET...]      default: 10000000 runs of every target
# Each run's output goes to fuzz/logs/<target>.log (not committed); a crash leaves its input in
# fuzz/artifacts/<target>/ and the script goes on with the next target. The toolchain is
# stable: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its nightly flags (-Zsanitizer=address).
set -uo pipefail
cd "$(dirname "$0")/.."
runs="${1:-10000000}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(frame message mahimahi csv_trace manifest peft_config gguf_header)
export RUSTC_BOOTSTRAP=1
cargo fuzz build || exit 1
cargo run --quiet --manifest-path fuzz/Cargo.toml --example write_seeds || exit 1
mkdir -p fuzz/logs
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    start=$(date +%s)
    nice -n 10 cargo fuzz run "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -runs="$runs" -print_final_stats=1 >"fuzz/logs/$t.log" 2>&1
    rc=$?
    echo "$t: exit $rc, $(( $(date +%s) - start )) s, corpus $(ls "fuzz/corpus/$t" | wc -l) files;" \
        "$(grep -E 'stat::(number_of_executed_units|average_exec_per_sec)' "fuzz/logs/$t.log" | tr -s ' \n' ' ')"
done
