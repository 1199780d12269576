package dev.seqkernels.io.onnx;

import com.google.protobuf.ByteString;
import com.google.protobuf.DynamicMessage;
import dev.seqkernels.Backend;
import dev.seqkernels.SeqkException;
import dev.seqkernels.Tensor;
import dev.seqkernels.ops.Activation;
import dev.seqkernels.ops.CellType;
import dev.seqkernels.ops.Direction;
import dev.seqkernels.ops.Gru;
import dev.seqkernels.ops.Lstm;
import dev.seqkernels.ops.RecurrentConfig;
import dev.seqkernels.ops.RecurrentOp;
import dev.seqkernels.ops.RecurrentResult;
import dev.seqkernels.ops.Rnn;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * Runs an ONNX LSTM, GRU or RNN node with seqkernels' ops: reads the node's attributes, converts
 * ONNX's weight layouts to PyTorch's names and gate orders, and returns outputs in ONNX's layouts.
 *
 * <p>ONNX gate blocks: LSTM i,o,f,c (ours i,f,g,o); GRU z,r,h (ours r,z,n); peepholes i,o,f (ours
 * i,f,o). W [D, G*H, I] -> weight_ih, R [D, G*H, H] -> weight_hh, B [D, 2*G*H] -> bias_ih then
 * bias_hh. Y is [T, D, B, H] (layout 0) or [B, T, D, H] (layout 1). activation_alpha/beta are
 * consumed in activation order, only by the activations that take them (HardSigmoid, Affine and
 * ScaledTanh take alpha and beta; LeakyRelu, ThresholdedRelu and Elu take alpha); missing values
 * fall back to the ONNX defaults.
 */
public final class OnnxRecurrent {
    private static final int[] LSTM_FROM_ONNX = {0, 2, 3, 1};
    private static final int[] GRU_FROM_ONNX = {1, 0, 2};
    private static final int[] RNN_FROM_ONNX = {0};
    private static final int[] PEEPHOLE_FROM_ONNX = {0, 2, 1};

    private OnnxRecurrent() {
    }

