package dev.seqkernels;

import dev.seqkernels.ops.Activation;
import dev.seqkernels.ops.Attention;
import dev.seqkernels.ops.AttentionResult;
import dev.seqkernels.ops.RecurrentResult;
import dev.seqkernels.ops.Gru;
import dev.seqkernels.ops.Lstm;
import dev.seqkernels.ops.Mask;
import dev.seqkernels.ops.MultiHeadAttention;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.function.Executable;

import java.util.HashMap;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Every rejected input gets its specific exception, and the message names the argument and the expectation. */
class BadInputTest {
    private final TestData data = new TestData();

    private static <T extends Throwable> void rejects(Class<T> type, Executable call, String... mustMention) {
        T e = assertThrows(type, call);
        for (String s : mustMention) {
            assertTrue(e.getMessage().contains(s), () -> "message '" + e.getMessage() + "' should mention '" + s + "'");
        }
    }

    private Lstm lstm() {
        return Lstm.builder().inputSize(3).hiddenSize(4).numLayers(2).backend("cpu").build();
    }

    @Test
    void recurrentShapes() {
        Lstm op = lstm();
        Map<String, Tensor> p = data.params(DType.F32, 0.5, op.config().parameterShapes());
        rejects(SeqkException.ShapeMismatch.class, () -> op.forward(p, data.tensor(DType.F32, 1, 5, 2, 7)),
                "'x'", "[5, 2, 7]", "[seq_len, batch, input_size] = [5, 2, 3]");
        rejects(SeqkException.ShapeMismatch.class, () -> op.forward(p, data.tensor(DType.F32, 1, 5, 3)), "'x'", "[5, 3]");
        Tensor x = data.tensor(DType.F32, 1, 5, 2, 3);
        rejects(SeqkException.ShapeMismatch.class, () -> op.forward(p, x, data.tensor(DType.F32, 1, 1, 2, 4), null, null),
                "'h0'", "[2, 2, 4]");
        rejects(SeqkException.ShapeMismatch.class, () -> op.forward(p, x, null, data.tensor(DType.F32, 1, 2, 3, 4), null),
                "'c0'", "[2, 2, 4]");
        rejects(SeqkException.ShapeMismatch.class, () -> op.forward(p, x, null, null, new int[]{5, 6}), "lengths[1] = 6", "0..5");
        rejects(SeqkException.ShapeMismatch.class, () -> op.forward(p, x, null, null, new int[]{5}), "'lengths'", "(2)");
        Gru gru = Gru.builder().inputSize(3).hiddenSize(4).backend("cpu").build();
        Map<String, Tensor> gp = data.params(DType.F32, 0.5, gru.config().parameterShapes());
        rejects(SeqkException.ShapeMismatch.class, () -> gru.forward(gp, x, null, data.tensor(DType.F32, 1, 1, 2, 4), null),
                "'c0' is only for LSTM");
    }

    @Test
    void cellsSpeakInCellTerms() {
        var cell = Lstm.builder().inputSize(3).hiddenSize(4).backend("cpu").buildCell();
        Map<String, Tensor> p = new HashMap<>(data.params(DType.F32, 0.5, cell.parameterShapes()));
        Tensor x = data.tensor(DType.F32, 1, 2, 3);
        rejects(SeqkException.ShapeMismatch.class, () -> cell.forward(p, x, data.tensor(DType.F32, 1, 2, 5), null),
                "lstm_cell", "'h'", "[batch, hidden_size] = [2, 4]");
        p.remove("bias_hh");
        rejects(SeqkException.ShapeMismatch.class, () -> cell.forward(p, x, null, null), "'bias_hh'", "missing");
        rejects(SeqkException.InvalidConfig.class, () -> Lstm.builder().inputSize(3).hiddenSize(4).numLayers(2).buildCell(),
                "one layer");
    }

    @Test
    void recurrentParameters() {
        Lstm op = lstm();
        Tensor x = data.tensor(DType.F32, 1, 5, 2, 3);
        Map<String, Tensor> p = new HashMap<>(data.params(DType.F32, 0.5, op.config().parameterShapes()));
        p.remove("weight_hh_l1");
        rejects(SeqkException.ShapeMismatch.class, () -> op.forward(p, x), "'weight_hh_l1'", "[16, 4]", "missing");
        p.put("weight_hh_l1", data.tensor(DType.F32, 1, 16, 5));
        rejects(SeqkException.ShapeMismatch.class, () -> op.forward(p, x), "'weight_hh_l1'", "[16, 5]", "[16, 4]");
        p.put("weight_hh_l1", data.tensor(DType.F64, 1, 16, 4));
        rejects(SeqkException.DTypeMismatch.class, () -> op.forward(p, x), "'weight_hh_l1'", "F64", "F32");
        p.put("weight_hh_l1", data.tensor(DType.F32, 1, 16, 4));
        p.put("weight_hh_l9", data.tensor(DType.F32, 1, 16, 4));
        rejects(SeqkException.ShapeMismatch.class, () -> op.forward(p, x), "unexpected parameters [weight_hh_l9]");
    }

