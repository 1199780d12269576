package dev.seqkernels.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.seqkernels.Backend;
import dev.seqkernels.Backends;
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
        Backend cpu = Backends.byName("cpu");
        Backend wrong = new Backend() {
            public String name() {
                return "wrong";
            }

            public RecurrentResult recurrentForward(RecurrentConfig c, Map<String, Tensor> p, Tensor x, Tensor h0, Tensor c0, int[] l) {
                RecurrentResult r = cpu.recurrentForward(c, p, x, h0, c0, l);
                r.output().setFlat(0, r.output().getFlat(0) * 1.01 + 0.01);
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
        int rc = Main.parity(new Parity(wrong), 7, false, new PrintStream(out, true), new PrintStream(err, true));
        String table = out.toString();
        assertEquals(1, rc, table);
        assertTrue(table.contains("FAIL") && table.contains("output: element 0"), table);
        assertTrue(table.lines().anyMatch(l -> l.startsWith("sdpa  fwd") && l.contains("PASS")), "attention is untouched: " + table);
    }
}
