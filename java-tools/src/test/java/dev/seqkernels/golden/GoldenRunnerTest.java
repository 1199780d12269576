package dev.seqkernels.golden;

import dev.seqkernels.Backend;
import dev.seqkernels.Backends;
import dev.seqkernels.DType;
import dev.seqkernels.Tensor;
import dev.seqkernels.io.Safetensors;
import dev.seqkernels.ops.Attention;
import dev.seqkernels.ops.AttentionGradients;
import dev.seqkernels.ops.AttentionResult;
import dev.seqkernels.ops.MhaGradients;
import dev.seqkernels.ops.MhaResult;
import dev.seqkernels.ops.MultiHeadAttention;
import dev.seqkernels.ops.RecurrentConfig;
import dev.seqkernels.ops.RecurrentGradients;
import dev.seqkernels.ops.RecurrentResult;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The golden runner must be able to fail: wrong values, unknown fields and broken files are FAILs with a reason. */
class GoldenRunnerTest {
    @TempDir
    Path dir;

    private Path rewrite(String caseName, java.util.function.BiConsumer<Map<String, Tensor>, Map<String, String>> edit)
            throws Exception {
        try (Safetensors.Contents c = Safetensors.read(PyTorchGoldenTest.casesDir().resolve(caseName))) {
            Map<String, Tensor> tensors = new LinkedHashMap<>(c.tensors());
            Map<String, String> meta = new LinkedHashMap<>(c.metadata());
            edit.accept(tensors, meta);
            Path out = dir.resolve(caseName);
            Safetensors.write(out, tensors, meta);
            return out;
        }
    }

    @Test
    void roundTripsThroughSafetensorsUnchanged() throws Exception {
        Path copy = rewrite("lstm.safetensors", (t, m) -> { });
        try (var a = Safetensors.read(copy); var b = Safetensors.read(PyTorchGoldenTest.casesDir().resolve("lstm.safetensors"))) {
            assertTrue(a.metadata().equals(b.metadata()));
            for (String name : b.tensors().keySet()) {
                assertArrayEquals(b.tensors().get(name).toDoubleArray(), a.tensors().get(name).toDoubleArray(), name);
            }
        }
        assertTrue(GoldenCase.run(copy, Backends.byName("cpu"), DType.F64).pass());
    }

    @Test
    void aWrongGradientFails() throws Exception {
        Path bad = rewrite("gru.safetensors", (t, m) -> {
            // A read file's tensors are read-only views of its mapping: change a copy.
            Tensor g = t.get("grad.weight_hh_l0").to(DType.F64);
            g.setFlat(5, g.getFlat(5) * (1 + 1e-8));
            t.put("grad.weight_hh_l0", g);
        });
        GoldenCase.Outcome o = GoldenCase.run(bad, Backends.byName("cpu"), DType.F64);
        assertFalse(o.pass());
        assertTrue(o.reason().startsWith("grad.weight_hh_l0"), o.reason());
    }

    @Test
    void anUnknownFieldIsAFailNotASkip() throws Exception {
        Path bad = rewrite("sdpa_plain.safetensors", (t, m) -> m.put("config",
                m.get("config").replace("{", "{\"dropout_p\": 0.1, ")));
        GoldenCase.Outcome o = GoldenCase.run(bad, Backends.byName("cpu"), DType.F64);
        assertFalse(o.pass());
        assertTrue(o.reason().contains("unsupported config field 'dropout_p'"), o.reason());
    }

    @Test
    void aMissingTensorOrConfigFails() throws Exception {
        Path noV = rewrite("sdpa_plain.safetensors", (t, m) -> t.remove("v"));
        assertTrue(GoldenCase.run(noV, Backends.byName("cpu"), DType.F64).reason().contains("'v'"));
        Path noConfig = rewrite("rnn_tanh.safetensors", (t, m) -> m.clear());
        assertTrue(GoldenCase.run(noConfig, Backends.byName("cpu"), DType.F64).reason().contains("config"));
        Path noExpected = rewrite("rnn_tanh.safetensors", (t, m) -> t.keySet().removeIf(k -> k.startsWith("grad.")
                || k.equals("out") || k.equals("hn")));
        assertTrue(GoldenCase.run(noExpected, Backends.byName("cpu"), DType.F64).reason().contains("no expected outputs"));
    }

