# The main loop of each kernel in a PTX file, for the kernel report (tools/build-kernels.sh).
# Prints one line per .entry: name, mma.sync instructions in the kernel, mma.sync in its main loop,
# PTX instructions in its main loop. Loops are the natural loops of the kernel's control-flow
# graph, over the blocks reached from the entry: a back edge is a branch to a block still on the
# depth-first walk's path (its header), and the loop is the header with every block that reaches a
# back edge's source without passing the header, wherever nvcc laid that block out (blocks it
# moves before the header or after the back branch, rarely taken paths, still count). A loop
# entered other than through its header (irreducible: the walk back from its back edge reaches the
# entry) is not counted and is named on stderr; so is an indirect branch (brx.idx), whose targets
# this script does not follow. Loops with one header are one loop; a loop whose header
# lies in another loop holding an mma.sync counts as part of that one. The main loop is, among the
# outermost loops holding an mma.sync, the one with the fewest PTX instructions per mma.sync (ties:
# the one with more mma.sync): the hot loop, which FlashAttention-2 keeps free of masking where a
# kernel has masked and unmasked loops. Its whole body is counted, every path: instructions / mma
# is the issue cost of one mma there (FlashAttention-2's forward: about 3-3.5 SASS instructions per
# HMMA). Instructions are the statements ending in ';' that are not directives (.reg, .shared,
# ...); labels, braces and comments are not counted. Kernels without a loop that holds an mma
# print 0 0. With -v all=1, each outermost loop holding an mma.sync is printed first, as "loop
# NAME MMA INSTRUCTIONS" (the masked loops beside the main one).

# The kernel read so far, as basic blocks: block b holds instructions first[b]..last[b], with
# mmas[b] mma.sync among them; its successors succ[b, 1..nsucc[b]].
function flush(   b, i, top, v, h, bestMma, bestLen, len, held, inside, c, nq, q, u, p) {
  if (name == "") return
  # Successors: the branch target, and the next block unless the block ends in an unconditional
  # branch, ret or exit.
  for (b = 1; b <= nb; b++) {
    nsucc[b] = 0
    if (target[b] != "" && (target[b] in blockAt)) succ[b, ++nsucc[b]] = blockAt[target[b]]
    if (!stops[b] && b < nb) succ[b, ++nsucc[b]] = b + 1
  }
  # Depth-first from the entry: an edge to a block on the current path is a back edge.
  split("", state); split("", isHeader); split("", latches); split("", nlatch)
  if (nb > 0) {
    top = 1; stack[1] = 1; next_edge[1] = 1; state[1] = 1
    while (top > 0) {
      b = stack[top]
      if (next_edge[top] > nsucc[b]) { state[b] = 2; top--; continue }
      v = succ[b, next_edge[top]++]
      if (state[v] == 1) { isHeader[v] = 1; latches[v, ++nlatch[v]] = b }
      else if (!state[v]) { state[v] = 1; stack[++top] = v; next_edge[top] = 1 }
    }
  }
  # Predecessors among the reached blocks, for the loops' backward walks.
  split("", npred)
  for (b = 1; b <= nb; b++) {
    if (!state[b]) continue
    for (i = 1; i <= nsucc[b]; i++) { v = succ[b, i]; pred[v, ++npred[v]] = b }
  }
  # Each header's natural loop: its blocks (inLoop[h, b]), instructions and mma.sync.
  split("", inLoop); split("", loopLen); split("", loopMma)
  for (h = 1; h <= nb; h++) {
    if (!isHeader[h]) continue
    inLoop[h, h] = 1; loopLen[h] = last[h] - first[h] + 1; loopMma[h] = mmas[h]; nq = 0
    for (i = 1; i <= nlatch[h]; i++) { u = latches[h, i]; if (!((h, u) in inLoop)) { inLoop[h, u] = 1; queue[++nq] = u } }
    for (q = 1; q <= nq; q++) {
      u = queue[q]
      if (u != h) { loopLen[h] += last[u] - first[u] + 1; loopMma[h] += mmas[u] }
      for (i = 1; i <= npred[u]; i++) { p = pred[u, i]; if (!((h, p) in inLoop)) { inLoop[h, p] = 1; queue[++nq] = p } }
    }
  }
  for (h = 2; h <= nb; h++) {
    if (isHeader[h] && ((h, 1) in inLoop)) {
      print "ptx-main-loop.awk: " name ": the loop at block " h " is entered other than through its header; not counted" > "/dev/stderr"
      isHeader[h] = 0
    }
  }
  bestMma = 0; bestLen = 0
  for (h = 1; h <= nb; h++) {
    if (!isHeader[h] || loopMma[h] == 0) continue
    inside = 0
    for (c = 1; c <= nb && !inside; c++)
      if (c != h && isHeader[c] && loopMma[c] > 0 && ((c, h) in inLoop)) inside = 1
    if (inside) continue
    len = loopLen[h]; held = loopMma[h]
    if (all) print "loop", name, held, len
    if (bestMma == 0 || len * bestMma < bestLen * held || (len * bestMma == bestLen * held && held > bestMma)) {
      bestMma = held; bestLen = len
    }
  }
  print name, total, bestMma, bestLen
  name = ""
}
function open_block() { nb++; first[nb] = n + 1; last[nb] = n; mmas[nb] = 0; target[nb] = ""; stops[nb] = 0 }
/^(\.visible[ \t]+)?\.entry[ \t]/ {
  flush(); name = $0; sub(/.*\.entry[ \t]+/, "", name); sub(/[ \t]*\(.*/, "", name)
  n = 0; nb = 0; total = 0; ended = 1; split("", blockAt)
  next
}
name == "" { next }
{
  line = $0; sub(/\/\/.*/, "", line); gsub(/^[ \t{}]+|[ \t]+$/, "", line)
  if (line ~ /^\$[A-Za-z0-9_$]+:$/) {
    sub(/:$/, "", line)
    if (ended || last[nb] >= first[nb]) { open_block(); ended = 0 }  # consecutive labels name one block
    blockAt[line] = nb
    next
  }
  if (line == "" || line !~ /;$/ || line ~ /^\./) next
  if (ended) { open_block(); ended = 0 }
  n++; last[nb] = n
  if (line ~ /^(@!?%[a-z0-9]+[ \t]+)?mma\.sync/) { mmas[nb]++; total++ }
  if (line ~ /(^|[ \t])bra(\.uni)?[ \t]/) {
    t = line; sub(/.*bra(\.uni)?[ \t]+/, "", t); sub(/[ \t]*;$/, "", t)
    target[nb] = t; stops[nb] = line !~ /^@/; ended = 1
  } else if (line ~ /^(ret|exit)(\.uni)?[ \t]*;$/) {
    stops[nb] = 1; ended = 1
  } else if (line ~ /(^|[ \t])brx\.idx/) {
    print "ptx-main-loop.awk: " name ": an indirect branch (brx.idx), whose targets are not followed" > "/dev/stderr"
    stops[nb] = 1; ended = 1
  }
}
END { flush() }
