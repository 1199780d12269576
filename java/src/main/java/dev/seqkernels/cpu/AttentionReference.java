package dev.seqkernels.cpu;

/**
 * The attention oracle: softmax(scale * q k^T + bias) v in double, row by row, and its backward.
 * Given a same-precision {@link Precision}, it rounds where the kernels round instead: scores,
 * statistics and dP in fp32, P before P V and dV = P^T dO, dS before dQ = dS K and dK = dS^T Q, and
 * every input of a product as an operand (TF32 for an F32 op that allows it); and it sums in fp32
 * ({@link Precision#fma}, {@link Precision#sum}).
 *
 * <p>Layouts are contiguous: q [B][Hq][Lq][D], k [B][Hkv][Lk][D], v [B][Hkv][Lk][Dv], out
 * [B][Hq][Lq][Dv], lse [B][Hq][Lq]. Query head h reads key/value head h / (Hq / Hkv). The bias
 * says per score whether it is blocked (-infinity) or what to add (0 when allowed, a finite value
 * for additive masks). A row whose scores are all blocked gives out = 0, lse = -infinity, zero
 * probabilities and zero gradients: defined, never NaN. Blocked keys are never read, not even by
 * a row whose other scores are NaN; every allowed key is read, even where its probability
 * underflows to 0 (so a NaN in its v reaches the row). A NaN score makes its row's out, lse and
 * probabilities of allowed keys NaN; +infinite scores share the row's weight equally (lse
 * +infinity). See docs/CONVENTIONS.md, "NaN and overflow".
 */
public final class AttentionReference {
    private AttentionReference() {
    }

    /** The additive bias of score (b, h, i, j): 0, a finite value, or -infinity for blocked. */
    @FunctionalInterface
    public interface ScoreBias {
        double at(int b, int h, int i, int j);

        ScoreBias NONE = (b, h, i, j) -> 0;
    }

    public record Dims(int batch, int qHeads, int kvHeads, int qLen, int kvLen, int headDim, int valueDim) {
        int group() {
            return qHeads / kvHeads;
        }
    }

    /** probs [B][Hq][Lq][Lk] is filled only when asked for (MHA's attention weights). */
    public record Forward(double[] out, double[] lse, double[] probs) {
    }

    public record Backward(double[] dq, double[] dk, double[] dv) {
    }

    public static Forward forward(Dims n, double[] q, double[] k, double[] v, double scale, ScoreBias bias,
                                  boolean keepProbs, Precision pr) {
        q = pr.operands(q);
        k = pr.operands(k);
        v = pr.operands(v);
        double[] out = new double[n.batch() * n.qHeads() * n.qLen() * n.valueDim()];
        double[] lse = new double[n.batch() * n.qHeads() * n.qLen()];
        double[] probs = keepProbs ? new double[n.batch() * n.qHeads() * n.qLen() * n.kvLen()] : null;
        double[] p = new double[n.kvLen()];
        boolean[] blocked = new boolean[n.kvLen()];
        for (int b = 0; b < n.batch(); b++) {
            for (int h = 0; h < n.qHeads(); h++) {
                int kvh = h / n.group();
                for (int i = 0; i < n.qLen(); i++) {
                    int row = (b * n.qHeads() + h) * n.qLen() + i;
                    lse[row] = rowProbabilities(n, q, k, scale, bias, b, h, kvh, i, p, blocked, pr);
                    if (lse[row] == Double.NEGATIVE_INFINITY) {
                        continue;
                    }
                    for (int j = 0; j < n.kvLen(); j++) {
                        if (blocked[j]) {
                            continue;
                        }
                        int vOff = ((b * n.kvHeads() + kvh) * n.kvLen() + j) * n.valueDim();
                        double pj = pr.operand(p[j]);
                        for (int e = 0; e < n.valueDim(); e++) {
                            out[row * n.valueDim() + e] = pr.fma(pj, v[vOff + e], out[row * n.valueDim() + e]);
                        }
                    }
                    if (probs != null) {
                        System.arraycopy(p, 0, probs, row * n.kvLen(), n.kvLen());
                    }
                }
            }
        }
        return new Forward(out, lse, probs);
    }

