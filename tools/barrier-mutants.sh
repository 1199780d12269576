#!/usr/bin/env bash
# Proves every barrier in cuda/*.cu and cuda/<family>/*.cuh is needed: removes, one at a time, each __syncthreads,
# __syncwarp, cp_async_wait, grid sync, flag release and flag wait (a __syncthreads_or(p) becomes its bare
# predicate p; a flag call becomes (void) casts of its arguments, which stay used), rebuilds
# the emulator (only that family's object) and runs the tests that cover that family on it. Every mutant must fail a test; the survivors are
# printed and the script exits 1. Writes a markdown table (site, statement, killed by) to OUT
# (default java/target/barrier-mutants.md) for bench/RESULTS.md.
#
# Usage: tools/barrier-mutants.sh [OUT [FILE...]]   (from the checkout; needs the JDK the launcher finds, Maven)
# FILE...: only these sources (default: cuda/*.cu cuda/*/*.cuh; a header under cuda/<family>/ is that family's).
# LINES (environment, optional): only the sites on these line numbers, space-separated (with one FILE).
# Measured on the 2-core VM (2026-11-29, other builds running beside it): all 47 sites in 40 minutes; 3-5 minutes per attention barrier (its
# tests run for 2-3 minutes), 1-2 per recurrent one, under one per selftest one (36 selftest sites in 14
# minutes). The sources are restored after each mutant, and on exit, where the emulator is rebuilt from them.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/java/target/barrier-mutants.md}"
shift || true
cd "$ROOT"
if [ "$#" -gt 0 ]; then FILES=("$@"); else FILES=(cuda/*.cu cuda/*/*.cuh); fi
JDK="${JAVA_HOME:-$(ls -d /usr/lib/jvm/*25* 2>/dev/null | head -n1)}"
export JAVA_HOME="$JDK" MAVEN_OPTS="${MAVEN_OPTS:-} --sun-misc-unsafe-memory-access=allow"
MVN=(mvn -B -o -q -f "$ROOT/java/pom.xml")

# The tests that exercise each family's kernels on the emulator.
tests_for() {
  case "$1" in
    attention) echo "AttentionGpuTest,TensorCoreBackwardTest,ScheduleModesTest,LongSequenceTest,NanPropagationTest" ;;
    recurrent) echo "RecurrentGpuTest,ScheduleModesTest,StandInTest" ;;
    selftest) echo "PrimitivesSelfTest,EmulatorFeatureTest" ;;
    *) echo "KernelPortTest,DriverContractTest" ;;
  esac
}

BACKUP="$(mktemp -d)"
cp --parents cuda/*.cu cuda/*/*.cuh "$BACKUP/"
restore() { cp -r "$BACKUP/cuda/." cuda/; touch cuda/*.cu; }
# On exit the emulator (and the stand-in's copy of it) is rebuilt from the restored sources: the last
# mutant's library must not stay in java/target for the next test run to trip over.
rebuild() {
  "${MVN[@]}" -DskipTests test-compile >/dev/null 2>&1 ||
    echo "barrier-mutants: rebuilding the emulator from the restored sources failed: run mvn test-compile" >&2
}
trap 'restore; rebuild; rm -rf "$BACKUP"' EXIT

"${MVN[@]}" -DskipTests test-compile >/dev/null || { echo "barrier-mutants: the build fails before any mutation" >&2; exit 2; }

{
  echo "| site | removed | killed by |"
  echo "|---|---|---|"
} > "$OUT"
# Code lines (not comments) that call a barrier: file:line:text
grep -nE '(__syncthreads\(\)|syncwarp\([^)]*\)|cp_async_wait<[0-9]+>\(\)|grid_sync\(\));|__syncthreads_or\([^)]*\)|flag_(release_add|wait_geq)\([^;]*\);' "${FILES[@]}" /dev/null |
  grep -vE '^[^:]+:[0-9]+:\s*(\*|//)' |
while IFS=: read -r file line text; do
  if [ -n "${LINES:-}" ] && [[ " $LINES " != *" $line "* ]]; then continue; fi
  case "$file" in
    cuda/*/*.cuh) family="$(basename "$(dirname "$file")")" ;;
    *) family="$(basename "$file" .cu)" ;;
  esac
  statement="$(echo "$text" | sed -E 's/^\s+//; s/\s*\/\/.*$//')"
  python3 - "$file" "$line" <<'PY'
import re, sys
path, line = sys.argv[1], int(sys.argv[2])
lines = open(path).read().split('\n')
def void_args(m):  # a flag call's arguments, each cast to void (split at commas outside parentheses)
    args, depth, cur = [], 0, ''
    for ch in m.group(2):
        if ch == ',' and depth == 0:
            args.append(cur.strip()); cur = ''
            continue
        depth += ch == '('
        depth -= ch == ')'
        cur += ch
    args.append(cur.strip())
    return ', '.join('(void) (%s)' % a for a in args) + ';'
if '__syncthreads_or(' in lines[line - 1]:
    lines[line - 1] = re.sub(r'__syncthreads_or\(([^)]*)\)', r'(\1)', lines[line - 1], count=1)
elif re.search(r'flag_(release_add|wait_geq)\(', lines[line - 1]):
    lines[line - 1] = re.sub(r'(?:seqk::arch::)?flag_(release_add|wait_geq)\(([^;]*)\);', void_args, lines[line - 1], count=1)
else:
    lines[line - 1] = re.sub(r'(seqk::arch::)?(__syncthreads\(\)|syncwarp\([^)]*\)|cp_async_wait<\d+>\(\)|grid_sync\(\))', '(void) 0', lines[line - 1], count=1)
open(path, 'w').write('\n'.join(lines))
PY
  tests="$(tests_for "$family")"
  log="$(mktemp)"
  if ! "${MVN[@]}" test-compile > "$log" 2>&1; then
    verdict="**survived** (the mutant does not build: no test ran)"
    echo "NO BUILD  $file:$line  $statement" >&2
  elif "${MVN[@]}" surefire:test@default-test -Dtest="$tests" > "$log" 2>&1; then
    verdict="**survived**"
    echo "SURVIVED  $file:$line  $statement" >&2
  else
    failed="$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -oE '^\[ERROR\] +[A-Za-z]+Test\.[A-Za-z0-9_]+' | sed -E 's/^\[ERROR\] +//' | sort -u | head -n 4 | paste -sd, -)"
    [ -z "$failed" ] && failed="$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -m1 -oE '(error|ERROR).*' | cut -c1-80)"
    verdict="$failed"
    echo "killed    $file:$line  $statement  by $failed" >&2
  fi
  rm -f "$log"
  echo "| \`$file:$line\` | \`$statement\` | $verdict |" >> "$OUT"
  cp "$BACKUP/$file" "$file"
  touch "$file" cuda/*.cu
done
# The loop ran in a pipeline's subshell: the table is what it leaves.
mutants=$(($(wc -l < "$OUT") - 2))
survivors=$(grep -c '\*\*survived\*\*' "$OUT" || true)
echo "barrier-mutants: $mutants mutants, $survivors survived; table in $OUT" >&2
[ "$mutants" -gt 0 ] && [ "$survivors" -eq 0 ]
