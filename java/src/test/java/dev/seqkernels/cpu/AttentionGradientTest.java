package dev.seqkernels.cpu;

import dev.seqkernels.DType;
import dev.seqkernels.FiniteDifferences;
import dev.seqkernels.TestData;
import dev.seqkernels.Tensor;
import dev.seqkernels.ops.Attention;
import dev.seqkernels.ops.AttentionGradients;
import dev.seqkernels.ops.AttentionResult;
import dev.seqkernels.ops.CausalAlignment;
import dev.seqkernels.ops.Mask;
import dev.seqkernels.ops.MhaGradients;
import dev.seqkernels.ops.MhaResult;
import dev.seqkernels.ops.MultiHeadAttention;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import java.util.Map;
import java.util.function.DoubleSupplier;

/** Attention and multi-head attention backward against central finite differences in float64. */
class AttentionGradientTest {

    @ParameterizedTest
    @EnumSource(CausalAlignment.class)
    void sdpaWithGroupedHeadsMasksAndLengths(CausalAlignment causal) {
        TestData data = new TestData();
        Tensor q = data.tensor(DType.F64, 1, 2, 4, 5, 3);
        Tensor k = data.tensor(DType.F64, 1, 2, 2, 7, 3);
        Tensor v = data.tensor(DType.F64, 1, 2, 2, 7, 4);
        double[] m = new double[5 * 7];
        for (int i = 0; i < m.length; i++) {
            m[i] = data.nextBoolean(0.8) ? 1 : 0;
        }
        Tensor allowed = Tensor.of(DType.BOOL, m, 5, 7);
        Attention op = Attention.builder().causal(causal).scale(0.7).backend("cpu").build();
        Attention.Inputs in = Attention.inputs(q, k, v).mask(Mask.allowed(allowed))
                .keyLengths(new int[]{7, 4}).queryLengths(new int[]{5, 3});
        check(data, op, in, q, k, v);
    }

    @Test
    void sdpaWithAdditiveMaskAndFullyMaskedRows() {
        TestData data = new TestData();
        Tensor q = data.tensor(DType.F64, 1, 1, 3, 4, 2);
        Tensor k = data.tensor(DType.F64, 1, 1, 3, 6, 2);
        Tensor v = data.tensor(DType.F64, 1, 1, 3, 6, 3);
        double[] add = new double[3 * 4 * 6];
        for (int i = 0; i < add.length; i++) {
            add[i] = data.uniform(-2, 2);
        }
        for (int j = 0; j < 6; j++) {
            add[(1 * 4 + 2) * 6 + j] = Double.NEGATIVE_INFINITY; // head 1, query 2: fully masked
        }
        Tensor additive = Tensor.of(DType.F64, add, 1, 3, 4, 6);
        Attention op = Attention.builder().backend("cpu").build();
        check(data, op, Attention.inputs(q, k, v).mask(Mask.additive(additive)), q, k, v);
    }

    private static void check(TestData data, Attention op, Attention.Inputs in, Tensor q, Tensor k, Tensor v) {
        AttentionResult r = op.forward(in);
        Tensor seed = data.tensor(DType.F64, 1, r.out().shape());
        AttentionGradients g = op.backward(r, seed);
        DoubleSupplier loss = () -> {
            try (AttentionResult again = op.forward(in)) {
                return FiniteDifferences.dot(again.out(), seed);
            }
        };
        FiniteDifferences.check("sdpa dq " + data, q, g.dq(), loss);
        FiniteDifferences.check("sdpa dk " + data, k, g.dk(), loss);
        FiniteDifferences.check("sdpa dv " + data, v, g.dv(), loss);
    }

    @Test
    void mhaPackedSelfAttentionWithWeightsAndMasks() {
        TestData data = new TestData();
        MultiHeadAttention op = MultiHeadAttention.builder().embedDim(6).numHeads(2).needWeights(true).backend("cpu").build();
        Tensor x = data.tensor(DType.F64, 1, 4, 2, 6);
        double[] kpm = {0, 0, 1, 0, 0, 0, 0, 1};
        Tensor keyPadding = Tensor.of(DType.BOOL, kpm, 2, 4);
        Tensor attnMask = data.tensor(DType.F64, 1, 4, 4);
        MultiHeadAttention.Inputs in = MultiHeadAttention.inputs(x, x, x).keyPaddingMask(Mask.blocked(keyPadding))
                .attnMask(Mask.additive(attnMask));
        checkMha(data, op, in, x, x, x);
    }

    @Test
    void mhaSeparateProjectionsGroupedHeadsBatchFirstCausal() {
        TestData data = new TestData();
        MultiHeadAttention op = MultiHeadAttention.builder().embedDim(8).numHeads(4).numKvHeads(2).kdim(3).vdim(5)
                .batchFirst(true).causal(CausalAlignment.BOTTOM_RIGHT).needWeights(true).backend("cpu").build();
        Tensor query = data.tensor(DType.F64, 1, 2, 3, 8);
        Tensor key = data.tensor(DType.F64, 1, 2, 5, 3);
        Tensor value = data.tensor(DType.F64, 1, 2, 5, 5);
        checkMha(data, op, MultiHeadAttention.inputs(query, key, value), query, key, value);
    }

    private static void checkMha(TestData data, MultiHeadAttention op, MultiHeadAttention.Inputs in, Tensor query,
                                 Tensor key, Tensor value) {
        Map<String, Tensor> params = data.params(DType.F64, 0.6, op.parameterShapes());
        MhaResult r = op.forward(params, in);
        Tensor seedOut = data.tensor(DType.F64, 1, r.out().shape());
        Tensor seedW = data.tensor(DType.F64, 1, r.attnWeights().shape());
        MhaGradients g = op.backward(params, r, seedOut, seedW);
        DoubleSupplier loss = () -> {
            try (MhaResult again = op.forward(params, in)) {
                return FiniteDifferences.dot(again.out(), seedOut) + FiniteDifferences.dot(again.attnWeights(), seedW);
            }
        };
        String tag = "mha " + data;
        if (query == key) {
            Tensor sum = Tensor.allocate(DType.F64, query.shape());
            for (int i = 0; i < sum.numel(); i++) {
                sum.setFlat(i, g.dQuery().getFlat(i) + g.dKey().getFlat(i) + g.dValue().getFlat(i));
            }
            FiniteDifferences.check(tag + " d(query=key=value)", query, sum, loss);
        } else {
            FiniteDifferences.check(tag + " dquery", query, g.dQuery(), loss);
            FiniteDifferences.check(tag + " dkey", key, g.dKey(), loss);
            FiniteDifferences.check(tag + " dvalue", value, g.dValue(), loss);
        }
        for (var e : params.entrySet()) {
            FiniteDifferences.check(tag + " d" + e.getKey(), e.getValue(), g.params().get(e.getKey()), loss);
        }
    }
}