    @Test
    void dtypesAndClosedTensors() {
        Lstm op = lstm();
        Map<String, Tensor> p = data.params(DType.F32, 0.5, op.config().parameterShapes());
        rejects(SeqkException.DTypeMismatch.class, () -> op.forward(p, Tensor.allocate(DType.I64, 5, 2, 3)), "'x'", "I64");
        Tensor x = data.tensor(DType.F32, 1, 5, 2, 3);
        x.close();
        rejects(SeqkException.TensorClosed.class, () -> op.forward(p, x), "'x'", "closed");
        Tensor y = data.tensor(DType.F32, 1, 5, 2, 3);
        p.values().iterator().next().close();
        rejects(SeqkException.TensorClosed.class, () -> op.forward(p, y), "closed");
    }

    @Test
    void invalidConfigs() {
        rejects(SeqkException.InvalidConfig.class, () -> Lstm.builder().inputSize(3).hiddenSize(4).projSize(4).build(), "projSize");
        rejects(SeqkException.InvalidConfig.class, () -> Lstm.builder().inputSize(3).hiddenSize(0).build(), "hiddenSize");
        rejects(SeqkException.InvalidConfig.class, () -> Lstm.builder().inputSize(3).hiddenSize(4).clip(Double.NaN).build(), "clip");
        rejects(SeqkException.InvalidConfig.class, () -> Gru.builder().inputSize(3).hiddenSize(4).clip(-1).build(), "clip");
        rejects(SeqkException.InvalidConfig.class, () -> Gru.builder().inputSize(3).hiddenSize(4)
                .activations(Activation.SIGMOID).build(), "GRU takes 2 activations");
        rejects(SeqkException.InvalidConfig.class, () -> new Activation(Activation.Kind.ELU, Double.POSITIVE_INFINITY, 0), "finite");
        rejects(SeqkException.InvalidConfig.class, () -> Attention.builder().scale(Double.NaN), "scale");
        rejects(SeqkException.InvalidConfig.class, () -> Attention.builder().scale(Double.POSITIVE_INFINITY), "scale");
        rejects(SeqkException.InvalidConfig.class, () -> MultiHeadAttention.builder().embedDim(10).numHeads(3).build(), "embedDim (10)");
        rejects(SeqkException.InvalidConfig.class, () -> MultiHeadAttention.builder().embedDim(12).numHeads(4).numKvHeads(3).build(),
                "numKvHeads (3)");
        rejects(SeqkException.InvalidConfig.class, () -> dev.seqkernels.ops.Rnn.builder().nonlinearity("sigmoid"), "\"sigmoid\"");
    }

    @Test
    void attentionInputs() {
        Attention op = Attention.builder().backend("cpu").build();
        Tensor q = data.tensor(DType.F32, 1, 2, 6, 5, 4);
        Tensor k = data.tensor(DType.F32, 1, 2, 4, 7, 4);
        Tensor v = data.tensor(DType.F32, 1, 2, 4, 7, 3);
        rejects(SeqkException.ShapeMismatch.class, () -> op.forward(Attention.inputs(q, k, v)), "6 heads", "4");
        Tensor k2 = data.tensor(DType.F32, 1, 2, 3, 7, 5);
        rejects(SeqkException.ShapeMismatch.class, () -> op.forward(Attention.inputs(q, k2, v)), "'k'", "[2, 3, 7, 5]", "head_dim] = [2, 3, 7, 4]");
        Tensor k3 = data.tensor(DType.F32, 1, 2, 3, 7, 4);
        Tensor v3 = data.tensor(DType.F32, 1, 2, 3, 8, 3);
        rejects(SeqkException.ShapeMismatch.class, () -> op.forward(Attention.inputs(q, k3, v3)), "'v'");
        Tensor v4 = data.tensor(DType.F16, 1, 2, 3, 7, 3);
        rejects(SeqkException.DTypeMismatch.class, () -> op.forward(Attention.inputs(q, k3, v4)), "'v'", "F16");
        Tensor v5 = data.tensor(DType.F32, 1, 2, 3, 7, 3);
        rejects(SeqkException.ShapeMismatch.class, () -> op.forward(Attention.inputs(q, k3, v5)
                .mask(Mask.allowed(Tensor.allocate(DType.BOOL, 5, 6)))), "'mask'", "does not broadcast");
        Tensor nanMask = Tensor.of(DType.F32, new double[]{0, Double.NaN}, 1, 2);
        rejects(SeqkException.ShapeMismatch.class, () -> op.forward(Attention.inputs(q, k3, v5).mask(Mask.additive(nanMask))), "'mask'");
        Tensor badAdd = Tensor.allocate(DType.F32, 5, 7);
        badAdd.set(Double.NaN, 1, 1);
        rejects(SeqkException.InvalidConfig.class, () -> op.forward(Attention.inputs(q, k3, v5).mask(Mask.additive(badAdd))), "NaN");
        rejects(SeqkException.DTypeMismatch.class, () -> Mask.additive(Tensor.allocate(DType.BOOL, 5, 7)), "floating point");
        rejects(SeqkException.ShapeMismatch.class, () -> op.forward(Attention.inputs(q, k3, v5).keyLengths(new int[]{7, 8})),
                "keyLengths[1] = 8", "0..7");
        rejects(SeqkException.ShapeMismatch.class, () -> op.forward(Attention.inputs(q, k3, v5).queryLengths(new int[]{1})),
                "'queryLengths'");
    }

