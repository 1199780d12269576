package dev.seqkernels.gpu;

import dev.seqkernels.Backends;
import dev.seqkernels.Compare;
import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.TestData;
import dev.seqkernels.Tensor;
import dev.seqkernels.ops.Activation;
import dev.seqkernels.ops.Direction;
import dev.seqkernels.ops.Gru;
import dev.seqkernels.ops.Lstm;
import dev.seqkernels.ops.RecurrentOp;
import dev.seqkernels.ops.RecurrentResult;
import dev.seqkernels.ops.Rnn;
import org.junit.jupiter.api.Test;
import dev.seqkernels.ops.CellType;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import dev.seqkernels.ops.RecurrentGradients;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Function;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The recurrent ops' GPU path (RecurrentGpu + cuda/recurrent.cu) through the binding under test
 * ({@link GpuTargets}) against the CPU reference, for every feature, with odd sizes and lengths
 * including 1 and T.
 */
@PerBinding
class RecurrentGpuTest {

    /** A configuration, built for a backend. */
    record Case(String name, Function<String, RecurrentOp> build) {
        @Override
        public String toString() {
            return name;
        }
    }

    static Stream<Case> cases() {
        return Stream.of(
                new Case("rnn tanh 2 layers bidirectional", b -> Rnn.builder().inputSize(5).hiddenSize(7).numLayers(2).bidirectional(true).backend(b).build()),
                new Case("rnn relu batch-first no bias", b -> Rnn.builder().inputSize(4).hiddenSize(6).nonlinearity("relu").batchFirst(true).bias(false).backend(b).build()),
                new Case("lstm", b -> Lstm.builder().inputSize(5).hiddenSize(37).backend(b).build()),
                new Case("lstm 2 layers bidirectional projection", b -> Lstm.builder().inputSize(4).hiddenSize(9).projSize(5).numLayers(2).bidirectional(true).backend(b).build()),
                new Case("lstm peepholes clip input-forget reverse", b -> Lstm.builder().inputSize(3).hiddenSize(6).peepholes(true).clip(1.2).inputForget(true).direction(Direction.REVERSE).backend(b).build()),
                new Case("lstm ONNX activations batch-first", b -> Lstm.builder().inputSize(3).hiddenSize(5).batchFirst(true).activations(
                        Activation.of(Activation.Kind.HARD_SIGMOID), Activation.of(Activation.Kind.SOFTSIGN), new Activation(Activation.Kind.SCALED_TANH, 0.7, 1.3)).backend(b).build()),
                new Case("gru linear-before-reset bidirectional", b -> Gru.builder().inputSize(5).hiddenSize(8).bidirectional(true).backend(b).build()),
                new Case("gru reset-before-linear 2 layers", b -> Gru.builder().inputSize(4).hiddenSize(6).numLayers(2).linearBeforeReset(false).backend(b).build()),
                new Case("gru ONNX activations clip no bias", b -> Gru.builder().inputSize(3).hiddenSize(5).bias(false).clip(0.9).linearBeforeReset(false)
                        .activations(new Activation(Activation.Kind.LEAKY_RELU, 0.1, 0), Activation.of(Activation.Kind.ELU)).backend(b).build()));
    }

    static Stream<Arguments> casesAndDTypes() {
        return cases().flatMap(c -> Stream.of(DType.F32, DType.F16, DType.BF16).map(dt -> Arguments.of(c, dt)));
    }

    @ParameterizedTest(name = "{0} {1}")
    @MethodSource("casesAndDTypes")
    void forwardMatchesTheReference(Case k, DType dtype) {
        TestData data = new TestData();
        RecurrentOp gpu = k.build().apply(GpuTargets.backend());
        RecurrentOp cpu = k.build().apply("cpu");
        RecurrentOp same = k.build().apply("cpu-same-precision");
        var c = gpu.config();
        int steps = 7;
        int batch = 3;
        int[] lengths = {7, 1, 4};
        int slots = c.numLayers() * c.numDirections();
        Map<String, Tensor> params = data.params(dtype, 0.6, c.parameterShapes());
        Tensor x = data.tensor(dtype, 1, c.batchFirst() ? new long[]{batch, steps, c.inputSize()} : new long[]{steps, batch, c.inputSize()});
        Tensor h0 = data.tensor(dtype, 0.5, slots, batch, c.stateSize());
        boolean lstm = c.cell() == dev.seqkernels.ops.CellType.LSTM;
        Tensor c0 = lstm ? data.tensor(dtype, 0.5, slots, batch, c.hiddenSize()) : null;
        Map<String, Tensor> params64 = new LinkedHashMap<>();
        params.forEach((n, t) -> params64.put(n, t.to(DType.F64)));
        try (RecurrentResult got = gpu.forward(params, x, h0, c0, lengths);
             RecurrentResult ref = cpu.forward(params64, x.to(DType.F64), h0.to(DType.F64), c0 == null ? null : c0.to(DType.F64), lengths);
             RecurrentResult plain = same.forward(params, x, h0, c0, lengths)) {
            String tag = k + " " + dtype + " " + GpuTargets.binding() + " " + data;
            judge(tag + " output", got.output(), ref.output(), plain.output(), dtype);
            judge(tag + " hn", got.hn(), ref.hn(), plain.hn(), dtype);
            if (lstm) {
                judge(tag + " cn", got.cn(), ref.cn(), plain.cn(), dtype);
            }
        }
    }

    @ParameterizedTest(name = "{0} {1}")
    @MethodSource("casesAndDTypes")
    void backwardMatchesTheReference(Case k, DType dtype) {
        TestData data = new TestData();
        RecurrentOp gpu = k.build().apply(GpuTargets.backend());
        RecurrentOp cpu = k.build().apply("cpu");
        RecurrentOp same = k.build().apply("cpu-same-precision");
        var c = gpu.config();
        int steps = 6;
        int batch = 3;
        int[] lengths = {6, 1, 3};
        int slots = c.numLayers() * c.numDirections();
        boolean lstm = c.cell() == dev.seqkernels.ops.CellType.LSTM;
        Map<String, Tensor> params = data.params(dtype, 0.6, c.parameterShapes());
        Tensor x = data.tensor(dtype, 1, c.batchFirst() ? new long[]{batch, steps, c.inputSize()} : new long[]{steps, batch, c.inputSize()});
        Tensor h0 = data.tensor(dtype, 0.5, slots, batch, c.stateSize());
        Tensor c0 = lstm ? data.tensor(dtype, 0.5, slots, batch, c.hiddenSize()) : null;
        Map<String, Tensor> params64 = new LinkedHashMap<>();
        params.forEach((n, t) -> params64.put(n, t.to(DType.F64)));
        try (RecurrentResult got = gpu.forward(params, x, h0, c0, lengths);
             RecurrentResult ref = cpu.forward(params64, x.to(DType.F64), h0.to(DType.F64), c0 == null ? null : c0.to(DType.F64), lengths);
             RecurrentResult plainForward = same.forward(params, x, h0, c0, lengths)) {
            Tensor dOut = data.tensor(dtype, 1, got.output().shape());
            Tensor dHn = data.tensor(dtype, 1, got.hn().shape());
            Tensor dCn = lstm ? data.tensor(dtype, 1, got.cn().shape()) : null;
            try (RecurrentGradients g = gpu.backward(params, got, dOut, dHn, dCn);
                 RecurrentGradients r = cpu.backward(params64, ref, dOut.to(DType.F64), dHn.to(DType.F64), dCn == null ? null : dCn.to(DType.F64));
                 RecurrentGradients plain = same.backward(params, plainForward, dOut, dHn, dCn)) {
                String tag = k + " " + dtype + " " + GpuTargets.binding() + " " + data;
                judge(tag + " dx", g.dx(), r.dx(), plain.dx(), dtype);
                judge(tag + " dh0", g.dh0(), r.dh0(), plain.dh0(), dtype);
                if (lstm) {
                    judge(tag + " dc0", g.dc0(), r.dc0(), plain.dc0(), dtype);
                }
                for (String name : params.keySet()) {
                    judge(tag + " d" + name, g.params().get(name), r.params().get(name), plain.params().get(name), dtype);
                }
            }
        }
    }