    /**
     * Runs {@code node} on {@code values} (graph values by name) and returns its outputs by the
     * node's output names (Y, Y_h, Y_c as present).
     */
    public static Map<String, Tensor> run(DynamicMessage node, Map<String, Tensor> values, Backend backend) {
        if (node == null || values == null) {
            throw new SeqkException.ShapeMismatch("OnnxRecurrent.run: argument '" + (node == null ? "node" : "values")
                    + "' is required");
        }
        String opType = (String) OnnxProto.get(node, "op_type");
        CellType cell = switch (opType) {
            case "LSTM" -> CellType.LSTM;
            case "GRU" -> CellType.GRU;
            case "RNN" -> CellType.RNN;
            default -> throw new SeqkException.Unsupported("ONNX op " + opType + " is not a recurrent op");
        };
        Map<String, DynamicMessage> attrs = new HashMap<>();
        for (DynamicMessage a : OnnxProto.messages(node, "attribute")) {
            attrs.put((String) OnnxProto.get(a, "name"), a);
        }
        List<String> inputNames = OnnxProto.strings(node, "input");
        Tensor x = input(cell, values, inputNames, 0, "X", 3, true);
        Tensor w = input(cell, values, inputNames, 1, "W", 3, true);
        Tensor r = input(cell, values, inputNames, 2, "R", 3, true);
        Tensor b = input(cell, values, inputNames, 3, "B", 2, false);
        Tensor seqLens = input(cell, values, inputNames, 4, "sequence_lens", 1, false);
        Tensor initialH = input(cell, values, inputNames, 5, "initial_h", 3, false);
        Tensor initialC = cell == CellType.LSTM ? input(cell, values, inputNames, 6, "initial_c", 3, false) : null;
        Tensor p = cell == CellType.LSTM ? input(cell, values, inputNames, 7, "P", 2, false) : null;

        int gates = cell.gates();
        int hidden = attrs.containsKey("hidden_size") ? intAttr(cell, attrs, "hidden_size")
                : size(cell, "W", w, 1, "its dimension 1") / gates;
        Direction direction = switch (stringAttr(attrs, "direction", "forward")) {
            case "forward" -> Direction.FORWARD;
            case "reverse" -> Direction.REVERSE;
            case "bidirectional" -> Direction.BIDIRECTIONAL;
            default -> throw new SeqkException.Unsupported("ONNX direction '" + stringAttr(attrs, "direction", "") + "'");
        };
        boolean batchFirst = flagAttr(cell, attrs, "layout");
        double clip = clipAttr(cell, attrs);
        List<List<Activation>> activations = activations(attrs, cell, direction);
        int inputSize = size(cell, "W", w, 2, "input_size");
        // The op checks X, initial_h/c and sequence_lens against its config; W, R, B and P are
        // reordered below before the op sees them, so their shapes are checked here.
        long d = direction.count();
        long gh = (long) gates * hidden;
        String gName = gates == 1 ? "" : gates + "*";
        expectShape(cell, "W", w, new long[]{d, gh, inputSize}, "[num_directions, " + gName + "hidden_size, input_size]");
        expectShape(cell, "R", r, new long[]{d, gh, hidden}, "[num_directions, " + gName + "hidden_size, hidden_size]");
        if (b != null) {
            expectShape(cell, "B", b, new long[]{d, 2 * gh}, "[num_directions, " + 2 * gates + "*hidden_size]");
        }
        if (p != null) {
            expectShape(cell, "P", p, new long[]{d, 3L * hidden}, "[num_directions, 3*hidden_size]");
        }

        RecurrentOp op = switch (cell) {
            case LSTM -> Lstm.builder().peepholes(p != null).inputForget(flagAttr(cell, attrs, "input_forget"))
                    .inputSize(inputSize).hiddenSize(hidden).direction(direction).batchFirst(batchFirst).bias(b != null)
                    .clip(clip).activationsPerDirection(activations).backend(backend).build();
            case GRU -> Gru.builder().linearBeforeReset(flagAttr(cell, attrs, "linear_before_reset"))
                    .inputSize(inputSize).hiddenSize(hidden).direction(direction).batchFirst(batchFirst).bias(b != null)
                    .clip(clip).activationsPerDirection(activations).backend(backend).build();
            case RNN -> Rnn.builder().inputSize(inputSize).hiddenSize(hidden).direction(direction).batchFirst(batchFirst)
                    .bias(b != null).clip(clip).activationsPerDirection(activations).backend(backend).build();
        };
        Map<String, Tensor> params = toPyTorch(op.config(), w, r, b, p);
        int[] lengths = null;
        if (seqLens != null) {
            double[] l = seqLens.toDoubleArray();
            lengths = new int[l.length];
            for (int i = 0; i < l.length; i++) {
                if (l[i] != (int) l[i]) {
                    throw new SeqkException.InvalidConfig("ONNX " + cell + ": sequence_lens[" + i + "] = " + l[i]
                            + " is not an integer that fits an int");
                }
                lengths[i] = (int) l[i];
            }
        }
        // ONNX layout 1 keeps states batch-major [B, D, H]; ours are [D, B, H].
        Tensor h0 = initialH == null ? null : batchFirst ? initialH.permute(1, 0, 2) : initialH;
        Tensor c0 = initialC == null ? null : batchFirst ? initialC.permute(1, 0, 2) : initialC;
        List<String> outputNames = OnnxProto.strings(node, "output");
        Map<String, Tensor> outputs = new LinkedHashMap<>();
        try (RecurrentResult res = op.forward(params, x, h0, c0, lengths)) {
            int nd = direction.count();
            put(outputs, outputNames, 0, () -> onnxY(res.output(), nd, hidden, batchFirst));
            put(outputs, outputNames, 1, () -> onnxState(res.hn(), batchFirst));
            put(outputs, outputNames, 2, () -> res.cn() == null ? null : onnxState(res.cn(), batchFirst));
        } finally {
            params.values().forEach(Tensor::close);
        }
        return outputs;
    }

    /** ONNX W, R, B (nullable), P (nullable) as PyTorch-named parameters of {@code c} (a single layer). */
    public static Map<String, Tensor> toPyTorch(RecurrentConfig c, Tensor w, Tensor r, Tensor b, Tensor p) {
        int[] fromOnnx = switch (c.cell()) {
            case LSTM -> LSTM_FROM_ONNX;
            case GRU -> GRU_FROM_ONNX;
            case RNN -> RNN_FROM_ONNX;
        };
        int h = c.hiddenSize();
        int g = c.cell().gates();
        Map<String, Tensor> out = new LinkedHashMap<>();
        for (int d = 0; d < c.numDirections(); d++) {
            String s = c.suffix(0, d);
            out.put("weight_ih_" + s, reorderBlocks(w.select(0, d), fromOnnx, h, 0));
            out.put("weight_hh_" + s, reorderBlocks(r.select(0, d), fromOnnx, h, 0));
            if (b != null) {
                Tensor bd = b.select(0, d);
                out.put("bias_ih_" + s, reorderBlocks(bd, fromOnnx, h, 0));
                out.put("bias_hh_" + s, reorderBlocks(bd, fromOnnx, h, g * h));
            }
            if (p != null) {
                out.put("weight_peephole_" + s, reorderBlocks(p.select(0, d), PEEPHOLE_FROM_ONNX, h, 0));
            }
        }
        return out;
    }

