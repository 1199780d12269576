package dev.seqkernels;

import org.junit.jupiter.api.Test;

import java.util.Arrays;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** double -> fp16/bf16 must be correctly rounded (nearest, ties to even), with no double rounding. */
class RoundingTest {

    /** All finite non-negative values of a 16-bit format, ascending, with their bit patterns. */
    private record Grid(double[] values, short[] bits) {
        static Grid of(boolean bf16) {
            double[] v = new double[0x8000];
            short[] b = new short[0x8000];
            int n = 0;
            for (int i = 0; i < 0x8000; i++) {
                double d = bf16 ? Rounding.bf16ToDouble((short) i) : Rounding.halfToDouble((short) i);
                if (Double.isFinite(d)) {
                    v[n] = d;
                    b[n++] = (short) i;
                }
            }
            return new Grid(Arrays.copyOf(v, n), Arrays.copyOf(b, n));
        }

        /** Correct rounding by search: nearest grid value, ties to the even bit pattern. */
        short expected(double d) {
            if (d < 0) {
                return (short) (expected(-d) | 0x8000);
            }
            int i = Arrays.binarySearch(values, d);
            if (i >= 0) {
                return bits[i];
            }
            int hi = -i - 1;
            if (hi == values.length) {
                return bits[values.length - 1]; // beyond max finite: caller avoids overflow cases
            }
            int lo = hi - 1;
            double dl = d - values[lo];
            double dh = values[hi] - d;
            if (dl < dh) {
                return bits[lo];
            }
            if (dh < dl) {
                return bits[hi];
            }
            return (bits[lo] & 1) == 0 ? bits[lo] : bits[hi];
        }
    }

    @Test
    void everyHalfAndBf16ValueRoundTrips() {
        for (int i = 0; i < 0x10000; i++) {
            short s = (short) i;
            double h = Rounding.halfToDouble(s);
            if (!Double.isNaN(h)) {
                assertEquals(s, Rounding.doubleToHalf(h), "fp16 bits " + Integer.toHexString(i));
            }
            double b = Rounding.bf16ToDouble(s);
            if (!Double.isNaN(b)) {
                assertEquals(s, Rounding.doubleToBf16(b), "bf16 bits " + Integer.toHexString(i));
            }
        }
    }

    @Test
    void tiesGoToEvenAndNearTiesAreNotDoubleRounded() {
        for (boolean bf16 : new boolean[]{false, true}) {
            Grid g = Grid.of(bf16);
            for (int i = 0; i + 1 < g.values().length; i += 7) {
                double lo = g.values()[i];
                double hi = g.values()[i + 1];
                double mid = lo + (hi - lo) / 2;
                // A hair above or below the midpoint: a double->float->half path would round these
                // to the midpoint float first and then tie to even, which can be the wrong side.
                double above = mid + (hi - lo) * 0x1p-30;
                double below = mid - (hi - lo) * 0x1p-30;
                String tag = (bf16 ? "bf16 " : "fp16 ") + lo + ".." + hi;
                assertEquals(g.expected(mid), convert(bf16, mid), tag + " midpoint");
                assertEquals(g.bits()[i + 1], convert(bf16, above), tag + " above midpoint");
                assertEquals(g.bits()[i], convert(bf16, below), tag + " below midpoint");
                assertEquals(g.expected(-mid), convert(bf16, -mid), tag + " negative midpoint");
            }
        }
    }

    @Test
    void randomDoublesAreCorrectlyRounded() {
        TestData data = new TestData();
        for (boolean bf16 : new boolean[]{false, true}) {
            Grid g = Grid.of(bf16);
            double max = g.values()[g.values().length - 1];
            for (int n = 0; n < 20000; n++) {
                double d = Math.scalb(data.uniform(1, 2), data.nextInt(-26, bf16 ? 120 : 15));
                if (d >= max) {
                    continue;
                }
                assertEquals(g.expected(d), convert(bf16, d), () -> (bf16 ? "bf16 " : "fp16 ") + d + " " + data);
            }
        }
    }

    @Test
    void spacingIsTheUlpOfEachDtype() {
        assertEquals(0x1p-5, Rounding.spacing(DType.BF16, -6.03));
        assertEquals(0x1p-7, Rounding.spacing(DType.BF16, 1.0));
        assertEquals(0x1p-8, Rounding.spacing(DType.F16, 6.0));
        assertEquals(0x1p-24, Rounding.spacing(DType.F16, 1e-6), "F16's subnormals");
        assertEquals(0x1p-133, Rounding.spacing(DType.BF16, 1e-39), "BF16's subnormals, float's exponents");
        assertEquals(0x1p-23, Rounding.spacing(DType.F32, 1.5));
        assertEquals(Math.ulp(3.0), Rounding.spacing(DType.F64, -3.0));
        for (DType t : new DType[]{DType.BF16, DType.F16}) {
            for (double x : new double[]{1.0, 6.0, 0.3, 1e-3}) {
                double s = Rounding.spacing(t, x);
                double down = Rounding.roundTo(t, x);
                assertEquals(down + s, Rounding.roundTo(t, down + s), t + " " + x + ": a value one spacing up");
                assertEquals(down, Rounding.roundTo(t, down + s / 4), t + " " + x + ": no value a quarter spacing up");
                assertEquals(down + s, Rounding.roundTo(t, down + 0.75 * s), t + " " + x + ": nor half a spacing up");
            }
        }
    }

    @Test
    void specialValues() {
        assertTrue(Double.isNaN(Rounding.halfToDouble(Rounding.doubleToHalf(Double.NaN))));
        assertTrue(Double.isNaN(Rounding.bf16ToDouble(Rounding.doubleToBf16(Double.NaN))));
        assertEquals(Double.NEGATIVE_INFINITY, Rounding.halfToDouble(Rounding.doubleToHalf(Double.NEGATIVE_INFINITY)));
        assertEquals(Double.POSITIVE_INFINITY, Rounding.halfToDouble(Rounding.doubleToHalf(1e6)), "fp16 overflow");
        assertEquals(Double.POSITIVE_INFINITY, Rounding.bf16ToDouble(Rounding.doubleToBf16(1e300)), "bf16 overflow");
        assertEquals(0x8000, Rounding.doubleToHalf(-0.0) & 0xffff, "negative zero keeps its sign");
        assertEquals(65504.0, Rounding.halfToDouble(Rounding.doubleToHalf(65519.99)), "largest fp16 below the overflow midpoint");
    }

    private static short convert(boolean bf16, double d) {
        return bf16 ? Rounding.doubleToBf16(d) : Rounding.doubleToHalf(d);
    }
}