    static void check(String what, Tensor got, Tensor ref, DType dtype) {
        Compare.Tolerance tol = Compare.tolerance(dtype);
        Compare.Result r = Compare.compare(got.toDoubleArray(), ref.toDoubleArray(), tol);
        assertTrue(r.passes(tol), () -> what + ": " + r);
    }

    /**
     * A result against the exact reference: by the dtype's table for F32; for F16/BF16 by the 2x
     * rule against {@code plain} (cpu-same-precision's result), since the GPU path rounds the state
     * inside as the plain one does (the table does not fit a result that rounds every step).
     */
    static void judge(String what, Tensor got, Tensor exact, Tensor plain, DType dtype) {
        if (dtype != DType.F16 && dtype != DType.BF16) {
            check(what, got, exact, dtype);
            return;
        }
        Compare.TwoTimes rule = Compare.twiceThePlain(got.toDoubleArray(), plain.toDoubleArray(), exact.toDoubleArray(), dtype);
        assertTrue(rule.firstBad() == null, () -> what + ": " + rule.firstBad());
    }

    /** Both sides of every bound of the persistent kernel's rule, on an H100's numbers. */
    @Test
    void persistentSelectionRule() {
        DeviceProperties h100 = new DeviceProperties("H100", 9, 0, 132, 49152, 232448, 80L << 30, false);
        var auto = RecurrentGpu.StepChoice.AUTO;
        RecurrentGpu.PersistentPlan plan = RecurrentGpu.persistentPlan(lstm(1024, 0), 16, DType.F32, h100, auto);
        assertEquals(new RecurrentGpu.PersistentPlan(128, 8, 4 * (4 * 8 * 1024 + 16 * 1024 + 2 * 4 * 8 * 16 + 16 * 8)), plan,
                "H = 1024 at B = 16 fits: 8 units per block, 201,216 bytes (c: 16 x 8 floats)");
        assertTrue(RecurrentGpu.persistentPlan(lstm(1092, 0), 16, DType.F32, h100, auto) != null, "H = 1092 fits at B = 16 (9 units, 232,320 bytes)");
        assertEquals(null, RecurrentGpu.persistentPlan(lstm(1093, 0), 16, DType.F32, h100, auto), "H = 1093 does not (232,528 bytes)");
        assertEquals(null, RecurrentGpu.persistentPlan(lstm(1095, 0), 16, DType.F32, h100, auto),
                "H = 1095 does not (232,944 bytes: it fitted before c moved on chip)");
        assertEquals(null, RecurrentGpu.persistentPlan(lstm(1024, 0), 17, DType.F32, h100, auto), "batch above 16");
        assertEquals(null, RecurrentGpu.persistentPlan(lstm(2048, 0), 1, DType.F32, h100, auto), "W_hh slices of H = 2048 do not fit");
        assertTrue(RecurrentGpu.persistentPlan(lstm(1300, 0), 1, DType.F32, h100, auto) != null, "H = 1300 fits at B = 1 (10 units, 213,560 bytes)");
        assertEquals(null, RecurrentGpu.persistentPlan(lstm(1400, 0), 1, DType.F32, h100, auto), "H = 1400 does not (11 units, 252,396 bytes)");
        assertEquals(null, RecurrentGpu.persistentPlan(lstm(64, 16), 4, DType.F32, h100, auto), "projection");
        assertEquals(new RecurrentGpu.PersistentPlan(128, 8, 4 * (3 * 8 * 1024 + 16 * 1024 + 2 * 3 * 8 * 16)),
                RecurrentGpu.persistentPlan(Gru.builder().inputSize(8).hiddenSize(1024).build().config(), 16, DType.F32, h100, auto),
                "GRU (linear_before_reset): 3 gate rows per unit");
        var resetFirst = Gru.builder().inputSize(8).hiddenSize(1024).linearBeforeReset(false).build().config();
        assertEquals(new RecurrentGpu.PersistentPlan(128, 8, 4 * (3 * 8 * 1024 + 16 * 1024 + 2 * 3 * 8 * 16)),
                RecurrentGpu.persistentPlan(resetFirst, 16, DType.F32, h100, auto), "GRU with the reset gate first: the same slices");
        assertEquals(null, RecurrentGpu.persistentPlan(resetFirst, 17, DType.F32, h100, auto), "a reset-first GRU's batch above 16");
        assertEquals("gru_reset_first_persistent_fwd", RecurrentGpu.persistentKernel(resetFirst));
        assertEquals("gru_persistent_fwd", RecurrentGpu.persistentKernel(Gru.builder().inputSize(8).hiddenSize(64).build().config()));
        assertEquals("rnn_persistent_fwd", RecurrentGpu.persistentKernel(rnn(64)));
        assertEquals("lstm_persistent_fwd", RecurrentGpu.persistentKernel(lstm(64, 0)));
        assertEquals(new RecurrentGpu.PersistentPlan(124, 15, 4 * (15 * 1850 + 16 * 1850 + 2 * 15 * 16)),
                RecurrentGpu.persistentPlan(rnn(1850), 16, DType.F32, h100, auto), "Elman RNN: one row per unit, H = 1850 fits at B = 16");
        assertEquals(null, RecurrentGpu.persistentPlan(rnn(1900), 16, DType.F32, h100, auto), "H = 1900 does not (237,520 bytes)");
        assertEquals(null, RecurrentGpu.persistentPlan(rnn(64), 17, DType.F32, h100, auto), "an Elman RNN's batch above 16");
        DeviceProperties t4 = new DeviceProperties("T4", 7, 5, 40, 49152, 65536, 16L << 30, false);
        for (DType sixteen : new DType[]{DType.BF16, DType.F16}) {
            // 16 bits: rows padded to 16 (M), rows of H rounded up to 16 plus 8 (S), 8 warps' partial sums.
            assertEquals(new RecurrentGpu.PersistentPlan(128, 8, 2 * (32 + 16) * 1032 + 4 * (8 * 32 * 16 + 2 * 32 * 16 + 16 * 8)),
                    RecurrentGpu.persistentPlan(lstm(1024, 0), 16, sixteen, h100, auto), sixteen + ": H = 1024 at B = 16, 120,064 bytes");
            assertEquals(new RecurrentGpu.PersistentPlan(130, 12, 231168), RecurrentGpu.persistentPlan(lstm(1552, 0), 16, sixteen, h100, auto),
                    sixteen + ": H = 1552 fits (12 units, 48 rows, c: 16 x 12 floats)");
            assertEquals(null, RecurrentGpu.persistentPlan(lstm(1560, 0), 16, sixteen, h100, auto), sixteen + ": H = 1560 does not (233,216 bytes)");
            assertEquals(new RecurrentGpu.PersistentPlan(131, 12, 230912),
                    RecurrentGpu.persistentPlan(Gru.builder().inputSize(8).hiddenSize(1568).build().config(), 16, sixteen, h100, auto),
                    sixteen + ": a GRU's 36 rows pad to the LSTM's 48");
            assertEquals(new RecurrentGpu.PersistentPlan(130, 17, 231296), RecurrentGpu.persistentPlan(rnn(2208), 16, sixteen, h100, auto),
                    sixteen + ": an Elman RNN up to H = 2208");
            assertEquals(null, RecurrentGpu.persistentPlan(rnn(2216), 16, sixteen, h100, auto), sixteen + ": H = 2216 does not (232,832 bytes)");
            assertEquals(null, RecurrentGpu.persistentPlan(lstm(1020, 0), 16, sixteen, h100, auto), sixteen + ": H % 8 != 0 (16-byte chunks of h)");
            assertEquals(null, RecurrentGpu.persistentPlan(lstm(1024, 0), 17, sixteen, h100, auto), sixteen + ": batch above 16");
            assertEquals(null, RecurrentGpu.persistentPlan(lstm(64, 0), 4, sixteen, t4, auto), sixteen + ": no mma.sync on sm_75");
            assertEquals(null, RecurrentGpu.persistentPlan(lstm(64, 0), 4, sixteen, h100, RecurrentGpu.StepChoice.V1), sixteen + ": pinned to v1");
        }
        assertEquals(new RecurrentGpu.PersistentPlan(32, 2, 4 * (4 * 2 * 64 + 4 * 64 + 2 * 4 * 2 * 4 + 4 * 2)),
                RecurrentGpu.persistentPlan(lstm(64, 0), 4, DType.F32, t4, auto), "the F32 instance runs on sm_75");
        assertEquals(null, RecurrentGpu.persistentPlan(lstm(64, 0), 4, DType.F32, h100, RecurrentGpu.StepChoice.V1), "pinned to v1");
    }

