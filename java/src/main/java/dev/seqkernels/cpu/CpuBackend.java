package dev.seqkernels.cpu;

import dev.seqkernels.Backend;
import dev.seqkernels.DType;
import dev.seqkernels.Tensor;
import dev.seqkernels.ops.Attention;
import dev.seqkernels.ops.AttentionGradients;
import dev.seqkernels.ops.AttentionResult;
import dev.seqkernels.ops.CausalAlignment;
import dev.seqkernels.ops.Mask;
import dev.seqkernels.ops.MhaGradients;
import dev.seqkernels.ops.MhaResult;
import dev.seqkernels.ops.MultiHeadAttention;
import dev.seqkernels.ops.RecurrentConfig;
import dev.seqkernels.ops.RecurrentGradients;
import dev.seqkernels.ops.RecurrentResult;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The reference backend: widens every tensor to double, runs {@link RecurrentReference} or
 * {@link AttentionReference}, and rounds results once to the input's dtype ({@code cpu}, the
 * oracle). Its same-precision mode ({@code cpu-same-precision}) rounds inside where the GPU kernels
 * round (see {@link Precision}): the plain same-precision implementation that FlashAttention's 2x
 * rule measures 16-bit and TF32 results against (DESIGN.md section 6). F64 is exact in both.
 */
public final class CpuBackend implements Backend {
    /** The name of the same-precision mode. */
    public static final String SAME_PRECISION = "cpu-same-precision";

    private final boolean samePrecision;

    /** The oracle: double throughout. */
    public CpuBackend() {
        this(false);
    }

    private CpuBackend(boolean samePrecision) {
        this.samePrecision = samePrecision;
    }

    /** The same-precision mode: rounds where the GPU kernels round. */
    public static CpuBackend samePrecision() {
        return new CpuBackend(true);
    }

    @Override
    public String name() {
        return samePrecision ? SAME_PRECISION : "cpu";
    }

    @Override
    public boolean supportsF64() {
        return true;
    }

    /** Where an op stored as {@code dtype} rounds inside: nowhere for the oracle. */
    private Precision precision(DType dtype, boolean tf32) {
        return samePrecision ? Precision.same(dtype, tf32) : Precision.EXACT;
    }

    // ---------------------------------------------------------------- recurrent

    private record RecurrentSaved(RecurrentReference.Forward forward, Precision precision) {
    }

    @Override
    public RecurrentResult recurrentForward(RecurrentConfig c, Map<String, Tensor> params, Tensor x, Tensor h0,
                                            Tensor c0, int[] lengths) {
        int steps = (int) (c.batchFirst() ? x.size(1) : x.size(0));
        int batch = (int) (c.batchFirst() ? x.size(0) : x.size(1));
        double[] xs = timeMajor(c, x.toDoubleArray(), steps, batch, c.inputSize());
        DType dt = x.dtype();
        Precision pr = precision(dt, c.allowTf32());
        RecurrentReference.Forward f = RecurrentReference.forward(c, params(c, params), xs, steps, batch,
                h0 == null ? null : h0.toDoubleArray(), c0 == null ? null : c0.toDoubleArray(), lengths, pr);
        int slots = c.numLayers() * c.numDirections();
        Tensor out = Tensor.of(dt, fromTimeMajor(c, f.out(), steps, batch, c.outputSize()),
                c.batchFirst() ? new long[]{batch, steps, c.outputSize()} : new long[]{steps, batch, c.outputSize()});
        Tensor hn = Tensor.of(dt, f.hn(), slots, batch, c.stateSize());
        Tensor cn = f.cn() == null ? null : Tensor.of(dt, f.cn(), slots, batch, c.hiddenSize());
        return new RecurrentResult(out, hn, cn, new RecurrentSaved(f, pr));
    }

