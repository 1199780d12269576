package dev.seqkernels.golden;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.seqkernels.Backend;
import dev.seqkernels.Backends;
import dev.seqkernels.Compare;
import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.Tensor;
import dev.seqkernels.io.Safetensors;
import dev.seqkernels.ops.Attention;
import dev.seqkernels.ops.AttentionGradients;
import dev.seqkernels.ops.AttentionResult;
import dev.seqkernels.ops.CausalAlignment;
import dev.seqkernels.ops.Gru;
import dev.seqkernels.ops.Lstm;
import dev.seqkernels.ops.Mask;
import dev.seqkernels.ops.MhaGradients;
import dev.seqkernels.ops.MhaResult;
import dev.seqkernels.ops.MultiHeadAttention;
import dev.seqkernels.ops.RecurrentCell;
import dev.seqkernels.ops.RecurrentGradients;
import dev.seqkernels.ops.RecurrentOp;
import dev.seqkernels.ops.RecurrentResult;
import dev.seqkernels.ops.Rnn;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * One golden case (a safetensors file written by {@code tools/golden/make_goldens.py}): runs the op
 * forward and backward on a backend and compares every expected output and gradient. The file
 * format is described in docs/CONVENTIONS.md; a case with a field this runner does not know fails
 * with the reason, it is never skipped.
 */
public final class GoldenCase {
    private static final ObjectMapper JSON = new ObjectMapper();

    private static final Set<String> RECURRENT_FIELDS = Set.of("op", "input_size", "hidden_size", "num_layers",
            "bidirectional", "seq_len", "batch", "batch_first", "lengths", "nonlinearity", "proj_size", "bias",
            "linear_before_reset");
    private static final Set<String> CELL_FIELDS = Set.of("op", "input_size", "hidden_size", "batch", "bias",
            "nonlinearity");
    private static final Set<String> SDPA_FIELDS = Set.of("op", "batch", "heads", "kv_heads", "q_len", "kv_len",
            "head_dim", "value_dim", "mask", "scale", "key_lengths", "query_lengths");
    private static final Set<String> MHA_FIELDS = Set.of("op", "embed_dim", "num_heads", "kdim", "vdim", "q_len",
            "kv_len", "batch", "batch_first", "self_attention", "need_weights", "bias");

    private GoldenCase() {
    }

    /**
     * @param outRelL2  worst relative L2 error over the outputs
     * @param gradRelL2 worst relative L2 error over the gradients
     * @param used      for 16-bit runs, the largest fraction of the 2x rule's allowance a result used
     *                  ({@link Compare.TwoTimes#used}: at most 1 passes); NaN otherwise, or when a
     *                  value was not finite
     * @param reason    why it failed (first failing tensor and element), or null when it passed
     */
    public record Outcome(String file, String op, boolean pass, double maxAbs, double outRelL2, double gradRelL2,
                          double used, String reason) {
    }

    /**
     * Runs the case with every tensor stored as {@code dtype}. F64 and F32 results are judged
     * against the file's expected values by the dtype's tolerance (relative L2 and element check).
     * F16 and BF16 results are judged as DESIGN.md section 6 says: against the file's expected
     * values by the dtype's relative L2 limit (the semantics), and by FlashAttention's 2x rule
     * ({@link Compare#twiceThePlain}) for the precision: the case runs first on the cpu backend in
     * double from the inputs rounded to {@code dtype} (the exact result of the same inputs) and on
     * the CPU reference's same-precision mode (the plain implementation), and each result's error
     * against the exact one must be at most twice the plain result's. A result kept wider than the
     * op (attention's F32 LSE) is judged against the exact one by its own dtype's tolerance.
     */
    public static Outcome run(Path file, Backend backend, DType dtype) {
        String op = "?";
        try (Safetensors.Contents c = Safetensors.read(file)) {
            String configText = c.metadata().get("config");
            if (configText == null) {
                return fail(file, op, "no __metadata__.config");
            }
            JsonNode json = JSON.readTree(configText);
            if (json == null || !json.isObject()) {
                return fail(file, op, "__metadata__.config is not a JSON object");
            }
            Config config = new Config(file, json);
            op = config.requiredString("op");
            Set<String> known = switch (op) {
                case "rnn", "lstm", "gru" -> RECURRENT_FIELDS;
                case "rnn_cell", "lstm_cell", "gru_cell" -> CELL_FIELDS;
                case "sdpa" -> SDPA_FIELDS;
                case "mha" -> MHA_FIELDS;
                default -> null;
            };
            if (known == null) {
                return fail(file, op, "unknown op '" + op + "'");
            }
            for (Iterator<String> it = json.fieldNames(); it.hasNext(); ) {
                String field = it.next();
                if (!known.contains(field)) {
                    return fail(file, op, "unsupported config field '" + field + "'");
                }
            }
            try (Checker checker = new Checker(c, dtype, false)) {
                if (dtype == DType.F16 || dtype == DType.BF16) {
                    try (Checker exact = new Checker(c, dtype, true); Checker plain = new Checker(c, dtype, false)) {
                        reference(op, config, exact, Backends.byName("cpu"), "the exact run (cpu in double on the rounded inputs)");
                        reference(op, config, plain, Backends.byName(Backends.CPU_SAME_PRECISION), "the plain run ("
                                + Backends.CPU_SAME_PRECISION + ")");
                        checker.twoTimes(exact.recorded, plain.recorded);
                    }
                }
                runOp(op, config, checker, backend);
                return checker.outcome(file, op);
            }
        } catch (Exception e) {
            return fail(file, op, e.getClass().getSimpleName() + ": " + e.getMessage());
        }
    }