    /** Both sides of every bound of the persistent backward's rule, on an H100's numbers. */
    @Test
    void persistentBackwardSelectionRule() {
        DeviceProperties h100 = new DeviceProperties("H100", 9, 0, 132, 49152, 232448, 80L << 30, false);
        DeviceProperties t4 = new DeviceProperties("T4", 7, 5, 40, 49152, 65536, 16L << 30, false);
        var auto = RecurrentGpu.StepChoice.AUTO;
        var gru = (java.util.function.IntFunction<dev.seqkernels.ops.RecurrentConfig>) h -> Gru.builder().inputSize(8).hiddenSize(h)
                .build().config();
        // F32: 4 x ((U + B) K + 4 B U), K = G H.
        assertEquals(new RecurrentGpu.PersistentPlan(132, 5, 4 * ((5 + 16) * 4 * 660 + 4 * 16 * 5)),
                RecurrentGpu.persistentBackwardPlan(lstm(660, 0), 16, DType.F32, h100, auto), "an F32 LSTM up to H = 660 at B = 16 (223,040 bytes)");
        assertEquals(null, RecurrentGpu.persistentBackwardPlan(lstm(661, 0), 16, DType.F32, h100, auto), "H = 661 does not (234,208 bytes)");
        assertTrue(RecurrentGpu.persistentBackwardPlan(lstm(1024, 0), 1, DType.F32, h100, auto) != null, "H = 1024 fits at B = 1");
        assertTrue(RecurrentGpu.persistentBackwardPlan(gru.apply(835), 16, DType.F32, h100, auto) != null, "an F32 GRU up to H = 835");
        assertEquals(null, RecurrentGpu.persistentBackwardPlan(gru.apply(836), 16, DType.F32, h100, auto), "H = 836 does not (232,528 bytes)");
        assertTrue(RecurrentGpu.persistentBackwardPlan(rnn(1848), 16, DType.F32, h100, auto) != null, "an F32 Elman RNN up to H = 1848");
        assertEquals(null, RecurrentGpu.persistentBackwardPlan(rnn(1849), 16, DType.F32, h100, auto), "H = 1849 does not (233,116 bytes)");
        assertEquals(null, RecurrentGpu.persistentBackwardPlan(lstm(64, 0), 17, DType.F32, h100, auto), "batch above 16");
        assertEquals(null, RecurrentGpu.persistentBackwardPlan(lstm(64, 16), 4, DType.F32, h100, auto), "projection");
        var resetFirst = (java.util.function.IntFunction<dev.seqkernels.ops.RecurrentConfig>) h -> Gru.builder().inputSize(8).hiddenSize(h)
                .linearBeforeReset(false).build().config();
        assertEquals(RecurrentGpu.persistentBackwardPlan(gru.apply(64), 4, DType.F32, h100, auto),
                RecurrentGpu.persistentBackwardPlan(resetFirst.apply(64), 4, DType.F32, h100, auto),
                "an F32 reset-first GRU: the same plan as the other form (one unbroken row of 3H floats)");
        assertEquals(null, RecurrentGpu.persistentBackwardPlan(resetFirst.apply(836), 16, DType.F32, h100, auto), "its H = 836 does not fit");
        assertEquals(new RecurrentGpu.PersistentPlan(32, 2, 4 * ((2 + 4) * 4 * 64 + 4 * 4 * 2)),
                RecurrentGpu.persistentBackwardPlan(lstm(64, 0), 4, DType.F32, t4, auto), "the F32 instance runs on sm_75");
        assertEquals(null, RecurrentGpu.persistentBackwardPlan(lstm(64, 0), 4, DType.F32, h100, RecurrentGpu.StepChoice.V1), "pinned to v1");
        for (DType sixteen : new DType[]{DType.BF16, DType.F16}) {
            // 16 bits: 2 x ((U + B) S + 8) with S = K rounded up to 32 plus 8, then 4 x (8 warps x 16 x NU + 4 B U).
            assertEquals(new RecurrentGpu.PersistentPlan(128, 8, 2 * ((8 + 16) * 4104 + 8) + 4 * (8 * 16 * 8 + 4 * 16 * 8)),
                    RecurrentGpu.persistentBackwardPlan(lstm(1024, 0), 16, sixteen, h100, auto), sixteen + ": an LSTM at H = 1024, B = 16");
            assertEquals(new RecurrentGpu.PersistentPlan(123, 9, 231712), RecurrentGpu.persistentBackwardPlan(lstm(1104, 0), 16, sixteen, h100, auto),
                    sixteen + ": an LSTM up to H = 1104 (9 units, 16 columns of partial sums)");
            assertEquals(null, RecurrentGpu.persistentBackwardPlan(lstm(1112, 0), 16, sixteen, h100, auto), sixteen + ": H = 1112 does not (233,312 bytes)");
            assertTrue(RecurrentGpu.persistentBackwardPlan(gru.apply(1352), 16, sixteen, h100, auto) != null, sixteen + ": a GRU up to H = 1352");
            assertEquals(null, RecurrentGpu.persistentBackwardPlan(gru.apply(1360), 16, sixteen, h100, auto), sixteen + ": H = 1360 does not");
            assertEquals(new RecurrentGpu.PersistentPlan(123, 11, 229184), RecurrentGpu.persistentBackwardPlan(resetFirst.apply(1344), 16, sixteen,
                    h100, auto), sixteen + ": a reset-first GRU up to H = 1344 (rows of 2H and H columns, each rounded up to 32, plus 8)");
            assertEquals(null, RecurrentGpu.persistentBackwardPlan(resetFirst.apply(1352), 16, sixteen, h100, auto),
                    sixteen + ": its H = 1352 does not (232,640 bytes; 230,912 with linear_before_reset)");
            assertEquals(new RecurrentGpu.PersistentPlan(127, 22, 230128), RecurrentGpu.persistentBackwardPlan(rnn(2784), 16, sixteen, h100, auto),
                    sixteen + ": an Elman RNN up to H = 2784 (22 units: three 8-unit tiles)");
            assertEquals(null, RecurrentGpu.persistentBackwardPlan(rnn(2792), 16, sixteen, h100, auto), sixteen + ": H = 2792 does not (232,560 bytes)");
            assertEquals(null, RecurrentGpu.persistentBackwardPlan(lstm(1020, 0), 16, sixteen, h100, auto), sixteen + ": H % 8 != 0");
            assertEquals(null, RecurrentGpu.persistentBackwardPlan(lstm(1024, 0), 17, sixteen, h100, auto), sixteen + ": batch above 16");
            assertEquals(null, RecurrentGpu.persistentBackwardPlan(lstm(64, 0), 4, sixteen, t4, auto), sixteen + ": no mma.sync on sm_75");
            assertEquals(null, RecurrentGpu.persistentBackwardPlan(lstm(64, 0), 4, sixteen, h100, RecurrentGpu.StepChoice.V1), sixteen + ": pinned to v1");
        }
        assertEquals("lstm_persistent_bwd", RecurrentGpu.persistentBackwardKernel(lstm(64, 0)));
        assertEquals("gru_persistent_bwd", RecurrentGpu.persistentBackwardKernel(gru.apply(64)));
        assertEquals("gru_reset_first_persistent_bwd", RecurrentGpu.persistentBackwardKernel(resetFirst.apply(64)));
        assertEquals("rnn_persistent_bwd", RecurrentGpu.persistentBackwardKernel(rnn(64)));
    }

