package dev.seqkernels.gpu;

import dev.seqkernels.Backends;
import dev.seqkernels.Compare;
import dev.seqkernels.DType;
import dev.seqkernels.TestData;
import dev.seqkernels.Tensor;
import dev.seqkernels.ops.CausalAlignment;
import dev.seqkernels.ops.Mask;
import dev.seqkernels.ops.MhaGradients;
import dev.seqkernels.ops.MhaResult;
import dev.seqkernels.ops.MultiHeadAttention;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Multi-head attention of an F16 or BF16 op keeps 16-bit storage end to end
 * ({@link AttentionGpu#mhaInteriorType}): the projections are 16-bit GEMMs accumulating in fp32,
 * the attention runs on the tensor-core kernels, and the backward's GEMMs read 16-bit operands;
 * judged by DESIGN's 2x rule against {@code cpu-same-precision}, which rounds at the same points.
 */
@DeviceDependent
class SixteenBitMhaTest {

    @Test
    void theInteriorTypeRule() {
        AttentionGpu.KernelChoice auto = AttentionGpu.KernelChoice.AUTO;
        AttentionGpu.KernelChoice v1 = AttentionGpu.KernelChoice.V1;
        assertEquals(DType.BF16, AttentionGpu.mhaInteriorType(DType.BF16, auto));
        assertEquals(DType.F16, AttentionGpu.mhaInteriorType(DType.F16, auto));
        assertEquals(DType.F32, AttentionGpu.mhaInteriorType(DType.F32, auto), "F32 stays F32");
        assertEquals(DType.F32, AttentionGpu.mhaInteriorType(DType.BF16, v1), "v1's interior is all F32");
        assertEquals(DType.F32, AttentionGpu.mhaInteriorType(DType.F16, v1), "v1's interior is all F32");
    }

    /**
     * A driver wrapper records every GEMM and every kernel the op resolves (a fresh backend per
     * case, so each name is resolved when first used). 16-bit under AUTO: every GEMM reads 16-bit
     * operands; the projections (one input GEMM for self-attention, three otherwise, and the
     * output's), the backward's dMerged and its input gradients write 16 bits, its weight gradients
     * fp32; the attention runs on the kernels its rules
     * pick for the device (tensor cores on sm_80+; v1's 16-bit instances before, which read dMerged
     * widened to f32: runBackward refuses a dout of another type) and dq, dk and dv are rounded
     * once. F32, and 16-bit under V1: F32 operands and results, v1's attention.
     */
    @ParameterizedTest
    @CsvSource({"BF16, AUTO, true", "BF16, AUTO, false", "F16, AUTO, true", "BF16, V1, true", "F32, AUTO, false"})
    void everyGemmAndKernelWorksInTheInteriorType(DType dt, AttentionGpu.KernelChoice choice, boolean selfAttention) {
        TestData data = new TestData();
        List<Gemm> gemms = new CopyOnWriteArrayList<>();
        List<String> resolved = new CopyOnWriteArrayList<>();
        Driver recording = RecordingDriver.around(GpuTargets.driver(), (method, args) -> {
            if (method.equals("gemm")) {
                gemms.add((Gemm) args[0]);
            } else if (method.equals("function")) {
                resolved.add((String) args[1]);
            }
        });
        GpuBackend backend = new GpuBackend(recording);
        backend.attentionPath().kernelChoice(choice);
        DType interior = AttentionGpu.mhaInteriorType(dt, choice);
        String sfx = RecurrentGpu.suffix(interior);
        boolean sixteenBit = interior != DType.F32;
        int major = recording.properties().computeMajor();
        // Heads of 8: the tensor-core pair wherever the device has mma.sync for 16 bits (sm_80+).
        String forwardKernel = AttentionGpu.forwardKernel(interior, 8, 8, major, choice, false);
        String backwardKernel = AttentionGpu.backwardKernel(interior, 8, 8, major, choice, false);
        boolean tensorCores = !backwardKernel.equals("attn_bwd");
        assertEquals(sixteenBit && major >= 8, tensorCores, "the rule at sm_" + major);
        MultiHeadAttention op = MultiHeadAttention.builder().embedDim(16).numHeads(2).kdim(selfAttention ? 16 : 10)
                .vdim(selfAttention ? 16 : 6).causal(CausalAlignment.TOP_LEFT).backend(backend).build();
        Map<String, Tensor> p = data.params(dt, 0.3, op.parameterShapes());
        Tensor query = data.tensor(dt, 1, 9, 2, 16);
        Tensor key = selfAttention ? query : data.tensor(dt, 1, 11, 2, 10);
        Tensor value = selfAttention ? query : data.tensor(dt, 1, 11, 2, 6);
        String what = dt + " " + choice + (selfAttention ? " self-attention" : " separate projections");
        try (MhaResult r = op.forward(p, MultiHeadAttention.inputs(query, key, value))) {
            List<Gemm> forward = List.copyOf(gemms);
            assertEquals(selfAttention ? 2 : 4, forward.size(), what + ": forward GEMMs " + forward);
            for (Gemm g : forward) {
                assertEquals(interior, g.inputType(), what + " forward GEMM operands: " + g);
            }
            for (Gemm g : forward) {
                assertEquals(interior, g.outputType(), what + ": every projection writes the interior type: " + g);
            }
            assertTrue(resolved.contains(forwardKernel + "_" + sfx) || resolved.contains(forwardKernel + "_nobias_" + sfx),
                    what + ": " + forwardKernel + " in " + resolved);
            gemms.clear();
            resolved.clear();
            try (MhaGradients g = op.backward(p, r, data.tensor(dt, 1, 9, 2, 16), null)) {
                List<Gemm> backward = List.copyOf(gemms);
                assertEquals(8, backward.size(), what + ": backward GEMMs " + backward);
                for (Gemm b : backward) {
                    assertEquals(interior, b.inputType(), what + " backward GEMM operands: " + b);
                }
                assertEquals(sixteenBit ? 4 : 0, backward.stream().filter(b -> b.outputType() != DType.F32).count(),
                        what + ": dMerged (dy Wo) and the three input gradients are written in 16 bits, the weight gradients"
                                + " in fp32: " + backward);
                // Without an explicit mask, heads of 8 in rows of 16-byte multiples (packed views included):
                // the tensor-core backward's no-bias instances, after delta from the merged output.
                List<String> backwardKernels = tensorCores
                        ? List.of("attn_bwd_delta_" + sfx, "attn_bwd_dq_tc64_nobias_" + sfx, "attn_bwd_dkdv_tc64_nobias_" + sfx)
                        : List.of("attn_bwd_dq_" + sfx, "attn_bwd_dkdv_" + sfx);
                assertTrue(resolved.containsAll(backwardKernels), what + ": " + backwardKernels + " in " + resolved);
                assertEquals(sixteenBit, resolved.contains("cast_f32_to_" + RecurrentGpu.suffix(dt)),
                        what + ": dq, dk and dv rounded once (in the 16-bit interior only): " + resolved);
            }
        }
    }

    /**
     * Forward and every gradient by the 2x rule against the plain same-precision implementation,
     * for both layouts, GQA, separate and packed projections, masks, the attention weights and
     * their gradient (which the v1 backward takes, reading the 16-bit q, k and v); and the 16-bit
     * interior really changes the result against v1's F32 one, which the tolerance table judges (it rounds once).
     */
    @ParameterizedTest
    @CsvSource({"BF16, true, false", "F16, false, true", "BF16, false, true"})
    void judgedByTheTwoTimesRule(DType dt, boolean selfAttention, boolean weights) {
        TestData data = new TestData();
        MultiHeadAttention.Builder b = MultiHeadAttention.builder().embedDim(24).numHeads(4).numKvHeads(2)
                .kdim(selfAttention ? 24 : 10).vdim(selfAttention ? 24 : 14).needWeights(weights).batchFirst(!selfAttention)
                .causal(selfAttention ? CausalAlignment.BOTTOM_RIGHT : CausalAlignment.NONE);
        GpuBackend pinned = GpuTargets.newBackend();
        pinned.attentionPath().kernelChoice(AttentionGpu.KernelChoice.V1);
        MultiHeadAttention gpu = b.backend(GpuTargets.sharedBackend()).build();
        MultiHeadAttention v1 = b.backend(pinned).build();
        MultiHeadAttention plain = b.backend(Backends.CPU_SAME_PRECISION).build();
        MultiHeadAttention exact = b.backend("cpu").build();
        Map<String, Tensor> p = data.params(dt, 0.4, gpu.parameterShapes());
        Map<String, Tensor> p64 = new LinkedHashMap<>();
        p.forEach((n, t) -> p64.put(n, t.to(DType.F64)));
        int lq = 13;
        int lk = selfAttention ? 13 : 21;
        Tensor query = selfAttention ? data.tensor(dt, 1, lq, 3, 24) : data.tensor(dt, 1, 3, lq, 24);
        Tensor key = selfAttention ? query : data.tensor(dt, 1, 3, lk, 10);
        Tensor value = selfAttention ? query : data.tensor(dt, 1, 3, lk, 14);
        double[] pad = new double[3 * lk];
        pad[lk - 1] = 1;
        pad[lk + 2] = 1;
        Mask kpm = Mask.blocked(Tensor.of(DType.BOOL, pad, 3, lk));
        Tensor dOut = data.tensor(dt, 1, query.shape());
        Tensor dW = weights ? data.tensor(dt, 1, 3, lq, lk) : null;
        String tag = dt + (selfAttention ? " self-attention" : " separate projections") + (weights ? " weights " : " ") + data;
        List<String> failures = new ArrayList<>();
        try (MhaResult got = gpu.forward(p, MultiHeadAttention.inputs(query, key, value).keyPaddingMask(kpm));
             MhaResult base = plain.forward(p, MultiHeadAttention.inputs(query, key, value).keyPaddingMask(kpm));
             MhaResult pinnedOut = v1.forward(p, MultiHeadAttention.inputs(query, key, value).keyPaddingMask(kpm));
             MhaResult want = exact.forward(p64, MultiHeadAttention.inputs(query.to(DType.F64), key.to(DType.F64), value.to(DType.F64))
                     .keyPaddingMask(kpm))) {
            rule(failures, "out", got.out(), base.out(), want.out(), dt);
            if (weights) {
                rule(failures, "attn_weights", got.attnWeights(), base.attnWeights(), want.attnWeights(), dt);
            }
            assertFalse(Arrays.equals(got.out().toDoubleArray(), pinnedOut.out().toDoubleArray()),
                    tag + ": the 16-bit interior rounds q, k, v, P and merged, which v1's F32 interior does not");
            RecurrentGpuTest.check(tag + " v1 out", pinnedOut.out(), want.out(), dt);  // v1 rounds once: the table
            try (MhaGradients g = gpu.backward(p, got, dOut, dW);
                 MhaGradients pg = plain.backward(p, base, dOut, dW);
                 MhaGradients wg = exact.backward(p64, want, dOut.to(DType.F64), dW == null ? null : dW.to(DType.F64));
                 MhaGradients vg = v1.backward(p, pinnedOut, dOut, dW)) {
                RecurrentGpuTest.check(tag + " v1 dquery", vg.dQuery(), wg.dQuery(), dt);
                RecurrentGpuTest.check(tag + " v1 dout_proj.weight", vg.params().get("out_proj.weight"), wg.params().get("out_proj.weight"), dt);
                rule(failures, "dquery", g.dQuery(), pg.dQuery(), wg.dQuery(), dt);
                rule(failures, "dkey", g.dKey(), pg.dKey(), wg.dKey(), dt);
                rule(failures, "dvalue", g.dValue(), pg.dValue(), wg.dValue(), dt);
                for (String name : p.keySet()) {
                    rule(failures, "d" + name, g.params().get(name), pg.params().get(name), wg.params().get(name), dt);
                }
            }
        }
        assertTrue(failures.isEmpty(), tag + ": " + failures);
    }

    private static void rule(List<String> failures, String what, Tensor got, Tensor plain, Tensor exact, DType dtype) {
        Compare.TwoTimes r = Compare.twiceThePlain(got.toDoubleArray(), plain.toDoubleArray(), exact.toDoubleArray(), dtype);
        if (r.firstBad() != null) {
            failures.add(what + ": " + r.firstBad());
        }
    }
}
