package dev.seqkernels;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** FlashAttention's 2x rule ({@link Compare#twiceThePlain}) on both sides of each of its bounds. */
class CompareTwoTimesTest {
    /** A reference whose values are exact in F32 (so the storage floor is zero there). */
    private static final double[] REF = {1, -2, 0.5, 4, -0.25, 3, 1.5, -1};

    private static double[] plus(double[] a, double... d) {
        double[] r = a.clone();
        for (int i = 0; i < d.length; i++) {
            r[i] += d[i];
        }
        return r;
    }

    @Test
    void theLargestErrorMayBeTwiceThePlainOneAndNoMore() {
        double[] plain = plus(REF, 1e-3, -1e-3, 1e-3, -1e-3, 1e-3, -1e-3, 1e-3, -1e-3);
        // one element at 1.9x and 2.1x the plain's largest error, the rest exact (relative L2 lower)
        assertNull(Compare.twiceThePlain(plus(REF, 1.9e-3), plain, REF, DType.F32).firstBad());
        Compare.TwoTimes over = Compare.twiceThePlain(plus(REF, 2.1e-3), plain, REF, DType.F32);
        assertNotNull(over.firstBad());
        assertTrue(over.firstBad().startsWith("largest error"), over.firstBad());
    }

    @Test
    void theRelativeL2ErrorMayBeTwiceThePlainOneAndNoMore() {
        double[] plain = plus(REF, 4e-3);
        double[] spread = new double[REF.length];
        java.util.Arrays.fill(spread, 1.9e-3);
        assertNull(Compare.twiceThePlain(plus(REF, spread), plain, REF, DType.F32).firstBad(), "below the plain's largest error, L2 under 2x");
        java.util.Arrays.fill(spread, 3.5e-3);
        Compare.TwoTimes over = Compare.twiceThePlain(plus(REF, spread), plain, REF, DType.F32);
        assertTrue(over.firstBad() != null && over.firstBad().startsWith("relative L2"), String.valueOf(over.firstBad()));
    }

    @Test
    void theFloorIsTheReferencesOwnRoundingToTheStorageDtype() {
        double[] ref = {2 + 0x1p-8, 2, 3, 4};             // 2 + 2^-8 is not a bf16 value
        double[] stored = {2, 2, 3, 4};                   // its exact rounding to bf16, on which arithmetic is exact
        assertEquals(0, Compare.arithmeticError(stored, DType.BF16), "only the storage term allows the rounding");
        assertNull(Compare.twiceThePlain(stored, ref, ref, DType.BF16).firstBad(), "a plain error of zero still allows the rounding");
        Compare.TwoTimes f32 = Compare.twiceThePlain(stored, ref, ref, DType.F32);
        assertNotNull(f32.firstBad(), "in F32 the same difference is far above the floor");
        assertTrue(f32.firstBad().contains("rounding to F32"), f32.firstBad());
    }

    /**
     * FlashAttention's allowance for arithmetic on the stored reference: for 1.0 in BF16, (1 + 0.3)
     * rounds to 1.296875 and minus 0.3 to 0.99609375, 2^-8 off; for 0.125, (0.125 + 0.3) rounds to
     * 0.42578125 and minus 0.3 to 0.1259765625, 2^-10 off. So with 0.125 everywhere one element's
     * error may exceed twice the plain result's largest by 2 * 2^-10 and no more (0.125 is exact in
     * BF16: no storage term; 1.5 ulps at 0.125 are 1.5 * 2^-10, less; the other elements keep the
     * relative L2 error far under its bound).
     */
    @Test
    void theLargestErrorMayAlsoExceedByFlashAttentionsArithmeticAllowance() {
        assertEquals(0x1p-8, Compare.arithmeticError(new double[]{1.0}, DType.BF16));
        assertEquals(0, Compare.arithmeticError(new double[]{0.5}, DType.F64));
        double[] ref = new double[64];
        java.util.Arrays.fill(ref, 0.125);
        assertEquals(0x1p-10, Compare.arithmeticError(ref, DType.BF16));
        double[] plain = new double[64];
        java.util.Arrays.fill(plain, 0.125 + 0x1p-12);
        double[] out = ref.clone();
        out[5] = 0.125 + 2 * 0x1p-12 + 2 * 0x1p-10;
        assertNull(Compare.twiceThePlain(out, plain, ref, DType.BF16).firstBad(), "at the bound");
        out[5] += 0x1p-16;
        Compare.TwoTimes over = Compare.twiceThePlain(out, plain, ref, DType.BF16);
        assertTrue(over.firstBad() != null && over.firstBad().startsWith("largest error"), String.valueOf(over.firstBad()));
    }

