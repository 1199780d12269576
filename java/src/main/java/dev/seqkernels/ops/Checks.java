package dev.seqkernels.ops;

import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.Tensor;

import java.util.Arrays;

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
        long[] s = t.shape();
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
        if (t.dtype() != expected) {
            throw new SeqkException.DTypeMismatch(op + ": argument '" + name + "' has dtype " + t.dtype()
                    + ", expected " + expected + " (the dtype of the input)");
        }
    }

    static void finite(String name, double v) {
        if (!Double.isFinite(v)) {
            throw new SeqkException.InvalidConfig(name + " must be finite, got " + v);
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
