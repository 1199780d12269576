package dev.seqkernels.gpu;

import dev.seqkernels.Backends;
import dev.seqkernels.Compare;
import dev.seqkernels.DType;
import dev.seqkernels.TestData;
import dev.seqkernels.Tensor;
import dev.seqkernels.ops.Attention;
import dev.seqkernels.ops.AttentionGradients;
import dev.seqkernels.ops.AttentionResult;
import dev.seqkernels.ops.CausalAlignment;
import dev.seqkernels.ops.Mask;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The tensor-core attention backward (attn_bwd_dq_tc64/128, attn_bwd_dkdv_tc64/128, each in its
 * general and its no-bias instance) on the emulator: its selection rules on both sides, and its gradients against the double reference by
 * FlashAttention's 2x rule (the plain same-precision implementation: the CPU reference rounding
 * dout, P and dS where the kernels do), the rule v1's backward meets too. Not against v1 by the
 * tolerance table: v1 keeps dout, P and dS in fp32, so the two differ by the 16-bit roundings
 * the rule allows, beyond the table's element bound on some seeds.
 */
@DeviceDependent
class TensorCoreBackwardTest {

    /** Both sides of every condition of the backward kernel choice. */
    @Test
    void backwardKernelSelectionRule() {
        var auto = AttentionGpu.KernelChoice.AUTO;
        assertEquals("attn_bwd_tc64", AttentionGpu.backwardKernel(DType.BF16, 64, 64, 9, auto, false));
        assertEquals("attn_bwd_tc64", AttentionGpu.backwardKernel(DType.F16, 36, 20, 8, auto, false));
        assertEquals("attn_bwd_tc128", AttentionGpu.backwardKernel(DType.BF16, 65, 64, 9, auto, false), "D above 64");
        assertEquals("attn_bwd_tc128", AttentionGpu.backwardKernel(DType.F16, 64, 65, 8, auto, false), "Dv above 64");
        assertEquals("attn_bwd_tc128", AttentionGpu.backwardKernel(DType.BF16, 128, 128, 9, auto, false));
        assertEquals("attn_bwd", AttentionGpu.backwardKernel(DType.BF16, 129, 64, 9, auto, false), "D above 128");
        assertEquals("attn_bwd", AttentionGpu.backwardKernel(DType.BF16, 64, 129, 9, auto, false), "Dv above 128");
        assertEquals("attn_bwd", AttentionGpu.backwardKernel(DType.F32, 64, 64, 9, auto, false), "F32 storage");
        assertEquals("attn_bwd", AttentionGpu.backwardKernel(DType.F16, 64, 64, 7, auto, false), "no mma.m16n8k16 before sm_80");
        assertEquals("attn_bwd", AttentionGpu.backwardKernel(DType.F16, 64, 64, 9, AttentionGpu.KernelChoice.V1, false), "pinned to v1");
        assertEquals("attn_bwd", AttentionGpu.backwardKernel(DType.F16, 64, 64, 9, auto, true), "the probabilities are an output");
    }

