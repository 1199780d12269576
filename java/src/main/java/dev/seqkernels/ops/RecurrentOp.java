package dev.seqkernels.ops;

import dev.seqkernels.Backend;
import dev.seqkernels.Backends;
import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.Tensor;

import java.util.Arrays;
import java.util.List;
import java.util.Map;

/**
 * A whole-sequence recurrent op (RNN, LSTM or GRU): validates arguments against its
 * {@link RecurrentConfig}, then runs on its backend. Parameters are passed per call under their
 * PyTorch names ({@link RecurrentConfig#parameterShapes()}), so a framework can hand its own
 * buffers in through {@link Tensor#wrap}.
 */
public abstract class RecurrentOp {
    private final RecurrentConfig config;
    private final Backend backend;

    RecurrentOp(RecurrentConfig config, Backend backend) {
        this.config = config;
        this.backend = backend;
    }

    public RecurrentConfig config() {
        return config;
    }

    public Backend backend() {
        return backend;
    }

    /** The op's name in messages: lstm, gru or rnn. */
    public String opName() {
        return config.cell().name().toLowerCase(java.util.Locale.ROOT);
    }

    /** Forward with zero initial states and full lengths. */
    public RecurrentResult forward(Map<String, Tensor> params, Tensor x) {
        return forward(params, x, null, null, null);
    }

    /**
     * @param x       [T, B, I] or, batch-first, [B, T, I]
     * @param h0      [L*D, B, P] or null for zeros
     * @param c0      [L*D, B, H] or null for zeros; LSTM only
     * @param lengths per-sequence lengths in 0..T, or null for all T
     */
    public RecurrentResult forward(Map<String, Tensor> params, Tensor x, Tensor h0, Tensor c0, int[] lengths) {
        return forward(params, null, x, h0, c0, lengths, true);
    }

    /**
     * The parameters prepared once for this op's backend (see {@link PreparedWeights}): every call
     * given the result reuses them instead of converting and uploading the weights again.
     */
    public PreparedWeights prepare(Map<String, Tensor> params) {
        DType dtype = Checks.preparedParams(opName(), params, config.parameterShapes());
        return new PreparedWeights(config.parameterShapes(), backend, dtype, params, backend.prepareRecurrent(config, params, dtype));
    }

    /** {@link #forward(Map, Tensor, Tensor, Tensor, int[])} with prepared parameters. */
    public RecurrentResult forward(PreparedWeights weights, Tensor x, Tensor h0, Tensor c0, int[] lengths) {
        return forward(prepared(weights), weights.device(), x, h0, c0, lengths, true);
    }

    /** {@link #forwardInference(Map, Tensor, Tensor, Tensor, int[])} with prepared parameters. */
    public RecurrentResult forwardInference(PreparedWeights weights, Tensor x, Tensor h0, Tensor c0, int[] lengths) {
        return withoutSaved(forward(prepared(weights), weights.device(), x, h0, c0, lengths, false));
    }

    /** {@link #backward(Map, RecurrentResult, Tensor, Tensor, Tensor)} with prepared parameters. */
    public RecurrentGradients backward(PreparedWeights weights, RecurrentResult forward, Tensor dOutput, Tensor dHn, Tensor dCn) {
        return backward(prepared(weights), weights.device(), forward, dOutput, dHn, dCn);
    }

    private Map<String, Tensor> prepared(PreparedWeights weights) {
        return PreparedWeights.paramsFor(weights, opName(), config.parameterShapes(), backend);
    }

    private RecurrentResult forward(Map<String, Tensor> params, AutoCloseable prepared, Tensor x, Tensor h0, Tensor c0,
                                    int[] lengths, boolean training) {
        String op = opName();
        Checks.present(op, "x", x);
        if (h0 != null) {
            Checks.present(op, "h0", h0);
        }
        if (c0 != null) {
            Checks.present(op, "c0", c0);
        }
        int[] lens = checkForward(x.dtype(), x.shape(), h0 == null ? null : h0.dtype(), h0 == null ? null : h0.shape(),
                c0 == null ? null : c0.dtype(), c0 == null ? null : c0.shape(), lengths);
        Checks.paramsOrPrepared(op, params, config.parameterShapes(), prepared != null, x.dtype());
        long t = config.batchFirst() ? x.size(1) : x.size(0);
        if (lens.length == 0) {
            return emptyBatchForward(x.dtype(), t);
        }
        return training ? backend.recurrentForward(config, params, prepared, x, h0, c0, lens)
                : backend.recurrentInference(config, params, prepared, x, h0, c0, lens);
    }

