package dev.seqkernels.ops;

import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.Tensor;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

/** Argument checks shared by the ops; every message names the argument and what was expected. */
final class Checks {
    private Checks() {
    }

    static Tensor present(String op, String name, Tensor t) {
        if (t == null) {
            throw new SeqkException.ShapeMismatch(op + ": argument '" + name + "' is required");
        }
        if (t.isClosed()) {
            throw new SeqkException.TensorClosed(op + ": argument '" + name + "' " + t + " is closed");
        }
        return t;
    }

    /** Checks rank and extents; -1 in {@code expected} accepts any extent. */
    static void shape(String op, String name, Tensor t, String layout, long... expected) {
        present(op, name, t);
        shape(op, name, t.shape(), layout, expected);
    }

    /** {@link #shape(String, String, Tensor, String, long...)} for a shape alone (device tensors). */
    static void shape(String op, String name, long[] s, String layout, long... expected) {
        boolean ok = s.length == expected.length;
        for (int i = 0; ok && i < s.length; i++) {
            ok = expected[i] < 0 || expected[i] == s[i];
        }
        if (!ok) {
            throw new SeqkException.ShapeMismatch(op + ": argument '" + name + "' has shape " + Arrays.toString(s)
                    + ", expected " + layout + " = " + describe(expected));
        }
    }

    static void floating(String op, String name, Tensor t) {
        if (!t.dtype().isFloatingPoint()) {
            throw new SeqkException.DTypeMismatch(op + ": argument '" + name + "' has dtype " + t.dtype()
                    + ", expected a floating-point dtype (F64, F32, F16, BF16)");
        }
    }

    static void sameDType(String op, String name, Tensor t, DType expected) {
        sameDType(op, name, t.dtype(), expected);
    }

    static void sameDType(String op, String name, DType got, DType expected) {
        if (got != expected) {
            throw new SeqkException.DTypeMismatch(op + ": argument '" + name + "' has dtype " + got
                    + ", expected " + expected + " (the dtype of the input)");
        }
    }

    static void finite(String name, double v) {
        if (!Double.isFinite(v)) {
            throw new SeqkException.InvalidConfig(name + " must be finite, got " + v);
        }
    }

    /** Exactly the expected parameter names, each with its shape and the input's dtype. */
    static void params(String op, Map<String, Tensor> params, Map<String, long[]> expected, DType dtype) {
        if (params == null) {
            throw new SeqkException.ShapeMismatch(op + ": argument 'params' is required");
        }
        List<String> unknown = new ArrayList<>(params.keySet());
        unknown.removeAll(expected.keySet());
        if (!unknown.isEmpty()) {
            throw new SeqkException.ShapeMismatch(op + ": unexpected parameters " + unknown + "; this configuration takes "
                    + expected.keySet());
        }
        for (var e : expected.entrySet()) {
            Tensor p = params.get(e.getKey());
            if (p == null) {
                throw new SeqkException.ShapeMismatch(op + ": parameter '" + e.getKey() + "' " + Arrays.toString(e.getValue())
                        + " is missing");
            }
            shape(op, e.getKey(), p, "PyTorch's shape", e.getValue());
            sameDType(op, e.getKey(), p, dtype);
        }
    }

    /** The dtype of a parameter set about to be prepared, after checking it whole (names, shapes, one dtype). */
    static DType preparedParams(String op, Map<String, Tensor> params, Map<String, long[]> expected) {
        if (params == null) {
            throw new SeqkException.ShapeMismatch(op + ": argument 'params' is required");
        }
        Tensor first = params.values().stream().filter(java.util.Objects::nonNull).findFirst()
                .orElseThrow(() -> new SeqkException.ShapeMismatch(op + ": argument 'params' is empty; this configuration takes "
                        + expected.keySet()));
        present(op, "params", first);
        params(op, params, expected, first.dtype());
        return first.dtype();
    }

    /**
     * Plain parameters are checked whole each call; prepared ones were checked when prepared, and
     * their dtype must be the input's (a GPU backend no longer reads the host tensors).
     */
    static void paramsOrPrepared(String op, Map<String, Tensor> params, Map<String, long[]> expected, boolean prepared, DType dtype) {
        if (!prepared) {
            params(op, params, expected, dtype);
            return;
        }
        DType preparedType = params.values().iterator().next().dtype();
        if (preparedType != dtype) {
            throw new SeqkException.DTypeMismatch(op + ": argument 'weights' was prepared from " + preparedType
                    + " parameters, but the input is " + dtype);
        }
    }

    static String describe(long[] shape) {
        StringBuilder sb = new StringBuilder("[");
        for (int i = 0; i < shape.length; i++) {
            sb.append(i == 0 ? "" : ", ").append(shape[i] < 0 ? "*" : Long.toString(shape[i]));
        }
        return sb.append(']').toString();
    }
}
