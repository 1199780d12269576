package dev.seqkernels.gpu;

import dev.seqkernels.SeqkException;
import dev.seqkernels.ops.PreparedWeights;
import dev.seqkernels.ops.RecurrentOp;

/**
 * A recurrent op (LSTM, GRU, RNN: every layer, direction and option the op has) on device tensors,
 * for a framework that keeps its activations on the device and runs on its own stream. The op gives
 * the configuration and must run on a GPU backend (emu, panama or jcuda); its weights are
 * {@link PreparedWeights} (the op's {@code prepare}); x, h0 and c0 are {@link DeviceTensor}s of that
 * backend's driver in the weights' dtype, ours or a framework's memory seen through
 * {@link DeviceTensor#wrap} (any strides), and results stay on the device.
 *
 * <p>Ordering contract (as {@link DeviceAttention}'s): every copy, GEMM and launch of a call is
 * issued on the call's stream (a raw {@code CUstream}, 0 for the legacy default stream) in order
 * after the work the caller issued there before, or on a stream of the call's own that waits for
 * that work and that the caller's stream then waits for (events both ways: the per-step loop,
 * captured once as a CUDA graph); the call returns without waiting, and nothing is freed or
 * synchronized during it. Lengths are host values uploaded on the stream. The result owns what the
 * call allocated until it is closed; close it only once the stream has reached the work (for
 * example after synchronizing it). The prepared weights are read when the stream runs the work:
 * update them only after that. Arguments are checked before anything is queued; a call that fails
 * after queueing work waits for its stream before it frees what it allocated.
 */
public final class DeviceRecurrent {
    private final RecurrentOp op;
    private final GpuBackend backend;

    private DeviceRecurrent(RecurrentOp op, GpuBackend backend) {
        this.op = op;
        this.backend = backend;
    }

    /** The device entry point of {@code op}, which must run on a GPU backend. */
    public static DeviceRecurrent of(RecurrentOp op) {
        if (op == null) {
            throw new SeqkException.InvalidConfig("recurrent: argument 'op' is required");
        }
        GpuBackend gpu = DeviceArguments.gpuBackend(op.opName(), op.backend());
        return new DeviceRecurrent(op, gpu);
    }

    /** One call's inputs and options; h0, c0, lengths, an output buffer, the stream and inference are optional. */
    public static Call inputs(PreparedWeights weights, DeviceTensor x) {
        return new Call(weights, x);
    }

    public DeviceRecurrentResult forward(Call c) {
        RecurrentOp.DeviceForwardArguments args = checked(c);
        return backend.recurrentPath().forwardOnDevice(op.config(), args.prepared(), c.x, c.h0, c.c0, args.lengths(), c.out, c.stream,
                !c.inference);
    }

    /**
     * A cache of this op's forward as one CUDA graph, for a framework that repeats the same call:
     * see {@link DeviceRecurrentGraph}.
     */
    public DeviceRecurrentGraph graph() {
        return new DeviceRecurrentGraph(this);
    }

    RecurrentGpu path() {
        return backend.recurrentPath();
    }

    RecurrentOp op() {
        return op;
    }

    /** Checks a call's arguments (nothing is queued yet): its lengths (all seq_len when none were given) and prepared weights. */
    RecurrentOp.DeviceForwardArguments checked(Call c) {
        String name = op.opName();
        if (c == null) {
            throw new SeqkException.ShapeMismatch(name + ": argument 'call' is required (DeviceRecurrent.inputs(weights, x))");
        }
        DeviceArguments.check(name, "x", c.x, backend);
        if (c.h0 != null) {
            DeviceArguments.check(name, "h0", c.h0, backend);
        }
        if (c.c0 != null) {
            DeviceArguments.check(name, "c0", c.c0, backend);
        }
        RecurrentOp.DeviceForwardArguments args = op.checkDeviceForward(c.weights, c.x.dtype(), c.x.shape(),
                c.h0 == null ? null : c.h0.dtype(), c.h0 == null ? null : c.h0.shape(),
                c.c0 == null ? null : c.c0.dtype(), c.c0 == null ? null : c.c0.shape(), c.lengths);
        if (args.lengths().length == 0) {
            throw new SeqkException.ShapeMismatch(name + ": argument 'x' has an empty batch; a device call needs at least one sequence");
        }
        if (c.out != null) {
            DeviceArguments.check(name, "out", c.out, backend);
            long[] xs = c.x.shape();
            long[] want = {xs[0], xs[1], op.config().outputSize()};
            if (!java.util.Arrays.equals(c.out.shape(), want) || c.out.dtype() != c.x.dtype() || !c.out.isContiguous()) {
                throw new SeqkException.ShapeMismatch(name + ": argument 'out' is " + c.out.dtype() + java.util.Arrays.toString(c.out.shape())
                        + " with strides " + java.util.Arrays.toString(c.out.strides()) + ", expected a contiguous " + c.x.dtype()
                        + java.util.Arrays.toString(want) + " (the output's shape in x's dtype and layout)");
            }
        }
        return args;
    }