    /**
     * 16-bit runs are judged by FlashAttention's 2x rule against the same-precision reference, not
     * by element checks against PyTorch's F32 values: the exact reference passes a case whose
     * rounded inputs alone failed the old element check, and a backend that loses precision
     * (attention's output rounded to 4 mantissa bits, inside bf16's relative L2 limit of
     * PyTorch's values) fails; F32 statistics (the LSE) keep the F32 tolerance.
     */
    @Test
    void sixteenBitRunsAreJudgedByTheTwoTimesRule() {
        Path lstm = PyTorchGoldenTest.casesDir().resolve("lstm_odd_T97_H37.safetensors");
        GoldenCase.Outcome exact = GoldenCase.run(lstm, Backends.byName("cpu"), DType.BF16);
        assertTrue(exact.pass(), exact::reason);

        Path sdpa = PyTorchGoldenTest.casesDir().resolve("sdpa_plain.safetensors");
        GoldenCase.Outcome coarse = GoldenCase.run(sdpa, new Degraded(Degraded.Part.OUT), DType.BF16);
        assertFalse(coarse.pass(), coarse::toString);
        assertTrue(coarse.reason().startsWith("out: ") && coarse.reason().contains("above 2x the plain"), coarse.reason());
        assertTrue(coarse.outRelL2() < 1.6e-2, () -> "only the rule catches it: " + coarse);
        assertTrue(coarse.used() > 1, coarse::toString);

        GoldenCase.Outcome lse = GoldenCase.run(sdpa, new Degraded(Degraded.Part.LSE), DType.BF16);
        assertFalse(lse.pass());
        assertTrue(lse.reason().startsWith("lse: "), lse.reason());
        assertTrue(GoldenCase.run(sdpa, new Degraded(Degraded.Part.NONE), DType.BF16).pass(), "the wrapper alone changes nothing");
    }

    /** The cpu backend with one attention result made worse. */
    private static final class Degraded implements Backend {
        enum Part { NONE, OUT, LSE }

        private final Backend cpu = Backends.byName("cpu");
        private final Part part;

        Degraded(Part part) {
            this.part = part;
        }

        private static Tensor map(Tensor t, java.util.function.DoubleUnaryOperator f) {
            double[] v = t.toDoubleArray();
            for (int i = 0; i < v.length; i++) {
                v[i] = f.applyAsDouble(v[i]);
            }
            return Tensor.of(t.dtype(), v, t.shape());
        }

        @Override
        public String name() {
            return "degraded-cpu";
        }

        @Override
        public AttentionResult attentionForward(Attention op, Attention.Inputs inputs) {
            AttentionResult r = cpu.attentionForward(op, inputs);
            if (part == Part.OUT) {
                try (Tensor exact = r.out()) {
                    return new AttentionResult(map(exact, x -> {
                        long bits = Double.doubleToRawLongBits(x);
                        return Double.longBitsToDouble((bits + (1L << 47)) & -(1L << 48)); // 4 mantissa bits
                    }), r.lse(), r.saved());
                }
            }
            if (part == Part.LSE) {
                try (Tensor exact = r.lse()) {
                    return new AttentionResult(r.out(), map(exact, x -> x * (1 + 1e-4)), r.saved());
                }
            }
            return r;
        }

        @Override
        public AttentionGradients attentionBackward(Attention op, AttentionResult forward, Tensor dOut) {
            return cpu.attentionBackward(op, forward, dOut);
        }

        @Override
        public RecurrentResult recurrentForward(RecurrentConfig c, Map<String, Tensor> p, Tensor x, Tensor h0, Tensor c0, int[] lengths) {
            return cpu.recurrentForward(c, p, x, h0, c0, lengths);
        }

        @Override
        public RecurrentGradients recurrentBackward(RecurrentConfig c, Map<String, Tensor> p, RecurrentResult f, Tensor dOut, Tensor dHn,
                                                    Tensor dCn) {
            return cpu.recurrentBackward(c, p, f, dOut, dHn, dCn);
        }

        @Override
        public MhaResult mhaForward(MultiHeadAttention op, Map<String, Tensor> p, MultiHeadAttention.Inputs in) {
            return cpu.mhaForward(op, p, in);
        }

        @Override
        public MhaGradients mhaBackward(MultiHeadAttention op, Map<String, Tensor> p, MhaResult f, Tensor dOut, Tensor dWeights) {
            return cpu.mhaBackward(op, p, f, dOut, dWeights);
        }
    }
}
