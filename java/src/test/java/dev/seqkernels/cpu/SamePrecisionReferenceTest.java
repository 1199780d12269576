package dev.seqkernels.cpu;

import dev.seqkernels.Backends;
import dev.seqkernels.DType;
import dev.seqkernels.TestData;
import dev.seqkernels.Tensor;
import dev.seqkernels.ops.Attention;
import dev.seqkernels.ops.AttentionGradients;
import dev.seqkernels.ops.AttentionResult;
import dev.seqkernels.ops.Gru;
import dev.seqkernels.ops.MhaGradients;
import dev.seqkernels.ops.MhaResult;
import dev.seqkernels.ops.MultiHeadAttention;
import dev.seqkernels.ops.RecurrentOp;
import dev.seqkernels.ops.RecurrentResult;
import dev.seqkernels.ops.Rnn;
import org.junit.jupiter.api.Test;

import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The CPU reference's same-precision mode ({@code cpu-same-precision}): exact for F64, and rounding
 * at the points it documents for 16-bit and TF32 ops, each shown by what only that rounding
 * changes (so a missing rounding fails here).
 */
class SamePrecisionReferenceTest {
    private static final String SAME = Backends.CPU_SAME_PRECISION;

    /** The fraction of elements in which two tensors of the same shape differ. */
    private static double differing(Tensor a, Tensor b) {
        double[] x = a.toDoubleArray();
        double[] y = b.toDoubleArray();
        assertEquals(x.length, y.length);
        int n = 0;
        for (int i = 0; i < x.length; i++) {
            n += x[i] == y[i] ? 0 : 1;
        }
        return (double) n / x.length;
    }

    /**
     * P is rounded to 16 bits before P V: with values of alternating sign and near-uniform weights
     * the output is a small difference of rounded probabilities, so most outputs move by more than
     * their own rounding; scores and statistics in fp32 alone move almost none. Likewise dS before
     * dQ and dK, and P before dV.
     */
    @Test
    void attentionRoundsPAndDsToTheStorageDtype() {
        TestData data = new TestData();
        int lk = 16;
        Tensor q = data.tensor(DType.BF16, 0.3, 1, 4, 64, 8);
        Tensor k = data.tensor(DType.BF16, 0.3, 1, 4, lk, 8);
        double[] alternating = new double[4 * lk * 8];
        for (int i = 0; i < alternating.length; i++) {
            alternating[i] = (i / 8) % 2 == 0 ? 1 : -1;
        }
        Tensor v = Tensor.of(DType.BF16, alternating, 1, 4, lk, 8);
        Tensor dOut = data.tensor(DType.BF16, 1, 1, 4, 64, 8);
        Attention exact = Attention.builder().backend("cpu").build();
        Attention same = Attention.builder().backend(SAME).build();
        Attention.Inputs in = Attention.inputs(q, k, v);
        try (AttentionResult a = exact.forward(in); AttentionResult b = same.forward(in);
             AttentionGradients ga = exact.backward(a, dOut); AttentionGradients gb = same.backward(b, dOut)) {
            double out = differing(a.out(), b.out());
            double dq = differing(ga.dq(), gb.dq());
            double dk = differing(ga.dk(), gb.dk());
            double dv = differing(ga.dv(), gb.dv());
            String what = "out " + out + ", dq " + dq + ", dk " + dk + ", dv " + dv + "; " + data;
            assertTrue(out > 0.5 && dq > 0.1 && dk > 0.1 && dv > 0.1, what);
        }
    }

    /** An F32 op that allows TF32 multiplies TF32 operands (errors near 2^-11); without the opt-in it stays F32 (near 2^-24). */
    @Test
    void tf32OperandsOnlyWhenAllowed() {
        TestData data = new TestData();
        Tensor q = data.tensor(DType.F32, 1, 1, 2, 20, 16);
        Tensor k = data.tensor(DType.F32, 1, 1, 2, 24, 16);
        Tensor v = data.tensor(DType.F32, 1, 1, 2, 24, 16);
        Attention.Inputs in = Attention.inputs(q, k, v);
        try (AttentionResult exact = Attention.builder().backend("cpu").build().forward(in);
             AttentionResult f32 = Attention.builder().backend(SAME).build().forward(in);
             AttentionResult tf32 = Attention.builder().allowTf32(true).backend(SAME).build().forward(in)) {
            double plainF32 = dev.seqkernels.Compare.compare(f32.out().toDoubleArray(), exact.out().toDoubleArray(),
                    dev.seqkernels.Compare.FINITE_ONLY).relL2();
            double plainTf32 = dev.seqkernels.Compare.compare(tf32.out().toDoubleArray(), exact.out().toDoubleArray(),
                    dev.seqkernels.Compare.FINITE_ONLY).relL2();
            assertTrue(plainTf32 > 1e-5 && plainF32 < 1e-6, "relative L2: tf32 " + plainTf32 + ", f32 " + plainF32 + "; " + data);
        }
    }

