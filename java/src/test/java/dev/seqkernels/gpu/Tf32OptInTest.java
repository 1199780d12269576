package dev.seqkernels.gpu;

import dev.seqkernels.Backends;
import dev.seqkernels.Compare;
import dev.seqkernels.DType;
import dev.seqkernels.Tensor;
import dev.seqkernels.TestData;
import dev.seqkernels.ops.Gru;
import dev.seqkernels.ops.Lstm;
import dev.seqkernels.ops.MhaGradients;
import dev.seqkernels.ops.MhaResult;
import dev.seqkernels.ops.MultiHeadAttention;
import dev.seqkernels.ops.RecurrentGradients;
import dev.seqkernels.ops.RecurrentOp;
import dev.seqkernels.ops.RecurrentResult;
import org.junit.jupiter.api.Test;

import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * TF32 as an explicit opt-in: a TF32 GEMM rounds its F32 operands to TF32 (and a plain one does
 * not), on every binding; multi-head attention, LSTM and GRU with {@code allowTf32} differ from
 * their F32 runs (so TF32 really ran) and meet the TF32 tolerance against the double reference,
 * forward and backward; off by default.
 */
@PerBinding
@DeviceDependent
class Tf32OptInTest {
    private final Driver driver = GpuTargets.driver();
    /** Whether the device multiplies TF32 at all (sm_80+): before, cuBLAS's FAST_TF32 computes in fp32 and no TF32 kernel is picked. */
    private final boolean tf32Hardware = driver.properties().computeMajor() >= 8;

    /** 1 + 2^-12 times 1: TF32 (10 mantissa bits) rounds the operand to 1 (on sm_80+); F32 keeps it. */
    @Test
    void aTf32GemmRoundsItsOperandsAndAPlainOneDoesNot() {
        float a = 1f + 0x1p-12f;
        try (Tensor ha = Tensor.of(new float[]{a}, 1, 1); Tensor hb = Tensor.of(new float[]{1f}, 1, 1);
             DeviceTensor da = DeviceTensor.of(driver, ha); DeviceTensor db = DeviceTensor.of(driver, hb);
             DeviceTensor dc = DeviceTensor.allocate(driver, DType.F32, 1, 1)) {
            for (boolean tf32 : new boolean[]{false, true}) {
                driver.gemm(new Gemm(false, false, 1, 1, 1, 1f, da.pointer(), 1, 1, db.pointer(), 1, 1, 0f, dc.pointer(), 1, 1, 1,
                        DType.F32, DType.F32, tf32), 0);
                try (Tensor c = dc.toHost()) {
                    assertEquals(tf32 && tf32Hardware ? 1f : a, (float) c.getFlat(0), driver.name() + (tf32 ? " TF32" : " F32") + " product");
                }
            }
        }
        assertThrows(IllegalArgumentException.class, () -> new Gemm(false, false, 1, 1, 1, 1f, 0, 1, 1, 0, 1, 1, 0f, 0, 1, 1, 1,
                DType.F16, DType.F32, true));
    }

    @Test
    void multiHeadAttentionOnTf32MeetsItsToleranceAndDiffersFromF32() {
        TestData data = new TestData();
        MultiHeadAttention.Builder b = MultiHeadAttention.builder().embedDim(32).numHeads(2).needWeights(false);
        MultiHeadAttention f32 = b.backend(GpuTargets.backend()).build();
        MultiHeadAttention tf32 = b.allowTf32(true).backend(GpuTargets.backend()).build();
        MultiHeadAttention reference = b.allowTf32(false).backend(Backends.byName("cpu")).build();
        assertFalse(f32.allowTf32(), "off by default");
        Map<String, Tensor> w = data.params(DType.F32, 0.3, f32.parameterShapes());
        Map<String, Tensor> w64 = new java.util.HashMap<>();
        w.forEach((k, v) -> w64.put(k, v.to(DType.F64)));
        Tensor x = data.tensor(DType.F32, 1, 9, 2, 32);
        Tensor dOut = data.tensor(DType.F32, 1, 9, 2, 32);
        try (MhaResult plain = f32.forward(w, MultiHeadAttention.inputs(x, x, x));
             MhaResult fast = tf32.forward(w, MultiHeadAttention.inputs(x, x, x));
             MhaResult ref = reference.forward(w64, MultiHeadAttention.inputs(x.to(DType.F64), x.to(DType.F64), x.to(DType.F64)));
             MhaGradients fastGrad = tf32.backward(w, fast, dOut, null);
             MhaGradients refGrad = reference.backward(w64, ref, dOut.to(DType.F64), null)) {
            // Without TF32 hardware a real cuBLAS may still pick another fp32 algorithm; the emulator must give the same bits.
            boolean same = Arrays.equals(plain.out().toDoubleArray(), fast.out().toDoubleArray());
            assertTrue(tf32Hardware ? !same : same || GpuTargets.realGpu(), "TF32 changes the result where the device has it, only there");
            check("out", fast.out(), ref.out());
            check("dQuery", fastGrad.dQuery(), refGrad.dQuery());
            check("in_proj_weight grad", fastGrad.params().get("in_proj_weight"), refGrad.params().get("in_proj_weight"));
        }
    }

