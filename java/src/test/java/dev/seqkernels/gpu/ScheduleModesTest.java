package dev.seqkernels.gpu;

import dev.seqkernels.Backends;
import dev.seqkernels.Compare;
import dev.seqkernels.DType;
import dev.seqkernels.TestData;
import dev.seqkernels.Tensor;
import dev.seqkernels.gpu.emu.EmuDriver;
import dev.seqkernels.ops.Attention;
import dev.seqkernels.ops.AttentionGradients;
import dev.seqkernels.ops.AttentionResult;
import dev.seqkernels.ops.CausalAlignment;
import dev.seqkernels.ops.Gru;
import dev.seqkernels.ops.Lstm;
import dev.seqkernels.ops.RecurrentGradients;
import dev.seqkernels.ops.RecurrentOp;
import dev.seqkernels.ops.RecurrentResult;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.LinkedHashMap;
import java.util.Map;
import java.util.stream.Stream;

import static dev.seqkernels.gpu.RecurrentGpuTest.check;

/**
 * The faster kernels (tensor-core and TF32 attention forward, the tensor-core backward, split-KV decoding, the persistent
 * LSTM and GRU forward and backward, the vectorized and fused step cells) on the emulator under every schedule:
 * round-robin, reverse, seeded random and one warp running ahead (blocks in index order, reversed,
 * in a seeded permutation and in index order), with cp.async copies landing when waited for and
 * when issued. The emulator's checks (races, bounds, collectives) run in every one; the results
 * must match the reference in every one (a kernel that only works in one thread order does not).
 */
class ScheduleModesTest {
    private final EmuDriver emu = EmuDriver.instance();

    static Stream<Arguments> schedules() {
        return Stream.of(EmuDriver.Schedule.values())
                .flatMap(s -> Stream.of(Arguments.of(s, false), Arguments.of(s, true)));
    }

    @AfterEach
    void backToTheDefault() {
        emu.setSchedule(EmuDriver.Schedule.ROUND_ROBIN, 0, false);
    }

    @ParameterizedTest(name = "{0}, cp.async lands at issue: {1}")
    @MethodSource("schedules")
    void fasterKernelsAgreeWithTheReferenceInEveryThreadOrder(EmuDriver.Schedule schedule, boolean landAtIssue) {
        GpuTargets.assumeTensorCores("the faster kernels under every schedule (its cases include the tensor-core and TF32 ones)");
        TestData data = new TestData();
        emu.setSchedule(schedule, data.nextInt(0, 1 << 30), landAtIssue);
        String tag = schedule + (landAtIssue ? " landing at issue " : " ") + data;
        attention(tag + " tc64 f16", data, DType.F16, 70, 130, 64, false, true);
        attention(tag + " tc128 bf16", data, DType.BF16, 40, 70, 128, false, true);
        attention(tag + " tf32", data, DType.F32, 50, 60, 64, true, true);
        // Its backward is the tc64 pair the first case runs: forward only.
        attention(tag + " split-KV bf16", data, DType.BF16, 1, 1100, 64, false, false);
        // The persistent kernels' cases run backward too: the persistent backward (its step barrier, and the
        // reset-first GRU's two rounds a step).
        recurrent(tag + " persistent lstm", data, b -> Lstm.builder().inputSize(5).hiddenSize(19).backend(b).build(), 3);
        recurrent(tag + " persistent gru", data, b -> Gru.builder().inputSize(5).hiddenSize(19).backend(b).build(), 3);
        recurrent(tag + " persistent reset-first gru", data,
                b -> Gru.builder().inputSize(5).hiddenSize(19).linearBeforeReset(false).backend(b).build(), 3);
        // The 16-bit instances (mma.sync projections), forward and backward, by the 2x rule.
        recurrent16(tag + " persistent16 lstm", data, b -> Lstm.builder().inputSize(5).hiddenSize(40).backend(b).build());
        recurrent16(tag + " persistent16 reset-first gru", data,
                b -> Gru.builder().inputSize(5).hiddenSize(24).linearBeforeReset(false).backend(b).build());
        recurrent(tag + " vec4 lstm step loop", data, b -> Lstm.builder().inputSize(5).hiddenSize(20).backend(b).build(), 17);
        // Several blocks per step kernel, which share the step counter (the fused step; the commit that advances it).
        recurrent(tag + " fused lstm step, 2 blocks", data, b -> Lstm.builder().inputSize(5).hiddenSize(64).backend(b).build(), 17);
        recurrent(tag + " v1 gru cell + step_commit_advance, 5 blocks", data,
                b -> Gru.builder().inputSize(5).hiddenSize(66).backend(b).build(), 17);
    }

