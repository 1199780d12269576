package dev.seqkernels;

import org.junit.jupiter.api.Test;

import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Bulk copies give exactly what element-by-element conversion gives, for every dtype pair and layout. */
class TensorCopyTest {
    private static final DType[] DTYPES = DType.values();

    private static double[] values(int n, long seed) {
        Random r = new Random(seed);
        double[] v = new double[n];
        for (int i = 0; i < n; i++) {
            v[i] = switch (i % 7) {
                case 0 -> Double.NaN;
                case 1 -> -0.0;
                case 2 -> 1e-42;
                case 3 -> r.nextInt(200) - 100;
                default -> r.nextGaussian() * 1000;
            };
        }
        return v;
    }

    /** The reference: one element at a time through double, as Tensor.of rounds. */
    private static double[] elementwise(Tensor src, DType target) {
        double[] d = src.toDoubleArray();
        try (Tensor t = Tensor.of(target, d, src.shape())) {
            return t.toDoubleArray();
        }
    }

    @Test
    void toAndCopyFromMatchElementwiseConversionForEveryPairAndLayout() {
        for (DType from : DTYPES) {
            for (DType to : DTYPES) {
                try (Tensor base = Tensor.of(from, values(4 * 6, from.ordinal() * 31L + to.ordinal()), 4, 6)) {
                    for (Tensor src : new Tensor[]{base, base.permute(1, 0), base.select(0, 2)}) {
                        double[] expected = elementwise(src, to);
                        try (Tensor converted = src.to(to)) {
                            assertTrue(converted.isContiguous());
                            assertArrayEquals(expected, converted.toDoubleArray(), from + " -> " + to);
                        }
                        long[] sh = src.shape();
                        try (Tensor holder = src.rank() == 2 ? Tensor.allocate(to, sh[1], sh[0]) : Tensor.allocate(to, sh[0], 2)) {
                            Tensor strided = src.rank() == 2 ? holder.permute(1, 0) : holder.select(1, 1);
                            strided.copyFrom(src);
                            assertArrayEquals(expected, strided.toDoubleArray(), from + " -> " + to + " into a strided view");
                        }
                    }
                }
            }
        }
    }

    /**
     * Conversions between contiguous floating-point tensors go a chunk at a time: across chunk
     * boundaries, and on values that stress rounding (ties of F16 and BF16, their subnormals,
     * overflow, NaN, infinities, F64 values between floats), they give exactly what one element at
     * a time through double gives.
     */
    @Test
    void chunkedConversionsMatchElementwiseAcrossChunksAndTies() {
        Random r = new Random(7);
        int n = 2 * 8192 + 37;
        double[] v = new double[n];
        for (int i = 0; i < n; i++) {
            float f = switch (i % 9) {
                case 0 -> Float.intBitsToFloat((r.nextInt() & 0xffff0000) | 0x8000);  // a BF16 tie
                case 1 -> Float.intBitsToFloat((r.nextInt() & 0x3fffe000) | 0x1000);  // an F16 tie (or near it)
                case 2 -> (float) (r.nextGaussian() * 6e-8);                           // F16 subnormals
                case 3 -> (float) (r.nextGaussian() * 1e5);                            // F16 overflow
                case 4 -> i % 2 == 0 ? Float.NaN : Float.NEGATIVE_INFINITY;
                default -> (float) r.nextGaussian();
            };
            v[i] = i % 5 == 0 ? f + Math.ulp(f) * 0.375 * r.nextGaussian() : f;  // F64 values between floats
        }
        DType[] floating = {DType.F64, DType.F32, DType.F16, DType.BF16};
        for (DType from : floating) {
            try (Tensor src = Tensor.of(from, v, n)) {
                for (DType to : floating) {
                    try (Tensor converted = src.to(to)) {
                        double[] expected = elementwise(src, to);
                        double[] got = converted.toDoubleArray();
                        for (int i = 0; i < n; i++) {
                            if (Double.doubleToLongBits(expected[i]) != Double.doubleToLongBits(got[i])) {
                                assertEquals(expected[i], got[i], from + " -> " + to + " element " + i + " (source " + src.getFlat(i) + ")");
                            }
                        }
                    }
                }
            }
        }
    }

    /**
     * Every F16 and BF16 bit pattern (signalling NaNs included) widened to F32 and F64: the chunked
     * path (a contiguous source) gives the element path's bits (the same values through a strided view).
     */
    @Test
    void everySixteenBitPatternWidensAsTheElementPathDoes() {
        short[] all = new short[65536];
        for (int i = 0; i < all.length; i++) {
            all[i] = (short) i;
        }
        for (DType from : new DType[]{DType.F16, DType.BF16}) {
            try (Tensor pairs = Tensor.allocate(from, all.length, 2); Tensor contiguous = Tensor.allocate(from, all.length)) {
                Tensor strided = pairs.select(1, 0);
                strided.copyFrom(all);      // raw patterns, signalling NaNs included, in both layouts
                contiguous.copyFrom(all);
                {
                    for (DType to : new DType[]{DType.F32, DType.F64}) {
                        try (Tensor chunked = contiguous.to(to); Tensor element = strided.to(to)) {
                            float[] wantF = to == DType.F32 ? element.toFloatArray() : null;  // raw stored floats
                            float[] gotF = to == DType.F32 ? chunked.toFloatArray() : null;
                            for (int i = 0; i < all.length; i++) {
                                long want = to == DType.F32 ? Float.floatToRawIntBits(wantF[i]) : Double.doubleToRawLongBits(element.getFlat(i));
                                long got = to == DType.F32 ? Float.floatToRawIntBits(gotF[i]) : Double.doubleToRawLongBits(chunked.getFlat(i));
                                assertEquals(want, got, from + " -> " + to + " pattern 0x" + Integer.toHexString(i));
                            }
                        }
                    }
                }
            }
        }
    }

