#!/usr/bin/env bash
# Compiles the SIMT emulator (native/emu) together with every cuda/*.cu, as C++ for the CPU, into
# <classes>/dev/seqkernels/native/linux-x86_64/libseqk_emu.so, loaded by the emu binding.
# Skips the compile when the library is newer than every source.
# Usage: build-emulator.sh ROOT CLASSES_DIR      (run by Maven in generate-resources)
set -euo pipefail
ROOT="$1"; CLASSES="$2"
OUT="$CLASSES/dev/seqkernels/native/linux-x86_64"
LIB="$OUT/libseqk_emu.so"
mkdir -p "$OUT"
if [ -f "$LIB" ] && [ -z "$(find "$ROOT/cuda" "$ROOT/native" "$0" -newer "$LIB" -type f -print -quit)" ]; then
  exit 0
fi
CXX="${CXX:-g++}"
command -v "$CXX" >/dev/null || { echo "[seqkernels] $CXX not found: cannot build the SIMT emulator" >&2; exit 1; }
echo "[seqkernels] $CXX: SIMT emulator + $(ls "$ROOT"/cuda/*.cu | wc -l) kernel families"
"$CXX" -std=c++17 -O2 -g -fPIC -shared -pthread -Wall -Wextra -Werror -DSEQK_EMU -I "$ROOT/native" -I "$ROOT/cuda" \
  "$ROOT/native/emu/runtime.cpp" -x c++ "$ROOT"/cuda/*.cu -o "$LIB.tmp"
mv "$LIB.tmp" "$LIB"
