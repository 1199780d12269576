package dev.seqkernels.ops;

import dev.seqkernels.Backend;
import dev.seqkernels.Backends;
import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.Tensor;

/**
 * Scaled dot-product attention: out = softmax(scale * q k^T + masks) v, with grouped-query heads.
 * q [B, Hq, Lq, D], k [B, Hkv, Lk, D], v [B, Hkv, Lk, Dv], Hq % Hkv == 0; strided views are fine.
 * Masks combine: causal (with its alignment), one boolean or additive mask broadcastable to
 * [B, Hq, Lq, Lk], per-batch key lengths (keys j &gt;= keyLengths[b] blocked) and query lengths
 * (rows i &gt;= queryLengths[b] fully masked).
 */
public final class Attention {
    private final double scale;
    private final CausalAlignment causal;
    private final Backend backend;
    private final boolean allowTf32;

    private Attention(double scale, CausalAlignment causal, Backend backend, boolean allowTf32) {
        this.scale = scale;
        this.causal = causal;
        this.backend = backend;
        this.allowTf32 = allowTf32;
    }

    public static Builder builder() {
        return new Builder();
    }

    /** The inputs of one call; masks and lengths are optional. */
    public static Inputs inputs(Tensor q, Tensor k, Tensor v) {
        return new Inputs(q, k, v);
    }

    /** The scale applied to q k^T: the configured one, else 1/sqrt(D). */
    public double scaleFor(long headDim) {
        return Double.isNaN(scale) ? 1.0 / Math.sqrt(headDim) : scale;
    }

    public CausalAlignment causal() {
        return causal;
    }

    public Backend backend() {
        return backend;
    }

    /** Whether F32 inputs may be multiplied on TF32 tensor cores (see {@link Builder#allowTf32}). */
    public boolean allowTf32() {
        return allowTf32;
    }

    public AttentionResult forward(Inputs in) {
        String op = "attention";
        if (in == null) {
            throw new SeqkException.ShapeMismatch(op + ": argument 'in' is required (Attention.inputs(q, k, v))");
        }
        Checks.present(op, "q", in.q);
        Checks.present(op, "k", in.k);
        Checks.present(op, "v", in.v);
        if (in.mask != null) {
            Checks.present(op, "mask", in.mask.tensor());
        }
        checkInputs(op, in.q.dtype(), in.q.shape(), in.k.dtype(), in.k.shape(), in.v.dtype(), in.v.shape(), in.mask,
                in.keyLengths, in.queryLengths);
        AttentionResult r = backend.attentionForward(this, in);
        return in.inference ? new AttentionResult(r.out(), r.lse(), SavedState.release(r.saved())) : r;
    }

    /**
     * Gradients of q, k and v for dOut (shaped and typed like out). It reads the forward's out as
     * well as what the result saved (on a GPU backend the tensor-core backward takes delta =
     * rowsum(dOut * out), as FlashAttention's does): leave {@code forward.out()} unchanged until then.
     */
    public AttentionGradients backward(AttentionResult forward, Tensor dOut) {
        if (forward == null) {
            throw new SeqkException.ShapeMismatch("attention: argument 'forward' is required");
        }
        Checks.present("attention", "forward.out", forward.out());
        Checks.present("attention", "forward.lse", forward.lse());
        if (forward.saved() == null) {
            throw SavedState.missing("attention");
        }
        Checks.shape("attention", "dOut", dOut, "like out", forward.out().shape());
        Checks.sameDType("attention", "dOut", dOut, forward.out().dtype());
        return backend.attentionBackward(this, forward, dOut);
    }

    /**
     * The checks of one call's inputs by dtype and shape, for host tensors and for the device entry
     * point ({@code dev.seqkernels.gpu.DeviceAttention}) alike: q [batch, q_heads, q_len, head_dim],
     * k [batch, kv_heads, kv_len, head_dim], v [batch, kv_heads, kv_len, value_dim], one floating
     * dtype, q heads a multiple of kv heads, the mask broadcasting to [batch, q_heads, q_len, kv_len],
     * lengths one per batch entry within range. Each failure names the argument.
     */
    public static void checkInputs(String op, DType qType, long[] qs, DType kType, long[] ks, DType vType, long[] vs, Mask mask,
                                   int[] keyLengths, int[] queryLengths) {
        if (!qType.isFloatingPoint()) {
            throw new SeqkException.DTypeMismatch(op + ": argument 'q' has dtype " + qType
                    + ", expected a floating-point dtype (F64, F32, F16, BF16)");
        }
        Checks.shape(op, "q", qs, "[batch, q_heads, q_len, head_dim]", -1, -1, -1, -1);
        long batch = qs[0];
        long hq = qs[1];
        long lq = qs[2];
        long d = qs[3];
        if (ks.length != 4) {
            Checks.shape(op, "k", ks, "[batch, kv_heads, kv_len, head_dim]", batch, -1, -1, d);
        }
        long hkv = ks[1];
        long lk = ks[2];
        Checks.shape(op, "k", ks, "[batch, kv_heads, kv_len, head_dim]", batch, hkv, lk, d);
        Checks.shape(op, "v", vs, "[batch, kv_heads, kv_len, value_dim]", batch, hkv, lk, vs.length == 4 ? vs[3] : -1);
        Checks.sameDType(op, "k", kType, qType);
        Checks.sameDType(op, "v", vType, qType);
        if (hkv == 0 || hq % hkv != 0) {
            throw new SeqkException.ShapeMismatch(op + ": q has " + hq + " heads and k/v have " + hkv
                    + "; q heads must be a multiple of k/v heads");
        }
        if (d == 0 || vs[3] == 0) {
            throw new SeqkException.ShapeMismatch(op + ": head_dim and value_dim must be positive");
        }
        String[] names = {"q", "k", "v"};
        long[][] shapes = {qs, ks, vs};
        for (int i = 0; i < 3; i++) {
            for (long extent : shapes[i]) {
                if (extent < 0 || extent > Integer.MAX_VALUE) {
                    throw new SeqkException.ShapeMismatch(op + ": argument '" + names[i] + "' has shape "
                            + java.util.Arrays.toString(shapes[i]) + "; each extent must be in 0.." + Integer.MAX_VALUE);
                }
            }
        }
        if (mask != null) {
            checkBroadcast(op, "mask", mask.tensor().shape(), new long[]{batch, hq, lq, lk});
            mask.checkValues(op, "mask");
        }
        checkLengths(op, "keyLengths", keyLengths, batch, lk);
        checkLengths(op, "queryLengths", queryLengths, batch, lq);
    }

