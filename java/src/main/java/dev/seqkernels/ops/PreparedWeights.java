package dev.seqkernels.ops;

import dev.seqkernels.Backend;
import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.Tensor;

import java.util.Map;

/**
 * An op's parameters prepared once for its backend ({@link RecurrentOp#prepare},
 * {@link MultiHeadAttention#prepare}): on a GPU backend, device copies in the compute dtype (for
 * the recurrent ops F32 for every weight and bias, plus the input dtype's copy of layer 0's input
 * weights where the 16-bit projection reads it; for multi-head attention the F32 projections),
 * uploaded and converted once and reused by every forward and backward given this object. On the
 * cpu backend nothing is copied: the reference reads the host tensors, which must stay open.
 * Prepare again when the weights change. Close it to free the device copies; an op given a closed
 * one refuses. Any op with the same parameter names and shapes on the same backend may use them
 * (for example with and without TF32). A multi-head attention forward made with them reads them
 * again in its backward: keep them open until then.
 */
public final class PreparedWeights implements AutoCloseable {
    private final java.util.List<String> owner;
    private final Backend backend;
    private final DType dtype;
    private final Map<String, Tensor> params;
    private final AutoCloseable device;
    private volatile boolean closed;

    /** shapes: the op's parameter names and shapes, which any op given these weights must have. */
    PreparedWeights(Map<String, long[]> shapes, Backend backend, DType dtype, Map<String, Tensor> params, AutoCloseable device) {
        this.owner = key(shapes);
        this.backend = backend;
        this.dtype = dtype;
        this.params = Map.copyOf(params);
        this.device = device;
    }

    /** The dtype the parameters (and so the op's inputs) have. */
    public DType dtype() {
        return dtype;
    }

    /** Whether the backend holds copies of its own (a GPU backend), rather than reading the host tensors. */
    public boolean onDevice() {
        return device != null;
    }

    public boolean isClosed() {
        return closed;
    }

    /** The host parameters and the backend's prepared form, after checking this object fits the op. */
    /** Names and shapes as a comparable value (arrays compare by identity). */
    private static java.util.List<String> key(Map<String, long[]> shapes) {
        return shapes.entrySet().stream().map(e -> e.getKey() + java.util.Arrays.toString(e.getValue())).sorted().toList();
    }

    /** {@code weights}' host parameters for an op with these shapes on this backend, after checking they fit. */
    static Map<String, Tensor> paramsFor(PreparedWeights weights, String op, Map<String, long[]> opShapes, Backend opBackend) {
        if (weights == null) {
            throw new SeqkException.ShapeMismatch(op + ": argument 'weights' is required (op.prepare(params))");
        }
        return weights.paramsFor(op, opShapes, opBackend);
    }

    private Map<String, Tensor> paramsFor(String op, Map<String, long[]> opShapes, Backend opBackend) {
        if (closed) {
            throw new SeqkException.TensorClosed(op + ": argument 'weights' (prepared weights) is closed");
        }
        if (!owner.equals(key(opShapes)) || backend != opBackend) {
            throw new SeqkException.InvalidConfig(op + ": argument 'weights' was prepared by an op with other parameters"
                    + " or on another backend; prepare them with this op");
        }
        if (device == null) {
            params.forEach((name, t) -> Checks.present(op, name, t));  // the backend reads the host tensors
        }
        return params;
    }

    AutoCloseable device() {
        return device;
    }

    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        if (device != null) {
            try {
                device.close();
            } catch (Exception e) {
                throw new IllegalStateException("could not release prepared weights", e);
            }
        }
    }
}