    /** A two-layer bidirectional LSTM (the per-step loop's GEMMs and the projections) and a GRU, forward and backward. */
    @Test
    void recurrentOpsOnTf32MeetTheirToleranceAndDifferFromF32() {
        TestData data = new TestData();
        for (boolean gru : new boolean[]{false, true}) {
            RecurrentOp.Builder<?, ?> b = gru ? Gru.builder() : Lstm.builder();
            b.inputSize(12).hiddenSize(16).numLayers(2).bidirectional(true);
            RecurrentOp f32 = b.backend(GpuTargets.backend()).build();
            RecurrentOp tf32 = b.allowTf32(true).backend(GpuTargets.backend()).build();
            RecurrentOp reference = b.allowTf32(false).backend("cpu").build();
            assertFalse(f32.config().allowTf32(), "off by default");
            Map<String, Tensor> w = data.params(DType.F32, 0.3, f32.config().parameterShapes());
            Map<String, Tensor> w64 = new java.util.HashMap<>();
            w.forEach((k, v) -> w64.put(k, v.to(DType.F64)));
            // Batch 20: the per-step loop (cuBLAS's step GEMM), not the persistent kernel small batches take.
            Tensor x = data.tensor(DType.F32, 1, 6, 20, 12);
            Tensor dOut = data.tensor(DType.F32, 1, 6, 20, 32);
            try (RecurrentResult plain = f32.forward(w, x, null, null, null);
                 RecurrentResult fast = tf32.forward(w, x, null, null, null);
                 RecurrentResult ref = reference.forward(w64, x.to(DType.F64), null, null, null);
                 RecurrentGradients fastGrad = tf32.backward(w, fast, dOut, null, null);
                 RecurrentGradients refGrad = reference.backward(w64, ref, dOut.to(DType.F64), null, null)) {
                String op = gru ? "gru" : "lstm";
                boolean same = Arrays.equals(plain.output().toDoubleArray(), fast.output().toDoubleArray());
                assertTrue(tf32Hardware ? !same : same || GpuTargets.realGpu(), op + ": TF32 changes the result where the device has it");
                check(op + " output", fast.output(), ref.output());
                check(op + " dx", fastGrad.dx(), refGrad.dx());
                check(op + " weight_hh_l0 grad", fastGrad.params().get("weight_hh_l0"), refGrad.params().get("weight_hh_l0"));
            }
        }
    }

    /**
     * Every GEMM of an F32 op's forward and backward is TF32 when the op allows it and none is when
     * it does not (a driver wrapper records each Gemm's flag): the per-step loop's GEMM (batch 20),
     * the projections and every gradient GEMM, for an LSTM, a GRU and multi-head attention.
     */
    @Test
    void everyGemmOfAnOpFollowsItsTf32Setting() {
        TestData data = new TestData();
        List<Boolean> flags = new CopyOnWriteArrayList<>();
        Driver recording = RecordingDriver.around(driver, (method, args) -> {
                    if (method.equals("gemm")) {
                        flags.add(((Gemm) args[0]).tf32());
                    }
            });
        GpuBackend backend = new GpuBackend(recording);
        for (boolean allow : new boolean[]{false, true}) {
            for (boolean gru : new boolean[]{false, true}) {
                RecurrentOp.Builder<?, ?> b = gru ? Gru.builder() : Lstm.builder();
                RecurrentOp op = b.inputSize(6).hiddenSize(8).numLayers(2).bidirectional(true).allowTf32(allow).backend(backend).build();
                Map<String, Tensor> w = data.params(DType.F32, 0.3, op.config().parameterShapes());
                flags.clear();
                try (RecurrentResult r = op.forward(w, data.tensor(DType.F32, 1, 4, 20, 6), null, null, null);
                     RecurrentGradients g = op.backward(w, r, data.tensor(DType.F32, 1, 4, 20, 16), null, null)) {
                    String what = (gru ? "gru" : "lstm") + " allowTf32=" + allow + ": " + flags;
                    assertTrue(flags.size() > 8 && flags.stream().allMatch(f -> f == allow), what);
                }
            }
            MultiHeadAttention mha = MultiHeadAttention.builder().embedDim(16).numHeads(2).allowTf32(allow).backend(backend).build();
            Map<String, Tensor> w = data.params(DType.F32, 0.3, mha.parameterShapes());
            Tensor x = data.tensor(DType.F32, 1, 5, 2, 16);
            flags.clear();
            try (MhaResult r = mha.forward(w, MultiHeadAttention.inputs(x, x, x));
                 MhaGradients g = mha.backward(w, r, data.tensor(DType.F32, 1, 5, 2, 16), null)) {
                assertTrue(flags.size() >= 8 && flags.stream().allMatch(f -> f == allow), "mha allowTf32=" + allow + ": " + flags);
            }
        }
    }

    /** A 16-bit op's GEMMs multiply 16-bit operands: allowTf32 changes nothing for F16 storage. */
    @Test
    void sixteenBitOpsAreUnaffected() {
        TestData data = new TestData();
        Lstm.Builder b = Lstm.builder().inputSize(8).hiddenSize(8).numLayers(2).backend(GpuTargets.backend());
        RecurrentOp plain = b.build();
        RecurrentOp tf32 = b.allowTf32(true).build();
        Map<String, Tensor> w = data.params(DType.F16, 0.3, plain.config().parameterShapes());
        Tensor x = data.tensor(DType.F16, 1, 5, 20, 8);
        try (RecurrentResult a = plain.forward(w, x, null, null, null); RecurrentResult c = tf32.forward(w, x, null, null, null)) {
            assertTrue(Arrays.equals(a.output().toDoubleArray(), c.output().toDoubleArray()), "F16 output changed under allowTf32");
        }
    }

    private void check(String what, Tensor got, Tensor want) {
        Compare.Result r = Compare.compare(got.toDoubleArray(), want.toDoubleArray(), Compare.TF32);
        assertTrue(r.passes(Compare.TF32), () -> driver.name() + " TF32 " + what + ": " + r);
    }
}