    /**
     * Rows [rowOffset + onnxBlock*h, +h) of {@code src} (rank 1 or 2) placed at our block positions:
     * our block k is ONNX block {@code fromOnnx[k]}.
     */
    private static Tensor reorderBlocks(Tensor src, int[] fromOnnx, int h, int rowOffset) {
        long cols = src.rank() == 2 ? src.size(1) : 1;
        // Every index below is below s.length (the shapes were checked), so the int casts are exact.
        double[] s = src.toDoubleArray();
        double[] dst = new double[(int) (fromOnnx.length * h * cols)];
        for (int k = 0; k < fromOnnx.length; k++) {
            System.arraycopy(s, (int) ((rowOffset + fromOnnx[k] * h) * cols), dst, (int) (k * h * cols), (int) (h * cols));
        }
        return src.rank() == 2 ? Tensor.of(src.dtype(), dst, (long) fromOnnx.length * h, cols)
                : Tensor.of(src.dtype(), dst, (long) fromOnnx.length * h);
    }

    /** Our output [T, B, D*H] (or [B, T, D*H]) as ONNX's Y [T, D, B, H] (or [B, T, D, H]). */
    private static Tensor onnxY(Tensor out, int nd, int hidden, boolean batchFirst) {
        long[] st = out.strides();
        Tensor split = Tensor.wrap(out.segment(), out.dtype(), new long[]{out.size(0), out.size(1), nd, hidden},
                new long[]{st[0], st[1], st[2] * hidden, st[2]}, out.offset());
        return (batchFirst ? split : split.permute(0, 2, 1, 3)).to(out.dtype());
    }

    /** Our state [D, B, H] as ONNX's [D, B, H] (layout 0) or [B, D, H] (layout 1), as a new tensor. */
    private static Tensor onnxState(Tensor s, boolean batchFirst) {
        return (batchFirst ? s.permute(1, 0, 2) : s).to(s.dtype());
    }

    private static void put(Map<String, Tensor> out, List<String> names, int i, java.util.function.Supplier<Tensor> value) {
        if (i < names.size() && !names.get(i).isEmpty()) {
            out.put(names.get(i), value.get());
        }
    }

    /** Input {@code i} ({@code role} in ONNX's operator spec), checked for its rank; null when optional and absent. */
    private static Tensor input(CellType cell, Map<String, Tensor> values, List<String> names, int i, String role,
                                int rank, boolean required) {
        if (i >= names.size() || names.get(i).isEmpty()) {
            if (required) {
                throw new SeqkException.ShapeMismatch("ONNX " + cell + ": input " + i + " '" + role + "' is required");
            }
            return null;
        }
        Tensor t = values.get(names.get(i));
        if (t == null) {
            throw new SeqkException.ShapeMismatch("ONNX " + cell + ": no value for input '" + role + "' (value '"
                    + names.get(i) + "')");
        }
        if (t.rank() != rank) {
            throw new SeqkException.ShapeMismatch("ONNX " + cell + ": input '" + role + "' has shape "
                    + Arrays.toString(t.shape()) + ", expected rank " + rank);
        }
        return t;
    }

    private static void expectShape(CellType cell, String role, Tensor t, long[] expected, String meaning) {
        if (!Arrays.equals(t.shape(), expected)) {
            throw new SeqkException.ShapeMismatch("ONNX " + cell + ": input '" + role + "' has shape "
                    + Arrays.toString(t.shape()) + ", expected " + Arrays.toString(expected) + " " + meaning);
        }
    }

    /** Extent {@code dim} of {@code t} as an int, or a clear error where it does not fit. */
    private static int size(CellType cell, String role, Tensor t, int dim, String what) {
        long v = t.size(dim);
        if (v > Integer.MAX_VALUE) {
            throw new SeqkException.ShapeMismatch("ONNX " + cell + ": input '" + role + "' " + what + " = " + v
                    + " does not fit an int");
        }
        return (int) v;
    }

