package dev.seqkernels.ops;

import dev.seqkernels.Backend;
import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.Tensor;
import dev.seqkernels.gpu.DeviceTensor;

import java.util.Arrays;
import java.util.LinkedHashMap;
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
 *
 * <p>An optimizer updates them in place with {@link #update(Map)} (host values) or
 * {@link #update(String, DeviceTensor, long)} (device values): the same buffers, nothing allocated.
 * Calls read the weights when they run (a backward reads them again), so update between a step's
 * backward and the next forward, never while a call that uses them runs on another thread.
 */
public final class PreparedWeights implements AutoCloseable {
    private static final String WHAT = "prepared weights";
    private final java.util.List<String> owner;
    private final Map<String, long[]> shapes;
    private final Backend backend;
    private final DType dtype;
    private final Map<String, Tensor> params;
    private final Backend.PreparedParams device;
    private volatile boolean closed;

    /** shapes: the op's parameter names and shapes, which any op given these weights must have. */
    PreparedWeights(Map<String, long[]> shapes, Backend backend, DType dtype, Map<String, Tensor> params,
                    Backend.PreparedParams device) {
        this.owner = key(shapes);
        this.shapes = new LinkedHashMap<>(shapes);
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

    /**
     * Writes new values of the named parameters in place, converted to each copy's dtype: every later
     * call computes with them. Each value is checked (a parameter of the op, its shape, this dtype,
     * open) before anything is written; the values stay the caller's. The copies are written at once
     * (synchronous copies on the legacy default stream): device work of earlier calls that reads
     * the weights must be complete, so after device calls on a stream of your own, synchronize it
     * first. On the cpu backend, where the prepared weights are the host tensors given to prepare,
     * the values are copied into those, which must be open and writable (checked first too).
     */
    public void update(Map<String, Tensor> values) {
        if (values == null) {
            throw new SeqkException.ShapeMismatch(WHAT + ": argument 'values' is required");
        }
        requireOpen();
        values.forEach((name, t) -> {
            check(name, t == null ? null : t.shape(), t == null ? null : t.dtype());
            Checks.present(WHAT, name, t);
            if (device == null) {
                Tensor into = Checks.present(WHAT, name + " (the host tensor given to prepare)", params.get(name));
                if (into.segment().isReadOnly()) {
                    throw new SeqkException.Unsupported(WHAT + ": on the " + backend.name() + " backend the prepared weights are the host"
                            + " tensors given to prepare, and '" + name + "' is read-only (a mapped file?); prepare writable copies to update them");
                }
            }
        });
        values.forEach((name, t) -> {
            if (device == null) {
                params.get(name).copyFrom(t);
            } else {
                device.update(name, t);
            }
        });
    }

    /**
     * Writes parameter {@code name}'s new values from device memory of the backend's driver (ours,
     * or a framework's through {@link DeviceTensor#wrap}, any strides; this dtype), converted on the
     * device into every copy. The work is queued on {@code stream} (a raw {@code CUstream}, 0 for
     * the legacy default stream) and not waited for: the ops' host entry points run on the legacy
     * default stream, so the caller orders them after it (0, a blocking stream, or a synchronize)
     * and keeps {@code values} alive until the stream has read it.
     */
    public void update(String name, DeviceTensor values, long stream) {
        requireOpen();
        check(name, values == null ? null : values.shape(), values == null ? null : values.dtype());
        if (values.isClosed()) {
            throw new SeqkException.TensorClosed(WHAT + ": the values of '" + name + "' are closed");
        }
        if (device == null) {
            throw new SeqkException.InvalidConfig(WHAT + ": on the " + backend.name() + " backend the prepared weights are the"
                    + " host tensors given to prepare; update them with host values");
        }
        device.update(name, values, stream);
    }

    private void requireOpen() {
        if (closed) {
            throw new SeqkException.TensorClosed(WHAT + " are closed");
        }
    }

    private void check(String name, long[] shape, DType dt) {
        long[] expected = name == null ? null : shapes.get(name);
        if (expected == null) {
            throw new SeqkException.InvalidConfig(WHAT + ": '" + name + "' is not a parameter of the op; its parameters are "
                    + shapes.keySet());
        }
        if (shape == null) {
            throw new SeqkException.ShapeMismatch(WHAT + ": the values of '" + name + "' are required");
        }
        if (!Arrays.equals(shape, expected)) {
            throw new SeqkException.ShapeMismatch(WHAT + ": the values of '" + name + "' have shape " + Arrays.toString(shape)
                    + ", expected " + Arrays.toString(expected));
        }
        if (dt != dtype) {
            throw new SeqkException.DTypeMismatch(WHAT + ": the values of '" + name + "' have dtype " + dt + ", expected " + dtype
                    + " (the dtype the weights were prepared from)");
        }
    }

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

    Backend.PreparedParams device() {
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
