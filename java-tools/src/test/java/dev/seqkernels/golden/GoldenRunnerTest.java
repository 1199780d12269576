package dev.seqkernels.golden;

import dev.seqkernels.Backends;
import dev.seqkernels.DType;
import dev.seqkernels.Tensor;
import dev.seqkernels.io.Safetensors;
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
}
