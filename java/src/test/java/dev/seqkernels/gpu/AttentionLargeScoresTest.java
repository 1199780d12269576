package dev.seqkernels.gpu;

import dev.seqkernels.Backends;
import dev.seqkernels.DType;
import dev.seqkernels.TestData;
import dev.seqkernels.Tensor;
import dev.seqkernels.ops.Attention;
import dev.seqkernels.ops.AttentionResult;
import dev.seqkernels.ops.CausalAlignment;
import dev.seqkernels.ops.Mask;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Review of 2a98359: scores in the log2 domain overflow fp32 at |scale*s + bias| > FLT_MAX / log2(e)
 * (2.36e38), where the natural-domain score (kernels before, v1, split-KV, the reference) is finite.
 */
@PerBinding
/**
 * Finite scores and masks near fp32's limit through the tensor-core forward (and TF32): a row
 * masked wholly with -FLT_MAX (PyTorch's finfo.min padding) attends every key equally with a
 * finite LSE, and scores between FLT_MAX / log2 e and FLT_MAX stay finite: the reference's and
 * v1's results, not the infinities a forward that scaled scores by log2 e before the max would give.
 */
class AttentionLargeScoresTest {

    /**
     * An additive mask of -FLT_MAX (torch.finfo(float32).min, HuggingFace's padding value) over a whole
     * row: every key is allowed with a finite, tied score, so the reference (and v1) gives the mean
     * of v and a finite lse (the kernel before 2a98359 did too).
     */
    @Test
    void finfoMinAdditiveMaskIsFiniteNotBlocked() {
        TestData data = new TestData();
        int lq = 9, lk = 70, d = 16, dv = 8;
        Tensor q = data.tensor(DType.BF16, 1, 1, 1, lq, d);
        Tensor k = data.tensor(DType.BF16, 1, 1, 1, lk, d);
        Tensor v = data.tensor(DType.BF16, 1, 1, 1, lk, dv);
        Tensor add = Tensor.allocate(DType.F32, lq, lk);
        for (int j = 0; j < lk; j++) {
            add.set(-Float.MAX_VALUE, 0, j);
        }
        run("finfo.min mask", q, k, v, add, Double.NaN);
    }

    /**
     * Scores between FLT_MAX / log2(e) and FLT_MAX (bf16 q and k of 1e19, scale 3): key 3's score is
     * 3e38, key 4's 2.7e38, both finite in fp32; the reference gives row 0 key 3's v and lse 3e38.
     */
    @org.junit.jupiter.params.ParameterizedTest
    @org.junit.jupiter.params.provider.EnumSource(value = DType.class, names = {"BF16", "F32"})
    void finiteScoresAboveFltMaxOverLog2eStayFinite(DType dt) {
        TestData data = new TestData();
        int lq = 9, lk = 70, d = 16, dv = 8;
        Tensor q = data.tensor(dt, 1, 1, 1, lq, d);
        Tensor k = data.tensor(dt, 1, 1, 1, lk, d);
        Tensor v = data.tensor(dt, 1, 1, 1, lk, dv);
        for (int e = 0; e < d; e++) {
            q.set(0, 0, 0, 0, e);
            k.set(0, 0, 0, 3, e);
            k.set(0, 0, 0, 4, e);
        }
        q.set(1e19, 0, 0, 0, 0);
        k.set(1e19, 0, 0, 3, 0);
        k.set(0.9e19, 0, 0, 4, 0);
        run("scores in (2.36e38, 3.4e38) " + dt, q, k, v, null, 3.0);
    }

    private static void run(String what, Tensor q, Tensor k, Tensor v, Tensor add, double scale) {
        GpuBackend tc = GpuTargets.newBackend();
        GpuBackend v1 = GpuTargets.newBackend();
        v1.attentionPath().kernelChoice(AttentionGpu.KernelChoice.V1);
        Attention.Inputs in = Attention.inputs(q, k, v);
        Attention.Inputs ref = Attention.inputs(q.to(DType.F64), k.to(DType.F64), v.to(DType.F64));
        if (add != null) {
            in.mask(Mask.additive(add));
            ref.mask(Mask.additive(add.to(DType.F64)));
        }
        try (AttentionResult got = op(tc, scale).forward(in); AttentionResult plain = op(v1, scale).forward(in);
             AttentionResult want = op(Backends.byName("cpu"), scale).forward(ref)) {
            Tensor wantLse = want.lse().to(DType.F32);
            System.out.println(what + ": row 0 lse tc " + got.lse().get(0, 0, 0) + ", v1 " + plain.lse().get(0, 0, 0) + ", ref "
                    + wantLse.get(0, 0, 0) + "; out[0][0] tc " + got.out().get(0, 0, 0, 0) + ", v1 " + plain.out().get(0, 0, 0, 0)
                    + ", ref " + want.out().get(0, 0, 0, 0));
            assertEquals(wantLse.get(0, 0, 0), plain.lse().get(0, 0, 0), Math.abs(wantLse.get(0, 0, 0)) * 1e-6, what + ": v1 lse");
            assertTrue(Double.isFinite(got.lse().get(0, 0, 0)), what + ": tc lse " + got.lse().get(0, 0, 0) + ", reference "
                    + wantLse.get(0, 0, 0));
            for (int e = 0; e < v.shape()[3]; e++) {
                assertEquals(want.out().get(0, 0, 0, e), got.out().get(0, 0, 0, e), 0.02, what + ": tc out column " + e);
            }
        }
    }

    private static Attention op(dev.seqkernels.Backend backend, double scale) {
        Attention.Builder b = Attention.builder().causal(CausalAlignment.NONE).allowTf32(true).backend(backend);
        if (!Double.isNaN(scale)) {
            b.scale(scale);
        }
        return b.build();
    }
}
