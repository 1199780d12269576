package dev.seqkernels.ops;

import dev.seqkernels.SeqkException;
import dev.seqkernels.Tensor;

/**
 * An attention mask whose meaning is explicit. ALLOWED and BLOCKED masks are read as booleans (any
 * non-zero element is true) from a tensor of any dtype; an ADDITIVE mask is floating point, added to
 * the scaled scores, and may hold -infinity (blocked) but not NaN or +infinity.
 */
public record Mask(Meaning meaning, Tensor tensor) {
    public enum Meaning {
        /** true = the query may attend to the key. */
        ALLOWED,
        /** true = the query may not attend to the key (PyTorch's boolean attn_mask/key_padding_mask). */
        BLOCKED,
        /** added to the scaled score; -infinity blocks. */
        ADDITIVE
    }

    public Mask {
        if (meaning == null || tensor == null) {
            throw new SeqkException.InvalidConfig("a mask needs a meaning and a tensor");
        }
        if (meaning == Meaning.ADDITIVE && !tensor.dtype().isFloatingPoint()) {
            throw new SeqkException.DTypeMismatch("an additive mask must be floating point, got " + tensor.dtype());
        }
    }

    public static Mask allowed(Tensor t) {
        return new Mask(Meaning.ALLOWED, t);
    }

    public static Mask blocked(Tensor t) {
        return new Mask(Meaning.BLOCKED, t);
    }

    public static Mask additive(Tensor t) {
        return new Mask(Meaning.ADDITIVE, t);
    }

    /** The additive score bias of element value {@code v}: 0, -infinity, or v itself. */
    public double bias(double v) {
        return switch (meaning) {
            case ALLOWED -> v != 0 ? 0 : Double.NEGATIVE_INFINITY;
            case BLOCKED -> v != 0 ? Double.NEGATIVE_INFINITY : 0;
            case ADDITIVE -> v;
        };
    }

    /** Rejects additive values that would make the softmax undefined. */
    void checkValues(String op, String name) {
        if (meaning != Meaning.ADDITIVE) {
            return;
        }
        for (double v : tensor.toDoubleArray()) {
            if (Double.isNaN(v) || v == Double.POSITIVE_INFINITY) {
                throw new SeqkException.InvalidConfig(op + ": additive mask '" + name + "' holds " + v
                        + "; only finite values and -infinity are allowed");
            }
        }
    }
}