    @Override
    public RecurrentGradients recurrentBackward(RecurrentConfig c, Map<String, Tensor> params, RecurrentResult forward,
                                                Tensor dOutput, Tensor dHn, Tensor dCn) {
        if (!(forward.saved() instanceof RecurrentSaved saved)) {
            throw new dev.seqkernels.SeqkException.Unsupported("cpu: this forward result was not made by the cpu backend");
        }
        RecurrentReference.Forward f = saved.forward();
        int steps = f.steps();
        int batch = f.batch();
        double[] dOut = dOutput == null ? null : timeMajor(c, dOutput.toDoubleArray(), steps, batch, c.outputSize());
        RecurrentReference.Backward g = RecurrentReference.backward(c, params(c, params), f, dOut,
                dHn == null ? null : dHn.toDoubleArray(), dCn == null ? null : dCn.toDoubleArray(), saved.precision());
        DType dt = forward.output().dtype();
        int slots = c.numLayers() * c.numDirections();
        Tensor dx = Tensor.of(dt, fromTimeMajor(c, g.dx(), steps, batch, c.inputSize()),
                c.batchFirst() ? new long[]{batch, steps, c.inputSize()} : new long[]{steps, batch, c.inputSize()});
        Tensor dh0 = Tensor.of(dt, g.dh0(), slots, batch, c.stateSize());
        Tensor dc0 = g.dc0() == null ? null : Tensor.of(dt, g.dc0(), slots, batch, c.hiddenSize());
        Map<String, Tensor> dParams = new LinkedHashMap<>();
        RecurrentReference.Params gp = g.dParams();
        for (var e : c.parameterShapes().entrySet()) {
            dParams.put(e.getKey(), Tensor.of(dt, paramArray(c, gp, e.getKey()), e.getValue()));
        }
        return new RecurrentGradients(dx, dh0, dc0, dParams);
    }

    /** Parameters by PyTorch name into per-slot arrays. */
    static RecurrentReference.Params params(RecurrentConfig c, Map<String, Tensor> named) {
        RecurrentReference.Params p = RecurrentReference.Params.zerosLike(c);
        for (String name : c.parameterShapes().keySet()) {
            double[] src = named.get(name).toDoubleArray();
            double[] dst = paramArray(c, p, name);
            System.arraycopy(src, 0, dst, 0, src.length);
        }
        return p;
    }

    /** The per-slot array that holds parameter {@code name} (weight_ih_l1_reverse -> wih[1*nd+1]). */
    static double[] paramArray(RecurrentConfig c, RecurrentReference.Params p, String name) {
        for (int layer = 0; layer < c.numLayers(); layer++) {
            for (int d = 0; d < c.numDirections(); d++) {
                int slot = layer * c.numDirections() + d;
                String s = c.suffix(layer, d);
                if (name.equals("weight_ih_" + s)) {
                    return p.wih()[slot];
                } else if (name.equals("weight_hh_" + s)) {
                    return p.whh()[slot];
                } else if (name.equals("bias_ih_" + s)) {
                    return p.bih()[slot];
                } else if (name.equals("bias_hh_" + s)) {
                    return p.bhh()[slot];
                } else if (name.equals("weight_hr_" + s)) {
                    return p.whr()[slot];
                } else if (name.equals("weight_peephole_" + s)) {
                    return p.peephole()[slot];
                }
            }
        }
        throw new IllegalArgumentException("not a parameter of this configuration: " + name);
    }

    /** The op's layout to [T][B][F]: a transpose when batch-first ([B][T][F]), else identity. */
    private static double[] timeMajor(RecurrentConfig c, double[] a, int steps, int batch, int features) {
        return c.batchFirst() ? swap01(a, batch, steps, features) : a;
    }

    /** [T][B][F] to the op's layout. */
    private static double[] fromTimeMajor(RecurrentConfig c, double[] a, int steps, int batch, int features) {
        return c.batchFirst() ? swap01(a, steps, batch, features) : a;
    }

    static double[] swap01(double[] a, int d0, int d1, int rest) {
        double[] r = new double[a.length];
        for (int i = 0; i < d0; i++) {
            for (int j = 0; j < d1; j++) {
                System.arraycopy(a, (i * d1 + j) * rest, r, (j * d0 + i) * rest, rest);
            }
        }
        return r;
    }

    // ---------------------------------------------------------------- attention

    private record AttentionSaved(AttentionReference.Dims dims, double[] q, double[] k, double[] v, double scale,
                                  AttentionReference.ScoreBias bias, Precision precision) {
    }

