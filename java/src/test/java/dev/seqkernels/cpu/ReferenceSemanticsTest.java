package dev.seqkernels.cpu;

import dev.seqkernels.DType;
import dev.seqkernels.Rounding;
import dev.seqkernels.TestData;
import dev.seqkernels.Tensor;
import dev.seqkernels.ops.Attention;
import dev.seqkernels.ops.AttentionGradients;
import dev.seqkernels.ops.AttentionResult;
import dev.seqkernels.ops.CausalAlignment;
import dev.seqkernels.ops.Gru;
import dev.seqkernels.ops.Lstm;
import dev.seqkernels.ops.Mask;
import dev.seqkernels.ops.MhaGradients;
import dev.seqkernels.ops.MhaResult;
import dev.seqkernels.ops.MultiHeadAttention;
import dev.seqkernels.ops.RecurrentOp;
import dev.seqkernels.ops.RecurrentResult;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Conventions of the reference that PyTorch does not define or does differently (docs/CONVENTIONS.md). */
class ReferenceSemanticsTest {

    private static void assertAllFinite(String what, Tensor t) {
        double[] v = t.toDoubleArray();
        for (int i = 0; i < v.length; i++) {
            int at = i;
            assertTrue(Double.isFinite(v[i]), () -> what + "[" + at + "] = " + v[at]);
        }
    }

    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"F64", "F32", "F16", "BF16"})
    void fullyMaskedAttentionRowsGiveZeroAndMinusInfinity(DType dtype) {
        TestData data = new TestData();
        // Bottom-right causal with Lq > Lk: the first Lq - Lk query rows see no key at all.
        Attention op = Attention.builder().causal(CausalAlignment.BOTTOM_RIGHT).backend("cpu").build();
        Tensor q = data.tensor(dtype, 1, 2, 3, 7, 5);
        Tensor k = data.tensor(dtype, 1, 2, 3, 4, 5);
        Tensor v = data.tensor(dtype, 1, 2, 3, 4, 6);
        try (AttentionResult r = op.forward(Attention.inputs(q, k, v).keyLengths(new int[]{4, 0}))) {
            for (int b = 0; b < 2; b++) {
                for (int h = 0; h < 3; h++) {
                    for (int i = 0; i < 7; i++) {
                        boolean dead = b == 1 || i < 3;
                        double lse = r.lse().get(b, h, i);
                        assertEquals(dead, lse == Double.NEGATIVE_INFINITY, "lse(" + b + "," + h + "," + i + ") = " + lse);
                        for (int e = 0; e < 6 && dead; e++) {
                            assertEquals(0.0, r.out().get(b, h, i, e));
                        }
                    }
                }
            }
            assertAllFinite("out", r.out());
            try (AttentionGradients g = op.backward(r, data.tensor(dtype, 1, r.out().shape()))) {
                assertAllFinite("dq", g.dq());
                assertAllFinite("dk", g.dk());
                assertAllFinite("dv", g.dv());
                assertEquals(0.0, g.dq().get(0, 1, 2, 3), "a dead row's query gets no gradient");
            }
        }
    }

    @Test
    void fullyMaskedMhaRowAttendsToNothing() {
        TestData data = new TestData();
        MultiHeadAttention op = MultiHeadAttention.builder().embedDim(6).numHeads(2).needWeights(true).backend("cpu").build();
        Map<String, Tensor> p = data.params(DType.F64, 0.5, op.parameterShapes());
        Tensor q = data.tensor(DType.F64, 1, 3, 2, 6);
        Tensor kv = data.tensor(DType.F64, 1, 4, 2, 6);
        Tensor padding = Tensor.of(DType.BOOL, new double[]{1, 1, 1, 1, 0, 0, 1, 0}, 2, 4); // batch 0: every key padded
        try (MhaResult r = op.forward(p, MultiHeadAttention.inputs(q, kv, kv).keyPaddingMask(Mask.blocked(padding)))) {
            for (int i = 0; i < 3; i++) {
                for (int e = 0; e < 6; e++) {
                    assertEquals(p.get("out_proj.bias").get(e), r.out().get(i, 0, e), 1e-15, "batch 0 output is the output bias");
                }
                for (int j = 0; j < 4; j++) {
                    assertEquals(0.0, r.attnWeights().get(0, i, j));
                }
            }
            MhaGradients g = op.backward(p, r, data.tensor(DType.F64, 1, r.out().shape()), data.tensor(DType.F64, 1, r.attnWeights().shape()));
            assertAllFinite("dQuery", g.dQuery());
            g.params().forEach((name, t) -> assertAllFinite(name, t));
        }
    }

    static RecurrentOp[] bidirectionalOps() {
        return new RecurrentOp[]{
                Lstm.builder().inputSize(3).hiddenSize(4).projSize(2).numLayers(2).bidirectional(true).backend("cpu").build(),
                Gru.builder().inputSize(3).hiddenSize(4).numLayers(2).bidirectional(true).linearBeforeReset(false).backend("cpu").build()};
    }

    @Test
    void paddingIsNeverReadAndEachSequenceRunsAlone() {
        TestData data = new TestData();
        for (RecurrentOp op : bidirectionalOps()) {
            var c = op.config();
            int steps = 6;
            int[] lengths = {6, 2, 0, 4};
            Map<String, Tensor> p = data.params(DType.F64, 0.7, c.parameterShapes());
            Tensor x = data.tensor(DType.F64, 1, steps, 4, 3);
            for (int b = 0; b < 4; b++) {
                for (int t = lengths[b]; t < steps; t++) {
                    for (int f = 0; f < 3; f++) {
                        x.set(Double.NaN, t, b, f); // poison: padding must never be read
                    }
                }
            }
            Tensor h0 = data.tensor(DType.F64, 0.5, 4, 4, c.stateSize());
            Tensor c0 = c.cell() == dev.seqkernels.ops.CellType.LSTM ? data.tensor(DType.F64, 0.5, 4, 4, 4) : null;
            try (RecurrentResult all = op.forward(p, x, h0, c0, lengths)) {
                assertAllFinite(c.cell() + " output", all.output());
                for (int b = 0; b < 4; b++) {
                    for (int t = lengths[b]; t < steps; t++) {
                        for (int f = 0; f < c.outputSize(); f++) {
                            assertEquals(0.0, all.output().get(t, b, f), c.cell() + " output past length");
                        }
                    }
                    if (lengths[b] == 0) {
                        for (int s = 0; s < 4; s++) {
                            for (int f = 0; f < c.stateSize(); f++) {
                                assertEquals(h0.get(s, b, f), all.hn().get(s, b, f), "length 0 keeps h0");
                            }
                        }
                        continue;
                    }
                    // The same sequence alone, cut to its length, with no lengths argument.
                    Tensor xb = Tensor.of(DType.F64, x.select(1, b).toDoubleArray(), steps, 1, 3);
                    Tensor cut = Tensor.wrap(xb.segment(), DType.F64, lengths[b], 1, 3);
                    Tensor hb = Tensor.of(DType.F64, h0.select(1, b).toDoubleArray(), 4, 1, c.stateSize());
                    Tensor cb = c0 == null ? null : Tensor.of(DType.F64, c0.select(1, b).toDoubleArray(), 4, 1, 4);
                    try (RecurrentResult alone = op.forward(p, cut, hb, cb, null)) {
                        for (int t = 0; t < lengths[b]; t++) {
                            for (int f = 0; f < c.outputSize(); f++) {
                                assertEquals(alone.output().get(t, 0, f), all.output().get(t, b, f), 1e-14,
                                        c.cell() + " batch " + b + " step " + t + " feature " + f + " " + data);
                            }
                        }
                        for (int s = 0; s < 4; s++) {
                            for (int f = 0; f < c.stateSize(); f++) {
                                assertEquals(alone.hn().get(s, 0, f), all.hn().get(s, b, f), 1e-14, c.cell() + " hn " + data);
                            }
                        }
                    }
                }
            }
        }
    }

    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"F32", "F16", "BF16"})
    void lowPrecisionStorageRoundsOnceAfterDoubleMath(DType dtype) {
        TestData data = new TestData();
        Lstm op = Lstm.builder().inputSize(3).hiddenSize(5).backend("cpu").build();
        Map<String, Tensor> p = data.params(dtype, 0.5, op.config().parameterShapes());
        Tensor x = data.tensor(dtype, 1, 4, 2, 3);
        Map<String, Tensor> p64 = new java.util.LinkedHashMap<>();
        p.forEach((k, v) -> p64.put(k, v.to(DType.F64)));
        try (RecurrentResult low = op.forward(p, x); RecurrentResult exact = op.forward(p64, x.to(DType.F64))) {
            double[] l = low.output().toDoubleArray();
            double[] e = exact.output().toDoubleArray();
            for (int i = 0; i < l.length; i++) {
                assertEquals(Rounding.roundTo(dtype, e[i]), l[i], "element " + i + " " + data);
            }
            assertEquals(dtype, low.hn().dtype());
        }
    }
}
