#!/usr/bin/env bash
# Cross-builds the model runtime for aarch64 and runs its kernel tests (NEON against the
# scalar reference, bit for bit) under qemu-user. Needs Debian's qemu-user,
# gcc-aarch64-linux-gnu and libc6-dev-arm64-cross, and the Rust target:
#   sudo apt-get install qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross
#   rustup target add aarch64-unknown-linux-gnu
# The linker and runner are set in .cargo/config.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
cargo test --release --target aarch64-unknown-linux-gnu -p ecspec-model --test kernels -- --nocapture "$@"
