package dev.seqkernels.ops;

import dev.seqkernels.Backend;
import dev.seqkernels.Backends;
import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.Tensor;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Multi-head attention with PyTorch's {@code nn.MultiheadAttention} parameters and semantics, plus
 * grouped-query heads ({@code numKvHeads}). Projections: q = query W_q^T + b_q, k and v likewise
 * with {@code numKvHeads * headDim} outputs; heads attend with scale 1/sqrt(headDim); out =
 * concat(heads) W_o^T + b_o. When kdim == vdim == embedDim the q/k/v weights are packed in
 * {@code in_proj_weight} (PyTorch's rule), else they are {@code q_proj_weight}, {@code k_proj_weight},
 * {@code v_proj_weight}. Masks follow the {@link Mask} meanings: {@code keyPaddingMask} [B, Lk],
 * {@code attnMask} [Lq, Lk] or [B*numHeads, Lq, Lk]. A fully masked query row attends to nothing:
 * its head outputs are 0 (PyTorch gives NaN) and its attention weights are 0.
 */
public final class MultiHeadAttention {
    private final int embedDim;
    private final int numHeads;
    private final int numKvHeads;
    private final int kdim;
    private final int vdim;
    private final boolean bias;
    private final boolean batchFirst;
    private final boolean needWeights;
    private final boolean allowTf32;
    private final CausalAlignment causal;
    private final Backend backend;

    private MultiHeadAttention(Builder b, Backend backend) {
        this.embedDim = b.embedDim;
        this.numHeads = b.numHeads;
        this.numKvHeads = b.numKvHeads == 0 ? b.numHeads : b.numKvHeads;
        this.kdim = b.kdim == 0 ? b.embedDim : b.kdim;
        this.vdim = b.vdim == 0 ? b.embedDim : b.vdim;
        this.bias = b.bias;
        this.batchFirst = b.batchFirst;
        this.needWeights = b.needWeights;
        this.allowTf32 = b.allowTf32;
        this.causal = b.causal;
        this.backend = backend;
    }

    public static Builder builder() {
        return new Builder();
    }

    public static Inputs inputs(Tensor query, Tensor key, Tensor value) {
        return new Inputs(query, key, value);
    }

    public int embedDim() {
        return embedDim;
    }

    public int numHeads() {
        return numHeads;
    }

    public int numKvHeads() {
        return numKvHeads;
    }

    public int headDim() {
        return embedDim / numHeads;
    }

    public int kdim() {
        return kdim;
    }

    public int vdim() {
        return vdim;
    }

    public boolean bias() {
        return bias;
    }

    public boolean batchFirst() {
        return batchFirst;
    }

    public boolean needWeights() {
        return needWeights;
    }

    /** Whether the F32 interior (projections, attention) may multiply on TF32 tensor cores (see {@link Builder#allowTf32}). */
    public boolean allowTf32() {
        return allowTf32;
    }

    public CausalAlignment causal() {
        return causal;
    }

    public Backend backend() {
        return backend;
    }

    /** Whether q/k/v weights are packed in {@code in_proj_weight} (kdim == vdim == embedDim). */
    public boolean packedInProjection() {
        return kdim == embedDim && vdim == embedDim;
    }

    /** Width of the k (and v) projection: numKvHeads * headDim. */
    public int kvWidth() {
        return numKvHeads * headDim();
    }

    /** Every parameter by its PyTorch name, with its shape. */
    public Map<String, long[]> parameterShapes() {
        Map<String, long[]> m = new LinkedHashMap<>();
        long kv = kvWidth();
        if (packedInProjection()) {
            m.put("in_proj_weight", new long[]{embedDim + 2 * kv, embedDim});
        } else {
            m.put("q_proj_weight", new long[]{embedDim, embedDim});
            m.put("k_proj_weight", new long[]{kv, kdim});
            m.put("v_proj_weight", new long[]{kv, vdim});
        }
        if (bias) {
            m.put("in_proj_bias", new long[]{embedDim + 2 * kv});
        }
        m.put("out_proj.weight", new long[]{embedDim, embedDim});
        if (bias) {
            m.put("out_proj.bias", new long[]{embedDim});
        }
        return m;
    }

    /** Batch size and sequence lengths of one call, read from its inputs in this op's layout. */
    public record Sizes(int batch, int qLen, int kvLen) {
    }

    public Sizes sizes(Inputs in) {
        int d0 = batchFirst ? 0 : 1;
        int d1 = 1 - d0;
        return new Sizes((int) in.query.size(d0), (int) in.query.size(d1), (int) in.key.size(d1));
    }

    /** The projection parameters split by role (q, k, v, out), row-major doubles; biases null without bias. */
    public record Projections(double[] wq, double[] wk, double[] wv, double[] bq, double[] bk, double[] bv, double[] wo,
                              double[] bo) {
    }

    /** Splits PyTorch-named parameters (packed or separate q/k/v weights) into their roles. */
    public Projections projections(Map<String, Tensor> params) {
        int e = embedDim;
        int kv = kvWidth();
        double[] wq;
        double[] wk;
        double[] wv;
        if (packedInProjection()) {
            double[] w = params.get("in_proj_weight").toDoubleArray();
            wq = java.util.Arrays.copyOfRange(w, 0, e * e);
            wk = java.util.Arrays.copyOfRange(w, e * e, e * e + kv * e);
            wv = java.util.Arrays.copyOfRange(w, e * e + kv * e, e * e + 2 * kv * e);
        } else {
            wq = params.get("q_proj_weight").toDoubleArray();
            wk = params.get("k_proj_weight").toDoubleArray();
            wv = params.get("v_proj_weight").toDoubleArray();
        }
        if (!bias) {
            return new Projections(wq, wk, wv, null, null, null, params.get("out_proj.weight").toDoubleArray(), null);
        }
        double[] b = params.get("in_proj_bias").toDoubleArray();
        return new Projections(wq, wk, wv, java.util.Arrays.copyOfRange(b, 0, e), java.util.Arrays.copyOfRange(b, e, e + kv),
                java.util.Arrays.copyOfRange(b, e + kv, e + 2 * kv), params.get("out_proj.weight").toDoubleArray(),
                params.get("out_proj.bias").toDoubleArray());
    }

    /** Gradients given by role, as tensors of {@code dtype} under this configuration's PyTorch parameter names. */
    public Map<String, Tensor> parameterGradients(Projections g, DType dtype) {
        Map<String, Tensor> out = new LinkedHashMap<>();
        for (var entry : parameterShapes().entrySet()) {
            double[] grad = switch (entry.getKey()) {
                case "in_proj_weight" -> concat(g.wq(), g.wk(), g.wv());
                case "q_proj_weight" -> g.wq();
                case "k_proj_weight" -> g.wk();
                case "v_proj_weight" -> g.wv();
                case "in_proj_bias" -> concat(g.bq(), g.bk(), g.bv());
                case "out_proj.weight" -> g.wo();
                case "out_proj.bias" -> g.bo();
                default -> throw new IllegalStateException("unhandled parameter " + entry.getKey());
            };
            out.put(entry.getKey(), Tensor.of(dtype, grad, entry.getValue()));
        }
        return out;
    }

    private static double[] concat(double[]... parts) {
        int n = 0;
        for (double[] p : parts) {
            n += p.length;
        }
        double[] r = new double[n];
        int off = 0;
        for (double[] p : parts) {
            System.arraycopy(p, 0, r, off, p.length);
            off += p.length;
        }
        return r;
    }

    public MhaResult forward(Map<String, Tensor> params, Inputs in) {
        return forward(params, null, in);
    }

    /**
     * The parameters prepared once for this op's backend (see {@link PreparedWeights}): every call
     * given the result reuses them instead of converting and uploading the projections again.
     */
    public PreparedWeights prepare(Map<String, Tensor> params) {
        DType dtype = Checks.preparedParams("multi_head_attention", params, parameterShapes());
        return new PreparedWeights(parameterShapes(), backend, dtype, params, backend.prepareMha(this, params, dtype));
    }

    /** {@link #forward(Map, Inputs)} with prepared parameters. */
    public MhaResult forward(PreparedWeights weights, Inputs in) {
        return forward(prepared(weights), weights.device(), in);
    }

    /** {@link #backward(Map, MhaResult, Tensor, Tensor)} with prepared parameters. */
    public MhaGradients backward(PreparedWeights weights, MhaResult forward, Tensor dOut, Tensor dAttnWeights) {
        return backward(prepared(weights), weights.device(), forward, dOut, dAttnWeights);
    }

    private Map<String, Tensor> prepared(PreparedWeights weights) {
        return PreparedWeights.paramsFor(weights, "multi_head_attention", parameterShapes(), backend);
    }

    private MhaResult forward(Map<String, Tensor> params, AutoCloseable prepared, Inputs in) {
        String op = "multi_head_attention";
        if (in == null) {
            throw new SeqkException.ShapeMismatch(op + ": argument 'in' is required (MultiHeadAttention.inputs(query, key, value))");
        }
        Checks.present(op, "query", in.query);
        Checks.present(op, "key", in.key);
        Checks.present(op, "value", in.value);
        DType dt = in.query.dtype();
        checkInputs(dt, in.query.shape(), in.key.dtype(), in.key.shape(), in.value.dtype(), in.value.shape(), in.keyPaddingMask,
                in.attnMask);
        Checks.paramsOrPrepared(op, params, parameterShapes(), prepared != null, dt);
        MhaResult r = backend.mhaForward(this, params, prepared, in);
        return in.inference ? new MhaResult(r.out(), r.attnWeights(), SavedState.release(r.saved())) : r;
    }

    public MhaGradients backward(Map<String, Tensor> params, MhaResult forward, Tensor dOut, Tensor dAttnWeights) {
        return backward(params, null, forward, dOut, dAttnWeights);
    }

    private MhaGradients backward(Map<String, Tensor> params, AutoCloseable prepared, MhaResult forward, Tensor dOut,
                                  Tensor dAttnWeights) {
        String op = "multi_head_attention";
        if (forward == null) {
            throw new SeqkException.ShapeMismatch(op + ": argument 'forward' is required");
        }
        Checks.present(op, "forward.out", forward.out());
        if (forward.saved() == null) {
            throw SavedState.missing(op);
        }
        Checks.shape(op, "dOut", dOut, "like out", forward.out().shape());
        Checks.sameDType(op, "dOut", dOut, forward.out().dtype());
        if (dAttnWeights != null) {
            if (forward.attnWeights() == null) {
                throw new SeqkException.ShapeMismatch(op + ": 'dAttnWeights' given but the forward computed no weights (needWeights is false)");
            }
            Checks.shape(op, "dAttnWeights", dAttnWeights, "like attnWeights", forward.attnWeights().shape());
            Checks.sameDType(op, "dAttnWeights", dAttnWeights, forward.out().dtype());
        }
        Checks.paramsOrPrepared(op, params, parameterShapes(), prepared != null, forward.out().dtype());
        return backend.mhaBackward(this, params, forward, dOut, dAttnWeights);
    }

    /**
     * A forward's inputs checked by dtype and shape (host or device tensors alike): query floating,
     * [q_len, batch, embed_dim] (batch first: [batch, q_len, embed_dim]); key and value with kdim and
     * vdim over the same batch and kv_len, in query's dtype; the masks' shapes and values.
     */
    private void checkInputs(DType dt, long[] qs, DType kt, long[] ks, DType vt, long[] vs, Mask keyPaddingMask, Mask attnMask) {
        String op = "multi_head_attention";
        if (!dt.isFloatingPoint()) {
            throw new SeqkException.DTypeMismatch(op + ": argument 'query' has dtype " + dt
                    + ", expected a floating-point dtype (F64, F32, F16, BF16)");
        }
        String seqLayout = batchFirst ? "[batch, %s_len, %s]" : "[%s_len, batch, %s]";
        if (qs.length != 3) {
            Checks.shape(op, "query", qs, seqLayout.formatted("q", "embed_dim"), -1, -1, embedDim);
        }
        long batch = batchFirst ? qs[0] : qs[1];
        long lq = batchFirst ? qs[1] : qs[0];
        Checks.shape(op, "query", qs, seqLayout.formatted("q", "embed_dim"), seqShape(batch, lq, embedDim));
        if (ks.length != 3) {
            Checks.shape(op, "key", ks, seqLayout.formatted("kv", "kdim"), -1, -1, kdim);
        }
        long lk = batchFirst ? ks[1] : ks[0];
        Checks.shape(op, "key", ks, seqLayout.formatted("kv", "kdim"), seqShape(batch, lk, kdim));
        Checks.shape(op, "value", vs, seqLayout.formatted("kv", "vdim"), seqShape(batch, lk, vdim));
        Checks.sameDType(op, "key", kt, dt);
        Checks.sameDType(op, "value", vt, dt);
        if (keyPaddingMask != null) {
            Checks.shape(op, "keyPaddingMask", keyPaddingMask.tensor(), "[batch, kv_len]", batch, lk);
            keyPaddingMask.checkValues(op, "keyPaddingMask");
        }
        if (attnMask != null) {
            Tensor m = Checks.present(op, "attnMask", attnMask.tensor());
            if (m.rank() == 2) {
                Checks.shape(op, "attnMask", m, "[q_len, kv_len]", lq, lk);
            } else {
                Checks.shape(op, "attnMask", m, "[batch*num_heads, q_len, kv_len]", batch * numHeads, lq, lk);
            }
            attnMask.checkValues(op, "attnMask");
        }
    }

    /**
     * The checks of {@link #forward(PreparedWeights, Inputs)} for the device entry point
     * ({@code dev.seqkernels.gpu.DeviceMultiHeadAttention}), by dtype and shape; returns the
     * prepared weights' form on the backend.
     */
    public Backend.PreparedParams checkDeviceForward(PreparedWeights weights, DType queryType, long[] queryShape, DType keyType,
                                                     long[] keyShape, DType valueType, long[] valueShape, Mask keyPaddingMask,
                                                     Mask attnMask) {
        Map<String, Tensor> params = prepared(weights);
        checkInputs(queryType, queryShape, keyType, keyShape, valueType, valueShape, keyPaddingMask, attnMask);
        Checks.paramsOrPrepared("multi_head_attention", params, parameterShapes(), true, queryType);
        return weights.device();
    }

    /** The checks of the weights given to a device backward: they fit this op and were prepared from {@code dtype}. */
    public Backend.PreparedParams checkDeviceBackward(PreparedWeights weights, DType dtype) {
        Checks.paramsOrPrepared("multi_head_attention", prepared(weights), parameterShapes(), true, dtype);
        return weights.device();
    }

    private long[] seqShape(long batch, long len, long features) {
        return batchFirst ? new long[]{batch, len, features} : new long[]{len, batch, features};
    }

    public static final class Inputs {
        private final Tensor query;
        private final Tensor key;
        private final Tensor value;
        private Mask keyPaddingMask;
        private Mask attnMask;
        private boolean inference;

        private Inputs(Tensor query, Tensor key, Tensor value) {
            this.query = query;
            this.key = key;
            this.value = value;
        }

        public Inputs keyPaddingMask(Mask m) {
            keyPaddingMask = m;
            return this;
        }

        /** Keep nothing for backward: the saved state is released as soon as the outputs exist. */
        public Inputs inference() {
            inference = true;
            return this;
        }

        public Inputs attnMask(Mask m) {
            attnMask = m;
            return this;
        }

        public Tensor query() {
            return query;
        }

        public Tensor key() {
            return key;
        }

        public Tensor value() {
            return value;
        }

        public Mask keyPaddingMask() {
            return keyPaddingMask;
        }

        public Mask attnMask() {
            return attnMask;
        }
    }

    public static final class Builder {
        private int embedDim;
        private int numHeads;
        private int numKvHeads;
        private int kdim;
        private int vdim;
        private boolean bias = true;
        private boolean batchFirst;
        private boolean needWeights;
        private boolean allowTf32;
        private CausalAlignment causal = CausalAlignment.NONE;
        private Backend backend;

        public Builder embedDim(int v) {
            embedDim = v;
            return this;
        }

        public Builder numHeads(int v) {
            numHeads = v;
            return this;
        }

        /** Grouped-query heads for k and v; default numHeads (plain MHA). */
        public Builder numKvHeads(int v) {
            numKvHeads = v;
            return this;
        }

        public Builder kdim(int v) {
            kdim = v;
            return this;
        }

        public Builder vdim(int v) {
            vdim = v;
            return this;
        }

        public Builder bias(boolean v) {
            bias = v;
            return this;
        }

        public Builder batchFirst(boolean v) {
            batchFirst = v;
            return this;
        }

        /**
         * Let the GPU path round the F32 operands of its products to TF32 (10-bit mantissa, fp32
         * accumulation) on tensor cores: the projection GEMMs ({@code CUBLAS_COMPUTE_32F_FAST_TF32}),
         * their gradients, and the attention forward (the TF32 kernels). Off by default, as PyTorch's
         * {@code torch.backends.cuda.matmul.allow_tf32}; judged by the TF32 tolerance row. The cpu
         * backend computes in double either way. An F16 or BF16 op's products are 16-bit already (its
         * interior is 16-bit), so there it has no effect.
         */
        public Builder allowTf32(boolean v) {
            allowTf32 = v;
            return this;
        }

        /** Also return the attention weights averaged over heads (PyTorch's need_weights, averaged). */
        public Builder needWeights(boolean v) {
            needWeights = v;
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

        public MultiHeadAttention build() {
            if (embedDim <= 0 || numHeads <= 0 || embedDim % numHeads != 0) {
                throw new SeqkException.InvalidConfig("embedDim (" + embedDim + ") must be a positive multiple of numHeads ("
                        + numHeads + ")");
            }
            int kvHeads = numKvHeads == 0 ? numHeads : numKvHeads;
            if (kvHeads < 0 || numHeads % kvHeads != 0) {
                throw new SeqkException.InvalidConfig("numHeads (" + numHeads + ") must be a multiple of numKvHeads (" + kvHeads + ")");
            }
            if (kdim < 0 || vdim < 0) {
                throw new SeqkException.InvalidConfig("kdim and vdim must be positive (0 means embedDim), got " + kdim + ", " + vdim);
            }
            return new MultiHeadAttention(this, backend != null ? backend : Backends.fromProperty());
        }
    }
}
