package dev.seqkernels.gpu;

import dev.seqkernels.Backend;
import dev.seqkernels.Backends;
import dev.seqkernels.Compare;
import dev.seqkernels.DType;
import dev.seqkernels.TestData;
import dev.seqkernels.Tensor;
import dev.seqkernels.ops.Attention;
import dev.seqkernels.ops.AttentionResult;
import dev.seqkernels.ops.CausalAlignment;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Causal attention over long sequences, checked on sampled rows: row i of causal attention is
 * ordinary attention of q_i over keys 0..i, so the CPU reference computes just those rows (Lq = 1,
 * Lk = i + 1) instead of the full L x L problem. Through the binding under test: L = 131072,
 * D = 128, bf16 on a real GPU (skipped with the reason on the emulator or the stand-in); L = 2053
 * on every binding.
 */
@PerBinding
class LongSequenceTest {

    @Test
    void causal131072TokensBf16OnAGpu() {
        Assumptions.assumeTrue(GpuTargets.realGpu(), () -> "skipped: L = 131072 needs a real GPU; the " + GpuTargets.binding()
                + " binding runs on " + GpuTargets.driver().properties().name());
        checkSampledRows(Backends.byName(GpuTargets.backend()), 131072, 128, new int[]{0, 1, 127, 4096, 65537, 131071});
    }

    @Test
    void sampledRowsMethod() {
        checkSampledRows(Backends.byName(GpuTargets.backend()), 2053, 128, new int[]{0, 63, 64, 1000, 2052});
    }

    private static void checkSampledRows(Backend backend, int len, int d, int[] rows) {
        TestData data = new TestData();
        Tensor q = data.tensor(DType.BF16, 1, 1, 1, len, d);
        Tensor k = data.tensor(DType.BF16, 1, 1, 1, len, d);
        Tensor v = data.tensor(DType.BF16, 1, 1, 1, len, d);
        Attention gpu = Attention.builder().causal(CausalAlignment.TOP_LEFT).backend(backend).build();
        Attention cpu = Attention.builder().backend("cpu").build();
        try (AttentionResult got = gpu.forward(Attention.inputs(q, k, v))) {
            assertEquals(len, got.out().size(2));
            for (int i : rows) {
                Tensor qi = slice(q, i, 1);
                try (AttentionResult want = cpu.forward(Attention.inputs(qi, slice(k, 0, i + 1), slice(v, 0, i + 1)))) {
                    Tensor row = slice(got.out(), i, 1);
                    Compare.Result r = Compare.compare(row.toDoubleArray(), want.out().toDoubleArray(), Compare.tolerance(DType.BF16));
                    assertTrue(r.passes(Compare.tolerance(DType.BF16)), () -> backend.name() + " L=" + len + " row " + i + " " + data + ": " + r);
                    double lse = got.lse().get(0, 0, i);
                    assertEquals(want.lse().get(0, 0, 0), lse, 1e-4 * (1 + Math.abs(lse)), "lse of row " + i);
                }
            }
        }
    }

    /** Rows [start, start + count) of a [1, 1, L, D] tensor as an F64 [1, 1, count, D] copy. */
    private static Tensor slice(Tensor t, int start, int count) {
        int d = (int) t.size(3);
        Tensor out = Tensor.allocate(DType.F64, 1, 1, count, d);
        for (int r = 0; r < count; r++) {
            for (int e = 0; e < d; e++) {
                out.set(t.get(0, 0, start + r, e), 0, 0, r, e);
            }
        }
        return out;
    }
}