    /** Runs one of a 16-bit case's reference runs; a failure there names the run. */
    private static void reference(String op, Config config, Checker checker, Backend backend, String run) {
        try {
            runOp(op, config, checker, backend);
        } catch (RuntimeException e) {
            throw new IllegalStateException(run + " failed: " + e.getClass().getSimpleName() + ": " + e.getMessage(), e);
        }
    }

    private static void runOp(String op, Config config, Checker checker, Backend backend) {
        switch (op) {
            case "sdpa" -> runSdpa(config, checker, backend);
            case "mha" -> runMha(config, checker, backend);
            case "rnn_cell", "lstm_cell", "gru_cell" -> runCell(op, config, checker, backend);
            default -> runRecurrent(op, config, checker, backend);
        }
    }

    private static Outcome fail(Path file, String op, String reason) {
        return new Outcome(file.toString(), op, false, Double.NaN, Double.NaN, Double.NaN, Double.NaN, reason);
    }

    /**
     * Inputs converted to the run's dtype (and back to F64 for the exact run of a 16-bit case), and
     * the comparisons made so far: by the tolerance, or, given the exact and plain results by name,
     * by the relative L2 limit and the 2x rule. Every result is also recorded by name.
     */
    private static final class Checker implements AutoCloseable {
        final Safetensors.Contents file;
        final DType dtype;
        final boolean widened;
        final Compare.Tolerance tolerance;
        final Map<String, double[]> recorded = new LinkedHashMap<>();
        Map<String, double[]> exact;
        Map<String, double[]> plain;
        final List<Tensor> converted = new ArrayList<>();
        double maxAbs;
        double outRel;
        double gradRel;
        double used;
        String reason;
        int compared;

        /** {@code widened}: inputs rounded to {@code dtype}, then given to the op as F64. */
        Checker(Safetensors.Contents file, DType dtype, boolean widened) {
            this.file = file;
            this.dtype = dtype;
            this.widened = widened;
            this.tolerance = Compare.tolerance(dtype);
        }

        /** Judges by the 2x rule, given the exact and the plain same-precision results by name. */
        void twoTimes(Map<String, double[]> exact, Map<String, double[]> plain) {
            this.exact = exact;
            this.plain = plain;
        }

        boolean has(String name) {
            return file.tensors().containsKey(name);
        }

        /** A floating tensor of the file in the run's dtype (null if absent and optional). */
        Tensor input(String name, boolean required) {
            Tensor t = file.tensors().get(name);
            if (t == null) {
                if (required) {
                    throw new SeqkException.ShapeMismatch("tensor '" + name + "' is missing");
                }
                return null;
            }
            Tensor r = t.dtype() == dtype ? t : t.to(dtype);
            if (r != t) {
                converted.add(r);
            }
            if (widened) {
                r = r.to(DType.F64);
                converted.add(r);
            }
            return r;
        }

        Map<String, Tensor> params() {
            Map<String, Tensor> m = new LinkedHashMap<>();
            for (String name : file.tensors().keySet()) {
                if (name.startsWith("param.")) {
                    m.put(name.substring(6), input(name, true));
                }
            }
            return m;
        }

