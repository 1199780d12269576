package dev.seqkernels.gpu;

import dev.seqkernels.Backends;
import dev.seqkernels.Compare;
import dev.seqkernels.DType;
import dev.seqkernels.TestData;
import dev.seqkernels.Tensor;
import dev.seqkernels.ops.Gru;
import dev.seqkernels.ops.Lstm;
import dev.seqkernels.ops.RecurrentGradients;
import dev.seqkernels.ops.RecurrentOp;
import dev.seqkernels.ops.RecurrentResult;
import dev.seqkernels.ops.Rnn;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * F16/BF16 recurrent ops on the tensor-core step path ({@link RecurrentGpu#stateType}): the state
 * is 16-bit and every forward GEMM multiplies 16-bit operands, so the results are judged by
 * DESIGN's 2x rule (error against the exact reference at most twice that of the plain
 * same-precision implementation, {@code cpu-same-precision}, which rounds h at the same point),
 * forward and backward, for the vectorized and fused cells of each kind over 17 steps.
 */
@PerBinding
class SixteenBitRecurrentTest {
    private static final int STEPS = 17;
    private static final int BATCH = 3;

    /**
     * The vectorized cells, each kind (RecurrentGpuTest judges its own cases, mostly v1's cells, by
     * the same rule over fewer steps).
     */
    static Stream<Arguments> casesAndDTypes() {
        Stream<RecurrentGpuTest.Case> vec4 = Stream.of(
                new RecurrentGpuTest.Case("lstm fused 2 layers bidirectional peepholes", b -> Lstm.builder().inputSize(5).hiddenSize(8)
                        .numLayers(2).bidirectional(true).peepholes(true).backend(b).build()),
                new RecurrentGpuTest.Case("lstm vec4 projection", b -> Lstm.builder().inputSize(5).hiddenSize(12).projSize(8).backend(b).build()),
                new RecurrentGpuTest.Case("gru fused bidirectional", b -> Gru.builder().inputSize(5).hiddenSize(8).bidirectional(true)
                        .backend(b).build()),
                new RecurrentGpuTest.Case("rnn fused relu 2 layers", b -> Rnn.builder().inputSize(5).hiddenSize(12).numLayers(2)
                        .nonlinearity("relu").backend(b).build()));
        return vec4.flatMap(c -> Stream.of(DType.F16, DType.BF16).map(dt -> Arguments.of(c, dt)));
    }

    @ParameterizedTest(name = "{0} {1}")
    @MethodSource("casesAndDTypes")
    void meetsTheTwoTimesRuleForwardAndBackward(RecurrentGpuTest.Case k, DType dtype) {
        TestData data = new TestData();
        RecurrentOp gpu = k.build().apply(GpuTargets.backend());
        RecurrentOp plain = k.build().apply("cpu-same-precision");
        RecurrentOp exact = k.build().apply("cpu");
        var c = gpu.config();
        int slots = c.numLayers() * c.numDirections();
        Map<String, Tensor> params = data.params(dtype, 0.4, c.parameterShapes());
        Map<String, Tensor> params64 = new LinkedHashMap<>();
        params.forEach((n, t) -> params64.put(n, t.to(DType.F64)));
        Tensor x = c.batchFirst() ? data.tensor(dtype, 1, BATCH, STEPS, c.inputSize()) : data.tensor(dtype, 1, STEPS, BATCH, c.inputSize());
        Tensor h0 = data.tensor(dtype, 0.5, slots, BATCH, c.stateSize());
        Tensor c0 = c.cell() == dev.seqkernels.ops.CellType.LSTM ? data.tensor(dtype, 0.5, slots, BATCH, c.hiddenSize()) : null;
        Tensor dOut = c.batchFirst() ? data.tensor(dtype, 1, BATCH, STEPS, c.outputSize()) : data.tensor(dtype, 1, STEPS, BATCH, c.outputSize());
        int[] lengths = {STEPS, 1, 11};
        String tag = k + " " + dtype + " " + GpuTargets.binding() + " " + data;
        try (RecurrentResult got = gpu.forward(params, x, h0, c0, lengths);
             RecurrentResult base = plain.forward(params, x, h0, c0, lengths);
             RecurrentResult want = exact.forward(params64, x.to(DType.F64), h0.to(DType.F64), c0 == null ? null : c0.to(DType.F64), lengths);
             RecurrentGradients gotGrad = gpu.backward(params, got, dOut, null, null);
             RecurrentGradients baseGrad = plain.backward(params, base, dOut, null, null);
             RecurrentGradients wantGrad = exact.backward(params64, want, dOut.to(DType.F64), null, null)) {
            List<String> failures = new ArrayList<>();
            rule(failures, "output", got.output(), base.output(), want.output(), dtype);
            rule(failures, "hn", got.hn(), base.hn(), want.hn(), dtype);
            if (want.cn() != null) {
                rule(failures, "cn", got.cn(), base.cn(), want.cn(), dtype);
            }
            rule(failures, "dx", gotGrad.dx(), baseGrad.dx(), wantGrad.dx(), dtype);
            rule(failures, "dh0", gotGrad.dh0(), baseGrad.dh0(), wantGrad.dh0(), dtype);
            if (wantGrad.dc0() != null) {
                rule(failures, "dc0", gotGrad.dc0(), baseGrad.dc0(), wantGrad.dc0(), dtype);
            }
            for (String name : wantGrad.params().keySet()) {
                rule(failures, "d" + name, gotGrad.params().get(name), baseGrad.params().get(name), wantGrad.params().get(name), dtype);
            }
            assertTrue(failures.isEmpty(), () -> tag + ": " + failures);
        }
    }

    private static void rule(List<String> failures, String what, Tensor got, Tensor plain, Tensor exact, DType dtype) {
        Compare.TwoTimes r = Compare.twiceThePlain(got.toDoubleArray(), plain.toDoubleArray(), exact.toDoubleArray(), dtype);
        if (r.firstBad() != null) {
            failures.add(what + ": " + r.firstBad());
        }
    }

    /**
     * Every GEMM of a 16-bit op's forward reads 16-bit operands (x and the layer below's output by
     * W_ih, h by W_hh, GRU's r*h by W_hn, m by W_hr) and writes fp32, except the LSTM projection,
     * which writes h itself in 16 bits; every backward GEMM reads 16-bit operands and writes fp32;
     * V1 pins F32 everywhere. A driver wrapper records each Gemm. Batch 20: the per-step loop.
     */
    @Test
    void theForwardGemmsMultiplySixteenBitOperands() {
        TestData data = new TestData();
        List<Gemm> gemms = new CopyOnWriteArrayList<>();
        Driver recording = RecordingDriver.around(GpuTargets.driver(), (method, args) -> {
                if (method.equals("gemm")) {
                    gemms.add((Gemm) args[0]);
                }
            });
        for (boolean v1 : new boolean[]{false, true}) {
            GpuBackend backend = new GpuBackend(recording);
            if (v1) {
                backend.recurrentPath().stepChoice(RecurrentGpu.StepChoice.V1);
            }
            List<RecurrentOp> ops = List.of(
                    Lstm.builder().inputSize(6).hiddenSize(8).projSize(4).numLayers(2).bidirectional(true).backend(backend).build(),
                    Gru.builder().inputSize(6).hiddenSize(8).numLayers(2).linearBeforeReset(false).backend(backend).build());
            for (RecurrentOp op : ops) {
                var c = op.config();
                Map<String, Tensor> w = data.params(DType.BF16, 0.3, c.parameterShapes());
                Tensor x = data.tensor(DType.BF16, 1, 4, 20, 6);
                String what = c.cell() + (v1 ? " v1" : "");
                gemms.clear();
                try (RecurrentResult r = op.forward(w, x, null, null, null)) {
                    List<Gemm> forward = List.copyOf(gemms);
                    assertTrue(forward.size() >= 4, what + ": " + forward.size() + " forward GEMMs");
                    for (Gemm g : forward) {
                        boolean projection = c.projSize() > 0 && g.m() == c.projSize();
                        assertEquals(v1 ? DType.F32 : DType.BF16, g.inputType(), what + " forward GEMM operands: " + g);
                        assertEquals(projection && !v1 ? DType.BF16 : DType.F32, g.outputType(), what + " forward GEMM result: " + g);
                    }
                    assertTrue(v1 || forward.stream().anyMatch(g -> c.projSize() > 0 && g.m() == c.projSize()) || c.projSize() == 0,
                            what + ": the projection GEMM was recognized");
                    gemms.clear();
                    try (RecurrentGradients g = op.backward(w, r, data.tensor(DType.BF16, 1, 4, 20, c.outputSize()), null, null)) {
                        assertTrue(gemms.size() >= 8, what + ": " + gemms.size() + " backward GEMMs");
                        for (Gemm b : gemms) {
                            assertEquals(v1 ? DType.F32 : DType.BF16, b.inputType(), what + " backward GEMM operands: " + b);
                            assertEquals(DType.F32, b.outputType(), what + " backward GEMM result: " + b);
                        }
                    }
                }
            }
        }
    }

    /** The 16-bit state changes the result against v1's F32 interior (so the step path really ran). */
    @Test
    void theSixteenBitStateDiffersFromTheF32Interior() {
        TestData data = new TestData();
        GpuBackend pinned = GpuTargets.newBackend();
        pinned.recurrentPath().stepChoice(RecurrentGpu.StepChoice.V1);
        RecurrentOp fast = Lstm.builder().inputSize(6).hiddenSize(8).backend(GpuTargets.newBackend()).build();
        RecurrentOp v1 = Lstm.builder().inputSize(6).hiddenSize(8).backend(pinned).build();
        Map<String, Tensor> w = data.params(DType.BF16, 0.4, fast.config().parameterShapes());
        Tensor x = data.tensor(DType.BF16, 1, STEPS, 20, 6);
        try (RecurrentResult a = fast.forward(w, x, null, null, null); RecurrentResult b = v1.forward(w, x, null, null, null)) {
            assertFalse(Arrays.equals(a.output().toDoubleArray(), b.output().toDoubleArray()), "the 16-bit state rounds h every step");
        }
    }
}
