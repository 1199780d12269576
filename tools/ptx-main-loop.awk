# The main loop of each kernel in a PTX file, for the kernel report (tools/build-kernels.sh).
# Prints one line per .entry: name, mma.sync instructions in the kernel, mma.sync in its main loop,
# PTX instructions in its main loop. A loop is the span from a label to a backward branch to it; a
# loop inside another one that holds an mma.sync counts as part of that one. The main loop is,
# among the outermost loops holding an mma.sync, the one with the fewest PTX instructions per
# mma.sync (ties: the one with more mma.sync): the hot loop, which FlashAttention-2 keeps free of
# masking where a kernel has masked and unmasked loops. Its whole body is counted, every path:
# instructions / mma is the issue cost of one mma there (FlashAttention-2's forward: about 3-3.5
# SASS instructions per HMMA). Instructions are the statements ending in ';' that are not
# directives (.reg, .shared, ...); labels, braces and comments are not counted. Kernels without a
# loop that holds an mma print 0 0.
function flush(   b, c, i, len, inside, bestMma, bestLen) {
  if (name == "") return
  for (b = 1; b <= nb; b++) {
    held[b] = 0
    for (i = from[b]; i <= to[b]; i++) if (mma[i]) held[b]++
  }
  bestMma = 0; bestLen = 0
  for (b = 1; b <= nb; b++) {
    if (held[b] == 0) continue
    inside = 0
    for (c = 1; c <= nb && !inside; c++)
      if (c != b && held[c] > 0 && from[c] <= from[b] && to[b] <= to[c] && (from[c] < from[b] || to[b] < to[c])) inside = 1
    if (inside) continue
    len = to[b] - from[b] + 1
    if (bestMma == 0 || len * bestMma < bestLen * held[b] || (len * bestMma == bestLen * held[b] && held[b] > bestMma)) {
      bestMma = held[b]; bestLen = len
    }
  }
  print name, total, bestMma, bestLen
  name = ""
}
/^(\.visible[ \t]+)?\.entry[ \t]/ {
  flush(); name = $0; sub(/.*\.entry[ \t]+/, "", name); sub(/[ \t]*\(.*/, "", name)
  n = 0; nb = 0; total = 0; split("", label); split("", mma); split("", from); split("", to); split("", held)
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
