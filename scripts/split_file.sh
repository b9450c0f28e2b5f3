#!/usr/bin/env bash
# Cut a file into numbered pieces small enough for a transfer limit, and print the whole file's sha256.
#
#   scripts/split_file.sh tiny-imagenet-200.tar.xz OUTDIR PIECE_BYTES
#   # far side: cat OUTDIR/pack.* > tiny-imagenet-200.tar.xz && sha256sum tiny-imagenet-200.tar.xz   (compare)
#
# Pieces are named pack.NN (NN from 00), the names scripts/gpu_train.sh joins, so that a shell glob joins them in
# order. scripts/lease_prepare.sh chooses PIECE_BYTES: the fewest pieces whose calls fit in 64 MiB beside the
# repository's tracked files and the wheels (docs/gpu.md).
set -euo pipefail
file=$1
out=$2
size=$3
mkdir -p "$out"
split -b "$size" -d -a 2 "$file" "$out/pack."
ls -l "$out"
sha256sum "$file"
