package dev.seqkernels.gpu;

import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.Tensor;
import dev.seqkernels.TestData;
import dev.seqkernels.ops.Gru;
import dev.seqkernels.ops.Lstm;
import dev.seqkernels.ops.MhaGradients;
import dev.seqkernels.ops.MhaResult;
import dev.seqkernels.ops.MultiHeadAttention;
import dev.seqkernels.ops.PreparedWeights;
import dev.seqkernels.ops.RecurrentGradients;
import dev.seqkernels.ops.RecurrentOp;
import dev.seqkernels.ops.RecurrentResult;
import org.junit.jupiter.api.Test;

import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Prepared weights: a recurrent or multi-head attention op's parameters uploaded and converted once, then reused. On a GPU
 * backend the host tensors may be closed after preparing (the device copies are all the calls
 * read) and forward and backward give exactly the plain calls' results; closing the prepared
 * weights frees their device memory; misuse is a clear error. On cpu they stay references.
 */
@PerBinding
class PreparedWeightsTest {
    private final Driver driver = GpuTargets.driver();

    private static void sameValues(String what, Tensor want, Tensor got) {
        assertArrayEquals(want.toDoubleArray(), got.toDoubleArray(), what);
    }

    private void preparedMatchesPlain(RecurrentOp op, DType dtype, int outWidth) {
        TestData data = new TestData();
        Map<String, Tensor> w = data.params(dtype, 0.3, op.config().parameterShapes());
        Tensor x = data.tensor(dtype, 1, 6, 3, op.config().inputSize());
        Tensor dOut = data.tensor(dtype, 1, 6, 3, outWidth);
        int[] lengths = {6, 4, 1};
        long before = driver.memoryInUse();
        try (RecurrentResult plain = op.forward(w, x, null, null, lengths);
             RecurrentGradients plainGrad = op.backward(w, plain, dOut, null, null)) {
            PreparedWeights prepared = op.prepare(w);
            assertTrue(prepared.onDevice());
            assertTrue(driver.memoryInUse() > before, "the device copies live in the prepared weights");
            w.values().forEach(Tensor::close);  // only the device copies are read from now on
            try (prepared;
                 RecurrentResult fwd = op.forward(prepared, x, null, null, lengths);
                 RecurrentGradients grad = op.backward(prepared, fwd, dOut, null, null)) {
                sameValues(dtype + " output", plain.output(), fwd.output());
                sameValues(dtype + " hn", plain.hn(), fwd.hn());
                sameValues(dtype + " dx", plainGrad.dx(), grad.dx());
                for (String name : op.config().parameterShapes().keySet()) {
                    sameValues(dtype + " d" + name, plainGrad.params().get(name), grad.params().get(name));
                }
                try (RecurrentResult infer = op.forwardInference(prepared, x, null, null, lengths)) {
                    sameValues(dtype + " inference output", plain.output(), infer.output());
                }
            }
            assertTrue(prepared.isClosed());
            var closed = assertThrows(SeqkException.TensorClosed.class, () -> op.forward(prepared, x, null, null, lengths));
            assertTrue(closed.getMessage().contains("prepared"), closed.getMessage());
        }
        assertEquals(before, driver.memoryInUse(), "closing the prepared weights freed their device copies");
    }

    @Test
    void lstmInSixteenBitsMatchesThePlainCalls() {
        Lstm lstm = Lstm.builder().inputSize(5).hiddenSize(8).numLayers(2).bidirectional(true).backend(GpuTargets.backend()).build();
        preparedMatchesPlain(lstm, DType.F16, 16);
    }

    @Test
    void gruInF32MatchesThePlainCalls() {
        Gru gru = Gru.builder().inputSize(4).hiddenSize(12).numLayers(1).backend(GpuTargets.backend()).build();
        preparedMatchesPlain(gru, DType.F32, 12);
    }

    /** Multi-head attention (cross-attention with kdim and vdim, then self-attention's single in-projection GEMM). */
    @Test
    void multiHeadAttentionMatchesThePlainCalls() {
        TestData data = new TestData();
        for (boolean self : new boolean[]{false, true}) {
            MultiHeadAttention mha = MultiHeadAttention.builder().embedDim(16).numHeads(4).kdim(self ? 16 : 10).vdim(self ? 16 : 12)
                    .backend(GpuTargets.backend()).build();
            Map<String, Tensor> w = data.params(DType.F32, 0.3, mha.parameterShapes());
            Tensor query = data.tensor(DType.F32, 1, 5, 2, 16);
            Tensor key = self ? query : data.tensor(DType.F32, 1, 7, 2, 10);
            Tensor value = self ? query : data.tensor(DType.F32, 1, 7, 2, 12);
            Tensor dOut = data.tensor(DType.F32, 1, 5, 2, 16);
            long before = driver.memoryInUse();
            try (MhaResult plain = mha.forward(w, MultiHeadAttention.inputs(query, key, value));
                 MhaGradients plainGrad = mha.backward(w, plain, dOut, null)) {
                PreparedWeights prepared = mha.prepare(w);
                assertTrue(prepared.onDevice());
                w.values().forEach(Tensor::close);
                try (prepared; MhaResult fwd = mha.forward(prepared, MultiHeadAttention.inputs(query, key, value));
                     MhaGradients grad = mha.backward(prepared, fwd, dOut, null)) {
                    sameValues("self " + self + " out", plain.out(), fwd.out());
                    sameValues("self " + self + " dQuery", plainGrad.dQuery(), grad.dQuery());
                    for (String name : mha.parameterShapes().keySet()) {
                        sameValues("self " + self + " d" + name, plainGrad.params().get(name), grad.params().get(name));
                    }
                }
            }
            assertEquals(before, driver.memoryInUse(), "closing the prepared weights freed their device copies");
        }
    }

