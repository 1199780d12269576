#!/usr/bin/env bash
# One command on a GPU host: parity, the peer timings (PyTorch) and our timings on the same shapes,
# written to one directory as REPORT.md (markdown) plus parity.json, cases.json, peers.json,
# bench.json and charts/ (PNG and SVG).
#   usage: gpu-report.sh SEQK PEER_SCRIPT [--backend B] [--suite all|rnn|attn|smoke] [--filter REGEX] [--out DIR]
# Run as `./seqk report ...` in a checkout or `seqkernels/bin/seqk-report ...` from the bundle.
# Every step runs even when an earlier one fails; the exit status is 1 when any step failed.
set -uo pipefail
SEQK="$1"; PEERS="$2"; shift 2
ARGS="$*"
SUITE=all; FILTER=""; OUT="seqk-report-$(date +%F)"; BACKEND=()
while [ $# -gt 0 ]; do
  case "$1" in
    --suite) SUITE="$2"; shift 2 ;;
    --filter) FILTER="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --backend) BACKEND=(--backend "$2"); shift 2 ;;
    *) echo "gpu-report: unknown option $1" >&2; exit 2 ;;
  esac
done
SELECT=(--suite "$SUITE"); [ -n "$FILTER" ] && SELECT+=(--filter "$FILTER")
mkdir -p "$OUT"
STATUS=0
step() { # step NAME COMMAND...: runs it, stdout to OUT/NAME.log and stderr to OUT/NAME.err, remembers a failure
  local name="$1"; shift
  echo "report: $name ..." >&2
  if ! "$@" > "$OUT/$name.log" 2> "$OUT/$name.err"; then
    echo "report: $name FAILED (see $OUT/$name.log and $name.err)" >&2
    STATUS=1
  fi
}
step info "$SEQK" info --kernels
step parity "$SEQK" parity "${BACKEND[@]}" --json
cp "$OUT/parity.log" "$OUT/parity.json"
"$SEQK" bench "${SELECT[@]}" --list > "$OUT/cases.json" || STATUS=1
PY="${PYTHON:-python3}"
if "$PY" -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
  step peers "$PY" "$PEERS" --cases "$OUT/cases.json" --out "$OUT/peers.json"
  COMPARE=(--compare "$OUT/peers.json")
else
  echo "report: no PyTorch with CUDA for $PY: peers not timed" | tee "$OUT/peers.log" >&2
  COMPARE=()
fi
step bench "$SEQK" bench "${BACKEND[@]}" "${SELECT[@]}" --json "$OUT/bench.json" --markdown "$OUT/bench.md" \
  --charts "$OUT/charts" "${COMPARE[@]}"
{
  echo "# seqkernels GPU report, $(date +%F)"
  echo
  echo "Command: \`report $ARGS\` (suite $SUITE${FILTER:+, filter $FILTER}; seqk: $SEQK)"
  echo
  echo '```'
  cat "$OUT/info.log"
  echo '```'
  echo
  echo "## Parity"
  echo
  grep -o '"ok" *: *[a-z]*' "$OUT/parity.json" | sort | uniq -c | sed 's/^/    /' || echo "    (no parity rows)"
  echo
  echo "## Timings"
  echo
  if [ -f "$OUT/bench.md" ]; then cat "$OUT/bench.md"; else echo "(bench failed: see bench.log)"; fi
  echo
  echo "Charts: $(ls "$OUT/charts" 2>/dev/null | grep -c png) PNG files in charts/ (SVG beside each)."
} > "$OUT/REPORT.md"
echo "report: wrote $OUT/REPORT.md" >&2
exit $STATUS