    /**
     * Several key blocks and query tiles (tiles no mask touches beside masked ones), both causal
     * alignments with key and query lengths, GQA (dk and dv summed over a group of 2 and 3 query
     * heads), an additive mask (every tile masked), and element loads (D = 36, Dv = 20); the
     * 128 kernels (whose dk/dv kernel walks the query tiles twice) at D = Dv = 128 with lengths and
     * causal, without any mask (tiles no mask touches, in both kernels), at D = 72, Dv = 100
     * (element loads) with a mask, and at D = 72, Dv = 104 without one. Without an explicit mask and
     * with D and Dv multiples of 8 the no-bias instances run (dq's at 128 with key tiles of 16: 130
     * keys end in a tile of 2; zero columns past D and Dv at 72 / 104 and at 40 / 24), else the
     * general ones; the test checks which.
     */
    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"F16", "BF16"})
    void tensorCoreBackwardMeetsTheTwoTimesRuleAsV1Does(DType dtype) {
        GpuTargets.assumeTensorCores("the tensor-core backward");
        TestData data = new TestData();
        backwardCase(data, dtype, 2, 2, 1, 80, 200, 64, 64, CausalAlignment.BOTTOM_RIGHT, new int[]{200, 77}, new int[]{80, 70}, false);
        backwardCase(data, dtype, 1, 2, 2, 70, 130, 64, 48, CausalAlignment.NONE, null, null, true);
        backwardCase(data, dtype, 1, 3, 1, 65, 97, 40, 24, CausalAlignment.TOP_LEFT, new int[]{90}, new int[]{61}, false);
        backwardCase(data, dtype, 1, 2, 2, 70, 150, 36, 20, CausalAlignment.NONE, null, null, false);
        backwardCase(data, dtype, 2, 2, 1, 50, 140, 128, 128, CausalAlignment.TOP_LEFT, new int[]{140, 100}, new int[]{50, 37}, false);
        backwardCase(data, dtype, 1, 2, 1, 40, 130, 128, 128, CausalAlignment.NONE, null, null, false);
        backwardCase(data, dtype, 1, 2, 1, 40, 70, 72, 100, CausalAlignment.NONE, null, null, true);
        backwardCase(data, dtype, 2, 2, 1, 40, 90, 72, 104, CausalAlignment.BOTTOM_RIGHT, new int[]{90, 33}, null, false);
    }

    /**
     * Empty ranges: no key (Lk = 0: out 0, dq 0, dk and dv empty) and no query row (Lq = 0: out and
     * dq empty, dk and dv 0), at 64 and 128, forward and backward as the reference gives them.
     */
    @Test
    void noKeyOrNoQueryRowGivesTheReferencesZeros() {
        TestData data = new TestData();
        for (int d : new int[]{64, 128}) {
            for (int[] lengths : new int[][]{{5, 0}, {0, 7}}) {
                Tensor q = data.tensor(DType.BF16, 1, 1, 2, lengths[0], d);
                Tensor k = data.tensor(DType.BF16, 1, 1, 2, lengths[1], d);
                Tensor v = data.tensor(DType.BF16, 1, 1, 2, lengths[1], d);
                Tensor seed = data.tensor(DType.BF16, 1, 1, 2, lengths[0], d);
                Attention tc = Attention.builder().backend(GpuTargets.newBackend()).build();
                Attention exact = Attention.builder().backend("cpu").build();
                String tag = "D=" + d + " Lq=" + lengths[0] + " Lk=" + lengths[1];
                try (AttentionResult fg = tc.forward(Attention.inputs(q, k, v));
                     AttentionResult fw = exact.forward(Attention.inputs(q.to(DType.F64), k.to(DType.F64), v.to(DType.F64)));
                     AttentionGradients got = tc.backward(fg, seed); AttentionGradients want = exact.backward(fw, seed.to(DType.F64))) {
                    Tensor[][] pairs = {{fg.out(), fw.out()}, {got.dq(), want.dq()}, {got.dk(), want.dk()}, {got.dv(), want.dv()}};
                    for (Tensor[] p : pairs) {
                        assertEquals(java.util.Arrays.toString(p[1].shape()), java.util.Arrays.toString(p[0].shape()), tag);
                        assertEquals(java.util.Arrays.toString(p[1].toDoubleArray()), java.util.Arrays.toString(p[0].toDoubleArray()), tag);
                    }
                }
            }
        }
    }

    /**
     * At 64, where both dq instances take key tiles of 64, the no-bias instances give the general
     * ones' bits on tiles a mask touches: the same inputs without a mask (the _nobias instances run)
     * and with an all-zero additive mask (the general ones), causal with key and query lengths, a
     * shape where every tile either kernel computes straddles the diagonal or a length (their loads
     * and their masked steps compared). Tiles no mask touches are not compared: the general instance
     * with a mask sums each tile's products apart before adding them, the no-bias one adds them as
     * they come. At 128 the no-bias dq takes tiles of 16 where the general one takes 32, so even a
     * masked tile groups keys differently: there the 2x rule judges it
     * (tensorCoreBackwardMeetsTheTwoTimesRuleAsV1Does).
     */
    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"F16", "BF16"})
    void theNoBiasInstancesGiveTheGeneralOnesBitsAt64(DType dtype) {
        GpuTargets.assumeTensorCores("the tensor-core backward");
        TestData data = new TestData();
        Tensor q = data.tensor(dtype, 1, 1, 2, 70, 64);
        Tensor k = data.tensor(dtype, 1, 1, 2, 130, 64);
        Tensor v = data.tensor(dtype, 1, 1, 2, 130, 64);
        Tensor seed = data.tensor(dtype, 1, 1, 2, 70, 64);
        List<String> resolved = new CopyOnWriteArrayList<>();
        GpuBackend recorded = new GpuBackend(RecordingDriver.recordingFunctions(GpuTargets.driver(), resolved));
        Attention op = Attention.builder().causal(CausalAlignment.TOP_LEFT).backend(recorded).build();
        int[] keyLengths = {117};
        int[] queryLengths = {61};
        String tag = dtype + " D=64 " + data;
        try (Tensor zeros = Tensor.allocate(DType.F32, 70, 130);
             AttentionResult fn = op.forward(Attention.inputs(q, k, v).keyLengths(keyLengths).queryLengths(queryLengths));
             AttentionGradients noBias = op.backward(fn, seed);
             AttentionResult fm = op.forward(Attention.inputs(q, k, v).keyLengths(keyLengths).queryLengths(queryLengths)
                     .mask(Mask.additive(zeros)));
             AttentionGradients general = op.backward(fm, seed)) {
            String sfx = RecurrentGpu.suffix(dtype);
            for (String kernel : List.of("attn_bwd_dq_tc64", "attn_bwd_dkdv_tc64")) {
                assertTrue(resolved.contains(kernel + "_nobias_" + sfx) && resolved.contains(kernel + "_" + sfx),
                        tag + ": both instances of " + kernel + " ran (" + resolved + ")");
            }
            Tensor[][] pairs = {{noBias.dq(), general.dq()}, {noBias.dk(), general.dk()}, {noBias.dv(), general.dv()}};
            String[] names = {"dq", "dk", "dv"};
            for (int x = 0; x < 3; x++) {
                double[] got = pairs[x][0].toDoubleArray();
                double[] want = pairs[x][1].toDoubleArray();
                assertEquals(want.length, got.length, tag + " " + names[x]);
                for (int i = 0; i < want.length; i++) {
                    assertEquals(Double.doubleToRawLongBits(want[i]), Double.doubleToRawLongBits(got[i]),
                            tag + " " + names[x] + "[" + i + "]: the no-bias instance's bits (" + got[i] + ", general " + want[i] + ")");
                }
            }
        }
    }

    private static void backwardCase(TestData data, DType dtype, int batch, int hq, int hkv, int lq, int lk, int d, int dv,
                                     CausalAlignment causal, int[] keyLengths, int[] queryLengths, boolean additiveMask) {
        Tensor q = data.tensor(dtype, 1, batch, hq, lq, d);
        Tensor k = data.tensor(dtype, 1, batch, hkv, lk, d);
        Tensor v = data.tensor(dtype, 1, batch, hkv, lk, dv);
        Tensor add = additiveMask ? data.tensor(DType.F32, 1, lq, lk) : null;
        List<String> resolved = new CopyOnWriteArrayList<>();
        GpuBackend tensorCores = new GpuBackend(RecordingDriver.recordingFunctions(GpuTargets.driver(), resolved));
        GpuBackend plainPort = GpuTargets.newBackend();
        plainPort.attentionPath().kernelChoice(AttentionGpu.KernelChoice.V1);
        String tag = "tc backward " + dtype + " D=" + d + " Dv=" + dv + " Lq=" + lq + " Lk=" + lk + " " + causal + " " + data;
        Attention.Inputs in = Attention.inputs(q, k, v).keyLengths(keyLengths).queryLengths(queryLengths);
        Attention.Inputs ref = Attention.inputs(q.to(DType.F64), k.to(DType.F64), v.to(DType.F64)).keyLengths(keyLengths)
                .queryLengths(queryLengths);
        if (add != null) {
            in.mask(Mask.additive(add));
            ref.mask(Mask.additive(add.to(DType.F64)));
        }
        Attention tc = Attention.builder().causal(causal).backend(tensorCores).build();
        Attention v1 = Attention.builder().causal(causal).backend(plainPort).build();
        Attention plain = Attention.builder().causal(causal).backend(Backends.CPU_SAME_PRECISION).build();
        Attention exact = Attention.builder().causal(causal).backend("cpu").build();
        Tensor seed = data.tensor(dtype, 1, batch, hq, lq, dv);
        try (AttentionResult fg = tc.forward(in); AttentionResult f1 = v1.forward(in); AttentionResult fp = plain.forward(in);
             AttentionResult fw = exact.forward(ref);
             AttentionGradients got = tc.backward(fg, seed); AttentionGradients byV1 = v1.backward(f1, seed);
             AttentionGradients byPlain = plain.backward(fp, seed); AttentionGradients want = exact.backward(fw, seed.to(DType.F64))) {
            boolean noBias = add == null && d % 8 == 0 && dv % 8 == 0;
            String size = Math.max(d, dv) <= 64 ? "64" : "128";
            String sfx = RecurrentGpu.suffix(dtype);
            String dq = "attn_bwd_dq_tc" + size + (noBias ? "_nobias_" : "_") + sfx;
            String dkdv = "attn_bwd_dkdv_tc" + size + (noBias ? "_nobias_" : "_") + sfx;
            String delta = "attn_bwd_delta_" + sfx;
            assertTrue(resolved.contains(delta) && resolved.contains(dq) && resolved.contains(dkdv), tag
                    + ": the tensor-core backward ran in the instances the rule picks, " + delta + ", " + dq + " and " + dkdv + " (" + resolved + ")");
            assertEquals(3, resolved.stream().filter(name -> name.startsWith("attn_bwd")).distinct().count(), tag + ": and no other (" + resolved + ")");
            assertFalse(resolved.contains("attn_bwd_dq_" + RecurrentGpu.suffix(dtype)), tag + ": v1's backward did not (" + resolved + ")");
            Tensor[][] grads = {{got.dq(), byV1.dq(), byPlain.dq(), want.dq()}, {got.dk(), byV1.dk(), byPlain.dk(), want.dk()},
                    {got.dv(), byV1.dv(), byPlain.dv(), want.dv()}};
            String[] names = {"dq", "dk", "dv"};
            for (int x = 0; x < 3; x++) {
                String what = tag + " " + names[x];
                Compare.TwoTimes rule = Compare.twiceThePlain(grads[x][0].toDoubleArray(), grads[x][2].toDoubleArray(),
                        grads[x][3].toDoubleArray(), dtype);
                assertNull(rule.firstBad(), () -> what + ": " + rule.firstBad());
                Compare.TwoTimes v1Rule = Compare.twiceThePlain(grads[x][1].toDoubleArray(), grads[x][2].toDoubleArray(),
                        grads[x][3].toDoubleArray(), dtype);
                assertNull(v1Rule.firstBad(), () -> what + " by v1: " + v1Rule.firstBad());
            }
        }
    }
}