    @Test
    void shortArraysAreTheRawSixteenBitPatternsInEveryLayout() {
        short[] bits = {0x3c00, (short) 0xfc00, 0x7e01, 0x0001, (short) 0x8000, 0x4248};
        for (DType dt : new DType[]{DType.F16, DType.BF16}) {
            try (Tensor t = Tensor.allocate(dt, 2, 3)) {
                t.copyFrom(bits);
                assertArrayEquals(bits, t.toShortArray(), dt + " contiguous");
                Tensor transposed = t.permute(1, 0);
                short[] expected = {bits[0], bits[3], bits[1], bits[4], bits[2], bits[5]};
                assertArrayEquals(expected, transposed.toShortArray(), dt + " through a strided view");
                transposed.copyFrom(bits);
                assertArrayEquals(bits, transposed.toShortArray(), dt + " written through a strided view");
                double one = dt == DType.F16 ? Rounding.halfToDouble((short) 0x3c00) : Rounding.bf16ToDouble((short) 0x3c00);
                assertEquals(one, t.get(0, 0), dt + ": the patterns are the tensor's values");
            }
        }
        try (Tensor f = Tensor.allocate(DType.F32, 2)) {
            assertThrows(SeqkException.DTypeMismatch.class, f::toShortArray);
            assertThrows(SeqkException.DTypeMismatch.class, () -> f.copyFrom(new short[2]));
        }
    }

    @Test
    void contiguousIsAViewWhenPossibleElseACopy() {
        long before = Tensor.openBytes();
        try (Tensor t = Tensor.of(DType.F32, new double[]{1, 2, 3, 4, 5, 6}, 2, 3)) {
            Tensor same = t.contiguous();
            assertEquals(t.segment().address(), same.segment().address(), "already contiguous: the same memory");
            try (Tensor copy = t.permute(1, 0).contiguous()) {
                assertTrue(copy.isContiguous());
                assertArrayEquals(new double[]{1, 4, 2, 5, 3, 6}, copy.toDoubleArray());
            }
        }
        assertEquals(before, Tensor.openBytes());
    }

    @Test
    void floatArraysRoundTripExactlyAndRoundIntoOtherDtypes() {
        float[] f = {1.5f, Float.NaN, -0.0f, 1e-40f, 65520f, -3.25f};
        try (Tensor t = Tensor.of(f, 2, 3)) {
            float[] back = t.toFloatArray();
            for (int i = 0; i < f.length; i++) {
                assertEquals(Float.floatToRawIntBits(f[i]), Float.floatToRawIntBits(back[i]), "element " + i);
            }
            try (Tensor h = Tensor.allocate(DType.F16, 3, 2)) {
                Tensor view = h.permute(1, 0);
                view.copyFrom(f);
                assertEquals(Double.POSITIVE_INFINITY, view.get(1, 1), "65520 rounds to infinity in F16");
                assertEquals(1.5, view.get(0, 0));
                assertArrayEquals(new float[]{1.5f, Float.NaN, -0.0f, 0f, Float.POSITIVE_INFINITY, -3.25f}, view.toFloatArray());
            }
            assertThrows(SeqkException.ShapeMismatch.class, () -> t.copyFrom(new float[5]));
        }
    }

    @Test
    void reshapeIsAViewOfContiguousTensorsOnly() {
        long before = Tensor.openBytes();
        Tensor t = Tensor.of(new float[]{1, 2, 3, 4, 5, 6}, 2, 3);
        Tensor r = t.reshape(3, 2);
        assertEquals(4.0, r.get(1, 1));
        r.set(40, 1, 1);
        assertEquals(40.0, t.get(1, 0), "a view: writes show through");
        var e = assertThrows(SeqkException.Unsupported.class, () -> t.permute(1, 0).reshape(6));
        assertTrue(e.getMessage().contains("not contiguous"), e.getMessage());
        assertThrows(SeqkException.ShapeMismatch.class, () -> t.reshape(4, 2));
        r.close();
        assertTrue(t.isClosed(), "a reshape shares its parent's lifetime");
        assertEquals(before, Tensor.openBytes());
    }

    @Test
    void copyFromChecksShapesAndReadOnlyMemory() {
        try (Tensor a = Tensor.allocate(DType.F32, 2, 3); Tensor b = Tensor.allocate(DType.F32, 3, 2)) {
            assertThrows(SeqkException.ShapeMismatch.class, () -> a.copyFrom(b));
            assertThrows(SeqkException.ShapeMismatch.class, () -> a.copyFrom((Tensor) null));
            Tensor readOnly = Tensor.wrap(a.segment().asReadOnly(), DType.F32, 2, 3);
            assertThrows(SeqkException.Unsupported.class, () -> readOnly.copyFrom(a));
            assertThrows(SeqkException.Unsupported.class, () -> readOnly.set(1.0, 0, 0));
        }
    }
}
