#!/usr/bin/env bash
# The first run on a lent GPU, as one prepared command: every step
# writes its log under OUT as it goes, so a timeout still returns what finished, and the steps go
# from what settles hardware questions in seconds to what takes minutes.
#   1. the machine: nvidia-smi, the driver, where libcublas is; seqk info
#   2. the primitives' self-tests (mma, ldmatrix, cp.async, grid sync layouts) through panama
#   3. the per-binding tests through panama, then jcuda
#   4. seqk parity on panama and on jcuda
#   5. seqk-report: the attention and recurrent suites with the PyTorch peers (flash, cuDNN and
#      efficient SDPA backends; cuDNN LSTM/GRU), filtered by --filter
#   6. compute-sanitizer memcheck and racecheck over a parity run, when the runtime allows it
# At the end OUT holds REPORT.md (one line per step, and the report's summary) and OUT.tar.gz.
#
# Usage: gpu-first-light.sh BUNDLE OUT [--standin DIR] [--filter REGEX] [--step-limit SECONDS]
#   BUNDLE   the unpacked dist bundle (tar xJf seqkernels.tar.xz -> seqkernels/)
#   --standin DIR  rehearse here, with the stand-in driver (java/target/standin) in place of a GPU:
#            the same steps, on the smoke suite, so the script cannot fail on a typo on the GPU
#   --filter REGEX the benchmark cases of step 5 (default: all of the attn and rnn suites)
#   --step-limit   seconds per step (default 240)
set -uo pipefail
BUNDLE="$(cd "$1" && pwd)"; OUT="$2"; shift 2
STANDIN=""; FILTER=""; LIMIT=240
while [ $# -gt 0 ]; do
  case "$1" in
    --standin) STANDIN="$(cd "$2" && pwd)"; shift 2 ;;
    --filter) FILTER="$2"; shift 2 ;;
    --step-limit) LIMIT="$2"; shift 2 ;;
    *) echo "gpu-first-light: unknown option $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
SUMMARY="$OUT/REPORT.md"
SUITES=(attn rnn)
if [ -n "$STANDIN" ]; then
  export LD_LIBRARY_PATH="$STANDIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  SUITES=(smoke)
fi
{
  echo "# seqkernels first light, $(date -u +%FT%TZ)"
  echo
  echo "Host: $(hostname); bundle: $BUNDLE; ${STANDIN:+stand-in driver: $STANDIN (a rehearsal, not a GPU); }step limit ${LIMIT} s"
  echo
} > "$SUMMARY"

step() { # step NAME COMMAND...: stdout+stderr to OUT/NAME.log, bounded by the step limit; one line in REPORT.md
  local name="$1"; shift
  local start=$SECONDS
  echo "first-light: $name ..." >&2
  timeout --kill-after=10 "$LIMIT" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  local verdict="ok"
  [ "$rc" -ne 0 ] && verdict="FAILED (exit $rc)"
  [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && verdict="TIMED OUT after ${LIMIT} s"
  echo "- $name: $verdict in $((SECONDS - start)) s ($name.log)" >> "$SUMMARY"
}

machine() { # run through `bash -c` below, so that `timeout` can bound it
  nvidia-smi -L || echo "no nvidia-smi"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
  echo "libcuda: $(ldconfig -p 2>/dev/null | grep -m1 'libcuda.so.1' || echo 'not in the loader cache')"
  echo "libcublas candidates:"
  find / -xdev \( -name 'libcublas.so.1[23]' -o -name 'libcublasLt.so.1[23]' \) 2>/dev/null | head -20
  command -v python3 && python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))' || true
  "$BUNDLE/bin/seqk" info --kernels
}

export BUNDLE
export -f machine
step machine bash -c machine
step primitives-panama "$BUNDLE/bin/seqk-test" --binding panama --select-class dev.seqkernels.gpu.PrimitivesSelfTest \
  --select-class dev.seqkernels.gpu.DriverRefusalsTest
step tests-panama "$BUNDLE/bin/seqk-test" --binding panama
step tests-jcuda "$BUNDLE/bin/seqk-test" --binding jcuda
step parity-panama "$BUNDLE/bin/seqk" parity --backend panama
step parity-jcuda "$BUNDLE/bin/seqk" parity --backend jcuda
for suite in "${SUITES[@]}"; do
  step "report-$suite" "$BUNDLE/bin/seqk-report" --backend panama --suite "$suite" ${FILTER:+--filter "$FILTER"} \
    --out "$OUT/report-$suite"
done
if command -v compute-sanitizer >/dev/null; then
  for tool in memcheck racecheck; do
    step "sanitizer-$tool" compute-sanitizer --tool "$tool" --target-processes all --print-limit 20 \
      "$BUNDLE/bin/seqk" parity --backend panama --seed 1
  done
else
  echo "- sanitizer: compute-sanitizer is not on this machine" >> "$SUMMARY"
fi
{
  echo
  for suite in "${SUITES[@]}"; do
    [ -f "$OUT/report-$suite/REPORT.md" ] && { echo "## $suite"; echo; sed -n '1,200p' "$OUT/report-$suite/REPORT.md"; echo; }
  done
} >> "$SUMMARY"
tar czf "$OUT.tar.gz" -C "$(dirname "$OUT")" "$(basename "$OUT")"
cat "$SUMMARY"
