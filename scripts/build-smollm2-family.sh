#!/usr/bin/env bash
# Rebuilds the default SmolLM2-135M family shipped in families/smollm2-135m/: the static
# draft's trained anchor layer, three evolved target versions (LoRA adapters), and the
# conventional baseline drafts (distilled per version; cached, never committed).
#
#   scripts/build-smollm2-family.sh [self-distill|anchor|versions|conventional [VERSION...]|all]   (default: all)
#
# Corpora come from package registries only (README "Training corpora"): Rust crates this
# workspace depends on (`cargo fetch`), Debian's python3.11 standard library
# (libpython3.11-stdlib), `python3.11-doc` and `debian-reference-en`. Work directories
# (cached base features, checkpoints) go to $ECSPEC_TRAIN_DIR (default
# ~/.cache/ecspec/train); a stage that was interrupted continues from its checkpoint.
# One compute thread, fixed seeds: on the same CPU a rebuild writes the same bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
stage=${1:-all}
shift || true
FAM=families/smollm2-135m
WORK=${ECSPEC_TRAIN_DIR:-$HOME/.cache/ecspec/train}/smollm2-135m
ECSPEC=${ECSPEC_BIN:-${CARGO_TARGET_DIR:-target}/release/ecspec}
[ -x "$ECSPEC" ] || cargo build --release
export ECSPEC_THREADS=${ECSPEC_THREADS:-1}

REG=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/index.crates.io-*/ | head -n1)
need() { for p in "$@"; do [ -e "$p" ] || { echo "missing corpus $p (see README: Training corpora)" >&2; exit 1; }; done; }
RUST_CORPUS=("$REG"tokio-1.54.1 "$REG"serde-1.0.229 "$REG"clap-4.6.9 "$REG"regex-1.13.2)
PYLIB=/usr/lib/python3.11
PYDOC=/usr/share/doc/python3.11/html/_sources
DEBREF=/usr/share/debian-reference/debian-reference.en.txt.gz

resume_flag() { [ -d "$1/checkpoint" ] && echo --resume || true; }

# sets KEY = "VALUE" under the manifest's [draft] table
set_sha() { sed -i "s|^$1 = \".*\"|$1 = \"$2\"|" "$FAM/family.toml"; }

# Self-distillation data: the base's own answers (greedy and T = 0.7, in turn) to chat prompts
# made from the corpora. Two generation threads of one compute thread each.
SAMPLES=$WORK/self-distill/samples.jsonl
if [[ $stage == self-distill || $stage == all ]]; then
  need "${RUST_CORPUS[@]}" "$PYLIB" "$PYDOC" "$DEBREF"
  mkdir -p "$(dirname "$SAMPLES")"
  "$ECSPEC" --threads 1 family self-distill --prompts ${SELF_DISTILL_PROMPTS:-2048} --max-new-tokens 128 \
    --temperatures 0,0.7 --jobs 2 --corpus "$PYLIB" "$PYDOC" "$DEBREF" "${RUST_CORPUS[@]}" --out "$SAMPLES"
fi

if [[ $stage == anchor || $stage == all ]]; then
  [ -s "$SAMPLES" ] || { echo "no $SAMPLES: run the self-distill stage first" >&2; exit 1; }
  need "${RUST_CORPUS[@]}" "$PYLIB" "$PYDOC" "$DEBREF"
  out=$WORK/draft-sd-lower
  # Anchor + the draft's own rank-16 LoRA on its 4 lower layers, on the self-distillation data
  # (BENCHMARKS.md, "Training the static draft": variant c).
  "$ECSPEC" family train-draft --shared-layers 4 --steps 1000 --lr 1e-3 --kl-top-k 64 \
    --lower-lora-rank 16 --max-tokens 262144 --corpus "$SAMPLES" \
    --out "$out" $(resume_flag "$out")
  mkdir -p "$FAM/draft/lower"
  cp "$out/anchor.safetensors" "$FAM/draft/anchor.safetensors"
  cp "$out/lower/adapter_config.json" "$out/lower/adapter_model.safetensors" "$FAM/draft/lower/"
  set_sha anchor_sha256 "$(sha256sum "$FAM/draft/anchor.safetensors" | cut -d' ' -f1)"
  set_sha lower_adapter_sha256 "$(sha256sum "$FAM/draft/lower/adapter_model.safetensors" | cut -d' ' -f1)"
  # FR-Spec head: the 8,192 most frequent tokens of the self-distillation data and the corpora.
  "$ECSPEC" family vocab-subset --size 8192 --max-tokens 1980000 --corpus "$SAMPLES" "$PYLIB" \
    "$PYDOC" "$DEBREF" "${RUST_CORPUS[0]}" "${RUST_CORPUS[1]}" --out "$FAM/draft/vocab8192.txt"
fi

evolve() { # NAME STEPS CORPUS... (after --)
  local name=$1 steps=$2; shift 2
  local out=$WORK/versions/$name
  "$ECSPEC" family evolve --version "$name" --layers 15-29 --rank 8 --alpha 16 \
    --steps "$steps" --lr 1e-3 --max-tokens 65536 "$@" --out "$out" $(resume_flag "$out")
  mkdir -p "$FAM/versions/$name"
  cp "$out/adapter_config.json" "$out/adapter_model.safetensors" "$FAM/versions/$name/"
}

if [[ $stage == versions || $stage == all ]]; then
  need "${RUST_CORPUS[@]}" "$PYDOC" "$DEBREF"
  evolve rust 100 --corpus "${RUST_CORPUS[@]}" --ext rs
  evolve python-docs 100 --corpus "$PYDOC" --ext txt
  evolve prose 100 --corpus "$DEBREF"
fi

if [[ $stage == conventional || $stage == all ]]; then
  need "$PYLIB" "$PYDOC" "$DEBREF" "${RUST_CORPUS[0]}"
  # One independent draft per version, each distilled from that version (what a
  # conventional edge re-downloads when the cloud moves on). Cached, not committed.
  # Five layers, like the static draft (4 shared + anchor): the same compute per token.
  versions=("$@")
  [ ${#versions[@]} -gt 0 ] || versions=(v0 rust python-docs prose)
  for v in "${versions[@]}"; do
    out=$WORK/conventional/$v
    "$ECSPEC" family distill-draft --manifest "$FAM/family.toml" --version "$v" \
      --layers 5 --steps 100 --lr 1e-3 --kl-top-k 64 --max-tokens 32768 \
      --corpus "$PYLIB" "$PYDOC" "$DEBREF" "${RUST_CORPUS[0]}" \
      --out "$out" $(resume_flag "$out")
  done
fi
