package dev.seqkernels;

/**
 * How results are compared with the double reference, and the limits, in one place (DESIGN.md
 * section 6): relative L2 error ||out - ref|| / ||ref|| AND, per element,
 * |out - ref| &lt;= atol * rms(ref) + rtol * |ref|. The absolute term scales with the tensor (its
 * root-mean-square), so an element that is a small difference of large terms is judged against the
 * accuracy the tensor can have, and a tensor scaled by 10 passes or fails exactly as before; atol is
 * the relative-L2 limit, so no single element may be off by more than the whole tensor may be on
 * average. Infinite reference values (a fully masked row's LSE) must be matched exactly; NaN never
 * passes.
 */
public final class Compare {
    private Compare() {
    }

    /** Limits for one storage dtype: the relative L2 bound, and the element check's atol (times rms(ref)) and rtol. */
    public record Tolerance(double relL2, double atol, double rtol) {
    }

    /**
     * F32 storage computed on TF32 tensor cores (the opt-in precision mode): DESIGN's relative L2
     * of 1e-3, and an element check of 1e-2 x rms + 5e-2 x |ref| (see docs/CONVENTIONS.md: TF32
     * rounds the F32 inputs themselves, which the reference uses unrounded).
     */
    public static final Tolerance TF32 = new Tolerance(1e-3, 1e-2, 5e-2);

    public static Tolerance tolerance(DType dtype) {
        return switch (dtype) {
            case F64 -> new Tolerance(1e-10, 1e-10, 1e-9);
            case F32 -> new Tolerance(1e-5, 1e-5, 1e-4);
            case F16 -> new Tolerance(2e-3, 2e-3, 1e-2);
            case BF16 -> new Tolerance(1.6e-2, 1.6e-2, 5e-2);
            default -> throw new IllegalArgumentException("no tolerance for " + dtype);
        };
    }

    /** The outcome of one comparison; {@code firstBad} describes the first failing element, or null. */
    public record Result(double maxAbs, double relL2, String firstBad) {
        public boolean passes(Tolerance t) {
            return firstBad == null && relL2 <= t.relL2();
        }
    }

    public static Result compare(double[] out, double[] ref, Tolerance t) {
        if (out.length != ref.length) {
            return new Result(Double.NaN, Double.NaN, "length " + out.length + " vs reference " + ref.length);
        }
        double ref2 = 0;
        int finite = 0;
        for (double r : ref) {
            if (Double.isFinite(r)) {
                ref2 += r * r;
                finite++;
            }
        }
        double rms = finite == 0 ? 0 : Math.sqrt(ref2 / finite);
        double absolute = t.atol() * (rms > 0 ? rms : 1);
        ref2 = 0;
        double diff2 = 0;
        double maxAbs = 0;
        String firstBad = null;
        for (int i = 0; i < out.length; i++) {
            double o = out[i];
            double r = ref[i];
            if (!Double.isFinite(o) || !Double.isFinite(r)) {
                if (!(o == r)) {
                    maxAbs = Double.NaN;
                    if (firstBad == null) {
                        firstBad = "element " + i + ": " + o + " vs reference " + r;
                    }
                }
                continue;
            }
            double d = Math.abs(o - r);
            maxAbs = Math.max(maxAbs, d);
            diff2 += d * d;
            ref2 += r * r;
            if (d > absolute + t.rtol() * Math.abs(r) && firstBad == null) {
                firstBad = "element " + i + ": " + o + " vs reference " + r;
            }
        }
        double rel = ref2 == 0 ? Math.sqrt(diff2) : Math.sqrt(diff2 / ref2);
        return new Result(maxAbs, rel, firstBad);
    }
}