        /** Compares {@code actual} with expected tensor {@code name}; {@code gradient} picks the summary column. */
        void check(String name, Tensor actual, boolean gradient) {
            Tensor expected = file.tensors().get(name);
            if (expected == null) {
                return;
            }
            if (actual == null) {
                record(name, null);
                return;
            }
            if (!java.util.Arrays.equals(expected.shape(), actual.shape())) {
                record(name, "shape " + java.util.Arrays.toString(actual.shape()) + " vs expected "
                        + java.util.Arrays.toString(expected.shape()));
                return;
            }
            double[] values = actual.toDoubleArray();
            recorded.put(name, values);
            Compare.Result r;
            if (plain == null) {
                r = Compare.compare(values, expected.toDoubleArray(), tolerance);
            } else if (plain.get(name) == null || exact.get(name) == null) {
                record(name, "the exact or the plain run did not produce it");
                return;
            } else {
                r = Compare.compare(values, expected.toDoubleArray(), Compare.FINITE_ONLY);
                double[] ref = exact.get(name);
                if (actual.dtype() == dtype) {
                    Compare.TwoTimes rule = Compare.twiceThePlain(values, plain.get(name), ref, dtype);
                    used = Double.isNaN(rule.used()) ? Double.NaN : Math.max(used, rule.used());
                    if (rule.firstBad() != null) {
                        record(name, rule.firstBad() + " (the 2x rule, against the exact result of the rounded inputs)");
                    }
                } else {
                    // a statistic kept wider than the op (attention's F32 LSE): its own dtype's tolerance
                    Compare.Tolerance own = Compare.tolerance(actual.dtype());
                    Compare.Result wide = Compare.compare(values, ref, own);
                    if (!wide.passes(own)) {
                        record(name, (wide.firstBad() != null ? wide.firstBad() : "relative L2 " + wide.relL2() + " > " + own.relL2())
                                + " (" + actual.dtype() + " tolerance, against the exact result of the rounded inputs)");
                    }
                }
            }
            compared++;
            maxAbs = Double.isNaN(r.maxAbs()) ? Double.NaN : Math.max(maxAbs, r.maxAbs());
            if (gradient) {
                gradRel = Math.max(gradRel, r.relL2());
            } else {
                outRel = Math.max(outRel, r.relL2());
            }
            if (r.firstBad() != null || !(r.relL2() <= tolerance.relL2())) {
                record(name, (r.firstBad() != null ? r.firstBad() : "relative L2 " + r.relL2() + " > " + tolerance.relL2())
                        + (plain == null ? "" : " (against PyTorch's values)"));
            }
        }

        private void record(String name, String what) {
            if (reason == null) {
                reason = name + ": " + (what == null ? "not produced" : what);
            }
        }

        @Override
        public void close() {
            converted.forEach(Tensor::close);
            converted.clear();
        }

        Outcome outcome(Path path, String op) {
            if (reason == null && compared == 0) {
                reason = "the file holds no expected outputs";
            }
            return new Outcome(path.toString(), op, reason == null, maxAbs, outRel, gradRel, plain == null ? Double.NaN : used,
                    reason);
        }
    }

    private static void runRecurrent(String op, Config c, Checker k, Backend backend) {
        int layers = c.intOr("num_layers", 1);
        boolean bidir = c.boolOr("bidirectional", false);
        boolean batchFirst = c.boolOr("batch_first", false);
        boolean bias = c.boolOr("bias", true);
        int in = c.requiredInt("input_size");
        int hidden = c.requiredInt("hidden_size");
        RecurrentOp rec = switch (op) {
            case "lstm" -> Lstm.builder().inputSize(in).hiddenSize(hidden).numLayers(layers).bidirectional(bidir)
                    .batchFirst(batchFirst).bias(bias).projSize(c.intOr("proj_size", 0)).backend(backend).build();
            case "gru" -> Gru.builder().inputSize(in).hiddenSize(hidden).numLayers(layers).bidirectional(bidir)
                    .batchFirst(batchFirst).bias(bias).linearBeforeReset(c.boolOr("linear_before_reset", true))
                    .backend(backend).build();
            default -> Rnn.builder().inputSize(in).hiddenSize(hidden).numLayers(layers).bidirectional(bidir)
                    .batchFirst(batchFirst).bias(bias).nonlinearity(c.stringOr("nonlinearity", "tanh"))
                    .backend(backend).build();
        };
        int[] lengths = c.intsOrNull("lengths");
        Map<String, Tensor> params = k.params();
        Tensor x = k.input("x", true);
        try (RecurrentResult r = rec.forward(params, x, k.input("h0", false), k.input("c0", false), lengths)) {
            k.check("out", r.output(), false);
            k.check("hn", r.hn(), false);
            k.check("cn", r.cn(), false);
            try (RecurrentGradients g = rec.backward(params, r, k.input("seed.out", false), k.input("seed.hn", false),
                    k.input("seed.cn", false))) {
                k.check("grad.x", g.dx(), true);
                k.check("grad.h0", g.dh0(), true);
                k.check("grad.c0", g.dc0(), true);
                for (var e : g.params().entrySet()) {
                    k.check("grad." + e.getKey(), e.getValue(), true);
                }
            }
        }
    }

