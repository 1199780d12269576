package dev.seqkernels.gpu;

import dev.seqkernels.SeqkException;
import dev.seqkernels.ops.Attention;
import dev.seqkernels.ops.Mask;

import java.util.Arrays;

/**
 * Scaled dot-product attention on device tensors, for a framework that keeps its activations on the
 * device and runs on its own stream. The {@link Attention} op gives the configuration (causal
 * alignment, scale, TF32) and must run on a GPU backend (emu, panama or jcuda); q, k and v are
 * {@link DeviceTensor}s of that backend's driver, ours or a framework's memory seen through
 * {@link DeviceTensor#wrap} (any element strides), and results stay on the device.
 *
 * <p>Ordering contract: every copy and kernel of a call is issued on the call's stream (a raw
 * {@code CUstream}, 0 for the legacy default stream), in order after the work the caller issued
 * there before; the call returns without waiting for it, and nothing is freed or synchronized
 * during the call. Masks and lengths are host values uploaded on that stream. Results and
 * gradients own what the call allocated until they are closed; close them (and the inputs a
 * differentiable result still reads) only once the stream has reached the work, for example after
 * synchronizing it. Backward may run on another stream only if the caller orders it after the forward.
 * Arguments are checked before anything is queued; a call that fails after queueing work waits
 * for its stream before it frees what it allocated.
 *
 * <p>Layouts: q, k and v may have any non-negative strides, zero ones included (k and v expanded
 * over query heads); out (a caller's buffer) and, for backward, q, k and v need an element per
 * position (no zero or overlapping strides), since the gradients take their input's strides.
 */
public final class DeviceAttention {
    private static final String OP = "attention";
    private final Attention op;
    private final GpuBackend backend;

    private DeviceAttention(Attention op, GpuBackend backend) {
        this.op = op;
        this.backend = backend;
    }

    /** The device entry point of {@code op}, which must run on a GPU backend. */
    public static DeviceAttention of(Attention op) {
        if (op == null) {
            throw new SeqkException.InvalidConfig(OP + ": argument 'op' is required");
        }
        GpuBackend gpu = DeviceArguments.gpuBackend(OP, op.backend());
        return new DeviceAttention(op, gpu);
    }

    /** One call's inputs and options; masks, lengths, the stream, an output buffer and inference are optional. */
    public static Call inputs(DeviceTensor q, DeviceTensor k, DeviceTensor v) {
        return new Call(q, k, v);
    }

    public DeviceAttentionResult forward(Call c) {
        if (c == null) {
            throw new SeqkException.ShapeMismatch(OP + ": argument 'call' is required (DeviceAttention.inputs(q, k, v))");
        }
        DeviceArguments.check(OP, "q", c.q, backend);
        DeviceArguments.check(OP, "k", c.k, backend);
        DeviceArguments.check(OP, "v", c.v, backend);
        Attention.checkInputs(OP, c.q.dtype(), c.q.shape(), c.k.dtype(), c.k.shape(), c.v.dtype(), c.v.shape(), c.mask, c.keyLengths,
                c.queryLengths);
        if (c.out != null) {
            DeviceArguments.check(OP, "out", c.out, backend);
            long[] want = {c.q.shape()[0], c.q.shape()[1], c.q.shape()[2], c.v.shape()[3]};
            if (!Arrays.equals(c.out.shape(), want) || c.out.dtype() != c.q.dtype()) {
                throw new SeqkException.ShapeMismatch(OP + ": argument 'out' is " + c.out.dtype() + Arrays.toString(c.out.shape())
                        + ", expected " + c.q.dtype() + Arrays.toString(want) + " ([batch, q_heads, q_len, value_dim] in q's dtype)");
            }
        }
        return backend.attentionPath().forwardOnDevice(op, c.q, c.k, c.v, c.mask, c.keyLengths, c.queryLengths, c.out, c.stream,
                !c.inference);
    }

    /**
     * Gradients of q, k and v for dOut (shaped and typed like out, any strides), issued on {@code stream}.
     * It reads the forward's q, k, v and out (a caller's out buffer included; the tensor-core
     * backward takes delta = rowsum(dOut * out) as FlashAttention does): leave them unchanged until
     * its work has run.
     */
    public DeviceAttentionGradients backward(DeviceAttentionResult forward, DeviceTensor dOut, long stream) {
        if (forward == null) {
            throw new SeqkException.ShapeMismatch(OP + ": argument 'forward' is required");
        }
        DeviceArguments.check(OP, "dOut", dOut, backend);
        DeviceArguments.check(OP, "forward.out", forward.out(), backend);
        DeviceArguments.like(OP, "dOut", dOut, forward.out(), "out", backend);
        return backend.attentionPath().backwardOnDevice(forward, dOut, stream);
    }

    /** The inputs and options of one device-resident call. */
    public static final class Call {
        private final DeviceTensor q;
        private final DeviceTensor k;
        private final DeviceTensor v;
        private Mask mask;
        private int[] keyLengths;
        private int[] queryLengths;
        private long stream;
        private DeviceTensor out;
        private boolean inference;

        private Call(DeviceTensor q, DeviceTensor k, DeviceTensor v) {
            this.q = q;
            this.k = k;
            this.v = v;
        }

        /** A host mask (boolean or additive, broadcast as in {@link Attention.Inputs#mask}), uploaded on the stream. */
        public Call mask(Mask m) {
            mask = m;
            return this;
        }

        public Call keyLengths(int[] lengths) {
            keyLengths = lengths == null ? null : lengths.clone();
            return this;
        }

        public Call queryLengths(int[] lengths) {
            queryLengths = lengths == null ? null : lengths.clone();
            return this;
        }

        /** The caller's stream (a raw CUstream handle; 0, the default, is the legacy default stream). */
        public Call stream(long cuStream) {
            stream = cuStream;
            return this;
        }

        /**
         * Write out here ([batch, q_heads, q_len, value_dim] in q's dtype, an element per position)
         * instead of a new tensor. It must not overlap q, k or v: the kernels read those while out is written.
         */
        public Call into(DeviceTensor buffer) {
            out = buffer;
            return this;
        }

        /** Keep nothing for backward: the result cannot be differentiated. */
        public Call inference() {
            inference = true;
            return this;
        }
    }
}
