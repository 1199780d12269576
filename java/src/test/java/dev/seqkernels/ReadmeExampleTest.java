package dev.seqkernels;

import dev.seqkernels.ops.Attention;
import dev.seqkernels.ops.AttentionResult;
import dev.seqkernels.ops.CausalAlignment;
import dev.seqkernels.ops.Lstm;
import dev.seqkernels.ops.RecurrentGradients;
import dev.seqkernels.ops.RecurrentResult;
import org.junit.jupiter.api.Test;

import java.lang.foreign.MemorySegment;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

/** The README's example, compiled and run, so it cannot drift from the API. */
class ReadmeExampleTest {
    @Test
    void readmeExampleRuns() {
        TestData data = new TestData();
        Lstm lstm = Lstm.builder().inputSize(8).hiddenSize(16).numLayers(2).bidirectional(true).build();
        Map<String, Tensor> weights = data.params(DType.F32, 0.3, lstm.config().parameterShapes());
        MemorySegment segment = data.tensor(DType.F32, 1, 10, 3, 8).segment(); // stands for the caller's buffer
        try (Tensor x = Tensor.wrap(segment, DType.F32, 10, 3, 8)) {
                RecurrentResult y = lstm.forward(weights, x, null, null, new int[]{10, 7, 1});
                assertArrayEquals(new long[]{10, 3, 32}, y.output().shape());
                assertArrayEquals(new long[]{4, 3, 16}, y.hn().shape());
                assertArrayEquals(new long[]{4, 3, 16}, y.cn().shape());
                Tensor dOutput = data.tensor(DType.F32, 1, 10, 3, 32);
                RecurrentGradients g = lstm.backward(weights, y, dOutput, null, null);
                assertArrayEquals(new long[]{64, 8}, g.params().get("weight_ih_l0").shape());
                assertArrayEquals(new long[]{10, 3, 8}, g.dx().shape());
        }
        Tensor q = data.tensor(DType.F32, 1, 2, 4, 5, 8);
        Tensor k = data.tensor(DType.F32, 1, 2, 2, 100, 8);
        Tensor v = data.tensor(DType.F32, 1, 2, 2, 100, 6);
        Attention sdpa = Attention.builder().causal(CausalAlignment.BOTTOM_RIGHT).build();
        AttentionResult a = sdpa.forward(Attention.inputs(q, k, v).keyLengths(new int[]{100, 37}));
        assertArrayEquals(new long[]{2, 4, 5, 6}, a.out().shape());
        assertEquals(DType.F32, a.lse().dtype());
    }
}