    /**
     * Prepared weights fit any op with the same parameters (an LSTM with TF32 takes an LSTM's without);
     * a multi-head attention forward made with them needs them open for its backward (a clear error).
     */
    @Test
    void preparedWeightsFitOpsWithTheSameParametersAndMhaBackwardNeedsThemOpen() {
        TestData data = new TestData();
        Lstm.Builder lb = Lstm.builder().inputSize(5).hiddenSize(8).backend(GpuTargets.backend());
        Lstm lstm = lb.build();
        Lstm lstmTf32 = lb.allowTf32(true).build();
        Map<String, Tensor> w = data.params(DType.F32, 0.3, lstm.config().parameterShapes());
        try (PreparedWeights prepared = lstm.prepare(w);
             RecurrentResult r = lstmTf32.forward(prepared, data.tensor(DType.F32, 1, 4, 2, 5), null, null, null)) {
            assertEquals(2, r.output().size(1));
        }
        MultiHeadAttention mha = MultiHeadAttention.builder().embedDim(16).numHeads(4).backend(GpuTargets.backend()).build();
        Map<String, Tensor> mw = data.params(DType.F32, 0.3, mha.parameterShapes());
        Tensor x = data.tensor(DType.F32, 1, 5, 2, 16);
        PreparedWeights prepared = mha.prepare(mw);
        try (MhaResult fwd = mha.forward(prepared, MultiHeadAttention.inputs(x, x, x))) {
            prepared.close();
            var e = assertThrows(SeqkException.TensorClosed.class, () -> mha.backward(mw, fwd, data.tensor(DType.F32, 1, 5, 2, 16), null));
            assertTrue(e.getMessage().contains("keep them open"), e.getMessage());
        }
    }

    @Test
    void misuseIsAClearError() {
        TestData data = new TestData();
        Lstm lstm = Lstm.builder().inputSize(5).hiddenSize(8).backend(GpuTargets.backend()).build();
        Lstm other = Lstm.builder().inputSize(5).hiddenSize(8).numLayers(2).backend(GpuTargets.backend()).build();
        Map<String, Tensor> w = data.params(DType.F32, 0.3, lstm.config().parameterShapes());
        try (PreparedWeights prepared = lstm.prepare(w)) {
            Tensor x = data.tensor(DType.F32, 1, 4, 2, 5);
            var foreign = assertThrows(SeqkException.InvalidConfig.class, () -> other.forward(prepared, x, null, null, null));
            assertTrue(foreign.getMessage().contains("prepared by an op with other parameters"), foreign.getMessage());
            var dtype = assertThrows(SeqkException.DTypeMismatch.class,
                    () -> lstm.forward(prepared, data.tensor(DType.BF16, 1, 4, 2, 5), null, null, null));
            assertTrue(dtype.getMessage().contains("prepared from F32"), dtype.getMessage());
            assertThrows(SeqkException.ShapeMismatch.class, () -> lstm.forward((PreparedWeights) null, x, null, null, null));
            assertThrows(SeqkException.ShapeMismatch.class, () -> lstm.prepare(Map.of()));
        }
    }

    @Test
    void onCpuThePreparedWeightsAreTheHostTensors() {
        TestData data = new TestData();
        Lstm lstm = Lstm.builder().inputSize(5).hiddenSize(8).backend("cpu").build();
        Map<String, Tensor> w = data.params(DType.F32, 0.3, lstm.config().parameterShapes());
        Tensor x = data.tensor(DType.F32, 1, 4, 2, 5);
        try (PreparedWeights prepared = lstm.prepare(w); RecurrentResult plain = lstm.forward(w, x, null, null, null);
             RecurrentResult fwd = lstm.forward(prepared, x, null, null, null)) {
            assertFalse(prepared.onDevice());
            sameValues("cpu output", plain.output(), fwd.output());
            w.get("weight_hh_l0").close();
            assertThrows(SeqkException.TensorClosed.class, () -> lstm.forward(prepared, x, null, null, null));
        }
    }
}