    /** A required integer attribute that must fit an int: a cast would wrap 2^32 + 3 to 3. */
    private static int intAttr(CellType cell, Map<String, DynamicMessage> attrs, String name) {
        long v = longAttr(cell, attrs, name, 0);
        if (v != (int) v) {
            throw new SeqkException.InvalidConfig("ONNX " + cell + ": attribute '" + name + "' = " + v
                    + " does not fit an int");
        }
        return (int) v;
    }

    /** An attribute ONNX defines as 0 or 1 (absent: 0). */
    private static boolean flagAttr(CellType cell, Map<String, DynamicMessage> attrs, String name) {
        long v = longAttr(cell, attrs, name, 0);
        if (v != 0 && v != 1) {
            throw new SeqkException.InvalidConfig("ONNX " + cell + ": attribute '" + name + "' = " + v + ", expected 0 or 1");
        }
        return v == 1;
    }

    private static double clipAttr(CellType cell, Map<String, DynamicMessage> attrs) {
        DynamicMessage a = attrs.get("clip");
        if (a == null) {
            return Double.POSITIVE_INFINITY;
        }
        if (!a.hasField(OnnxProto.ATTRIBUTE.findFieldByName("f"))) {
            throw new SeqkException.InvalidConfig("ONNX " + cell + ": attribute 'clip' has no float value");
        }
        return (Float) OnnxProto.get(a, "f");
    }

    private static long longAttr(CellType cell, Map<String, DynamicMessage> attrs, String name, long dflt) {
        DynamicMessage a = attrs.get(name);
        if (a == null) {
            return dflt;
        }
        if (!a.hasField(OnnxProto.ATTRIBUTE.findFieldByName("i"))) {
            throw new SeqkException.InvalidConfig("ONNX " + cell + ": attribute '" + name + "' has no integer value");
        }
        return (Long) OnnxProto.get(a, "i");
    }

    private static String stringAttr(Map<String, DynamicMessage> attrs, String name, String dflt) {
        DynamicMessage a = attrs.get(name);
        return a == null ? dflt : ((ByteString) OnnxProto.get(a, "s")).toStringUtf8().toLowerCase(Locale.ROOT);
    }

    @SuppressWarnings("unchecked")
    private static List<List<Activation>> activations(Map<String, DynamicMessage> attrs, CellType cell, Direction dir) {
        int per = cell.activationCount();
        List<String> names = new ArrayList<>();
        if (attrs.containsKey("activations")) {
            for (ByteString s : (List<ByteString>) OnnxProto.get(attrs.get("activations"), "strings")) {
                names.add(s.toStringUtf8());
            }
        } else {
            List<String> dflt = switch (cell) {
                case LSTM -> List.of("Sigmoid", "Tanh", "Tanh");
                case GRU -> List.of("Sigmoid", "Tanh");
                case RNN -> List.of("Tanh");
            };
            for (int d = 0; d < dir.count(); d++) {
                names.addAll(dflt);
            }
        }
        if (names.size() == per && dir.count() == 2) {
            names.addAll(List.copyOf(names));
        }
        if (names.size() != per * dir.count()) {
            throw new SeqkException.InvalidConfig("ONNX " + cell + " with direction " + dir + " needs " + per * dir.count()
                    + " activations, got " + names);
        }
        List<Float> alphas = attrs.containsKey("activation_alpha")
                ? (List<Float>) OnnxProto.get(attrs.get("activation_alpha"), "floats") : List.of();
        List<Float> betas = attrs.containsKey("activation_beta")
                ? (List<Float>) OnnxProto.get(attrs.get("activation_beta"), "floats") : List.of();
        int ai = 0;
        int bi = 0;
        List<List<Activation>> result = new ArrayList<>();
        for (int d = 0; d < dir.count(); d++) {
            List<Activation> list = new ArrayList<>();
            for (int k = 0; k < per; k++) {
                Activation a = Activation.byOnnxName(names.get(d * per + k));
                double alpha = a.alpha();
                double beta = a.beta();
                switch (a.kind()) {
                    case HARD_SIGMOID, AFFINE, SCALED_TANH -> {
                        alpha = ai < alphas.size() ? alphas.get(ai++) : alpha;
                        beta = bi < betas.size() ? betas.get(bi++) : beta;
                    }
                    case LEAKY_RELU, THRESHOLDED_RELU, ELU -> alpha = ai < alphas.size() ? alphas.get(ai++) : alpha;
                    default -> {
                    }
                }
                list.add(new Activation(a.kind(), alpha, beta));
            }
            result.add(list);
        }
        return result;
    }
}