    /**
     * A forward's arguments checked by dtype and shape (host or device tensors alike): x floating,
     * [seq_len, batch, input_size] (batch first: [batch, seq_len, input_size]); h0 and c0 (null:
     * zeros) [num_layers*num_directions, batch, P|H] in x's dtype, c0 for an LSTM only; lengths
     * (null: all seq_len) one per batch entry in 0..seq_len. Returns the lengths to use.
     */
    private int[] checkForward(DType xType, long[] xShape, DType h0Type, long[] h0Shape, DType c0Type, long[] c0Shape,
                               int[] lengths) {
        String op = opName();
        if (!xType.isFloatingPoint()) {
            throw new SeqkException.DTypeMismatch(op + ": argument 'x' has dtype " + xType
                    + ", expected a floating-point dtype (F64, F32, F16, BF16)");
        }
        long t = xShape.length == 3 ? xShape[config.batchFirst() ? 1 : 0] : -2;
        long b = xShape.length == 3 ? xShape[config.batchFirst() ? 0 : 1] : -2;
        String layout = config.batchFirst() ? "[batch, seq_len, input_size]" : "[seq_len, batch, input_size]";
        Checks.shape(op, "x", xShape, layout, config.batchFirst() ? b : t, config.batchFirst() ? t : b, config.inputSize());
        long slots = (long) config.numLayers() * config.numDirections();
        if (h0Shape != null) {
            Checks.shape(op, "h0", h0Shape, "[num_layers*num_directions, batch, " + (config.projSize() > 0 ? "proj_size" : "hidden_size")
                    + "]", slots, b, config.stateSize());
            Checks.sameDType(op, "h0", h0Type, xType);
        }
        if (c0Shape != null) {
            if (config.cell() != CellType.LSTM) {
                throw new SeqkException.ShapeMismatch(op + ": argument 'c0' is only for LSTM");
            }
            Checks.shape(op, "c0", c0Shape, "[num_layers*num_directions, batch, hidden_size]", slots, b, config.hiddenSize());
            Checks.sameDType(op, "c0", c0Type, xType);
        }
        checkIntRange(op, "x", config.batchFirst() ? "batch" : "seq_len", config.batchFirst() ? b : t);
        checkIntRange(op, "x", config.batchFirst() ? "seq_len" : "batch", config.batchFirst() ? t : b);
        int[] lens = lengths == null ? filled((int) b, (int) t) : lengths.clone();
        if (lens.length != b) {
            throw new SeqkException.ShapeMismatch(op + ": argument 'lengths' has " + lens.length
                    + " entries, expected one per batch entry (" + b + ")");
        }
        for (int i = 0; i < lens.length; i++) {
            if (lens[i] < 0 || lens[i] > t) {
                throw new SeqkException.ShapeMismatch(op + ": lengths[" + i + "] = " + lens[i] + " is outside 0.." + t);
            }
        }
        return lens;
    }

    /**
     * The checks of {@link #backward(PreparedWeights, RecurrentResult, Tensor, Tensor, Tensor)} on
     * the weights for the device entry point: they fit this op and were prepared from {@code dtype},
     * the forward's. Returns their form on the backend.
     */
    public Backend.PreparedParams checkDeviceBackward(PreparedWeights weights, DType dtype) {
        Checks.paramsOrPrepared(opName(), prepared(weights), config.parameterShapes(), true, dtype);
        return weights.device();
    }

    /** A device forward's checked arguments: the lengths to use and the prepared weights' form on the backend. */
    public record DeviceForwardArguments(int[] lengths, Backend.PreparedParams prepared) {
    }

    /**
     * The checks of {@link #forward(PreparedWeights, Tensor, Tensor, Tensor, int[])} for the device
     * entry point ({@code dev.seqkernels.gpu.DeviceRecurrent}), by dtype and shape: the weights fit
     * this op and were prepared from x's dtype, and the arguments are as forward takes them.
     */
    public DeviceForwardArguments checkDeviceForward(PreparedWeights weights, DType xType, long[] xShape, DType h0Type, long[] h0Shape,
                                                     DType c0Type, long[] c0Shape, int[] lengths) {
        Map<String, Tensor> params = prepared(weights);
        int[] lens = checkForward(xType, xShape, h0Type, h0Shape, c0Type, c0Shape, lengths);
        Checks.paramsOrPrepared(opName(), params, config.parameterShapes(), true, xType);
        return new DeviceForwardArguments(lens, weights.device());
    }