    /**
     * Forward (and backward: the tensor-core backward for 16-bit storage, v1 for F32) against the
     * reference; 16-bit gradients by the 2x rule (they round dout, P and dS to 16 bits).
     */
    private static void attention(String tag, TestData data, DType dtype, int lq, int lk, int d, boolean tf32, boolean backward) {
        Tensor q = data.tensor(dtype, 1, 1, 2, lq, d);
        Tensor k = data.tensor(dtype, 1, 1, 1, lk, d);
        Tensor v = data.tensor(dtype, 1, 1, 1, lk, d);
        Attention gpu = Attention.builder().causal(CausalAlignment.BOTTOM_RIGHT).allowTf32(tf32).backend("emu").build();
        Attention cpu = Attention.builder().causal(CausalAlignment.BOTTOM_RIGHT).backend("cpu").build();
        try (AttentionResult got = gpu.forward(Attention.inputs(q, k, v));
             AttentionResult want = cpu.forward(Attention.inputs(q.to(DType.F64), k.to(DType.F64), v.to(DType.F64)))) {
            Compare.Tolerance tol = tf32 ? Compare.TF32 : Compare.tolerance(dtype);
            judge(tag + " out", got.out(), want.out(), tol);
            if (!backward) {
                return;
            }
            Tensor seed = data.tensor(dtype, 1, got.out().shape());
            try (AttentionGradients g = gpu.backward(got, seed); AttentionGradients w = cpu.backward(want, seed.to(DType.F64))) {
                if (dtype == DType.F32) {
                    judge(tag + " dq", g.dq(), w.dq(), tol);
                    return;
                }
                Attention plain = Attention.builder().causal(CausalAlignment.BOTTOM_RIGHT).backend(Backends.CPU_SAME_PRECISION).build();
                try (AttentionResult p = plain.forward(Attention.inputs(q, k, v)); AttentionGradients pg = plain.backward(p, seed)) {
                    Tensor[][] grads = {{g.dq(), pg.dq(), w.dq()}, {g.dk(), pg.dk(), w.dk()}, {g.dv(), pg.dv(), w.dv()}};
                    for (Tensor[] x : grads) {
                        Compare.TwoTimes rule = Compare.twiceThePlain(x[0].toDoubleArray(), x[1].toDoubleArray(), x[2].toDoubleArray(), dtype);
                        org.junit.jupiter.api.Assertions.assertNull(rule.firstBad(), () -> tag + " gradients: " + rule.firstBad());
                    }
                }
            }
        }
    }

    private static void judge(String what, Tensor got, Tensor ref, Compare.Tolerance tol) {
        Compare.Result r = Compare.compare(got.toDoubleArray(), ref.toDoubleArray(), tol);
        org.junit.jupiter.api.Assertions.assertTrue(r.passes(tol), () -> what + ": " + r);
    }

    /** A BF16 op at batch 3 (the persistent kernels' 16-bit instances), forward and backward, by the 2x rule against the same-precision reference. */
    private static void recurrent16(String tag, TestData data, java.util.function.Function<String, RecurrentOp> make) {
        RecurrentOp gpu = make.apply("emu");
        RecurrentOp cpu = make.apply("cpu");
        RecurrentOp same = make.apply("cpu-same-precision");
        DType dt = DType.BF16;
        Map<String, Tensor> p = data.params(dt, 0.4, gpu.config().parameterShapes());
        Map<String, Tensor> p64 = new LinkedHashMap<>();
        p.forEach((n, t) -> p64.put(n, t.to(DType.F64)));
        Tensor x = data.tensor(dt, 1, 6, 3, 5);
        try (RecurrentResult got = gpu.forward(p, x); RecurrentResult want = cpu.forward(p64, x.to(DType.F64));
             RecurrentResult plain = same.forward(p, x)) {
            RecurrentGpuTest.judge(tag + " output", got.output(), want.output(), plain.output(), dt);
            Tensor dy = data.tensor(dt, 1, got.output().shape());
            try (RecurrentGradients g = gpu.backward(p, got, dy, null, null);
                 RecurrentGradients w = cpu.backward(p64, want, dy.to(DType.F64), null, null);
                 RecurrentGradients pl = same.backward(p, plain, dy, null, null)) {
                RecurrentGpuTest.judge(tag + " dx", g.dx(), w.dx(), pl.dx(), dt);
                RecurrentGpuTest.judge(tag + " dh0", g.dh0(), w.dh0(), pl.dh0(), dt);
                for (String n : p.keySet()) {
                    RecurrentGpuTest.judge(tag + " d" + n, g.params().get(n), w.params().get(n), pl.params().get(n), dt);
                }
            }
        }
    }

    private static void recurrent(String tag, TestData data, java.util.function.Function<String, RecurrentOp> make, int batch) {
        RecurrentOp gpu = make.apply("emu");
        RecurrentOp cpu = make.apply("cpu");
        Map<String, Tensor> p = data.params(DType.F32, 0.4, gpu.config().parameterShapes());
        Map<String, Tensor> p64 = new LinkedHashMap<>();
        p.forEach((n, t) -> p64.put(n, t.to(DType.F64)));
        Tensor x = data.tensor(DType.F32, 1, 6, batch, 5);
        try (RecurrentResult got = gpu.forward(p, x); RecurrentResult want = cpu.forward(p64, x.to(DType.F64))) {
            check(tag + " output", got.output(), want.output(), DType.F32);
            if (batch <= RecurrentGpu.PERSISTENT_MAX_BATCH) {
                Tensor dy = data.tensor(DType.F32, 1, got.output().shape());
                try (RecurrentGradients g = gpu.backward(p, got, dy, null, null);
                     RecurrentGradients w = cpu.backward(p64, want, dy.to(DType.F64), null, null)) {
                    check(tag + " dx", g.dx(), w.dx(), DType.F32);
                    check(tag + " dh0", g.dh0(), w.dh0(), DType.F32);
                    for (String n : p.keySet()) {
                        check(tag + " d" + n, g.params().get(n), w.params().get(n), DType.F32);
                    }
                }
            }
        }
    }
}