    /**
     * Both results are stored in the dtype after their last operation: where the plain's store
     * happened to round onto the reference and ours, as near before it, rounded the other way, ours
     * is one ulp off against the plain's zero. 4.0 is exact in BF16 and (4 + 0.3) - 0.3 gives 4.0
     * back; the arithmetic term, from the 1.0s, is 2 * 2^-8. So the largest-error bound is twice the
     * plain's 2^-8 plus 1.5 ulps at 4 (2^-5 each): one ulp at the 4 passes (the bound without the
     * stores, 2 * 2^-8 + 2 * 2^-8, would refuse it), the bound passes, a little more does not.
     */
    @Test
    void theLargestErrorMayBeOneStoreRoundingAwayWhereThePlainsWasLucky() {
        double[] ref = new double[128];
        java.util.Arrays.fill(ref, 1.0);
        ref[0] = 4.0;
        double[] plain = new double[128];
        java.util.Arrays.fill(plain, 1.0 + 0x1p-8);
        plain[0] = 4.0;
        assertEquals(0x1p-8, Compare.arithmeticError(ref, DType.BF16));
        double[] out = plain.clone();
        out[0] = 4.0 + 0x1p-5;
        assertNull(Compare.twiceThePlain(out, plain, ref, DType.BF16).firstBad(), "one ulp");
        out[0] = 4.0 + 2 * 0x1p-8 + 1.5 * 0x1p-5;
        assertNull(Compare.twiceThePlain(out, plain, ref, DType.BF16).firstBad(), "at the bound");
        out[0] += 0x1p-12;
        Compare.TwoTimes over = Compare.twiceThePlain(out, plain, ref, DType.BF16);
        assertTrue(over.firstBad() != null && over.firstBad().startsWith("largest error") && over.firstBad().contains("1.5 ulps"),
                String.valueOf(over.firstBad()));
        out[0] = 4.0 + 0x1p-5;
        assertNotNull(Compare.twiceThePlain(out, plain, ref, DType.F32).firstBad(), "in F32 an ulp of BF16 is far above the bound");
    }

    /**
     * The store's spacing is taken where the values are, not only at the reference: reference 3.99
     * in BF16 (spacing 2^-6 there), the plain 0.013 low before its store and 0.005625 after it
     * (3.984375); ours 0.026 high before its store (exactly twice), 4.016, lands in the binade
     * above (spacing 2^-5) at 4.03125, 0.04125 off. The bound is 2 * 0.005625 + 1.5 * 2^-5 (with
     * the spacing at 3.99 it would be 0.0347); an infinity matched in place does not make it
     * infinite. The other elements (1.0, the plain and ours 2^-8 off) keep the relative L2 bound
     * out of the way.
     */
    @Test
    void theStoresSpacingIsTakenAtTheLargestValueOfAllThree() {
        double[] ref = new double[128];
        double[] plain = new double[128];
        java.util.Arrays.fill(ref, 1.0);
        java.util.Arrays.fill(plain, 1.0 + 0x1p-8);
        ref[0] = 3.99;
        plain[0] = 3.984375;
        ref[1] = plain[1] = Double.NEGATIVE_INFINITY;
        double[] out = plain.clone();
        out[0] = 4.03125;
        assertNull(Compare.twiceThePlain(out, plain, ref, DType.BF16).firstBad());
        out[0] = 4.125;
        Compare.TwoTimes over = Compare.twiceThePlain(out, plain, ref, DType.BF16);
        assertTrue(over.firstBad() != null && over.firstBad().startsWith("largest error"), String.valueOf(over.firstBad()));
    }

    @Test
    void nanNeverPassesAndMatchingInfinitiesDo() {
        double[] ref = {1, Double.NEGATIVE_INFINITY, 2};
        double[] plain = {1.01, Double.NEGATIVE_INFINITY, 2.01};
        assertNull(Compare.twiceThePlain(new double[]{1, Double.NEGATIVE_INFINITY, 2}, plain, ref, DType.F32).firstBad());
        assertNotNull(Compare.twiceThePlain(new double[]{Double.NaN, Double.NEGATIVE_INFINITY, 2}, plain, ref, DType.F32).firstBad());
        assertNotNull(Compare.twiceThePlain(new double[]{1, 0, 2}, plain, ref, DType.F32).firstBad(), "an infinity not matched");
        Compare.TwoTimes badPlain = Compare.twiceThePlain(ref.clone(), new double[]{1, Double.NaN, 2}, ref, DType.F32);
        assertTrue(badPlain.firstBad().contains("plain same-precision result is itself not finite"), badPlain.firstBad());
    }

    @Test
    void finiteOnlyReportsOnlyNonFiniteMismatches() {
        Compare.Result far = Compare.compare(new double[]{100, -3}, new double[]{1, 1}, Compare.FINITE_ONLY);
        assertNull(far.firstBad());
        assertEquals(99, far.maxAbs());
        assertNotNull(Compare.compare(new double[]{Double.NaN}, new double[]{1}, Compare.FINITE_ONLY).firstBad());
    }
}
