package dev.seqkernels.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.seqkernels.Backend;
import dev.seqkernels.Backends;
import dev.seqkernels.Compare;
import dev.seqkernels.DType;
import dev.seqkernels.Tensor;
import dev.seqkernels.gpu.GpuTargets;
import dev.seqkernels.gpu.PerBinding;
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

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** `seqk parity` through the binding under test (emu; panama and jcuda over the stand-in; a real GPU), and a wrong backend failing. */
@PerBinding
class ParityTest {
    private final ByteArrayOutputStream out = new ByteArrayOutputStream();
    private final ByteArrayOutputStream err = new ByteArrayOutputStream();

    @Test
    void everyOpPassesThroughTheBindingAndJsonIsParseable() throws Exception {
        int rc = Main.run(new String[]{"parity", "--backend", GpuTargets.backend(), "--json"}, new PrintStream(out, true),
                new PrintStream(err, true));
        JsonNode json = new ObjectMapper().readTree(out.toString());
        assertEquals(0, rc, out::toString);
        assertEquals(9 * 3 * 2, json.get("rows").size(), "9 cases x 3 dtypes x (fwd, bwd)");
        for (JsonNode row : json.get("rows")) {
            assertTrue(row.get("ok").asBoolean(), row::toString);
        }
    }

    /** A backend whose recurrent forward output is off by 1%: parity must say FAIL and exit 1. */
    @Test
    void aWrongBackendFails() {
        Backend wrong = recurrentOutputChanged(dt -> true, v -> v * 1.01 + 0.01, true);
        int rc = Main.parity(new Parity(wrong), 7, false, new PrintStream(out, true), new PrintStream(err, true));
        String table = out.toString();
        assertEquals(1, rc, table);
        assertTrue(table.contains("FAIL") && table.contains("output: element 0"), table);
        assertTrue(table.lines().anyMatch(l -> l.startsWith("sdpa  fwd") && l.contains("PASS")), "attention is untouched: " + table);
    }

    /**
     * F16 rows are judged by the 2x rule, not the table: an F16 recurrent output 0.15% high (within
     * the F16 table's relative L2 of 2e-3 and its element bounds, as checked here) is about 3x the
     * plain same-precision error, so its rows fail while the F32 rows pass.
     */
    @Test
    void sixteenBitRowsAreJudgedByTheTwoTimesRule() {
        java.util.function.DoubleUnaryOperator high = v -> v * 1.0015;
        Backend lossy = recurrentOutputChanged(dt -> dt == DType.F16, high, false);
        int rc = Main.parity(new Parity(lossy), 7, false, new PrintStream(out, true), new PrintStream(err, true));
        String table = out.toString();
        assertEquals(1, rc, table);
        for (String line : table.lines().filter(l -> l.startsWith("rnn   fwd") || l.startsWith("lstm  fwd")).toList()) {
            assertEquals(line.contains(" F16 "), line.contains("FAIL"), line);
            if (line.contains(" F16 ")) {
                assertTrue(line.contains("above 2x the plain"), line);
            }
        }
        try (Tensor x = Tensor.of(DType.F16, new double[]{0.1, -0.7, 0.33, 0.9}, 4);
             Tensor scaled = Tensor.of(DType.F16, java.util.Arrays.stream(x.toDoubleArray()).map(high).toArray(), 4)) {
            Compare.Result r = Compare.compare(scaled.toDoubleArray(), x.toDoubleArray(), Compare.tolerance(DType.F16));
            assertTrue(r.passes(Compare.tolerance(DType.F16)), "the F16 table alone passes such an error: " + r);
        }
    }

    /** The cpu reference, with each recurrent forward output value of the dtypes {@code which} picks changed by {@code change}. */
    private static Backend recurrentOutputChanged(java.util.function.Predicate<DType> which, java.util.function.DoubleUnaryOperator change,
                                                  boolean firstOnly) {
        Backend cpu = Backends.byName("cpu");
        return new Backend() {
            public String name() {
                return "wrong";
            }

            public RecurrentResult recurrentForward(RecurrentConfig c, Map<String, Tensor> p, Tensor x, Tensor h0, Tensor c0, int[] l) {
                RecurrentResult r = cpu.recurrentForward(c, p, x, h0, c0, l);
                if (which.test(x.dtype())) {
                    for (long i = 0; i < (firstOnly ? 1 : r.output().numel()); i++) {
                        r.output().setFlat(i, change.applyAsDouble(r.output().getFlat(i)));
                    }
                }
                return r;
            }

            public RecurrentGradients recurrentBackward(RecurrentConfig c, Map<String, Tensor> p, RecurrentResult f, Tensor d,
                                                        Tensor dh, Tensor dc) {
                return cpu.recurrentBackward(c, p, f, d, dh, dc);
            }

            public AttentionResult attentionForward(Attention op, Attention.Inputs in) {
                return cpu.attentionForward(op, in);
            }

            public AttentionGradients attentionBackward(Attention op, AttentionResult f, Tensor d) {
                return cpu.attentionBackward(op, f, d);
            }

            public MhaResult mhaForward(MultiHeadAttention op, Map<String, Tensor> p, MultiHeadAttention.Inputs in) {
                return cpu.mhaForward(op, p, in);
            }

            public MhaGradients mhaBackward(MultiHeadAttention op, Map<String, Tensor> p, MhaResult f, Tensor d, Tensor dw) {
                return cpu.mhaBackward(op, p, f, d, dw);
            }
        };
    }
}
