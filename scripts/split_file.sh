#!/usr/bin/env bash
# Cut a file into numbered pieces small enough for a transfer limit, and print the whole file's sha256.
#
#   scripts/split_file.sh tiny-imagenet-200.zip OUTDIR [PIECE_BYTES]     # default 60 MiB pieces
#   # far side: cat OUTDIR/*.part* > tiny-imagenet-200.zip && sha256sum tiny-imagenet-200.zip   (compare)
#
# Pieces are named FILE.partNN (NN from 00) so that a shell glob joins them in order.
set -euo pipefail
file=$1
out=$2
size=${3:-$((60 * 1024 * 1024))}
mkdir -p "$out"
split -b "$size" -d -a 2 "$file" "$out/$(basename "$file").part"
ls -l "$out"
sha256sum "$file"
