#!/usr/bin/env bash
# Cut a file into numbered pieces small enough for a transfer limit, and print the whole file's sha256.
#
#   scripts/split_file.sh tiny-imagenet-200.zip OUTDIR [PIECE_BYTES]     # default 44,000,000 bytes
#   # far side: cat OUTDIR/zip.* > tiny-imagenet-200.zip && sha256sum tiny-imagenet-200.zip   (compare)
#
# Pieces are named zip.NN (NN from 00), the names scripts/gpu_train.sh joins, so that a shell glob joins them in
# order. The default size leaves room on a 64 MiB call for the repository's tracked files (18.4 MB) and the
# wheels (3 MB): docs/gpu.md.
set -euo pipefail
file=$1
out=$2
size=${3:-44000000}
mkdir -p "$out"
split -b "$size" -d -a 2 "$file" "$out/zip."
ls -l "$out"
sha256sum "$file"
