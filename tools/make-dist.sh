#!/usr/bin/env bash
# Builds dist/seqkernels.tar.xz (checked to stay under 60 MB) holding seqkernels/, a self-contained
# directory for a GPU host that has no JDK or Maven:
#   runtime/       a Java runtime jlink'd to the modules our jars need (from jmods, or from a
#                  linkable run-time image as Temurin 25 has); a JDK jlink cannot link gets a copy
#                  of its runtime files without sources, ct.sym, CDS archives and static libraries
#   lib/           seqkernels-tools.jar (the command line) and its dependencies: the core seqkernels.jar
#                  (with the fatbins and the emulator library), seqkernels-jcuda.jar, JCuda, ...
#   tests/         the test classes, JUnit and its console launcher
#   bin/seqk       the command line (info, golden, parity, ...)
#   bin/seqk-test  the GPU-relevant test suite (gpu package, goldens, parity) without Maven;
#                  --binding panama|jcuda runs the per-binding tests on the real driver
#   bin/seqk-report  parity, the PyTorch peers and our timings in one report (tools/gpu-report.sh)
#   bench/peers/torch_bench.py, tools/gpu-report.sh: what seqk-report runs
#   tools/gpu-first-light.sh: the first GPU run in one command (GPU-RUNS.md), rehearsed with --standin
#   cuda/spill-allowed.txt, tools/golden/cases: what those tests read
# Usage: tools/make-dist.sh ROOT   (run by ./seqk dist, with JAVA_HOME set to a JDK >= 25)
set -euo pipefail
ROOT="$1"
OUT="$ROOT/dist/seqkernels"
LIMIT_MB=60
VERSION=0.1.0-SNAPSHOT
JUNIT_PLATFORM=1.13.4

mvn -B -q -f "$ROOT/pom.xml" -DskipTests -Dmaven.javadoc.skip=true -Dmaven.source.skip=true package 2>&1 | sed -u 's/\x1b\[[0-9;]*m//g' >&2
mvn -B -q dependency:copy -Dartifact="org.junit.platform:junit-platform-console-standalone:$JUNIT_PLATFORM" \
  -DoutputDirectory="$ROOT/java/target/console" 2>&1 | sed -u 's/\x1b\[[0-9;]*m//g' >&2

rm -rf "$OUT"
mkdir -p "$OUT/lib" "$OUT/tests" "$OUT/bin" "$OUT/cuda" "$OUT/tools/golden" "$OUT/bench/peers"
cp "$ROOT/java-tools/target/seqkernels-tools-$VERSION.jar" "$OUT/lib/"
cp "$ROOT/java-tools/target/lib/"*.jar "$OUT/lib/"
cp "$ROOT/java/target/seqkernels-$VERSION-tests.jar" "$ROOT/java-tools/target/seqkernels-tools-$VERSION-tests.jar" "$OUT/tests/"
# The console launcher jar carries JUnit Jupiter and the platform itself.
cp "$ROOT/java/target/console/junit-platform-console-standalone-$JUNIT_PLATFORM.jar" "$OUT/tests/"
cp "$ROOT/cuda/spill-allowed.txt" "$OUT/cuda/"
cp -r "$ROOT/tools/golden/cases" "$OUT/tools/golden/"
cp "$ROOT/bench/peers/torch_bench.py" "$OUT/bench/peers/"
cp "$ROOT/tools/gpu-report.sh" "$ROOT/tools/gpu-first-light.sh" "$OUT/tools/"

