#!/usr/bin/env bash
# Measures a trained draft (the --out directory of `ecspec family train-draft`) as the default
# family's static draft, without touching families/: builds a copy of the family manifest in a
# scratch directory that points at the variant's anchor (and lower-layer adapter, and an
# optional FR-Spec vocabulary subset), then runs `ecspec family speedup` over every version.
#
#   scripts/eval-draft-variant.sh TRAIN_DIR [SUBSET_FILE] [-- extra `family speedup` args]
#
# Prints the speedup table (α per version, mean accepted tokens, draft cost, decode speedup) of
# the learned draft alone (`--drafter model`, unless the extra args name another drafter).
set -euo pipefail
cd "$(dirname "$0")/.."
train=${1:?usage: eval-draft-variant.sh TRAIN_DIR [SUBSET_FILE] [-- args]}
shift
subset=
if [[ $# -gt 0 && $1 != -- ]]; then subset=$1; shift; fi
[[ ${1:-} == -- ]] && shift
[ -f "$train/anchor.safetensors" ] || { echo "$train/anchor.safetensors: no trained anchor there" >&2; exit 1; }
ECSPEC=${ECSPEC_BIN:-${CARGO_TARGET_DIR:-target}/release/ecspec}
[ -x "$ECSPEC" ] || cargo build --release
FAM=families/smollm2-135m
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ln -s "$PWD/$FAM/versions" "$tmp/versions"
ln -s "$(realpath "$train/anchor.safetensors")" "$tmp/anchor.safetensors"
# The variant's draft: its anchor, its lower adapter if it has one, the subset if given; no
# hashes (the files are the variant's own) and no known acceptance (that is what is measured).
sed -e '/^anchor_sha256 = /d' -e '/^lower_adapter/d' -e '/^vocab_subset = /d' -e '/^acceptance = /d' \
  -e 's|^anchor = .*|anchor = "anchor.safetensors"|' "$FAM/family.toml" > "$tmp/family.toml"
extra=
if [ -d "$train/lower" ]; then
  ln -s "$(realpath "$train/lower")" "$tmp/lower"
  extra+='lower_adapter = "lower"\n'
fi
if [ -n "$subset" ]; then
  ln -s "$(realpath "$subset")" "$tmp/subset.txt"
  extra+='vocab_subset = "subset.txt"\n'
fi
[ -n "$extra" ] && sed -i "s|^anchor = \"anchor.safetensors\"|&\n${extra%\\n}|" "$tmp/family.toml"
# The learned draft on its own unless the caller names a drafter.
drafter=(--drafter model)
for a in "$@"; do [[ $a == --drafter* ]] && drafter=(); done
ECSPEC_THREADS=${ECSPEC_THREADS:-1} "$ECSPEC" family speedup --manifest "$tmp/family.toml" "${drafter[@]}" "$@"