    @Override
    public AttentionResult attentionForward(Attention op, Attention.Inputs in) {
        long[] qs = in.q().shape();
        AttentionReference.Dims n = new AttentionReference.Dims((int) qs[0], (int) qs[1], (int) in.k().size(1),
                (int) qs[2], (int) in.k().size(2), (int) qs[3], (int) in.v().size(3));
        double scale = op.scaleFor(n.headDim());
        AttentionReference.ScoreBias bias = sdpaBias(n, op.causal(), in.mask(), in.keyLengths(), in.queryLengths());
        double[] q = in.q().toDoubleArray();
        double[] k = in.k().toDoubleArray();
        double[] v = in.v().toDoubleArray();
        DType dt = in.q().dtype();
        Precision pr = precision(dt, op.allowTf32());
        AttentionReference.Forward f = AttentionReference.forward(n, q, k, v, scale, bias, false, pr);
        Tensor out = Tensor.of(dt, f.out(), n.batch(), n.qHeads(), n.qLen(), n.valueDim());
        Tensor lse = Tensor.of(lseDType(dt), f.lse(), n.batch(), n.qHeads(), n.qLen());
        return new AttentionResult(out, lse, new AttentionSaved(n, q, k, v, scale, bias, pr));
    }

    @Override
    public AttentionGradients attentionBackward(Attention op, AttentionResult forward, Tensor dOut) {
        if (!(forward.saved() instanceof AttentionSaved s)) {
            throw new dev.seqkernels.SeqkException.Unsupported("cpu: this forward result was not made by the cpu backend");
        }
        AttentionReference.Backward g = AttentionReference.backward(s.dims(), s.q(), s.k(), s.v(), s.scale(), s.bias(),
                dOut.toDoubleArray(), null, s.precision());
        AttentionReference.Dims n = s.dims();
        DType dt = forward.out().dtype();
        return new AttentionGradients(
                Tensor.of(dt, g.dq(), n.batch(), n.qHeads(), n.qLen(), n.headDim()),
                Tensor.of(dt, g.dk(), n.batch(), n.kvHeads(), n.kvLen(), n.headDim()),
                Tensor.of(dt, g.dv(), n.batch(), n.kvHeads(), n.kvLen(), n.valueDim()));
    }

    /** LSE is kept in at least fp32: fp16 cannot hold it precisely enough for a backward pass. */
    private static DType lseDType(DType input) {
        return input == DType.F16 || input == DType.BF16 ? DType.F32 : input;
    }

    /** A mask tensor's values with strides that broadcast it onto (b, h, i, j); 0 strides for size-1 dims. */
    private record MaskTerm(Mask mask, double[] values, long sb, long sh, long si, long sj) {
        double bias(int b, int h, int i, int j) {
            return mask.bias(values[(int) (b * sb + h * sh + i * si + j * sj)]);
        }

        /** Right-aligned broadcast of the mask's shape onto [B, H, Lq, Lk]. */
        static MaskTerm broadcast(Mask m) {
            long[] shape = m.tensor().shape();
            long[] full = {1, 1, 1, 1};
            System.arraycopy(shape, 0, full, 4 - shape.length, shape.length);
            long[] st = Tensor.contiguousStrides(full);
            for (int i = 0; i < 4; i++) {
                if (full[i] == 1) {
                    st[i] = 0;
                }
            }
            return new MaskTerm(m, m.tensor().toDoubleArray(), st[0], st[1], st[2], st[3]);
        }
    }

    private static AttentionReference.ScoreBias sdpaBias(AttentionReference.Dims n, CausalAlignment causal, Mask mask,
                                                         int[] keyLengths, int[] queryLengths) {
        MaskTerm term = mask == null ? null : MaskTerm.broadcast(mask);
        return (b, h, i, j) -> {
            int kl = keyLengths == null ? n.kvLen() : keyLengths[b];
            int ql = queryLengths == null ? n.qLen() : queryLengths[b];
            if (j >= kl || i >= ql || !causal.allows(i, j, ql, kl)) {
                return Double.NEGATIVE_INFINITY;
            }
            return term == null ? 0 : term.bias(b, h, i, j);
        };
    }

    // ---------------------------------------------------------------- multi-head attention

    private record MhaSaved(MultiHeadAttention.Projections w, double[] query, double[] key, double[] value, double[] qh, double[] kh,
                            double[] vh, double[] merged, AttentionReference.Dims dims,
                            AttentionReference.ScoreBias bias, Precision precision) {
    }

