package dev.seqkernels.gpu;

import dev.seqkernels.Backends;
import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.Tensor;
import dev.seqkernels.TestData;
import dev.seqkernels.ops.Attention;
import dev.seqkernels.ops.AttentionResult;
import dev.seqkernels.ops.CausalAlignment;
import dev.seqkernels.ops.Lstm;
import dev.seqkernels.ops.MhaResult;
import dev.seqkernels.ops.MultiHeadAttention;
import dev.seqkernels.ops.RecurrentResult;
import org.junit.jupiter.api.Test;

import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Inference mode: the same outputs as a training forward, no device memory held once the call
 * returns (a training forward holds its saved state until the result closes), and a backward of
 * the result is a clear error. LSTM, SDPA and multi-head attention, on each binding and on cpu.
 */
@PerBinding
class InferenceModeTest {
    private final Driver driver = GpuTargets.driver();

    private static void refused(Runnable backward) {
        var e = assertThrows(SeqkException.ShapeMismatch.class, backward::run);
        assertTrue(e.getMessage().contains("inference"), e.getMessage());
    }

    @Test
    void lstmKeepsNothingForBackward() {
        TestData data = new TestData();
        for (String backend : new String[]{GpuTargets.backend(), "cpu"}) {
            Lstm lstm = Lstm.builder().inputSize(6).hiddenSize(8).numLayers(2).bidirectional(true).backend(backend).build();
            Map<String, Tensor> w = data.params(DType.F32, 0.3, lstm.config().parameterShapes());
            Tensor x = data.tensor(DType.F32, 1, 7, 3, 6);
            Tensor dOut = data.tensor(DType.F32, 1, 7, 3, 16);
            long before = driver.memoryInUse();
            try (RecurrentResult train = lstm.forward(w, x, null, null, null)) {
                assertTrue(backend.equals("cpu") || driver.memoryInUse() > before, "a training forward holds its traces");
                try (RecurrentResult infer = lstm.forwardInference(w, x, null, null, null)) {
                    assertNull(infer.saved());
                    assertArrayEquals(train.output().toDoubleArray(), infer.output().toDoubleArray(), backend);
                    assertArrayEquals(train.hn().toDoubleArray(), infer.hn().toDoubleArray(), backend);
                    refused(() -> lstm.backward(w, infer, dOut, null, null));
                }
            }
            assertEquals(before, driver.memoryInUse(), backend);
            try (RecurrentResult infer = lstm.forwardInference(w, x, null, null, null)) {
                assertEquals(before, driver.memoryInUse(), backend + ": nothing held while the inference result is open");
            }
        }
    }

    @Test
    void attentionKeepsNothingForBackward() {
        TestData data = new TestData();
        for (String backend : new String[]{GpuTargets.backend(), "cpu"}) {
            Attention op = Attention.builder().causal(CausalAlignment.TOP_LEFT).backend(Backends.byName(backend)).build();
            Tensor q = data.tensor(DType.F16, 1, 2, 2, 9, 16);
            Tensor k = data.tensor(DType.F16, 1, 2, 2, 9, 16);
            Tensor v = data.tensor(DType.F16, 1, 2, 2, 9, 8);
            long before = driver.memoryInUse();
            try (AttentionResult train = op.forward(Attention.inputs(q, k, v));
                 AttentionResult infer = op.forward(Attention.inputs(q, k, v).inference())) {
                assertNull(infer.saved());
                assertArrayEquals(train.out().toDoubleArray(), infer.out().toDoubleArray(), backend);
                assertArrayEquals(train.lse().toDoubleArray(), infer.lse().toDoubleArray(), backend);
                refused(() -> op.backward(infer, train.out()));
            }
            try (AttentionResult infer = op.forward(Attention.inputs(q, k, v).inference())) {
                assertEquals(before, driver.memoryInUse(), backend + ": nothing held while the inference result is open");
            }
        }
    }

    @Test
    void multiHeadAttentionKeepsNothingForBackward() {
        TestData data = new TestData();
        for (String backend : new String[]{GpuTargets.backend(), "cpu"}) {
            MultiHeadAttention mha = MultiHeadAttention.builder().embedDim(16).numHeads(4).backend(backend).build();
            Map<String, Tensor> w = data.params(DType.F32, 0.3, mha.parameterShapes());
            Tensor x = data.tensor(DType.F32, 1, 5, 2, 16);
            long before = driver.memoryInUse();
            try (MhaResult train = mha.forward(w, MultiHeadAttention.inputs(x, x, x));
                 MhaResult infer = mha.forward(w, MultiHeadAttention.inputs(x, x, x).inference())) {
                assertNull(infer.saved());
                assertArrayEquals(train.out().toDoubleArray(), infer.out().toDoubleArray(), backend);
                refused(() -> mha.backward(w, infer, train.out(), null));
            }
            try (MhaResult infer = mha.forward(w, MultiHeadAttention.inputs(x, x, x).inference())) {
                assertEquals(before, driver.memoryInUse(), backend + ": nothing held while the inference result is open");
            }
        }
    }
}
