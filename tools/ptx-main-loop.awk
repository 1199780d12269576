# The main loop of each kernel in a PTX file, for the kernel report (tools/build-kernels.sh).
# Prints one line per .entry: name, mma.sync instructions in the kernel, mma.sync in its main loop,
# PTX instructions in its main loop. A loop is the span from a label to a backward branch to it;
# the main loop is the one holding the most mma.sync (ties: the shortest, i.e. the innermost that
# holds them all), counted over its whole body, every path: instructions / mma is the issue cost of
# one mma there (FlashAttention-2's forward: about 3-3.5 SASS instructions per HMMA). Instructions
# are the statements ending in ';' that are not directives (.reg, .shared, ...); labels, braces and
# comments are not counted. Kernels without a loop that holds an mma print 0 0.
function flush(   b, i, m, len, bestMma, bestLen) {
  if (name == "") return
  bestMma = 0; bestLen = 0
  for (b = 1; b <= nb; b++) {
    m = 0
    for (i = from[b]; i <= to[b]; i++) if (mma[i]) m++
    len = to[b] - from[b] + 1
    if (m > bestMma || (m == bestMma && m > 0 && len < bestLen)) { bestMma = m; bestLen = len }
  }
  print name, total, bestMma, bestLen
  name = ""
}
/^(\.visible[ \t]+)?\.entry[ \t]/ {
  flush(); name = $0; sub(/.*\.entry[ \t]+/, "", name); sub(/[ \t]*\(.*/, "", name)
  n = 0; nb = 0; total = 0; split("", label); split("", mma); split("", from); split("", to)
  next
}
name == "" { next }
{
  line = $0; sub(/\/\/.*/, "", line); gsub(/^[ \t{}]+|[ \t]+$/, "", line)
  if (line ~ /^\$[A-Za-z0-9_$]+:$/) { sub(/:$/, "", line); label[line] = n + 1; next }
  if (line == "" || line !~ /;$/ || line ~ /^\./) next
  n++
  mma[n] = line ~ /^(@!?%[a-z0-9]+[ \t]+)?mma\.sync/
  total += mma[n]
  if (line ~ /(^|[ \t])bra(\.uni)?[ \t]/) {
    target = line; sub(/.*bra(\.uni)?[ \t]+/, "", target); sub(/[ \t]*;$/, "", target)
    if ((target in label) && label[target] <= n) { nb++; from[nb] = label[target]; to[nb] = n }
  }
}
END { flush() }