    /**
     * Fills p with the row's probabilities (0 for blocked keys, which {@code blocked} marks) and
     * returns its log-sum-exp (-infinity if fully blocked). Math.max keeps a NaN score, so a row
     * with one gets NaN probabilities at its allowed keys and a NaN lse.
     */
    private static double rowProbabilities(Dims n, double[] q, double[] k, double scale, ScoreBias bias, int b,
                                           int h, int kvh, int i, double[] p, boolean[] blocked, Precision pr) {
        int qOff = ((b * n.qHeads() + h) * n.qLen() + i) * n.headDim();
        double max = Double.NEGATIVE_INFINITY;
        for (int j = 0; j < n.kvLen(); j++) {
            double add = bias.at(b, h, i, j);
            blocked[j] = add == Double.NEGATIVE_INFINITY;
            if (blocked[j]) {
                p[j] = Double.NEGATIVE_INFINITY;
                continue;
            }
            int kOff = ((b * n.kvHeads() + kvh) * n.kvLen() + j) * n.headDim();
            double s = 0;
            for (int e = 0; e < n.headDim(); e++) {
                s = pr.fma(q[qOff + e], k[kOff + e], s);
            }
            p[j] = pr.fp32(scale * pr.fp32(s) + add);
            max = Math.max(max, p[j]);
        }
        if (max == Double.NEGATIVE_INFINITY) {
            java.util.Arrays.fill(p, 0);
            return Double.NEGATIVE_INFINITY;
        }
        double sum = 0;
        for (int j = 0; j < n.kvLen(); j++) {
            p[j] = weight(p[j], max);
            sum = pr.sum(sum, p[j]);
        }
        for (int j = 0; j < n.kvLen(); j++) {
            p[j] /= sum;
        }
        return pr.fp32(max + Math.log(sum));
    }

    /**
     * exp(s - max) for a score s under the row's maximum: 0 for a blocked key (-infinity) whatever
     * the maximum, even NaN; 1 at the maximum, also when it is +infinity (a score beyond the
     * range, where exp(inf - inf) would be NaN): the +infinite scores share the weight equally,
     * softmax's limit as they grow together.
     */
    private static double weight(double s, double max) {
        if (s == Double.NEGATIVE_INFINITY) {
            return 0;
        }
        return s == max ? 1 : Math.exp(s - max);
    }

    /**
     * Gradients of q, k and v given dOut and, optionally, the gradient of the probabilities
     * {@code dProbs} [B][Hq][Lq][Lk] (when the probabilities are themselves an output).
     * Key/value gradients of a grouped head sum over the query heads that read it.
     */
    public static Backward backward(Dims n, double[] q, double[] k, double[] v, double scale, ScoreBias bias,
                                    double[] dOut, double[] dProbs, Precision pr) {
        q = pr.operands(q);
        k = pr.operands(k);
        v = pr.operands(v);
        dOut = pr.operands(dOut);
        double[] dq = new double[q.length];
        double[] dk = new double[k.length];
        double[] dv = new double[v.length];
        double[] p = new double[n.kvLen()];
        double[] dp = new double[n.kvLen()];
        boolean[] blocked = new boolean[n.kvLen()];
        for (int b = 0; b < n.batch(); b++) {
            for (int h = 0; h < n.qHeads(); h++) {
                int kvh = h / n.group();
                for (int i = 0; i < n.qLen(); i++) {
                    int row = (b * n.qHeads() + h) * n.qLen() + i;
                    if (rowProbabilities(n, q, k, scale, bias, b, h, kvh, i, p, blocked, pr) == Double.NEGATIVE_INFINITY) {
                        continue;
                    }
                    int oOff = row * n.valueDim();
                    double rowDot = 0;
                    for (int j = 0; j < n.kvLen(); j++) {
                        if (blocked[j]) {
                            continue;
                        }
                        int vOff = ((b * n.kvHeads() + kvh) * n.kvLen() + j) * n.valueDim();
                        double s = dProbs == null ? 0 : dProbs[row * n.kvLen() + j];
                        double pj = pr.operand(p[j]);
                        for (int e = 0; e < n.valueDim(); e++) {
                            s = pr.fma(dOut[oOff + e], v[vOff + e], s);
                            dv[vOff + e] = pr.fma(pj, dOut[oOff + e], dv[vOff + e]);
                        }
                        dp[j] = pr.fp32(s);
                        rowDot = pr.fma(p[j], dp[j], rowDot);
                    }
                    rowDot = pr.fp32(rowDot);
                    int qOff = row * n.headDim();
                    for (int j = 0; j < n.kvLen(); j++) {
                        if (blocked[j]) {
                            continue;
                        }
                        double ds = pr.operand(p[j] * (dp[j] - rowDot)) * scale;
                        int kOff = ((b * n.kvHeads() + kvh) * n.kvLen() + j) * n.headDim();
                        for (int e = 0; e < n.headDim(); e++) {
                            dq[qOff + e] = pr.fma(ds, k[kOff + e], dq[qOff + e]);
                            dk[kOff + e] = pr.fma(ds, q[qOff + e], dk[kOff + e]);
                        }
                    }
                }
            }
        }
        return new Backward(dq, dk, dv);
    }
}
