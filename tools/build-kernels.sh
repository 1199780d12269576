#!/usr/bin/env bash
# Compiles each cuda/<family>.cu into <classes>/dev/seqkernels/kernels/<family>.fatbin (SASS for
# sm_75 sm_80 sm_86 sm_90 sm_100 sm_120, and compute_90 PTX that newer GPUs JIT) and writes
# the sm_90 kernel report (registers, shared memory, stack, spills and the __launch_bounds__ limit
# per kernel, its mma.sync count and its main loop's mma.sync and PTX instructions
# (tools/ptx-main-loop.awk), and the architectures built) to <report> and beside the fatbins.
# Without nvcc (or with NVCC=none) it says so once and writes a report saying the kernels are not built.
# Usage: build-kernels.sh ROOT CLASSES_DIR REPORT_FILE      (run by Maven in generate-resources)
set -euo pipefail
ROOT="$1"; CLASSES="$2"; REPORT="$3"
OUT="$CLASSES/dev/seqkernels/kernels"
mkdir -p "$OUT" "$(dirname "$REPORT")"

NVCC="${NVCC:-$(command -v nvcc || true)}"
if [ -z "$NVCC" ] && [ -x /usr/local/cuda/bin/nvcc ]; then NVCC=/usr/local/cuda/bin/nvcc; fi
if [ -z "$NVCC" ] || [ "$NVCC" = none ]; then
  echo "[seqkernels] nvcc not found: GPU kernels not built (the CPU reference and the emulator still work)"
  rm -f "$OUT"/*.fatbin
  printf '# seqkernels kernel report\n# kernels not built: nvcc not found\n' | tee "$OUT/kernel-report.txt" > "$REPORT"
  exit 0
fi

# Blackwell: sm_100 (B200/GB200) and sm_120 (RTX 50xx, RTX PRO 6000) get SASS of their own; PTX
# stays compute_90 so any newer GPU can still JIT it. sm_80 and sm_86 take their SASS from one
# compute_80 PTX: the kernels compare __CUDA_ARCH__ with 800 and nothing between 800 and 900, so
# ptxas gets the PTX compute_86 would give, less the front end's extra pass (attention.cu: 809
# CPU-seconds against 1197; its sm_86 cubins from compute_80 and compute_86 PTX differ only in the
# note naming the PTX's architecture). sm_89 (L4, L40S, RTX 40xx) runs sm_86's SASS, as a cubin
# built for 8.6 runs on any 8.x from 8.6 up: ptxas 13.0 gives byte-identical code for sm_86 and
# sm_89 from this PTX (every kernel's .text of attention.cu and recurrent.cu), so an sm_89 pass
# only cost time (about 115 of attention.cu's 1150 CPU-seconds). A source that tells sm_86 or
# sm_89 apart (a comparison of __CUDA_ARCH__ with 8xx other than >= 800 or < 800, either way
# round, or NV_IF_TARGET's SM_8x names; a comment that does counts too) fails the build here
# rather than losing that difference.
ARCHITECTURES="sm_75 sm_80 sm_86 sm_90 sm_100 sm_120 compute_90"
GENCODE=(-gencode arch=compute_75,code=sm_75 -gencode "arch=compute_80,code=[sm_80,sm_86]"
         -gencode "arch=compute_90,code=[sm_90,compute_90]"
         -gencode arch=compute_100,code=sm_100 -gencode arch=compute_120,code=sm_120)
if grep -rnoE '__CUDA_ARCH__[[:space:]]*[<>=!]=?[[:space:]]*8[0-9][0-9]|8[0-9][0-9][[:space:]]*[<>=!]=?[[:space:]]*__CUDA_ARCH__|NV_[A-Z_]*SM_8[1-9]|NV_IS_EXACTLY_SM_80' "$ROOT/cuda" \
     | grep -vE '__CUDA_ARCH__[[:space:]]*(>=|<)[[:space:]]*800$|800[[:space:]]*(<=|>)[[:space:]]*__CUDA_ARCH__$' >&2; then
  echo "[seqkernels] cuda/ tells sm_86 or sm_89 from sm_80 (above): give them their own -gencode in $0" >&2
  exit 1
fi
LOGS="$CLASSES/../kernel-build"
mkdir -p "$LOGS"
for cu in "$ROOT"/cuda/*.cu; do
  family=$(basename "$cu" .cu)
  fatbin="$OUT/$family.fatbin"
  log="$LOGS/$family.ptxas.txt"
  ptx="$LOGS/$family.compute_90.ptx"
  if [ -f "$fatbin" ] && [ -f "$log" ] && [ -f "$ptx" ] && [ "$fatbin" -nt "$cu" ] && [ "$fatbin" -nt "$0" ] \
     && [ -z "$(find "$ROOT/cuda" -name '*.cuh' -newer "$fatbin" -print -quit)" ]; then
    continue
  fi
  echo "[seqkernels] nvcc $family.cu"
  # --keep leaves the compute_90 PTX, whose .maxntid lines are the kernels' __launch_bounds__.
  keep="$(mktemp -d)"
  "$NVCC" -fatbin -std=c++17 -O3 -I "$ROOT/cuda" "${GENCODE[@]}" --threads 0 -Xptxas -v --keep --keep-dir "$keep" -o "$fatbin" "$cu" \
    2> "$log" || { cat "$log" >&2; rm -rf "$fatbin" "$keep"; exit 1; }
  mv "$keep/$family.compute_90.ptx" "$ptx"
  rm -rf "$keep"
done

{
  echo "# seqkernels kernel report: sm_90, from ptxas -v ($("$NVCC" --version | tail -n1))"
  echo "# architectures: $ARCHITECTURES"
  echo "# family kernel registers smem_bytes stack_bytes spill_store_bytes spill_load_bytes max_threads_per_block mma main_loop_mma main_loop_ptx"
  for log in "$LOGS"/*.ptxas.txt; do
    family=$(basename "$log" .ptxas.txt)
    awk -f "$ROOT/tools/ptx-main-loop.awk" "$LOGS/$family.compute_90.ptx" > "$LOGS/$family.loops.txt"
    awk -v family="$family" '
      FILENAME ~ /\.loops\.txt$/ { loops[$1] = $2 " " $3 " " $4; next }  # kernel mma main_loop_mma main_loop_ptx
      FILENAME ~ /\.ptx$/ {  # the PTX: .maxntid x, y, z after an .entry (its __launch_bounds__)
        if ($0 ~ /\.entry[ \t]/) { entry = $0; sub(/.*\.entry[ \t]+/, "", entry); sub(/[ \t]*\(.*/, "", entry) }
        if ($0 ~ /^[ \t]*\.maxntid[ \t]/) {  # up to three numbers, commas between, spaces optional
          d = $0; sub(/^[ \t]*\.maxntid[ \t]*/, "", d); n = split(d, v, /[ \t]*,[ \t]*/); t = 1
          for (i = 1; i <= n && i <= 3; i++) { if (match(v[i], /^[0-9]+/)) t *= substr(v[i], 1, RLENGTH); else break }
          bound[entry] = t
        }
        next
      }
      /Compiling entry function/ { split($0, q, "'"'"'"); name = q[2]; sm90 = ($0 ~ /sm_90/) }
      sm90 && /bytes stack frame/ { stack = $1; stores = $5; loads = $9 }
      sm90 && /Used [0-9]+ registers/ {
        regs = 0; smem = 0
        for (i = 1; i <= NF; i++) { if ($(i+1) == "registers,") regs = $i; if ($(i+1) == "bytes" && $(i+2) ~ /^smem/) smem = $i }
        print family, name, regs, smem, stack, stores, loads, (name in bound ? bound[name] : 1024), (name in loops ? loops[name] : "0 0 0")
        sm90 = 0
      }' "$LOGS/$family.loops.txt" "$LOGS/$family.compute_90.ptx" "$log"
  done
} > "$REPORT.tmp"
mv "$REPORT.tmp" "$REPORT"
cp "$REPORT" "$OUT/kernel-report.txt"
