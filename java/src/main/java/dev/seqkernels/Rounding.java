package dev.seqkernels;

/**
 * Exact conversions between double and the 16-bit storage formats, round-to-nearest-even.
 *
 * <p>double -> half goes through float with round-to-odd: float keeps 13 (bf16: 16) more
 * mantissa bits than the target, so rounding-to-odd first and then to-nearest-even gives the same
 * result as one correctly rounded step, with no double rounding.
 */
public final class Rounding {
    private Rounding() {
    }

    /** double to float, rounding to odd: truncate toward zero and set the last bit when inexact. */
    static float toFloatRoundToOdd(double d) {
        float f = (float) d;
        if (Double.isNaN(d) || (double) f == d || Float.isInfinite(f) && Double.isInfinite(d)) {
            return f;
        }
        float truncated = f;
        if (Math.abs((double) f) > Math.abs(d)) {
            truncated = d > 0 ? Math.nextDown(f) : Math.nextUp(f);
        }
        return Float.intBitsToFloat(Float.floatToRawIntBits(truncated) | 1);
    }

    public static short doubleToHalf(double d) {
        return Float.floatToFloat16(toFloatRoundToOdd(d));
    }

    public static double halfToDouble(short bits) {
        return Float.float16ToFloat(bits);
    }

    public static short floatToBf16(float f) {
        int bits = Float.floatToRawIntBits(f);
        if (Float.isNaN(f)) {
            return (short) ((bits >>> 16) | 0x40);
        }
        int lsb = (bits >>> 16) & 1;
        return (short) ((bits + 0x7fff + lsb) >>> 16);
    }

    public static short doubleToBf16(double d) {
        return floatToBf16(toFloatRoundToOdd(d));
    }

    public static double bf16ToDouble(short bits) {
        return Float.intBitsToFloat((bits & 0xffff) << 16);
    }

    /** Rounds a double to the precision of {@code dtype} (identity for F64). */
    public static double roundTo(DType dtype, double d) {
        return switch (dtype) {
            case F64 -> d;
            case F32 -> (float) d;
            case F16 -> halfToDouble(doubleToHalf(d));
            case BF16 -> bf16ToDouble(doubleToBf16(d));
            default -> throw new IllegalArgumentException("not a floating-point dtype: " + dtype);
        };
    }

    /**
     * The spacing of {@code dtype}'s values in the binade of |d| (its ulp there), for a finite d in
     * the dtype's range; within half a float ulp below a power of two, |d| rounds to float upward
     * and the spacing of the binade above (twice as large) is returned. BF16 keeps float's
     * exponents with 16 fewer mantissa bits; F16's subnormal spacing is 2^-24.
     */
    public static double spacing(DType dtype, double d) {
        float f = (float) Math.abs(d);
        return switch (dtype) {
            case F64 -> Math.ulp(d);
            case F32 -> Math.ulp(f);
            case F16 -> Math.max(Math.ulp(f) * 0x1p13, 0x1p-24);
            case BF16 -> Math.ulp(f) * 0x1p16;
            default -> throw new IllegalArgumentException("not a floating-point dtype: " + dtype);
        };
    }

    /**
     * Rounds to TF32 (10 mantissa bits) the way {@code cvt.rna.tf32.f32} does: through float, then
     * to nearest with ties away from zero. NaN and infinities pass unchanged.
     */
    public static double toTf32(double d) {
        float f = (float) d;
        if (!Float.isFinite(f)) {
            return f;
        }
        int bits = Float.floatToRawIntBits(f);
        return Float.intBitsToFloat((bits + 0x1000) & 0xffffe000);
    }
}