    @Test
    void mhaInputs() {
        MultiHeadAttention op = MultiHeadAttention.builder().embedDim(8).numHeads(2).backend("cpu").build();
        Map<String, Tensor> p = data.params(DType.F32, 0.5, op.parameterShapes());
        Tensor q = data.tensor(DType.F32, 1, 5, 2, 8);
        Tensor kv = data.tensor(DType.F32, 1, 6, 2, 8);
        rejects(SeqkException.ShapeMismatch.class, () -> op.forward(p, MultiHeadAttention.inputs(q, data.tensor(DType.F32, 1, 6, 3, 8), kv)),
                "'key'", "[kv_len, batch, kdim]");
        rejects(SeqkException.ShapeMismatch.class, () -> op.forward(p, MultiHeadAttention.inputs(q, kv, kv)
                .keyPaddingMask(Mask.blocked(Tensor.allocate(DType.BOOL, 2, 5)))), "'keyPaddingMask'", "[2, 6]");
        rejects(SeqkException.ShapeMismatch.class, () -> op.forward(p, MultiHeadAttention.inputs(q, kv, kv)
                .attnMask(Mask.blocked(Tensor.allocate(DType.BOOL, 3, 5, 6)))), "'attnMask'", "[batch*num_heads, q_len, kv_len] = [4, 5, 6]");
        var noWeights = op.forward(p, MultiHeadAttention.inputs(q, kv, kv));
        rejects(SeqkException.ShapeMismatch.class, () -> op.backward(p, noWeights, data.tensor(DType.F32, 1, 5, 2, 8),
                data.tensor(DType.F32, 1, 2, 5, 6)), "needWeights is false");
    }

    @Test
    void backends() {
        rejects(SeqkException.BackendUnavailable.class, () -> Backends.byName("cuda"), "unknown backend 'cuda'", "[panama, jcuda, emu, cpu, cpu-same-precision]");
        rejects(SeqkException.BackendUnavailable.class, () -> Backends.byName("emux"), "unknown backend 'emux'");
        Backend auto = Backends.byName("auto");
        assertTrue(auto.name().equals("cpu") || auto instanceof dev.seqkernels.gpu.GpuBackend g && !g.driver().properties().simulated(),
                "auto is cpu or a binding on a real GPU, never the emulator or the stand-in driver: " + auto.name());
        String before = System.getProperty(Backends.PROPERTY);
        try {
            System.setProperty(Backends.PROPERTY, "nope");
            rejects(SeqkException.BackendUnavailable.class, () -> Lstm.builder().inputSize(1).hiddenSize(1).build(), "'nope'");
            System.setProperty(Backends.PROPERTY, "cpu");
            assertEquals("cpu", Lstm.builder().inputSize(1).hiddenSize(1).build().backend().name());
        } finally {
            if (before == null) {
                System.clearProperty(Backends.PROPERTY);
            } else {
                System.setProperty(Backends.PROPERTY, before);
            }
        }
    }