    /**
     * {@link #forward(Map, Tensor, Tensor, Tensor, int[])} keeping nothing for backward: a GPU backend
     * computes no per-step trace (its cells skip saving it), and any saved state a backend returns
     * is released as soon as the outputs exist. The result cannot be differentiated.
     */
    public RecurrentResult forwardInference(Map<String, Tensor> params, Tensor x, Tensor h0, Tensor c0, int[] lengths) {
        return withoutSaved(forward(params, null, x, h0, c0, lengths, false));
    }

    private static RecurrentResult withoutSaved(RecurrentResult r) {
        return new RecurrentResult(r.output(), r.hn(), r.cn(), SavedState.release(r.saved()));
    }

    /** Gradients of sum(output*dOutput) + sum(hn*dHn) + sum(cn*dCn); null gradients are zero. */
    public RecurrentGradients backward(Map<String, Tensor> params, RecurrentResult forward, Tensor dOutput,
                                       Tensor dHn, Tensor dCn) {
        return backward(params, null, forward, dOutput, dHn, dCn);
    }

    private RecurrentGradients backward(Map<String, Tensor> params, AutoCloseable prepared, RecurrentResult forward, Tensor dOutput,
                                        Tensor dHn, Tensor dCn) {
        String op = opName();
        if (forward == null) {
            throw new SeqkException.ShapeMismatch(op + ": argument 'forward' is required");
        }
        Checks.present(op, "forward.output", forward.output());
        Checks.present(op, "forward.hn", forward.hn());
        if (config.cell() == CellType.LSTM) {
            Checks.present(op, "forward.cn", forward.cn());
        }
        DType dt = forward.output().dtype();
        if (dOutput != null) {
            Checks.shape(op, "dOutput", dOutput, "like output", forward.output().shape());
            Checks.sameDType(op, "dOutput", dOutput, dt);
        }
        if (dHn != null) {
            Checks.shape(op, "dHn", dHn, "like hn", forward.hn().shape());
            Checks.sameDType(op, "dHn", dHn, dt);
        }
        if (dCn != null) {
            if (forward.cn() == null) {
                throw new SeqkException.ShapeMismatch(op + ": argument 'dCn' is only for LSTM");
            }
            Checks.shape(op, "dCn", dCn, "like cn", forward.cn().shape());
            Checks.sameDType(op, "dCn", dCn, dt);
        }
        Checks.paramsOrPrepared(op, params, config.parameterShapes(), prepared != null, dt);
        if (forward.hn().size(1) == 0) {
            return emptyBatchBackward(dt, forward.output().shape());
        }
        if (forward.saved() == null) {
            throw SavedState.missing(op);
        }
        return backend.recurrentBackward(config, params, prepared, forward, dOutput, dHn, dCn);
    }

    /** Lengths and per-step loops count in int: a larger extent is refused, never truncated. */
    private static void checkIntRange(String op, String arg, String what, long extent) {
        if (extent > Integer.MAX_VALUE) {
            throw new SeqkException.ShapeMismatch(op + ": argument '" + arg + "' has " + what + " " + extent
                    + ", more than the largest supported (" + Integer.MAX_VALUE + ")");
        }
    }

    /** With no sequences there is no work: empty outputs at once, whatever the sequence length. */
    private RecurrentResult emptyBatchForward(DType dt, long t) {
        long slots = (long) config.numLayers() * config.numDirections();
        long width = (long) config.numDirections() * config.stateSize();
        Tensor output = config.batchFirst() ? Tensor.allocate(dt, 0, t, width) : Tensor.allocate(dt, t, 0, width);
        Tensor cn = config.cell() == CellType.LSTM ? Tensor.allocate(dt, slots, 0, config.hiddenSize()) : null;
        return new RecurrentResult(output, Tensor.allocate(dt, slots, 0, config.stateSize()), cn, null);
    }

    /** Gradients of an empty batch: empty dx, dh0 and dc0, and zero parameter gradients. */
    private RecurrentGradients emptyBatchBackward(DType dt, long[] outputShape) {
        long slots = (long) config.numLayers() * config.numDirections();
        long[] dxShape = outputShape.clone();
        dxShape[2] = config.inputSize();
        Map<String, Tensor> dParams = new java.util.LinkedHashMap<>();
        config.parameterShapes().forEach((name, shape) -> dParams.put(name, Tensor.allocate(dt, shape)));
        Tensor dc0 = config.cell() == CellType.LSTM ? Tensor.allocate(dt, slots, 0, config.hiddenSize()) : null;
        return new RecurrentGradients(Tensor.allocate(dt, dxShape), Tensor.allocate(dt, slots, 0, config.stateSize()), dc0, dParams);
    }

