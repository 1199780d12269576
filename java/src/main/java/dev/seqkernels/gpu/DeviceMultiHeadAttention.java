package dev.seqkernels.gpu;

import dev.seqkernels.SeqkException;
import dev.seqkernels.ops.Mask;
import dev.seqkernels.ops.MultiHeadAttention;
import dev.seqkernels.ops.PreparedWeights;

/**
 * Multi-head attention (PyTorch's nn.MultiheadAttention: projections, every mask, GQA, kdim/vdim)
 * on device tensors, for a framework that keeps its activations on the device and runs on its own
 * stream. The op gives the configuration and must run on a GPU backend (emu, panama or jcuda)
 * without {@code needWeights} (the head-averaged attention weights are a host result); its weights
 * are {@link PreparedWeights} (the op's {@code prepare}); query, key and value are
 * {@link DeviceTensor}s of that backend's driver in the weights' dtype and the op's layout, ours or
 * a framework's memory seen through {@link DeviceTensor#wrap} (any strides; the same tensor as all
 * three is self-attention, one projection GEMM). Masks are host values uploaded on the stream.
 *
 * <p>Ordering contract as {@link DeviceAttention}'s: every copy, GEMM and launch of a call is
 * issued on the call's stream in order after the work already there; nothing is waited for, freed
 * or synchronized during the call; results and gradients own what the call allocated until
 * closed, which must wait until the stream has reached the work. The prepared weights are read when
 * the stream runs the work, forward and backward: keep them open and unchanged until then.
 * Arguments are checked before anything is queued.
 */
public final class DeviceMultiHeadAttention {
    private static final String OP = "multi_head_attention";
    private final MultiHeadAttention op;
    private final GpuBackend backend;

    private DeviceMultiHeadAttention(MultiHeadAttention op, GpuBackend backend) {
        this.op = op;
        this.backend = backend;
    }

    /** The device entry point of {@code op}, which must run on a GPU backend and not return attention weights. */
    public static DeviceMultiHeadAttention of(MultiHeadAttention op) {
        if (op == null) {
            throw new SeqkException.InvalidConfig(OP + ": argument 'op' is required");
        }
        GpuBackend gpu = DeviceArguments.gpuBackend(OP, op.backend());
        if (op.needWeights()) {
            throw new SeqkException.InvalidConfig(OP + ": the head-averaged attention weights (needWeights) are a host result;"
                    + " build the op with needWeights(false) for device tensors");
        }
        return new DeviceMultiHeadAttention(op, gpu);
    }

    /** One call's inputs and options; masks, an output buffer, the stream and inference are optional. */
    public static Call inputs(PreparedWeights weights, DeviceTensor query, DeviceTensor key, DeviceTensor value) {
        return new Call(weights, query, key, value);
    }

    public DeviceMhaResult forward(Call c) {
        if (c == null) {
            throw new SeqkException.ShapeMismatch(OP + ": argument 'call' is required (DeviceMultiHeadAttention.inputs(weights, q, k, v))");
        }
        DeviceArguments.check(OP, "query", c.query, backend);
        DeviceArguments.check(OP, "key", c.key, backend);
        DeviceArguments.check(OP, "value", c.value, backend);
        var prepared = op.checkDeviceForward(c.weights, c.query.dtype(), c.query.shape(), c.key.dtype(), c.key.shape(), c.value.dtype(),
                c.value.shape(), c.keyPaddingMask, c.attnMask);
        AttentionGpu.Geometry.requireHeadDims(op.headDim(), op.headDim());  // before anything is queued
        long[] qs = c.query.shape();
        if (qs[0] == 0 || qs[1] == 0 || c.key.shape()[op.batchFirst() ? 1 : 0] == 0) {
            throw new SeqkException.ShapeMismatch(OP + ": an empty batch or sequence has no device work; give at least one element");
        }
        if (c.out != null) {
            DeviceArguments.check(OP, "out", c.out, backend);
            if (!java.util.Arrays.equals(c.out.shape(), qs) || c.out.dtype() != c.query.dtype() || !c.out.isContiguous()) {
                throw new SeqkException.ShapeMismatch(OP + ": argument 'out' is " + c.out.dtype() + java.util.Arrays.toString(c.out.shape())
                        + " with strides " + java.util.Arrays.toString(c.out.strides()) + ", expected a contiguous " + c.query.dtype()
                        + java.util.Arrays.toString(qs) + " (query's shape and dtype)");
            }
        }
        return backend.attentionPath().mhaForwardOnDevice(op, prepared, c.query, c.key, c.value, c.keyPaddingMask, c.attnMask, c.out,
                c.stream, !c.inference);
    }

    /**
     * Gradients of sum(out * dOut) for a differentiable device forward of this op, with the prepared
     * weights it used (read again here; others are refused); dOut is shaped and typed like out (any strides). Issued on
     * {@code stream}, which must be ordered after the forward's work; keep the forward result open
     * until the stream has run this too.
     */
    public DeviceMhaGradients backward(DeviceMhaResult forward, PreparedWeights weights, DeviceTensor dOut, long stream) {
        if (forward == null) {
            throw new SeqkException.ShapeMismatch(OP + ": argument 'forward' is required");
        }
        if (forward.saved() instanceof AttentionGpu.MhaSaved ms && ms.attention().lse().isClosed()) {  // out may be a caller's buffer
            throw new SeqkException.TensorClosed(OP + ": argument 'forward' was closed");
        }
        if (!forward.differentiable()) {
            throw new SeqkException.InvalidConfig(OP + ": this forward ran in inference mode and kept nothing for backward;"
                    + " run it without inference() to differentiate");
        }
        DeviceArguments.check(OP, "dOut", dOut, backend);
        DeviceArguments.like(OP, "dOut", dOut, forward.out(), "out", backend);
        var prepared = op.checkDeviceBackward(weights, forward.out().dtype());
        return backend.attentionPath().mhaBackwardOnDevice(op, prepared, forward, dOut, stream);
    }

    /** The inputs and options of one device-resident call. */
    public static final class Call {
        private final PreparedWeights weights;
        private final DeviceTensor query;
        private final DeviceTensor key;
        private final DeviceTensor value;
        private Mask keyPaddingMask;
        private Mask attnMask;
        private long stream;
        private boolean inference;
        private DeviceTensor out;

        private Call(PreparedWeights weights, DeviceTensor query, DeviceTensor key, DeviceTensor value) {
            this.weights = weights;
            this.query = query;
            this.key = key;
            this.value = value;
        }

        /** A host key padding mask [batch, kv_len] (as {@link MultiHeadAttention.Inputs}'s), uploaded on the stream. */
        public Call keyPaddingMask(Mask m) {
            keyPaddingMask = m;
            return this;
        }

        /** A host attention mask [q_len, kv_len] or [batch*num_heads, q_len, kv_len], uploaded on the stream. */
        public Call attnMask(Mask m) {
            attnMask = m;
            return this;
        }

        /**
         * Write the output here instead of a new tensor: contiguous, in query's shape and dtype. It is
         * written last, on the stream, after everything that reads query, key and value, so it may be
         * query's own memory.
         */
        public Call into(DeviceTensor buffer) {
            out = buffer;
            return this;
        }

        /** The caller's stream (a raw CUstream handle; 0, the default, is the legacy default stream). */
        public Call stream(long cuStream) {
            stream = cuStream;
            return this;
        }

        /** Keep nothing for backward: the result cannot be differentiated (its memory lives until it is closed). */
        public Call inference() {
            inference = true;
            return this;
        }
    }
}