    @Test
    void nullsAreNamed() {
        rejects(SeqkException.ShapeMismatch.class, () -> Attention.builder().backend("cpu").build().forward(null), "'in'");
        MultiHeadAttention mha = MultiHeadAttention.builder().embedDim(8).numHeads(2).backend("cpu").build();
        rejects(SeqkException.ShapeMismatch.class, () -> mha.forward(data.params(DType.F32, 0.5, mha.parameterShapes()), null), "'in'");
        rejects(SeqkException.InvalidConfig.class, () -> Lstm.builder().direction(null), "direction");
        rejects(SeqkException.InvalidConfig.class, () -> Lstm.builder().activations((Activation[]) null), "activations");
        rejects(SeqkException.InvalidConfig.class, () -> Lstm.builder().activations(Activation.SIGMOID, null, Activation.TANH), "activations");
        rejects(SeqkException.InvalidConfig.class, () -> Lstm.builder().activationsPerDirection(null), "activationsPerDirection");
        assertEquals(Activation.SIGMOID, Lstm.builder().inputSize(1).hiddenSize(1).backend("cpu")
                .activationsPerDirection(java.util.List.of(java.util.List.of(Activation.SIGMOID, Activation.TANH, Activation.TANH)))
                .build().config().activations().get(0).get(0), "immutable lists (List.of) are accepted");
        rejects(SeqkException.BackendUnavailable.class, () -> Backends.byName(null), "null");
        Lstm op = lstm();
        Map<String, Tensor> p = data.params(DType.F32, 0.5, op.config().parameterShapes());
        rejects(SeqkException.ShapeMismatch.class, () -> op.backward(p, new RecurrentResult(null, null, null, null), null, null, null),
                "'forward.output'");
        Tensor out = data.tensor(DType.F32, 1, 5, 2, 4);
        rejects(SeqkException.ShapeMismatch.class, () -> op.backward(p, new RecurrentResult(out, data.tensor(DType.F32, 1, 2, 2, 4),
                data.tensor(DType.F32, 1, 2, 2, 4), null), null, null, null), "no saved state");
        Attention sdpa = Attention.builder().backend("cpu").build();
        rejects(SeqkException.ShapeMismatch.class, () -> sdpa.backward(new AttentionResult(null, null, null), out), "'forward.out'");
        rejects(SeqkException.ShapeMismatch.class, () -> Tensor.of(DType.F32, null, 2), "values");
    }

    @Test
    void sizesBeyondAnIntAreRefusedNotTruncated() {
        Lstm op = Lstm.builder().inputSize(3).hiddenSize(4).backend("cpu").build();
        Map<String, Tensor> p = data.params(DType.F32, 0.5, op.config().parameterShapes());
        rejects(SeqkException.ShapeMismatch.class, () -> op.forward(p, Tensor.allocate(DType.F32, (1L << 32) + 3, 0, 3)),
                "'x'", "seq_len 4294967299");
        rejects(SeqkException.ShapeMismatch.class, () -> op.forward(p, Tensor.allocate(DType.F32, 2, (1L << 31), 0)), "'x'");
        rejects(SeqkException.InvalidConfig.class, () -> Lstm.builder().inputSize(3).hiddenSize(1 << 30).bidirectional(true).build(),
                "hiddenSize");
    }

    /** An empty batch is no work, however long the sequence: it returns at once on every backend. */
    @Test
    @Timeout(value = 60, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
    void anEmptyBatchReturnsAtOnce() {
        for (String backend : new String[]{"cpu", "emu"}) {
            for (boolean batchFirst : new boolean[]{false, true}) {
                Lstm op = Lstm.builder().inputSize(3).hiddenSize(4).numLayers(2).bidirectional(true).batchFirst(batchFirst)
                        .backend(backend).build();
                Map<String, Tensor> p = data.params(DType.F32, 0.5, op.config().parameterShapes());
                long t = Integer.MAX_VALUE;
                Tensor x = batchFirst ? Tensor.allocate(DType.F32, 0, t, 3) : Tensor.allocate(DType.F32, t, 0, 3);
                try (var f = op.forward(p, x);
                     var g = op.backward(p, f, Tensor.allocate(DType.F32, f.output().shape()), null, null)) {
                    assertArrayEquals(batchFirst ? new long[]{0, t, 8} : new long[]{t, 0, 8}, f.output().shape());
                    assertArrayEquals(new long[]{4, 0, 4}, f.hn().shape());
                    assertArrayEquals(new long[]{4, 0, 4}, f.cn().shape());
                    assertArrayEquals(x.shape(), g.dx().shape());
                    assertEquals(op.config().parameterShapes().keySet(), g.params().keySet());
                    assertEquals(0.0, g.params().get("weight_hh_l1").get(3, 2));
                }
            }
        }
    }
}
