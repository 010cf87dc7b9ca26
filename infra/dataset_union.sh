#!/usr/bin/env bash
# The union of preprocessed datasets, for training on more than one (the colour campaign's
# wider data, docs/training-data.md): OUT gets symbolic links to every dataset's feature
# shards (the second dataset's and later ones renamed `{split}-<tag>NNNNNN`, so that each
# split's glob finds them all), and the datasets' indexes and feature indexes concatenated.
# Nothing is copied or re-encoded. Each dataset keeps its own splits (by content hash), and
# build-dataset finds duplicates within one dataset only: build them from disjoint sources
# and check that they share no `pixel_sha256`, or a test image of one may be trained on in
# another.
#
#   infra/dataset_union.sh OUT FIRST [TAG=SECOND ...]
#   infra/dataset_union.sh /tmp/data/mixwide /tmp/data/mix w=/tmp/data/wide
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OUT FIRST [TAG=SECOND ...]" >&2; exit 2; }
cd "$(dirname "$0")/.."
out=$1; first=$2; shift 2
bb=efficientnet-lite0
[ -e "$out" ] && { echo "dataset_union: $out exists: remove it first" >&2; exit 1; }
mkdir -p "$out/features/$bb"
link() {  # link DATASET TAG: its feature shards into OUT, renamed with TAG
    local src=$1 tag=$2 f name
    for f in "$src/features/$bb"/*-[0-9]*.tar "$src/features/$bb"/*-[0-9]*.parquet; do
        name=$(basename "$f")
        ln -s "$(realpath "$f")" "$out/features/$bb/${name/-/-$tag}"
    done
}
link "$first" ""
roots=("$first")
for arg in "$@"; do
    link "${arg#*=}" "${arg%%=*}"
    roots+=("${arg#*=}")
done
.venv/bin/python - "$out" "$bb" "${roots[@]}" <<'EOF'
import sys

import pandas as pd

out, bb, *roots = sys.argv[1:]
for rel in ("index.parquet", f"features/{bb}/index.parquet"):
    frames = [pd.read_parquet(f"{r}/{rel}") for r in roots]
    pd.concat(frames, ignore_index=True).to_parquet(f"{out}/{rel}", index=False)
    print(f"{out}/{rel}: {sum(map(len, frames))} rows from {len(roots)} datasets")
EOF