    @Override
    public MhaResult mhaForward(MultiHeadAttention op, Map<String, Tensor> params, MultiHeadAttention.Inputs in) {
        boolean bf = op.batchFirst();
        MultiHeadAttention.Sizes sz = op.sizes(in);
        int batch = sz.batch();
        int lq = sz.qLen();
        int lk = sz.kvLen();
        int e = op.embedDim();
        int hd = op.headDim();
        MultiHeadAttention.Projections w = op.projections(params);
        DType dt = in.query().dtype();
        Precision pr = precision(dt, op.allowTf32());
        double[] query = batchMajor(bf, in.query().toDoubleArray(), lq, batch, e);
        double[] key = batchMajor(bf, in.key().toDoubleArray(), lk, batch, op.kdim());
        double[] value = batchMajor(bf, in.value().toDoubleArray(), lk, batch, op.vdim());
        AttentionReference.Dims n = new AttentionReference.Dims(batch, op.numHeads(), op.numKvHeads(), lq, lk, hd, hd);
        double[] qh = pr.store(splitHeads(Linear.forward(pr.operands(query), pr.operands(w.wq()), w.bq(), batch * lq, e, e, pr),
                batch, lq, op.numHeads(), hd));
        double[] kh = pr.store(splitHeads(Linear.forward(pr.operands(key), pr.operands(w.wk()), w.bk(), batch * lk, op.kdim(),
                op.kvWidth(), pr), batch, lk, op.numKvHeads(), hd));
        double[] vh = pr.store(splitHeads(Linear.forward(pr.operands(value), pr.operands(w.wv()), w.bv(), batch * lk, op.vdim(),
                op.kvWidth(), pr), batch, lk, op.numKvHeads(), hd));
        AttentionReference.ScoreBias bias = mhaBias(op, n, in.keyPaddingMask(), in.attnMask());
        AttentionReference.Forward f = AttentionReference.forward(n, qh, kh, vh, 1.0 / Math.sqrt(hd), bias,
                op.needWeights(), pr);
        double[] merged = pr.store(mergeHeads(f.out(), batch, lq, op.numHeads(), hd));
        double[] out = Linear.forward(pr.operands(merged), pr.operands(w.wo()), w.bo(), batch * lq, e, e, pr);
        Tensor outT = Tensor.of(dt, batchMajor(bf, out, batch, lq, e),
                bf ? new long[]{batch, lq, e} : new long[]{lq, batch, e});
        Tensor weights = null;
        if (op.needWeights()) {
            double[] avg = new double[batch * lq * lk];
            for (int b = 0; b < batch; b++) {
                for (int h = 0; h < op.numHeads(); h++) {
                    for (int i = 0; i < lq * lk; i++) {
                        avg[b * lq * lk + i] += f.probs()[(b * op.numHeads() + h) * lq * lk + i] / op.numHeads();
                    }
                }
            }
            weights = Tensor.of(dt, avg, batch, lq, lk);
        }
        return new MhaResult(outT, weights, new MhaSaved(w, query, key, value, qh, kh, vh, merged, n, bias, pr));
    }

