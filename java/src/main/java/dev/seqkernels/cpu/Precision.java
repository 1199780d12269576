package dev.seqkernels.cpu;

import dev.seqkernels.DType;
import dev.seqkernels.Rounding;

/**
 * Where the CPU reference rounds. {@link #EXACT} rounds nowhere: double throughout, results rounded
 * once to the storage dtype (the oracle). A same-precision plan rounds where the GPU kernels round
 * (DESIGN.md section 6), so that "at most 2x the error of a plain same-precision implementation" is
 * judged against a real one:
 * <ul>
 *   <li>{@link #operand}: a value entering a product on tensor cores (attention's P before P V and
 *       dS before dS K and dS^T Q, the recurrent h_{t-1} and the gate gradients before their GEMMs,
 *       MHA's projections): the storage dtype for 16-bit ops, TF32 for F32 ops that allow it, else
 *       float;</li>
 *   <li>{@link #stored}: a value kept in the op's storage dtype between kernels (the recurrent h
 *       each step, MHA's projected heads and merged attention output);</li>
 *   <li>{@link #fp32}: statistics, scores, the results of the recurrent GEMMs, the cell state and
 *       the carried gradients, which the kernels keep in fp32.</li>
 * </ul>
 * Sums of products accumulate in fp32 ({@link #fma}, {@link #sum}), as the kernels and cuBLAS's F32
 * compute do: for an F32 op that accumulation is the rounding that matters (an exact sum made the
 * yardstick too good where a backward amplifies the forward's rounding; a GPU's F32 GEMM does not
 * sum exactly). Values between these points stay double: the elementwise math, whose fp32
 * rounding is a few ulps once per value.
 */
public final class Precision {
    public static final Precision EXACT = new Precision(DType.F64, false);

    private final DType storage;
    private final boolean tf32;

    private Precision(DType storage, boolean tf32) {
        this.storage = storage;
        this.tf32 = tf32;
    }

    /** The same-precision plan of an op stored as {@code storage}; {@code tf32} matters for F32 only. */
    public static Precision same(DType storage, boolean tf32) {
        return storage == DType.F64 ? EXACT : new Precision(storage, tf32 && storage == DType.F32);
    }

    boolean exact() {
        return storage == DType.F64;
    }

    double operand(double v) {
        if (exact()) {
            return v;
        }
        return tf32 ? Rounding.toTf32(v) : Rounding.roundTo(storage, v);
    }

    double stored(double v) {
        return exact() ? v : Rounding.roundTo(storage, v);
    }

    double fp32(double v) {
        return exact() ? v : (float) v;
    }

    /**
     * {@code s + a * b} as a kernel accumulates it: one fused multiply-add in fp32 (operands and
     * sum taken as floats), or exactly when this plan is {@link #EXACT}.
     */
    double fma(double a, double b, double s) {
        return exact() ? s + a * b : Math.fma((float) a, (float) b, (float) s);
    }

    /** {@code s + v} as a kernel accumulates it: in fp32, or exactly when this plan is {@link #EXACT}. */
    double sum(double s, double v) {
        return exact() ? s + v : (float) ((float) s + (float) v);
    }

    /** {@link #operand} of every element, as a new array (the same array when exact). */
    double[] operands(double[] a) {
        if (exact() || a == null) {
            return a;
        }
        double[] r = new double[a.length];
        for (int i = 0; i < a.length; i++) {
            r[i] = operand(a[i]);
        }
        return r;
    }

    /** {@link #stored} of every element, in place; returns {@code a}. */
    double[] store(double[] a) {
        if (!exact() && a != null) {
            for (int i = 0; i < a.length; i++) {
                a[i] = stored(a[i]);
            }
        }
        return a;
    }
}