    private static int[] filled(int n, int v) {
        int[] a = new int[n];
        Arrays.fill(a, v);
        return a;
    }

    /** Settings every recurrent op shares; {@code S} is the concrete builder, {@code O} the op it builds. */
    public abstract static class Builder<S extends Builder<S, O>, O extends RecurrentOp> {
        int inputSize;
        int hiddenSize;
        int numLayers = 1;
        Direction direction = Direction.FORWARD;
        boolean batchFirst;
        boolean bias = true;
        double clip = Double.POSITIVE_INFINITY;
        List<List<Activation>> activations;
        Backend backend;
        boolean allowTf32;

        abstract S self();

        abstract List<Activation> defaultActivations();

        abstract O create(RecurrentConfig config, Backend backend);

        public S inputSize(int v) {
            inputSize = v;
            return self();
        }

        public S hiddenSize(int v) {
            hiddenSize = v;
            return self();
        }

        public S numLayers(int v) {
            numLayers = v;
            return self();
        }

        public S bidirectional(boolean v) {
            direction = v ? Direction.BIDIRECTIONAL : Direction.FORWARD;
            return self();
        }

        public S direction(Direction v) {
            if (v == null) {
                throw new SeqkException.InvalidConfig("direction must not be null");
            }
            direction = v;
            return self();
        }

        public S batchFirst(boolean v) {
            batchFirst = v;
            return self();
        }

        /**
         * Let the GPU path round the F32 operands of its GEMMs (the input projection, the per-step
         * recurrent product, and their gradients) to TF32 on tensor cores, with fp32 accumulation
         * (cuBLAS's {@code CUBLAS_COMPUTE_32F_FAST_TF32}); the cells stay fp32. Off by default, as
         * PyTorch's {@code torch.backends.cuda.matmul.allow_tf32}; judged by the TF32 tolerance row.
         * The cpu backend computes in double either way; 16-bit ops are unaffected (their GEMMs
         * multiply 16-bit operands), and so is the persistent kernel that small F32 batches take.
         */
        public S allowTf32(boolean v) {
            allowTf32 = v;
            return self();
        }

        /** PyTorch's {@code bias}: with false there are no bias_ih/bias_hh parameters. */
        public S bias(boolean v) {
            bias = v;
            return self();
        }

        /** ONNX cell clip: every gate pre-activation is clamped to [-v, v]. */
        public S clip(double v) {
            clip = v;
            return self();
        }

        /** The same activation list (ONNX order) for every direction. */
        public S activations(Activation... perDirection) {
            if (perDirection == null || java.util.Arrays.stream(perDirection).anyMatch(java.util.Objects::isNull)) {
                throw new SeqkException.InvalidConfig("activations must not be null or contain null");
            }
            activations = List.of(List.of(perDirection));
            return self();
        }

        /** One activation list per direction (ONNX's bidirectional form). */
        public S activationsPerDirection(List<List<Activation>> lists) {
            if (lists == null || lists.stream().anyMatch(l -> l == null || l.stream().anyMatch(java.util.Objects::isNull))) {
                throw new SeqkException.InvalidConfig("activationsPerDirection must not be null or contain null");
            }
            activations = lists;
            return self();
        }

        /** A backend name ({@code auto}, {@code cpu}, ...); default: the {@code seqkernels.backend} property. */
        public S backend(String name) {
            backend = dev.seqkernels.Backends.byName(name);
            return self();
        }

        public S backend(Backend b) {
            backend = b;
            return self();
        }

        abstract RecurrentConfig config(List<List<Activation>> acts);

        /** A single-step cell with PyTorch's cell parameter names (see {@link RecurrentCell}). */
        public RecurrentCell buildCell() {
            return new RecurrentCell(build());
        }

        public O build() {
            List<List<Activation>> acts = activations;
            if (acts == null) {
                acts = java.util.Collections.nCopies(direction.count(), defaultActivations());
            } else if (acts.size() == 1 && direction.count() == 2) {
                acts = List.of(acts.get(0), acts.get(0));
            }
            return create(config(acts), backend != null ? backend : Backends.fromProperty());
        }
    }
}