    @Override
    public MhaGradients mhaBackward(MultiHeadAttention op, Map<String, Tensor> params, MhaResult forward, Tensor dOut,
                                    Tensor dAttnWeights) {
        if (!(forward.saved() instanceof MhaSaved s)) {
            throw new dev.seqkernels.SeqkException.Unsupported("cpu: this forward result was not made by the cpu backend");
        }
        boolean bf = op.batchFirst();
        AttentionReference.Dims n = s.dims();
        int batch = n.batch();
        int lq = n.qLen();
        int lk = n.kvLen();
        int e = op.embedDim();
        int hd = op.headDim();
        MultiHeadAttention.Projections w = s.w();
        double[] dy = batchMajor(bf, dOut.toDoubleArray(), lq, batch, e);
        Precision pr = s.precision();
        Linear.Grads outG = Linear.backward(pr.operands(dy), pr.operands(s.merged()), pr.operands(w.wo()), batch * lq, e, e, pr);
        double[] dProbs = null;
        if (dAttnWeights != null) {
            double[] dw = dAttnWeights.toDoubleArray();
            dProbs = new double[batch * op.numHeads() * lq * lk];
            for (int b = 0; b < batch; b++) {
                for (int h = 0; h < op.numHeads(); h++) {
                    for (int i = 0; i < lq * lk; i++) {
                        dProbs[(b * op.numHeads() + h) * lq * lk + i] = dw[b * lq * lk + i] / op.numHeads();
                    }
                }
            }
        }
        AttentionReference.Backward g = AttentionReference.backward(n, s.qh(), s.kh(), s.vh(), 1.0 / Math.sqrt(hd),
                s.bias(), pr.store(splitHeads(outG.dx(), batch, lq, op.numHeads(), hd)), dProbs, pr);
        Linear.Grads qG = Linear.backward(pr.operands(pr.store(mergeHeads(g.dq(), batch, lq, op.numHeads(), hd))),
                pr.operands(s.query()), pr.operands(w.wq()), batch * lq, e, e, pr);
        Linear.Grads kG = Linear.backward(pr.operands(pr.store(mergeHeads(g.dk(), batch, lk, op.numKvHeads(), hd))),
                pr.operands(s.key()), pr.operands(w.wk()), batch * lk, op.kdim(), op.kvWidth(), pr);
        Linear.Grads vG = Linear.backward(pr.operands(pr.store(mergeHeads(g.dv(), batch, lk, op.numKvHeads(), hd))),
                pr.operands(s.value()), pr.operands(w.wv()), batch * lk, op.vdim(), op.kvWidth(), pr);
        DType dt = forward.out().dtype();
        Map<String, Tensor> dParams = op.parameterGradients(new MultiHeadAttention.Projections(qG.dw(), kG.dw(), vG.dw(),
                qG.db(), kG.db(), vG.db(), outG.dw(), outG.db()), dt);
        return new MhaGradients(
                Tensor.of(dt, batchMajor(bf, qG.dx(), batch, lq, e), seqShape(bf, batch, lq, e)),
                Tensor.of(dt, batchMajor(bf, kG.dx(), batch, lk, op.kdim()), seqShape(bf, batch, lk, op.kdim())),
                Tensor.of(dt, batchMajor(bf, vG.dx(), batch, lk, op.vdim()), seqShape(bf, batch, lk, op.vdim())),
                dParams);
    }

    private static long[] seqShape(boolean batchFirst, int batch, int len, int features) {
        return batchFirst ? new long[]{batch, len, features} : new long[]{len, batch, features};
    }

    /** [L][B][F] <-> [B][L][F] unless already batch-first: the MHA math runs batch-major. */
    private static double[] batchMajor(boolean batchFirst, double[] a, int d0, int d1, int features) {
        return batchFirst ? a : swap01(a, d0, d1, features);
    }

    /** [B][L][H*hd] -> [B][H][L][hd]. */
    private static double[] splitHeads(double[] a, int batch, int len, int heads, int hd) {
        double[] r = new double[a.length];
        for (int b = 0; b < batch; b++) {
            for (int i = 0; i < len; i++) {
                for (int h = 0; h < heads; h++) {
                    System.arraycopy(a, ((b * len + i) * heads + h) * hd, r, ((b * heads + h) * len + i) * hd, hd);
                }
            }
        }
        return r;
    }

    /** [B][H][L][hd] -> [B][L][H*hd]. */
    private static double[] mergeHeads(double[] a, int batch, int len, int heads, int hd) {
        double[] r = new double[a.length];
        for (int b = 0; b < batch; b++) {
            for (int i = 0; i < len; i++) {
                for (int h = 0; h < heads; h++) {
                    System.arraycopy(a, ((b * heads + h) * len + i) * hd, r, ((b * len + i) * heads + h) * hd, hd);
                }
            }
        }
        return r;
    }

    private static AttentionReference.ScoreBias mhaBias(MultiHeadAttention op, AttentionReference.Dims n,
                                                        Mask keyPadding, Mask attnMask) {
        double[] kpm = keyPadding == null ? null : keyPadding.tensor().toDoubleArray();
        double[] am = attnMask == null ? null : attnMask.tensor().toDoubleArray();
        boolean perHead = attnMask != null && attnMask.tensor().rank() == 3;
        return (b, h, i, j) -> {
            if (!op.causal().allows(i, j, n.qLen(), n.kvLen())) {
                return Double.NEGATIVE_INFINITY;
            }
            double add = 0;
            if (kpm != null) {
                add += keyPadding.bias(kpm[b * n.kvLen() + j]);
            }
            if (am != null) {
                int plane = perHead ? (b * n.qHeads() + h) : 0;
                add += attnMask.bias(am[(plane * n.qLen() + i) * n.kvLen() + j]);
            }
            return add;
        };
    }
}