    /** Right-aligned broadcasting: each of the mask's dimensions is 1 or the target's extent. */
    static void checkBroadcast(String op, String name, long[] shape, long[] target) {
        boolean ok = shape.length >= 1 && shape.length <= target.length;
        for (int i = 0; ok && i < shape.length; i++) {
            long t = target[target.length - shape.length + i];
            ok = shape[i] == 1 || shape[i] == t;
        }
        if (!ok) {
            throw new SeqkException.ShapeMismatch(op + ": argument '" + name + "' has shape " + java.util.Arrays.toString(shape)
                    + ", which does not broadcast to " + java.util.Arrays.toString(target));
        }
    }

    static void checkLengths(String op, String name, int[] lengths, long batch, long max) {
        if (lengths == null) {
            return;
        }
        if (lengths.length != batch) {
            throw new SeqkException.ShapeMismatch(op + ": argument '" + name + "' has " + lengths.length
                    + " entries, expected one per batch entry (" + batch + ")");
        }
        for (int i = 0; i < lengths.length; i++) {
            if (lengths[i] < 0 || lengths[i] > max) {
                throw new SeqkException.ShapeMismatch(op + ": " + name + "[" + i + "] = " + lengths[i] + " is outside 0.." + max);
            }
        }
    }

    public static final class Inputs {
        private final Tensor q;
        private final Tensor k;
        private final Tensor v;
        private Mask mask;
        private int[] keyLengths;
        private int[] queryLengths;
        private boolean inference;

        private Inputs(Tensor q, Tensor k, Tensor v) {
            this.q = q;
            this.k = k;
            this.v = v;
        }

        public Inputs mask(Mask m) {
            mask = m;
            return this;
        }

        public Inputs keyLengths(int[] lengths) {
            keyLengths = lengths == null ? null : lengths.clone();
            return this;
        }

        /** Keep nothing for backward: the saved state is released as soon as out and lse exist. */
        public Inputs inference() {
            inference = true;
            return this;
        }

        public Inputs queryLengths(int[] lengths) {
            queryLengths = lengths == null ? null : lengths.clone();
            return this;
        }

        public Tensor q() {
            return q;
        }

        public Tensor k() {
            return k;
        }

        public Tensor v() {
            return v;
        }

        public Mask mask() {
            return mask;
        }

        public int[] keyLengths() {
            return keyLengths == null ? null : keyLengths.clone();
        }

        public int[] queryLengths() {
            return queryLengths == null ? null : queryLengths.clone();
        }
    }

    public static final class Builder {
        private double scale = Double.NaN;
        private CausalAlignment causal = CausalAlignment.NONE;
        private Backend backend;
        private boolean allowTf32;

        /**
         * Opt-in precision mode for F32 inputs: the GPU forward may multiply on TF32 tensor cores
         * (operands rounded to 10 mantissa bits, fp32 accumulation; checked to relative L2 1e-3
         * instead of F32's 1e-5), on sm_80+ with head and value dims up to 128. Off by default, like
         * PyTorch's allow_tf32 for matmuls. The cpu backend and the F16/BF16 paths ignore it.
         */
        public Builder allowTf32(boolean v) {
            allowTf32 = v;
            return this;
        }

        /** The factor on q k^T; default 1/sqrt(head_dim). Must be finite. */
        public Builder scale(double v) {
            Checks.finite("attention scale", v);
            scale = v;
            return this;
        }

        public Builder causal(CausalAlignment v) {
            causal = v;
            return this;
        }

        public Builder backend(String name) {
            backend = Backends.byName(name);
            return this;
        }

        public Builder backend(Backend b) {
            backend = b;
            return this;
        }

        public Attention build() {
            return new Attention(scale, causal, backend != null ? backend : Backends.fromProperty(), allowTf32);
        }
    }
}
