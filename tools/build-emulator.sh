#!/usr/bin/env bash
# Compiles the SIMT emulator (native/emu) together with every cuda/*.cu, as C++ for the CPU, into
# <classes>/dev/seqkernels/native/linux-x86_64/libseqk_emu.so, loaded by the emu binding.
#
# The kernel sources get GCC's thread-sanitizer instrumentation without its runtime: every load
# and store in kernel code calls the emulator's hazard checker (native/emu/hazards.cpp), which
# defines the __tsan_* entry points. Vectorizing, store merging and scalar replacement of
# aggregates are off for them, so a vector load or store in the source (float4, uint2, half2)
# stays one access of its size, as a GPU thread makes it (the alignment check needs that); g++
# may still split or merge other accesses, which the checks see as they are compiled. No sibling
# calls either: an access in tail position would jump to its hook, which would then name the
# kernel's caller as the access's source line.
# Linked with -z defs: an instrumentation entry point hazards.cpp lacks fails the build.
# One object per source in <classes>/../emu-build, each rebuilt when older than its source or
# any header; the library is relinked when any object changed.
# Usage: build-emulator.sh ROOT CLASSES_DIR      (run by Maven in generate-resources)
set -euo pipefail
ROOT="$1"; CLASSES="$2"
OUT="$CLASSES/dev/seqkernels/native/linux-x86_64"
LIB="$OUT/libseqk_emu.so"
OBJ="$CLASSES/../emu-build"
mkdir -p "$OUT" "$OBJ"
CXX="${CXX:-g++}"
command -v "$CXX" >/dev/null || { echo "[seqkernels] $CXX not found: cannot build the SIMT emulator" >&2; exit 1; }
# -fcf-protection=none: the fibers switch stacks by hand (seqk_emu_switch_stack), which a CET shadow
# stack would fault on; a compiler that enables CET by default would mark the library compatible.
COMMON=(-std=c++17 -O2 -g -fPIC -pthread -fcf-protection=none -Wall -Wextra -Werror -DSEQK_EMU -I "$ROOT/native" -I "$ROOT/cuda")
KERNEL=(-fsanitize=thread --param=tsan-instrument-func-entry-exit=0 -fno-tree-vectorize -fno-tree-slp-vectorize
        -fno-store-merging -fno-tree-sra -fno-optimize-sibling-calls)

newest_header="$(find "$ROOT/native/emu" "$ROOT/cuda" -name '*.h' -o -name '*.cuh' | xargs ls -t | head -n1)"
stale() { # object source: whether the object must be rebuilt
  [ ! -f "$1" ] || [ "$2" -nt "$1" ] || [ "$newest_header" -nt "$1" ] || [ "$0" -nt "$1" ]
}
objects=()
built=0
for src in "$ROOT"/native/emu/*.cpp "$ROOT"/cuda/*.cu; do
  name="$(basename "$src")"
  obj="$OBJ/${name%.*}.o"
  objects+=("$obj")
  if stale "$obj" "$src"; then
    [ "$built" = 0 ] && echo "[seqkernels] $CXX: SIMT emulator + $(ls "$ROOT"/cuda/*.cu | wc -l) kernel families"
    built=1
    case "$src" in
      *.cu) "$CXX" "${COMMON[@]}" "${KERNEL[@]}" -x c++ -c "$src" -o "$obj.tmp" ;;
      *) "$CXX" "${COMMON[@]}" -c "$src" -o "$obj.tmp" ;;
    esac
    mv "$obj.tmp" "$obj"
  fi
done
if [ "$built" = 1 ] || [ ! -f "$LIB" ]; then
  "$CXX" -shared -pthread -Wl,-z,defs "${objects[@]}" -o "$LIB.tmp" -ldl
  mv "$LIB.tmp" "$LIB"
fi