    /**
     * An F32 op's sums of products accumulate in fp32, as the kernels and cuBLAS do: over 2048
     * terms the rounding of each partial sum adds up to a relative L2 error of about 1e-6 against
     * the exact reference, where exact sums rounded to fp32 at the documented points stay near
     * 4e-8; and far below F32's 1e-5 (a plain implementation that is wrong is no yardstick). Sums of
     * 2048 terms: an RNN's input size (its forward), attention's keys (the softmax sum, P V, and
     * the backward's dq = dS K), MHA's embedding (the projections, forward and backward: Linear).
     */
    @Test
    void f32SumsAccumulateInFp32() {
        TestData data = new TestData();
        int n = 2048;
        RecurrentOp exactRnn = Rnn.builder().inputSize(n).hiddenSize(16).backend("cpu").build();
        RecurrentOp sameRnn = Rnn.builder().inputSize(n).hiddenSize(16).backend(SAME).build();
        Map<String, Tensor> p = data.params(DType.F32, 0.05, exactRnn.config().parameterShapes());
        Tensor x = data.tensor(DType.F32, 1, 2, 4, n);
        Tensor q = data.tensor(DType.F32, 1, 1, 2, 8, 16);
        Tensor k = data.tensor(DType.F32, 0.01, 1, 2, n, 16);
        Tensor v = data.tensor(DType.F32, 1, 1, 2, n, 16);
        Tensor dOut = data.tensor(DType.F32, 1, 1, 2, 8, 16);
        Attention.Inputs attn = Attention.inputs(q, k, v);
        MultiHeadAttention.Builder mb = MultiHeadAttention.builder().embedDim(n).numHeads(1);
        MultiHeadAttention exactMha = mb.backend("cpu").build();
        MultiHeadAttention sameMha = mb.backend(SAME).build();
        Map<String, Tensor> w = data.params(DType.F32, 0.02, exactMha.parameterShapes());
        Tensor tokens = data.tensor(DType.F32, 1, 3, 1, n);
        Tensor dTokens = data.tensor(DType.F32, 1, 3, 1, n);
        MultiHeadAttention.Inputs self = MultiHeadAttention.inputs(tokens, tokens, tokens);
        try (RecurrentResult a = exactRnn.forward(p, x, null, null, null); RecurrentResult b = sameRnn.forward(p, x, null, null, null);
             AttentionResult c = Attention.builder().backend("cpu").build().forward(attn);
             AttentionResult d = Attention.builder().backend(SAME).build().forward(attn);
             AttentionGradients gc = Attention.builder().backend("cpu").build().backward(c, dOut);
             AttentionGradients gd = Attention.builder().backend(SAME).build().backward(d, dOut);
             MhaResult e = exactMha.forward(w, self); MhaResult f = sameMha.forward(w, self);
             MhaGradients ge = exactMha.backward(w, e, dTokens, null); MhaGradients gf = sameMha.backward(w, f, dTokens, null)) {
            Map<String, Double> errors = new java.util.LinkedHashMap<>();
            errors.put("rnn out", relL2(b.output(), a.output()));
            errors.put("attention out", relL2(d.out(), c.out()));
            errors.put("attention dq", relL2(gd.dq(), gc.dq()));
            errors.put("mha out", relL2(f.out(), e.out()));
            errors.put("mha dquery", relL2(gf.dQuery(), ge.dQuery()));
            for (Map.Entry<String, Double> err : errors.entrySet()) {
                assertTrue(err.getValue() > 2e-7 && err.getValue() < 1e-5, "relative L2: " + errors + "; " + data);
            }
        }
    }

    private static double relL2(Tensor got, Tensor exact) {
        return dev.seqkernels.Compare.compare(got.toDoubleArray(), exact.toDoubleArray(), dev.seqkernels.Compare.FINITE_ONLY).relL2();
    }

    /**
     * h is rounded to the storage dtype once per step, and that value is the next step's GEMM input
     * (and GRU's z h term): the same-precision sequence is, bit for bit, the chain of its own
     * one-step calls, each fed the previous call's 16-bit h; the exact reference's sequence, which
     * never rounds h, is not (reset-after and reset-before GRU).
     */
    @Test
    void recurrentStateIsRoundedOncePerStep() {
        TestData data = new TestData();
        int steps = 12;
        int batch = 4;
        for (var builder : java.util.List.<java.util.function.Function<String, RecurrentOp>>of(
                name -> Rnn.builder().inputSize(5).hiddenSize(16).backend(name).build(),
                name -> Gru.builder().inputSize(5).hiddenSize(16).backend(name).build(),
                name -> Gru.builder().inputSize(5).hiddenSize(16).linearBeforeReset(false).backend(name).build())) {
            RecurrentOp exact = builder.apply("cpu");
            RecurrentOp same = builder.apply(SAME);
            Map<String, Tensor> p = data.params(DType.BF16, 0.6, exact.config().parameterShapes());
            double[] xs = data.tensor(DType.BF16, 1, steps, batch, 5).toDoubleArray();
            Tensor x = Tensor.of(DType.BF16, xs, steps, batch, 5);
            Tensor h = data.tensor(DType.BF16, 0.5, 1, batch, 16);
            double[] chained = new double[steps * batch * 16];
            try (RecurrentResult all = same.forward(p, x, h, null, null); RecurrentResult unrounded = exact.forward(p, x, h, null, null)) {
                for (int t = 0; t < steps; t++) {
                    Tensor xt = Tensor.of(DType.BF16, java.util.Arrays.copyOfRange(xs, t * batch * 5, (t + 1) * batch * 5), 1, batch, 5);
                    try (RecurrentResult step = same.forward(p, xt, h, null, null)) {
                        System.arraycopy(step.output().toDoubleArray(), 0, chained, t * batch * 16, batch * 16);
                        h = Tensor.of(DType.BF16, step.hn().toDoubleArray(), 1, batch, 16);
                    }
                }
                String what = exact.config().cell() + " " + data;
                assertArrayEquals(chained, all.output().toDoubleArray(), what);
                Tensor chain = Tensor.of(DType.BF16, chained, steps, batch, 16);
                double exactVsChain = differing(unrounded.output(), chain);
                assertTrue(exactVsChain > 0.05, what + ": the exact sequence differs from the chain in " + exactVsChain);
            }
        }
    }
}