# jlink works from jmods or, since JDK 24 (JEP 493), from a run-time image built linkable, as
# Temurin 25's is; only a JDK with neither falls back to copying its runtime files. Added to what
# jdeps finds: jdk.zipfs (JUnit's class scanning opens jars as file systems, a service jdeps cannot
# see), jdk.unsupported and java.management. No --compress: xz packs an uncompressed image better
# (21 MB instead of 35 MB for this runtime).
# --multi-release base: the classes as the class path sees them (our jars' module descriptors in
# META-INF/versions/25 would make jdeps resolve JCuda's automatic modules by name). A jdeps failure
# is reported and falls back to the copied runtime below, never ends the script unseen.
MODULES=$("$JAVA_HOME/bin/jdeps" --multi-release base --ignore-missing-deps --print-module-deps "$OUT"/lib/*.jar \
  "$OUT"/tests/seqkernels-*-tests.jar 2>"$OUT/jdeps.log" | tail -n1) || { echo "dist: jdeps failed (see below); copying the runtime instead" >&2; cat "$OUT/jdeps.log" >&2; MODULES=""; }
rm -f "$OUT/jdeps.log"
if [ -n "$MODULES" ] && MODULES="$MODULES,jdk.zipfs,jdk.unsupported,java.management" \
   && "$JAVA_HOME/bin/jlink" --add-modules "$MODULES" --strip-debug --no-man-pages --no-header-files \
     --output "$OUT/runtime" >&2; then
  RUNTIME="jlink'd ($MODULES)"
else
  rm -rf "$OUT/runtime"
  mkdir -p "$OUT/runtime/bin"
  cp "$JAVA_HOME/bin/java" "$OUT/runtime/bin/"
  # Also left out: native libraries of the X11 desktop, sound, debugger and serviceability modules,
  # which seqkernels never loads. Kept: headless AWT and fonts, which the bench charts draw with.
  tar cf - --exclude=lib/src.zip --exclude=lib/ct.sym --exclude='*.jsa' --exclude='*.debuginfo' --exclude='*.a' \
    --exclude=libawt_xawt.so --exclude=libjavajpeg.so --exclude=libsplashscreen.so --exclude=libjsound.so \
    --exclude=libjawt.so --exclude=libsaproc.so --exclude=libjdwp.so --exclude=libdt_socket.so --exclude='psfont*' \
    -C "$JAVA_HOME" lib conf release | tar xf - -C "$OUT/runtime"
  RUNTIME="a trimmed copy of $JAVA_HOME (jlink could not link it)"
fi

cat > "$OUT/bin/seqk" <<'SH'
#!/usr/bin/env bash
# seqkernels from the bundle: no JDK or Maven needed.
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC2086
exec "$DIR/runtime/bin/java" ${SEQK_JAVA_OPTS:-} --enable-native-access=ALL-UNNAMED -Dseqkernels.root="$DIR" \
  -cp "$DIR/lib/*" dev.seqkernels.cli.Main "$@"
SH
cat > "$OUT/bin/seqk-test" <<'SH'
#!/usr/bin/env bash
# The GPU-relevant tests from the bundle (JUnit console launcher): the gpu package (seam contract,
# primitives, kernels, ops' GPU path, the driver's refusals), the PyTorch goldens and parity.
# --binding emu|panama|jcuda (first): the binding the per-binding tests run through (default emu);
# on a GPU host, panama and jcuda run them on the real driver. Extra arguments go to the launcher;
# selectors among them (--select-class C) replace the default selection.
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BINDING=emu
if [ "${1:-}" = "--binding" ]; then BINDING="$2"; shift 2; fi
# Selectors of one's own (--select-class ...) replace the default selection.
SELECT=(--select-package dev.seqkernels.gpu --select-class dev.seqkernels.golden.PyTorchGoldenTest
        --select-class dev.seqkernels.cli.ParityTest)
if printf '%s\n' "$@" | grep -q -- '^--select'; then SELECT=(); fi
# The launcher's --class-path takes jar names, not java's lib/* wildcard.
CP="$(ls "$DIR"/lib/*.jar "$DIR"/tests/*.jar | grep -v console-standalone | tr '\n' ':')"
# shellcheck disable=SC2086
exec "$DIR/runtime/bin/java" ${SEQK_JAVA_OPTS:-} --enable-native-access=ALL-UNNAMED -Xss16m -Dseqkernels.root="$DIR" \
  -Dseqkernels.test.binding="$BINDING" \
  -jar "$DIR"/tests/junit-platform-console-standalone-*.jar execute --class-path "$CP" "${SELECT[@]}" \
  --disable-banner --disable-ansi-colors --details=summary "$@"
SH
cat > "$OUT/bin/seqk-report" <<'SH'
#!/usr/bin/env bash
# Parity, the PyTorch peers (python3 with CUDA) and our timings in one report directory; options:
# [--backend B] [--suite all|rnn|attn|smoke] [--filter REGEX] [--out DIR]
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "$DIR/tools/gpu-report.sh" "$DIR/bin/seqk" "$DIR/bench/peers/torch_bench.py" "$@"
SH
chmod +x "$OUT/bin/seqk" "$OUT/bin/seqk-test" "$OUT/bin/seqk-report"
ARCHIVE="$ROOT/dist/seqkernels.tar.xz"
echo "dist: compressing (xz) ..." >&2
tar cJf "$ARCHIVE" -C "$ROOT/dist" seqkernels
SIZE_MB=$(( $(stat -c %s "$ARCHIVE") / 1048576 ))
echo "dist: $ARCHIVE ($SIZE_MB MB; runtime: $RUNTIME)"
echo "dist: on the GPU host: tar xJf seqkernels.tar.xz && seqkernels/bin/seqk info && seqkernels/bin/seqk-test --binding panama"
if [ "$SIZE_MB" -ge "$LIMIT_MB" ]; then
  echo "dist: $SIZE_MB MB is not under the $LIMIT_MB MB limit for copying to a GPU host" >&2
  exit 1
fi