    private static void runCell(String op, Config c, Checker k, Backend backend) {
        int in = c.requiredInt("input_size");
        int hidden = c.requiredInt("hidden_size");
        boolean bias = c.boolOr("bias", true);
        RecurrentCell cell = switch (op) {
            case "lstm_cell" -> Lstm.builder().inputSize(in).hiddenSize(hidden).bias(bias).backend(backend).buildCell();
            case "gru_cell" -> Gru.builder().inputSize(in).hiddenSize(hidden).bias(bias).backend(backend).buildCell();
            default -> Rnn.builder().inputSize(in).hiddenSize(hidden).bias(bias)
                    .nonlinearity(c.stringOr("nonlinearity", "tanh")).backend(backend).buildCell();
        };
        Map<String, Tensor> params = k.params();
        try (RecurrentCell.Result r = cell.forward(params, k.input("x", true), k.input("h0", false), k.input("c0", false))) {
            k.check("hn", r.h(), false);
            k.check("cn", r.c(), false);
            try (RecurrentCell.Gradients g = cell.backward(params, r, k.input("seed.hn", false), k.input("seed.cn", false))) {
                k.check("grad.x", g.dx(), true);
                k.check("grad.h0", g.dh(), true);
                k.check("grad.c0", g.dc(), true);
                for (var e : g.params().entrySet()) {
                    k.check("grad." + e.getKey(), e.getValue(), true);
                }
            }
        }
    }

    private static void runSdpa(Config c, Checker k, Backend backend) {
        String mask = c.stringOr("mask", "null");
        Attention.Builder b = Attention.builder().backend(backend);
        Double scale = c.doubleOrNull("scale");
        if (scale != null) {
            b.scale(scale);
        }
        switch (mask) {
            case "causal_bottom_right" -> b.causal(CausalAlignment.BOTTOM_RIGHT);
            case "causal_top_left" -> b.causal(CausalAlignment.TOP_LEFT);
            case "null", "bool", "additive" -> {
            }
            default -> throw new SeqkException.Unsupported("unknown sdpa mask kind '" + mask + "'");
        }
        Attention op = b.build();
        Attention.Inputs in = Attention.inputs(k.input("q", true), k.input("k", true), k.input("v", true));
        if (mask.equals("bool")) {
            in.mask(Mask.allowed(k.file.require("mask")));
        } else if (mask.equals("additive")) {
            in.mask(Mask.additive(k.input("mask", true)));
        }
        in.keyLengths(c.intsOrNull("key_lengths")).queryLengths(c.intsOrNull("query_lengths"));
        try (AttentionResult r = op.forward(in)) {
            k.check("out", r.out(), false);
            k.check("lse", r.lse(), false);
            try (AttentionGradients g = op.backward(r, k.input("seed.out", true))) {
                k.check("grad.q", g.dq(), true);
                k.check("grad.k", g.dk(), true);
                k.check("grad.v", g.dv(), true);
            }
        }
    }