    /**
     * Gradients of sum(output*dOutput) + sum(hn*dHn) + sum(cn*dCn) for a differentiable device
     * forward of this op, with the weights it used (read again here); dOutput, dHn and dCn are
     * shaped and typed like output, hn and cn (any strides), each null for zeros. Issued on
     * {@code stream}, which must be ordered after the forward's work (the forward's stream, or one
     * the caller orders after it); keep the forward result open until the stream has run this too.
     */
    public DeviceRecurrentGradients backward(DeviceRecurrentResult forward, PreparedWeights weights, DeviceTensor dOutput,
                                             DeviceTensor dHn, DeviceTensor dCn, long stream) {
        String name = op.opName();
        if (forward == null) {
            throw new SeqkException.ShapeMismatch(name + ": argument 'forward' is required");
        }
        if (forward.hn().isClosed()) {  // hn is always the result's own; output may be a caller's buffer, closed or not
            throw new SeqkException.TensorClosed(name + ": argument 'forward' was closed");
        }
        if (!forward.differentiable()) {
            throw new SeqkException.InvalidConfig(name + ": this forward ran in inference mode and kept nothing for backward;"
                    + " run it without inference() to differentiate");
        }
        DeviceArguments.like(name, "dOutput", dOutput, forward.output(), "output", backend);
        DeviceArguments.like(name, "dHn", dHn, forward.hn(), "hn", backend);
        if (dCn != null && forward.cn() == null) {
            throw new SeqkException.ShapeMismatch(name + ": argument 'dCn' is only for LSTM");
        }
        DeviceArguments.like(name, "dCn", dCn, forward.cn(), "cn", backend);
        var prepared = op.checkDeviceBackward(weights, forward.output().dtype());
        return backend.recurrentPath().backwardOnDevice(op.config(), prepared, forward, dOutput, dHn, dCn, stream);
    }

    /** The inputs and options of one device-resident call. */
    public static final class Call {
        final PreparedWeights weights;
        final DeviceTensor x;
        DeviceTensor h0;
        DeviceTensor c0;
        int[] lengths;
        long stream;
        boolean inference;
        DeviceTensor out;

        private Call(PreparedWeights weights, DeviceTensor x) {
            this.weights = weights;
            this.x = x;
        }

        /** Initial hidden state [num_layers*num_directions, batch, P] (null: zeros). */
        public Call h0(DeviceTensor t) {
            h0 = t;
            return this;
        }

        /** Initial cell state of an LSTM [num_layers*num_directions, batch, H] (null: zeros). */
        public Call c0(DeviceTensor t) {
            c0 = t;
            return this;
        }

        /** Valid steps per batch entry (host values, uploaded on the stream; null: all seq_len). */
        public Call lengths(int[] l) {
            lengths = l == null ? null : l.clone();
            return this;
        }

        /**
         * Write the output here instead of a new tensor: contiguous, in x's dtype, shaped as the
         * output ([seq_len, batch, D*P], batch first [batch, seq_len, D*P]). It is written last, on
         * the stream, after everything that reads x, h0 and c0, so it may reuse their memory.
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

        /**
         * Keep nothing for backward: the result cannot be differentiated. No per-step trace is
         * allocated and the cells write none, so the call's device memory is its outputs and the
         * working buffers (a device call frees nothing while it runs: they live until the result is
         * closed).
         */
        public Call inference() {
            inference = true;
            return this;
        }
    }
}