    /** The vectorized GRU (linear_before_reset) and Elman RNN cells in the per-step loop, against the reference and v1. */
    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"F32", "BF16"})
    void vectorizedGruAndRnnCellsMatchReferenceAndV1(DType dtype) {
        TestData data = new TestData();
        Tensor x = data.tensor(dtype, 1, 7, 17, 6);
        checkFasterKernel("vec4 gru", be -> Gru.builder().inputSize(6).hiddenSize(20).bidirectional(true).backend(be).build(),
                RecurrentGpuTest::vectorizedStepLoop, data, dtype, x, null, null, lengthsUpTo(17, 7));
        checkFasterKernel("vec4 rnn", be -> dev.seqkernels.ops.Rnn.builder().inputSize(6).hiddenSize(12).nonlinearity("relu")
                .backend(be).build(), RecurrentGpuTest::vectorizedStepLoop, data, dtype, x, null, null, lengthsUpTo(17, 7));
    }

    /**
     * The vectorized LSTM cell (H % 4 == 0) in the per-step loop (batch 17 is above the persistent
     * kernel's limit; one case with projection): against the reference and against v1's cell.
     */
    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"F32", "F16"})
    void vectorizedLstmCellMatchesReferenceAndV1(DType dtype) {
        var auto = RecurrentGpu.StepChoice.AUTO;
        assertEquals("lstm_step_fused", RecurrentGpu.stepCellKernel(CellType.LSTM, 36, 0, true, auto));
        assertEquals("lstm_step_fwd_vec4", RecurrentGpu.stepCellKernel(CellType.LSTM, 36, 20, true, auto),
                "a projection: the W_hr GEMM comes between the cell and the commit");
        assertEquals("lstm_step_fwd", RecurrentGpu.stepCellKernel(CellType.LSTM, 37, 0, true, auto), "H not a multiple of 4");
        assertEquals("lstm_step_fwd", RecurrentGpu.stepCellKernel(CellType.LSTM, 36, 0, true, RecurrentGpu.StepChoice.V1), "pinned");
        assertEquals("gru_step_fused", RecurrentGpu.stepCellKernel(CellType.GRU, 36, 0, true, auto));
        assertEquals("gru_step_fwd", RecurrentGpu.stepCellKernel(CellType.GRU, 36, 0, false, auto), "reset gate first");
        assertEquals("rnn_step_fused", RecurrentGpu.stepCellKernel(CellType.RNN, 8, 0, true, auto));
        assertEquals("rnn_step_fwd", RecurrentGpu.stepCellKernel(CellType.RNN, 10, 0, true, auto));
        TestData data = new TestData();
        Tensor x = data.tensor(dtype, 1, 9, 17, 6);
        for (int proj : new int[]{0, 5}) {
            checkFasterKernel("vec4 lstm proj=" + proj, be -> Lstm.builder().inputSize(6).hiddenSize(36).projSize(proj)
                    .peepholes(proj == 0).clip(2).backend(be).build(), RecurrentGpuTest::vectorizedStepLoop, data, dtype, x, null,
                    null, lengthsUpTo(17, 9));
        }
    }

    /** 16-bit ops keep their state (and every forward GEMM operand) in the storage type; F32 ops and V1 in F32. */
    @Test
    void stateTypeRule() {
        var auto = RecurrentGpu.StepChoice.AUTO;
        assertEquals(DType.BF16, RecurrentGpu.stateType(DType.BF16, auto));
        assertEquals(DType.F16, RecurrentGpu.stateType(DType.F16, auto));
        assertEquals(DType.F32, RecurrentGpu.stateType(DType.F32, auto));
        assertEquals(DType.F32, RecurrentGpu.stateType(DType.BF16, RecurrentGpu.StepChoice.V1), "pinned to v1");
        assertEquals(DType.F32, RecurrentGpu.stateType(DType.F16, RecurrentGpu.StepChoice.V1), "pinned to v1");
    }

    /** The commit ends the step itself (one node) unless pinned to v1 (step_commit, then step_advance). */
    @Test
    void commitAdvancesRule() {
        assertTrue(RecurrentGpu.commitAdvances(RecurrentGpu.StepChoice.AUTO));
        assertFalse(RecurrentGpu.commitAdvances(RecurrentGpu.StepChoice.V1));
    }

    /**
     * H % 4 == 0: the F32 persistent kernels stage h (and the reset-first GRU its r*h) in 16-byte
     * loads (the other persistent tests take odd H, the scalar loads); each cell, both directions,
     * lengths 1 and T, vs the reference and the step loop.
     */
    @Test
    void persistentF32KernelsStageInSixteenByteLoadsWhenHIsAMultipleOfFour() {
        TestData data = new TestData();
        DType dtype = DType.F32;  // the persistent kernel's state type
        int hidden = 20;
        for (String cell : List.of("lstm", "gru", "reset-first gru", "rnn")) {
            java.util.function.Function<dev.seqkernels.Backend, RecurrentOp> make = be -> switch (cell) {
                case "lstm" -> Lstm.builder().inputSize(5).hiddenSize(hidden).bidirectional(true).backend(be).build();
                case "gru" -> Gru.builder().inputSize(5).hiddenSize(hidden).bidirectional(true).backend(be).build();
                case "reset-first gru" -> Gru.builder().inputSize(5).hiddenSize(hidden).bidirectional(true).linearBeforeReset(false)
                        .backend(be).build();
                default -> Rnn.builder().inputSize(5).hiddenSize(hidden).bidirectional(true).backend(be).build();
            };
            checkFasterKernel("persistent " + cell + " H=" + hidden, make, RecurrentGpuTest::persistent, data, dtype,
                    data.tensor(dtype, 1, 7, 3, 5), null, null, new int[]{7, 1, 4});
        }
    }

    /**
     * The persistent reset-first GRU (ONNX's default form: two rounds of the step barrier a step) on the emulator,
     * two layers, both directions, lengths 1 and T, clip, vs the reference and the step loop.
     */
    @Test
    void persistentResetFirstGruMatchesReferenceAndTheStepLoop() {
        TestData data = new TestData();
        DType dtype = DType.F32;  // the persistent kernel's state type
        checkFasterKernel("persistent reset-first gru", be -> Gru.builder().inputSize(6).hiddenSize(19).numLayers(2)
                        .bidirectional(true).linearBeforeReset(false).clip(2.5).backend(be).build(), RecurrentGpuTest::persistent, data,
                dtype, data.tensor(dtype, 1, 9, 3, 6), data.tensor(dtype, 0.5, 4, 3, 19), null, new int[]{9, 1, 5});
    }

    /** The persistent Elman RNN on the emulator (two layers, both directions, lengths 1 and T, clip, relu), vs the reference and the step loop. */
    @Test
    void persistentRnnMatchesReferenceAndTheStepLoop() {
        TestData data = new TestData();
        DType dtype = DType.F32;  // the persistent kernel's state type
        checkFasterKernel("persistent rnn", be -> dev.seqkernels.ops.Rnn.builder().inputSize(5).hiddenSize(23).numLayers(2)
                        .bidirectional(true).nonlinearity("relu").clip(2).backend(be).build(), RecurrentGpuTest::persistent, data, dtype,
                data.tensor(dtype, 1, 11, 3, 5), data.tensor(dtype, 0.5, 4, 3, 23), null, new int[]{11, 1, 6});
    }

    /** The persistent GRU (linear_before_reset) on the emulator, both directions and lengths, vs the reference and the step loop. */
    @Test
    void persistentGruMatchesReferenceAndTheStepLoop() {
        TestData data = new TestData();
        DType dtype = DType.F32;  // the persistent kernel's state type
        checkFasterKernel("persistent gru", be -> Gru.builder().inputSize(7).hiddenSize(29).numLayers(2).bidirectional(true)
                        .backend(be).build(), RecurrentGpuTest::persistent, data, dtype, data.tensor(dtype, 1, 17, 4, 7),
                data.tensor(dtype, 0.5, 4, 4, 29), null, new int[]{17, 1, 9, 16});
    }

    /**
     * The step loop runs as one captured step launched T times: 9 steps of an Elman RNN (batch 17,
     * above the persistent kernel's) issue one graph launch each instead of their GEMM, cell,
     * commit and step-advance launches (27 fewer launches), with the same results as issuing every
     * step directly.
     */
    @Test
    void stepLoopRunsAsACapturedGraph() {
        TestData data = new TestData();
        double[][] outputs = new double[2][];
        int[] launches = new int[2];
        Map<String, Tensor> params = null;
        Tensor x = data.tensor(DType.F32, 1, 9, 17, 5);
        for (int run = 0; run < 2; run++) {
            try (CapturingDriver counting = new CapturingDriver(GpuTargets.driver())) {
                GpuBackend backend = new GpuBackend(counting);
                if (run == 1) {
                    backend.recurrentPath().stepChoice(RecurrentGpu.StepChoice.V1);
                }
                RecurrentOp rnn = dev.seqkernels.ops.Rnn.builder().inputSize(5).hiddenSize(11).backend(backend).build();
                if (params == null) {
                    params = data.params(DType.F32, 0.3, rnn.config().parameterShapes());
                }
                try (RecurrentResult r = rnn.forward(params, x, null, null, lengthsUpTo(17, 9))) {
                    outputs[run] = r.output().toDoubleArray();
                    launches[run] = counting.launches();
                }
            }
        }
        assertArrayEquals(outputs[1], outputs[0], "graph and direct steps compute the same");
        assertEquals(launches[1] - 27, launches[0], "graph launches " + launches[0] + ", direct " + launches[1]);
    }

    /**
     * The captured step of the fused cells (H % 4 == 0, no projection) is the recurrent GEMM and one
     * kernel, for LSTM, GRU and Elman RNN in F32 and BF16; with a projection the GEMM, the cell, the
     * W_hr GEMM and step_commit_advance; with H % 4 != 0 the GEMM, v1's cell and step_commit_advance. A driver wrapper counts the calls between
     * beginCapture and endCapture; the results match the reference, under the emulator's race
     * checker (which needs the step counter's cross-block accesses atomic; block orders other than
     * the index order are ScheduleModesTest's). Batch 20: the per-step loop for F32 too.
     */
    @Test
    void aFusedStepIsTheGemmAndOneKernel() {
        TestData data = new TestData();
        int[] inCapture = new int[2];  // launches, gemms
        boolean[] capturing = {false};
        Driver recording = RecordingDriver.around(GpuTargets.driver(), (method, args) -> {
                switch (method) {
                    case "beginCapture" -> capturing[0] = true;
                    case "endCapture" -> capturing[0] = false;
                    case "launch" -> inCapture[0] += capturing[0] ? 1 : 0;
                    case "gemm" -> inCapture[1] += capturing[0] ? 1 : 0;
                    default -> { }
                }
            });
        GpuBackend backend = new GpuBackend(recording);
        for (DType dtype : new DType[]{DType.F32, DType.BF16}) {
            // H = 64 at batch 20: 320 quads, two blocks, so the step counter is shared across blocks.
            List<Function<dev.seqkernels.Backend, RecurrentOp>> builds = List.of(
                    be -> Lstm.builder().inputSize(5).hiddenSize(64).backend(be).build(),
                    be -> Gru.builder().inputSize(5).hiddenSize(64).backend(be).build(),
                    be -> Rnn.builder().inputSize(5).hiddenSize(64).backend(be).build(),
                    be -> Lstm.builder().inputSize(5).hiddenSize(8).projSize(4).backend(be).build(),
                    be -> Gru.builder().inputSize(5).hiddenSize(66).backend(be).build());
            for (Function<dev.seqkernels.Backend, RecurrentOp> build : builds) {
                RecurrentOp op = build.apply(backend);
                RecurrentOp cpu = build.apply(Backends.byName("cpu"));
                RecurrentOp same = build.apply(Backends.byName("cpu-same-precision"));
                var c = op.config();
                boolean fused = c.projSize() == 0 && c.hiddenSize() % 4 == 0;
                assertEquals(fused, RecurrentGpu.stepCellKernel(c.cell(), c.hiddenSize(), c.projSize(), c.linearBeforeReset(),
                        RecurrentGpu.StepChoice.AUTO).endsWith("_fused"));
                Map<String, Tensor> w = data.params(dtype, 0.3, c.parameterShapes());
                inCapture[0] = 0;
                inCapture[1] = 0;
                Tensor x = data.tensor(dtype, 1, 5, 20, 5);
                Map<String, Tensor> w64 = new LinkedHashMap<>();
                w.forEach((n, t) -> w64.put(n, t.to(DType.F64)));
                try (RecurrentResult r = op.forward(w, x, null, null, null); RecurrentResult want = cpu.forward(w64, x.to(DType.F64), null, null, null);
                     RecurrentResult plain = same.forward(w, x, null, null, null)) {
                    String what = c.cell() + " H=" + c.hiddenSize() + " proj=" + c.projSize() + " " + dtype;
                    assertEquals(fused ? 1 : 2, inCapture[0], what + ": kernels per captured step");
                    assertEquals(c.projSize() > 0 ? 2 : 1, inCapture[1], what + ": GEMMs per captured step");
                    judge(what + " output", r.output(), want.output(), plain.output(), dtype);
                }
            }
        }
    }

    /**
     * The step counter shared by many blocks: fused LSTM, GRU and Elman RNN steps and v1's cell with
     * step_commit_advance, 8 or more blocks per step kernel (batch 32, H 256 or 258), 7 steps, in
     * F32 against v1 (step_commit, then step_advance) and the reference. On a GPU the blocks run
     * concurrently, so a step that advanced before every block had read it would show here (the
     * emulator runs blocks in turn: ScheduleModesTest varies their order).
     */
    @Test
    void manyBlocksShareTheStepCounter() {
        TestData data = new TestData();
        for (int hidden : new int[]{256, 258}) {
            for (String cell : List.of("lstm", "gru", "rnn")) {
                java.util.function.Function<dev.seqkernels.Backend, RecurrentOp> make = be -> switch (cell) {
                    case "lstm" -> Lstm.builder().inputSize(8).hiddenSize(hidden).backend(be).build();
                    case "gru" -> Gru.builder().inputSize(8).hiddenSize(hidden).backend(be).build();
                    default -> Rnn.builder().inputSize(8).hiddenSize(hidden).backend(be).build();
                };
                Picks picks = (config, batch, dtype) -> RecurrentGpu.persistentPlan(config, batch, dtype, GpuTargets.driver().properties(),
                        RecurrentGpu.StepChoice.AUTO) == null;
                int[] lengths = new int[32];
                for (int b = 0; b < lengths.length; b++) {
                    lengths[b] = 7 - b % 5;
                }
                // Weights of about 1/sqrt(H): a contracting recurrence, whose F32 rounding the table can judge.
                checkFasterKernel(cell + " H=" + hidden + " B=32", make, picks, data, 1 / Math.sqrt(hidden), DType.F32,
                        data.tensor(DType.F32, 1, 7, 32, 8), null, null, lengths);
            }
        }
    }

    private static dev.seqkernels.ops.RecurrentConfig lstm(int hidden, int proj) {
        return Lstm.builder().inputSize(8).hiddenSize(hidden).projSize(proj).build().config();
    }

    private static dev.seqkernels.ops.RecurrentConfig rnn(int hidden) {
        return dev.seqkernels.ops.Rnn.builder().inputSize(8).hiddenSize(hidden).build().config();
    }

    /**
     * The persistent LSTM forward on the emulator (two layers, both directions, lengths 1 and T,
     * peepholes, clip, input-forget), against the reference and against the per-step loop; and
     * backward from its saved trace.
     */
    @Test
    void persistentLstmMatchesReferenceAndTheStepLoop() {
        TestData data = new TestData();
        DType dtype = DType.F32;  // the persistent kernel's state type
        checkFasterKernel("persistent lstm", be -> Lstm.builder().inputSize(13).hiddenSize(37).numLayers(2).bidirectional(true)
                        .peepholes(true).clip(3).inputForget(true).backend(be).build(), RecurrentGpuTest::persistent, data, dtype,
                data.tensor(dtype, 1, 23, 3, 13), data.tensor(dtype, 0.5, 4, 3, 37), data.tensor(dtype, 0.5, 4, 3, 37),
                new int[]{23, 1, 11});
    }

    /**
     * The 16-bit persistent kernel (W_hh and h in the storage type, the projection by mma.sync) on
     * the emulator, judged by the 2x rule against cpu-same-precision, with backward from its trace:
     * an LSTM (two layers, both directions, peepholes, clip, initial states, lengths 1 and T), a GRU
     * (linear_before_reset) at the kernel's largest batch 16 (every column of the mma's n), a
     * reset-first GRU (two layers) and an Elman RNN of H = 136 (9 k-steps over 8 warps: uneven
     * ranges; with 2 multiprocessors 68 units, 5 row tiles). H % 8 == 0 throughout; sm_75 skips.
     */
    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"BF16", "F16"})
    @DeviceDependent
    void persistent16BitMatchesTheSamePrecisionReference(DType dtype) {
        GpuTargets.assumeTensorCores("the 16-bit persistent kernel");
        TestData data = new TestData();
        checkFasterKernel("persistent16 lstm", be -> Lstm.builder().inputSize(7).hiddenSize(40).numLayers(2).bidirectional(true)
                        .peepholes(true).clip(3).backend(be).build(), RecurrentGpuTest::persistent, data, dtype,
                data.tensor(dtype, 1, 11, 3, 7), data.tensor(dtype, 0.5, 4, 3, 40), data.tensor(dtype, 0.5, 4, 3, 40),
                new int[]{11, 1, 6});
        checkFasterKernel("persistent16 gru B=16", be -> Gru.builder().inputSize(5).hiddenSize(48).bidirectional(true).backend(be).build(),
                RecurrentGpuTest::persistent, data, dtype, data.tensor(dtype, 1, 8, 16, 5), null, null, lengthsUpTo(16, 8));
        checkFasterKernel("persistent16 reset-first gru", be -> Gru.builder().inputSize(6).hiddenSize(24).numLayers(2)
                        .linearBeforeReset(false).clip(2.5).backend(be).build(), RecurrentGpuTest::persistent, data, dtype,
                data.tensor(dtype, 1, 9, 3, 6), data.tensor(dtype, 0.5, 2, 3, 24), null, new int[]{9, 1, 5});
        checkFasterKernel("persistent16 rnn H=136", be -> dev.seqkernels.ops.Rnn.builder().inputSize(5).hiddenSize(136).backend(be).build(),
                RecurrentGpuTest::persistent, data, 1 / Math.sqrt(136), dtype, data.tensor(dtype, 1, 7, 5, 5), null, null,
                new int[]{7, 1, 4, 7, 2});
    }

    /**
     * The 16-bit persistent kernel really runs (no step graph: the runtime's fall back to the step
     * loop would pass the 2x rule too) over at least two 16-row tiles per block and, where this
     * device's multiprocessor count allows it, a last block with fewer units (H % U != 0) and
     * H % 16 == 8 (a k-step half zeros): an Elman RNN with H chosen from the multiprocessors.
     */
    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"BF16", "F16"})
    @DeviceDependent
    void persistent16BitRunsAsOneLaunchOverSeveralRowTiles(DType dtype) {
        GpuTargets.assumeTensorCores("the 16-bit persistent kernel");
        int sms = GpuTargets.driver().properties().multiprocessors();
        int hidden = 0;
        int best = -1;
        for (int h = 16 * sms + 1; h <= 40 * sms && best < 2; h++) {  // U = ceil(H / sms) >= 17: two row tiles
            int units = (h + sms - 1) / sms;
            int score = (h % units != 0 ? 1 : 0) + (h % 16 == 8 ? 1 : 0);
            if (h % 8 == 0 && score > best) {
                hidden = h;
                best = score;
            }
        }
        int h = hidden;
        TestData data = new TestData();
        java.util.function.Function<dev.seqkernels.Backend, RecurrentOp> make = be -> dev.seqkernels.ops.Rnn.builder().inputSize(4)
                .hiddenSize(h).backend(be).build();
        int steps = 5;
        Tensor x = data.tensor(dtype, 1, steps, 3, 4);
        int[] lengths = {5, 2, 4};
        checkFasterKernel("persistent16 rnn H=" + h + " on " + sms + " multiprocessors", make, RecurrentGpuTest::persistent, data,
                1 / Math.sqrt(h), dtype, x, null, null, lengths);
        Map<String, Tensor> params = data.params(dtype, 1 / Math.sqrt(h), make.apply(Backends.byName("cpu")).config().parameterShapes());
        try (CapturingDriver counting = new CapturingDriver(GpuTargets.driver());
             RecurrentResult r = make.apply(new GpuBackend(counting)).forwardInference(params, x, null, null, lengths)) {
            assertEquals(0, counting.graphLaunches(), "H = " + h + ": the persistent kernel, not the step graph");
            assertTrue(counting.launches() < steps, "one cooperative launch: " + counting.launches() + " launches");
        }
    }

    /**
     * The persistent backward really runs (its kernel resolved, none of the per-step loop's) and
     * matches the reference (F32 also the per-step loop of v1; 16 bits by the 2x rule) with nonzero
     * dh_n and dc_n, lengths, both directions and two layers: an LSTM with peepholes and clip, a GRU
     * in either reset form and an Elman RNN, H chosen from the multiprocessors so that a block holds
     * two 8-unit tiles (U >= 9) and the last block fewer units. In 16 bits (H % 8 == 0) a count of 2
     * or 4 (the emulator's) makes U divide H, so there the device reports one multiprocessor more
     * (5: H = 48, U = 10, a last block of 8), which the emulator's occupancy still runs at once.
     */
    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"F32", "BF16"})
    @DeviceDependent
    void persistentBackwardRunsAsOneLaunchAndMatchesTheStepLoop(DType dtype) {
        boolean sixteen = dtype != DType.F32;
        if (sixteen) {
            GpuTargets.assumeTensorCores("the 16-bit persistent backward");
        }
        DeviceProperties real = GpuTargets.driver().properties();
        int sms = real.multiprocessors();
        int h = hiddenWithAShortLastBlock(sms, sixteen);
        if (h == 0) {
            sms++;
            h = hiddenWithAShortLastBlock(sms, sixteen);
        }
        Driver device = sms == real.multiprocessors() ? GpuTargets.driver() : RecordingDriver.reporting(GpuTargets.driver(),
                new DeviceProperties(real.name(), real.computeMajor(), real.computeMinor(), sms, real.sharedMemoryPerBlock(),
                        real.sharedMemoryPerBlockOptin(), real.totalMemory(), real.simulated()));
        int hidden = h;
        TestData data = new TestData();
        int steps = 6;
        int batch = 3;
        int[] lengths = {6, 2, 5};
        Tensor x = data.tensor(dtype, 1, steps, batch, 5);
        Tensor h0 = data.tensor(dtype, 1, 4, batch, hidden);
        Tensor c0 = data.tensor(dtype, 1, 4, batch, hidden);
        List<java.util.function.Function<dev.seqkernels.Backend, RecurrentOp>> ops = List.of(
                be -> Lstm.builder().inputSize(5).hiddenSize(hidden).numLayers(2).bidirectional(true).peepholes(true).clip(3).backend(be)
                        .build(),
                be -> Gru.builder().inputSize(5).hiddenSize(hidden).numLayers(2).bidirectional(true).backend(be).build(),
                be -> Gru.builder().inputSize(5).hiddenSize(hidden).numLayers(2).bidirectional(true).linearBeforeReset(false).clip(2)
                        .backend(be).build(),
                be -> Rnn.builder().inputSize(5).hiddenSize(hidden).numLayers(2).bidirectional(true).backend(be).build());
        for (var make : ops) {
            List<String> resolved = new java.util.concurrent.CopyOnWriteArrayList<>();
            GpuBackend pinned = GpuTargets.newBackend();
            pinned.recurrentPath().stepChoice(RecurrentGpu.StepChoice.V1);
            RecurrentOp gpu = make.apply(new GpuBackend(RecordingDriver.recordingFunctions(device, resolved)));
            RecurrentOp v1 = make.apply(pinned);
            RecurrentOp cpu = make.apply(Backends.byName("cpu"));
            RecurrentOp same = make.apply(Backends.byName("cpu-same-precision"));
            var config = gpu.config();
            boolean lstm = config.cell() == CellType.LSTM;
            String tag = config.cell() + (config.cell() == CellType.GRU && !config.linearBeforeReset() ? " reset-first" : "") + " H=" + hidden + " on " + sms + " multiprocessors " + dtype + " " + data;
            assertTrue(RecurrentGpu.persistentBackwardPlan(config, batch, dtype, device.properties(),
                    RecurrentGpu.StepChoice.AUTO) != null, tag + ": the rule must pick the persistent backward");
            Map<String, Tensor> params = data.params(dtype, 1 / Math.sqrt(hidden), config.parameterShapes());
            Map<String, Tensor> params64 = new LinkedHashMap<>();
            params.forEach((n, t) -> params64.put(n, t.to(DType.F64)));
            Tensor c0Here = lstm ? c0 : null;
            try (RecurrentResult got = gpu.forward(params, x, h0, c0Here, lengths);
                 RecurrentResult ref = sixteen ? null : v1.forward(params, x, h0, c0Here, lengths);  // the per-step loop: F32 only
                 RecurrentResult want = cpu.forward(params64, x.to(DType.F64), h0.to(DType.F64), lstm ? c0.to(DType.F64) : null, lengths);
                 RecurrentResult plain = same.forward(params, x, h0, c0Here, lengths)) {
                Tensor dy = data.tensor(dtype, 1, got.output().shape());
                Tensor dhn = data.tensor(dtype, 1, 4, batch, hidden);
                Tensor dcn = lstm ? data.tensor(dtype, 1, 4, batch, hidden) : null;
                int before = resolved.size();
                try (RecurrentGradients g = gpu.backward(params, got, dy, dhn, dcn);
                     RecurrentGradients r = sixteen ? null : v1.backward(params, ref, dy, dhn, dcn);
                     RecurrentGradients w = cpu.backward(params64, want, dy.to(DType.F64), dhn.to(DType.F64), lstm ? dcn.to(DType.F64) : null);
                     RecurrentGradients pl = same.backward(params, plain, dy, dhn, dcn)) {
                    List<String> ran = resolved.subList(before, resolved.size());
                    String kernel = RecurrentGpu.persistentBackwardKernel(config) + "_" + RecurrentGpu.suffix(dtype);
                    assertTrue(ran.contains(kernel), tag + ": " + kernel + " must run; resolved " + ran);
                    assertTrue(ran.stream().noneMatch(n -> n.startsWith("step_grad_")), tag + ": no per-step kernel; resolved " + ran);
                    judge(tag + " dx", g.dx(), w.dx(), pl.dx(), dtype);
                    judge(tag + " dh0", g.dh0(), w.dh0(), pl.dh0(), dtype);
                    if (lstm) {
                        judge(tag + " dc0", g.dc0(), w.dc0(), pl.dc0(), dtype);
                    }
                    for (String n : params.keySet()) {
                        judge(tag + " d" + n, g.params().get(n), w.params().get(n), pl.params().get(n), dtype);
                    }
                    if (!sixteen) {
                        check(tag + " dx vs the per-step loop", g.dx(), r.dx(), dtype);
                        check(tag + " dh0 vs the per-step loop", g.dh0(), r.dh0(), dtype);
                        for (String n : params.keySet()) {
                            check(tag + " d" + n + " vs the per-step loop", g.params().get(n), r.params().get(n), dtype);
                        }
                    }
                }
            }
        }
    }

    /** The smallest H (a multiple of 8 for 16 bits) with U = ceil(H / sms) >= 9 units a block and H % U != 0, or 0 up to 24 sms. */
    private static int hiddenWithAShortLastBlock(int sms, boolean sixteen) {
        for (int c = 8 * sms + 1; c <= 24 * sms; c++) {
            int units = (c + sms - 1) / sms;
            if ((!sixteen || c % 8 == 0) && c % units != 0) {
                return c;
            }
        }
        return 0;
    }

    /**
     * The persistent LSTM when its slices take more than 48 KB of shared memory per block (H chosen
     * from this device's multiprocessor count): the binding opts the kernel in, the occupancy check
     * passes, and the forward really runs as one cooperative launch (a handful of launches, not one
     * per step), matching the reference. On a real GPU this is the check that the persistent path is
     * taken at all.
     */
    @Test
    @DeviceDependent
    void thePersistentKernelRunsAbove48KbOfSharedMemory() {
        DeviceProperties props = GpuTargets.driver().properties();
        int batch = 2;
        int steps = 6;
        int hidden = 0;
        for (int units = 1; hidden == 0; units++) {
            int h = units * props.multiprocessors();
            long bytes = RecurrentGpu.persistentSharedBytes(4, units, h, batch, DType.F32);
            if (bytes > 48 * 1024) {
                assertTrue(bytes <= props.sharedMemoryPerBlockOptin(), "no H between 48 KB and the opt-in maximum on " + props);
                hidden = h;
            }
        }
        TestData data = new TestData();
        RecurrentOp cpu = Lstm.builder().inputSize(5).hiddenSize(hidden).backend("cpu").build();
        assertTrue(persistent(cpu.config(), batch, DType.F32), "the rule picks the persistent kernel at H = " + hidden);
        Map<String, Tensor> p = data.params(DType.F32, 0.2, cpu.config().parameterShapes());
        Map<String, Tensor> p64 = new LinkedHashMap<>();
        p.forEach((n, t) -> p64.put(n, t.to(DType.F64)));
        Tensor x = data.tensor(DType.F32, 1, steps, batch, 5);
        try (CapturingDriver counting = new CapturingDriver(GpuTargets.driver())) {
            RecurrentOp gpu = Lstm.builder().inputSize(5).hiddenSize(hidden).backend(new GpuBackend(counting)).build();
            try (RecurrentResult got = gpu.forward(p, x); RecurrentResult want = cpu.forward(p64, x.to(DType.F64))) {
                check("persistent lstm H=" + hidden + " " + GpuTargets.binding() + " " + data, got.output(), want.output(), DType.F32);
                assertTrue(counting.launches() < steps, "one cooperative launch, not a step loop: " + counting.launches() + " launches");
            }
        }
    }

    /** Which of the faster kernels the rule must pick for a config and batch, so a test cannot silently run v1. */
    @FunctionalInterface
    private interface Picks {
        boolean test(dev.seqkernels.ops.RecurrentConfig config, int batch, DType dtype);
    }

    /**
     * The op built by {@code make} on a backend with the faster kernels (which {@code picks} must
     * confirm the rule selects), on one pinned to V1, and on the CPU reference, on the same inputs:
     * outputs, final states and every gradient against the reference ({@link #judge}); the F32
     * output against V1.
     */
    private static void checkFasterKernel(String what, java.util.function.Function<dev.seqkernels.Backend, RecurrentOp> make,
                                          Picks picks, TestData data, DType dtype, Tensor x, Tensor h0, Tensor c0,
                                          int[] lengths) {
        checkFasterKernel(what, make, picks, data, 0.3, dtype, x, h0, c0, lengths);
    }

    /** The same with the parameters drawn from [-scale, scale]. */
    private static void checkFasterKernel(String what, java.util.function.Function<dev.seqkernels.Backend, RecurrentOp> make,
                                          Picks picks, TestData data, double scale, DType dtype, Tensor x, Tensor h0, Tensor c0,
                                          int[] lengths) {
        GpuBackend pinned = GpuTargets.newBackend();
        pinned.recurrentPath().stepChoice(RecurrentGpu.StepChoice.V1);
        RecurrentOp gpu = make.apply(GpuTargets.newBackend());
        RecurrentOp v1 = make.apply(pinned);
        RecurrentOp cpu = make.apply(dev.seqkernels.Backends.byName("cpu"));
        RecurrentOp same = make.apply(dev.seqkernels.Backends.byName("cpu-same-precision"));
        var config = gpu.config();
        int batch = (int) (config.batchFirst() ? x.size(0) : x.size(1));
        assertTrue(picks.test(config, batch, dtype), what + ": the rule must pick the faster kernel here");
        Map<String, Tensor> params = data.params(dtype, scale, config.parameterShapes());
        Map<String, Tensor> params64 = new LinkedHashMap<>();
        params.forEach((n, t) -> params64.put(n, t.to(DType.F64)));
        String tag = what + " " + dtype + " " + data;
        try (RecurrentResult got = gpu.forward(params, x, h0, c0, lengths);
             RecurrentResult ref = v1.forward(params, x, h0, c0, lengths);
             RecurrentResult want = cpu.forward(params64, x.to(DType.F64), h0 == null ? null : h0.to(DType.F64),
                     c0 == null ? null : c0.to(DType.F64), lengths);
             RecurrentResult plain = same.forward(params, x, h0, c0, lengths)) {
            judge(tag + " output", got.output(), want.output(), plain.output(), dtype);
            judge(tag + " hn", got.hn(), want.hn(), plain.hn(), dtype);
            if (want.cn() != null) {
                judge(tag + " cn", got.cn(), want.cn(), plain.cn(), dtype);
            }
            if (dtype == DType.F32) {  // a 16-bit op's v1 keeps an F32 state: not the same rounding, so no table between them
                check(tag + " output vs v1", got.output(), ref.output(), dtype);
            }
            Tensor dy = data.tensor(dtype, 1, got.output().shape());
            try (RecurrentGradients g = gpu.backward(params, got, dy, null, null);
                 RecurrentGradients w = cpu.backward(params64, want, dy.to(DType.F64), null, null);
                 RecurrentGradients pl = same.backward(params, plain, dy, null, null)) {
                judge(tag + " dx", g.dx(), w.dx(), pl.dx(), dtype);
                judge(tag + " dh0", g.dh0(), w.dh0(), pl.dh0(), dtype);
                if (w.dc0() != null) {
                    judge(tag + " dc0", g.dc0(), w.dc0(), pl.dc0(), dtype);
                }
                for (String n : params.keySet()) {
                    judge(tag + " d" + n, g.params().get(n), w.params().get(n), pl.params().get(n), dtype);
                }
            }
        }
    }

    private static boolean persistent(dev.seqkernels.ops.RecurrentConfig config, int batch, DType dtype) {
        return RecurrentGpu.persistentPlan(config, batch, dtype, GpuTargets.driver().properties(), RecurrentGpu.StepChoice.AUTO) != null;
    }

    private static boolean vectorizedStepLoop(dev.seqkernels.ops.RecurrentConfig config, int batch, DType dtype) {
        String kernel = RecurrentGpu.stepCellKernel(config.cell(), config.hiddenSize(), config.projSize(), config.linearBeforeReset(),
                RecurrentGpu.StepChoice.AUTO);
        return !persistent(config, batch, dtype) && (kernel.endsWith("_vec4") || kernel.endsWith("_fused"));
    }

    private static int[] lengthsUpTo(int batch, int steps) {
        int[] lengths = new int[batch];
        for (int i = 0; i < batch; i++) {
            lengths[i] = 1 + (i * 5) % steps;
        }
        lengths[0] = steps;
        return lengths;
    }

    @Test
    void longOddSequenceWithExtremeLengths() {
        TestData data = new TestData();
        RecurrentOp gpu = Lstm.builder().inputSize(13).hiddenSize(37).bidirectional(true).backend(GpuTargets.backend()).build();
        RecurrentOp cpu = Lstm.builder().inputSize(13).hiddenSize(37).bidirectional(true).backend("cpu").build();
        Map<String, Tensor> params = data.params(DType.F32, 0.3, gpu.config().parameterShapes());
        Map<String, Tensor> params64 = new LinkedHashMap<>();
        params.forEach((n, t) -> params64.put(n, t.to(DType.F64)));
        Tensor x = data.tensor(DType.F32, 1, 97, 3, 13);
        int[] lengths = {97, 1, 50};
        try (RecurrentResult got = gpu.forward(params, x, null, null, lengths);
             RecurrentResult ref = cpu.forward(params64, x.to(DType.F64), null, null, lengths)) {
            check("lstm T=97 H=37 bidirectional " + GpuTargets.binding() + " " + data + " output", got.output(), ref.output(), DType.F32);
            check("hn", got.hn(), ref.hn(), DType.F32);
            check("cn", got.cn(), ref.cn(), DType.F32);
        }
    }

    @Test
    void misuseOfTheGpuPathSaysWhy() {
        var lstm = Lstm.builder().inputSize(2).hiddenSize(3).backend(GpuTargets.backend()).build();
        Map<String, Tensor> p = new TestData().params(DType.F64, 0.5, lstm.config().parameterShapes());
        var f64 = assertThrows(SeqkException.DTypeMismatch.class, () -> lstm.forward(p, Tensor.allocate(DType.F64, 2, 1, 2)));
        assertTrue(f64.getMessage().contains("F64 runs on the cpu backend"), f64.getMessage());
        var cpuLstm = Lstm.builder().inputSize(2).hiddenSize(3).backend("cpu").build();
        Map<String, Tensor> p32 = new TestData().params(DType.F32, 0.5, lstm.config().parameterShapes());
        try (RecurrentResult fromCpu = cpuLstm.forward(p32, Tensor.allocate(DType.F32, 2, 1, 2))) {
            var foreign = assertThrows(SeqkException.Unsupported.class,
                    () -> Backends.byName(GpuTargets.backend()).recurrentBackward(lstm.config(), p32, fromCpu, null, null, null));
            assertTrue(foreign.getMessage().contains("not made by the " + GpuTargets.binding() + " backend"), foreign.getMessage());
        }
    }
}
