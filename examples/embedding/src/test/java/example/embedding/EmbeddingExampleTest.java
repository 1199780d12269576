package example.embedding;

import dev.seqkernels.DType;
import dev.seqkernels.Tensor;
import dev.seqkernels.gpu.KernelReport;
import dev.seqkernels.ops.Attention;
import dev.seqkernels.ops.AttentionResult;
import dev.seqkernels.ops.CausalAlignment;
import dev.seqkernels.ops.Lstm;
import dev.seqkernels.ops.RecurrentResult;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The README's embedding example, run on the backend Maven names ({@code embedding.backend}: emu in
 * the first run, panama over the stand-in driver in the second), agrees with the same ops on the CPU
 * reference within fp32 rounding.
 */
class EmbeddingExampleTest {
    private static final double F32_TOLERANCE = 1e-5;

    @Test
    void theExampleRunsAndAgreesWithTheCpuReference() {
        String backend = System.getProperty("embedding.backend", "emu");
        skipIfTheStandInCannotRun();
        EmbeddingExample.Outputs got = EmbeddingExample.run(backend);
        close("lstm", cpuLstm(), got.lstm());
        close("attention", cpuAttention(), got.attention());
    }

    private static float[] cpuLstm() {
        Lstm lstm = Lstm.builder().inputSize(8).hiddenSize(16).backend("cpu").build();
        Map<String, Tensor> params = new HashMap<>();
        lstm.config().parameterShapes().forEach((name, shape) ->
                params.put(name, Tensor.of(EmbeddingExample.values(shape, name.hashCode()), shape)));
        try (Tensor x = Tensor.of(EmbeddingExample.values(new long[]{5, 2, 8}, 1), 5, 2, 8);
             RecurrentResult y = lstm.forwardInference(params, x, null, null, null)) {
            return y.output().toFloatArray();
        } finally {
            params.values().forEach(Tensor::close);
        }
    }

    private static float[] cpuAttention() {
        long[] qShape = {1, 2, 4, 8};
        long[] kvShape = {1, 2, 6, 8};
        Attention sdpa = Attention.builder().causal(CausalAlignment.BOTTOM_RIGHT).backend("cpu").build();
        try (Tensor q = Tensor.of(EmbeddingExample.values(qShape, 2), qShape); Tensor k = Tensor.of(EmbeddingExample.values(kvShape, 3), kvShape);
             Tensor v = Tensor.of(EmbeddingExample.values(kvShape, 4), kvShape);
             AttentionResult r = sdpa.forward(Attention.inputs(q, k, v).inference())) {
            assertEquals(DType.F32, r.out().dtype());
            return r.out().toFloatArray();
        }
    }

    private static void close(String what, float[] want, float[] got) {
        assertEquals(want.length, got.length, what + ": element count");
        double worst = 0;
        for (int i = 0; i < want.length; i++) {
            worst = Math.max(worst, Math.abs((double) want[i] - got[i]));
        }
        assertTrue(worst <= F32_TOLERANCE, what + ": max |cpu - gpu| = " + worst + " > " + F32_TOLERANCE);
    }

    /** Over the stand-in driver: a visible skip when the build could not make it (no cuda.h) or the fatbins (no nvcc). */
    private static void skipIfTheStandInCannotRun() {
        String dir = System.getProperty("seqkernels.test.standin");
        if (dir == null) {
            return;
        }
        Path note = Path.of(dir, "NOT-BUILT.txt");
        if (Files.exists(note)) {
            String why;
            try {
                why = Files.readString(note).strip();
            } catch (IOException e) {
                why = e.toString();
            }
            Assumptions.abort("skipped: the stand-in driver was not built: " + why);
        }
        KernelReport report = KernelReport.load();
        Assumptions.assumeTrue(report.built(), () -> "skipped: the stand-in runs the fatbins, and " + report.note());
    }
}