    private static void runMha(Config c, Checker k, Backend backend) {
        int e = c.requiredInt("embed_dim");
        boolean self = c.boolOr("self_attention", false);
        MultiHeadAttention op = MultiHeadAttention.builder().embedDim(e).numHeads(c.requiredInt("num_heads"))
                .kdim(c.intOr("kdim", e)).vdim(c.intOr("vdim", e)).batchFirst(c.boolOr("batch_first", false))
                .bias(c.boolOr("bias", true)).needWeights(c.boolOr("need_weights", false))
                .backend(backend).build();
        Tensor query = k.input("query", true);
        Tensor key = self ? query : k.input("key", true);
        Tensor value = self ? query : k.input("value", true);
        MultiHeadAttention.Inputs in = MultiHeadAttention.inputs(query, key, value);
        if (k.has("key_padding_mask")) {
            in.keyPaddingMask(pytorchMask(k, "key_padding_mask"));
        }
        if (k.has("attn_mask")) {
            in.attnMask(pytorchMask(k, "attn_mask"));
        }
        Map<String, Tensor> params = k.params();
        try (MhaResult r = op.forward(params, in)) {
            k.check("out", r.out(), false);
            k.check("attn_weights_avg", r.attnWeights(), false);
            try (MhaGradients g = op.backward(params, r, k.input("seed.out", true),
                    r.attnWeights() == null ? null : k.input("seed.attn_weights_avg", false))) {
                if (self) {
                    try (Tensor sum = Tensor.allocate(query.dtype(), query.shape())) {
                        for (long i = 0; i < sum.numel(); i++) {
                            sum.setFlat(i, g.dQuery().getFlat(i) + g.dKey().getFlat(i) + g.dValue().getFlat(i));
                        }
                        k.check("grad.query", sum, true);
                    }
                } else {
                    k.check("grad.query", g.dQuery(), true);
                    k.check("grad.key", g.dKey(), true);
                    k.check("grad.value", g.dValue(), true);
                }
                for (var p : g.params().entrySet()) {
                    k.check("grad." + p.getKey(), p.getValue(), true);
                }
            }
        }
    }

    /** PyTorch's mask convention: integer/bool tensors mean blocked, floating tensors are additive. */
    private static Mask pytorchMask(Checker k, String name) {
        Tensor t = k.file.require(name);
        return t.dtype().isFloatingPoint() ? Mask.additive(k.input(name, true)) : Mask.blocked(t);
    }

    /**
     * The case's config, each field read with its JSON type checked: a missing required field or a
     * field of the wrong type is a {@link SeqkException.MalformedFile} naming the field, never a
     * silent 0, default or wrapped value. An absent or null optional field takes its default.
     */
    private record Config(Path file, JsonNode json) {
        private JsonNode field(String name, boolean required) {
            JsonNode v = json.get(name);
            if (v == null || v.isNull()) {
                if (required) {
                    throw bad(name, "is missing");
                }
                return null;
            }
            return v;
        }

        private SeqkException.MalformedFile bad(String name, String reason) {
            return new SeqkException.MalformedFile(file + ": config field '" + name + "' " + reason);
        }

        private SeqkException.MalformedFile wrongType(String name, JsonNode v, String expected) {
            return bad(name, "is " + v.getNodeType() + " " + v + ", expected " + expected);
        }

        private int toInt(String name, JsonNode v) {
            if (!v.isIntegralNumber() || !v.canConvertToInt()) {
                throw wrongType(name, v, "an integer that fits an int");
            }
            return v.intValue();
        }

        private int toInt(String name, int element, JsonNode v) {
            if (!v.isIntegralNumber() || !v.canConvertToInt()) {
                throw bad(name, "element " + element + " is " + v.getNodeType() + " " + v
                        + ", expected an integer that fits an int");
            }
            return v.intValue();
        }

        int requiredInt(String name) {
            return toInt(name, field(name, true));
        }

        int intOr(String name, int dflt) {
            JsonNode v = field(name, false);
            return v == null ? dflt : toInt(name, v);
        }

        boolean boolOr(String name, boolean dflt) {
            JsonNode v = field(name, false);
            if (v != null && !v.isBoolean()) {
                throw wrongType(name, v, "a boolean");
            }
            return v == null ? dflt : v.booleanValue();
        }

        String requiredString(String name) {
            JsonNode v = field(name, true);
            if (!v.isTextual()) {
                throw wrongType(name, v, "a string");
            }
            return v.textValue();
        }

        String stringOr(String name, String dflt) {
            return field(name, false) == null ? dflt : requiredString(name);
        }

        Double doubleOrNull(String name) {
            JsonNode v = field(name, false);
            if (v != null && !v.isNumber()) {
                throw wrongType(name, v, "a number");
            }
            return v == null ? null : v.doubleValue();
        }

        int[] intsOrNull(String name) {
            JsonNode v = field(name, false);
            if (v == null) {
                return null;
            }
            if (!v.isArray()) {
                throw wrongType(name, v, "a list of integers");
            }
            int[] r = new int[v.size()];
            for (int i = 0; i < r.length; i++) {
                r[i] = toInt(name, i, v.get(i));
            }
            return r;
        }
    }
}
