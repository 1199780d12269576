package dev.seqkernels.bench;

import dev.seqkernels.DType;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The named shape grids of {@code seqk bench --suite}. Each case carries the least work its op must
 * do, so a time can be set against the roofline floor max(flops / peak flops, bytes / bandwidth).
 *
 * <p>Recurrent (one layer, one direction, I = H, G = 4 gates for LSTM and 3 for GRU, e = bytes per
 * element of the storage dtype): forward flops 2·T·B·(I+H)·G·H (the input and recurrent GEMMs; the
 * cell's pointwise work is negligible beside them); forward+backward 3x that (backward's data and
 * weight GEMMs each cost a forward); inference ({@code infer}: nothing kept for backward) as the
 * forward; {@code infer-graph} (the same inference forward on device tensors, captured once as one
 * CUDA graph by {@code DeviceRecurrentGraph} and timed per graph launch; the peer captures cuDNN's
 * inference forward with {@code torch.cuda.CUDAGraph}) as the inference. Forward bytes: W_hh re-read every step, T·G·H·H·e (the floor
 * that matters at small batch for a step loop, whose weights do not stay on chip between steps),
 * plus W_ih once and x and the output once. The persistent kernel (batches up to 16) keeps W_hh on
 * chip and so can run under this floor: its bound is the step's latency (ARCHITECTURE.md's
 * persistent cost model), which a floor/median above 1 shows. Forward+backward re-reads W_hh again per step and reads and writes the saved
 * activations: 2·T·G·H·H·e + 3·(x + output + T·B·G·H·e).
 *
 * <p>Attention (D = Dv): forward flops 4·B·H·Lq·Lk·D, half that when causal; backward 2.5x forward
 * (FlashAttention's count). Forward bytes: q, k, v, out once each plus the fp32 log-sum-exp;
 * backward reads those and dout and writes dq, dk, dv. Decoding (Lq = 1) is bound by reading k and v.
 *
 * <p>Multi-head self-attention (one tensor as query, key and value; E split into H heads of D,
 * N = B·L tokens): forward flops 8·N·E² (the q, k, v and output projections) plus the attention's;
 * forward+backward 3x the projections (each gradient GEMM costs a forward) plus 3.5x the
 * attention's. Forward bytes: the four weights once, x, and each intermediate written once and read
 * once (q, k, v, the merged heads) plus the output: 4·E²·e + 10·N·E·e; backward adds the weights
 * again and their fp32 gradients (4·E²·(e + 4)) and N·E·e for dy, dMerged written and read, the
 * attention backward's q, k, v, out and dout read and dq, dk, dv written, those read twice more
 * (the weight and input gradients), x read and dx written: 20·N·E·e.
 */
public final class BenchSuite {
    public static final List<String> NAMES = List.of("smoke", "rnn", "attn", "all");
    /** The recurrent inference forward as one graph launch ({@code DeviceRecurrentGraph}). */
    public static final String GRAPH_PASS = "infer-graph";

    /** Cases whose v1 activations would pass this many T·B·H elements are listed as skipped (~20 GB of device memory). */
    static final long RNN_ELEMENT_LIMIT = 1L << 27;

    private BenchSuite() {
    }

    public static List<BenchCase> cases(String name) {
        return switch (name) {
            case "smoke" -> smoke();
            case "rnn" -> rnn();
            case "attn" -> attention();
            case "all" -> {
                List<BenchCase> all = new ArrayList<>(rnn());
                all.addAll(attention());
                yield all;
            }
            default -> throw new IllegalArgumentException("unknown suite '" + name + "'; known: " + String.join(", ", NAMES));
        };
    }

    /** Tiny shapes of every op, for the emulator and the harness's own tests. */
    static List<BenchCase> smoke() {
        List<BenchCase> c = new ArrayList<>();
        for (String pass : List.of("infer", "fwd", "fwd+bwd")) {
            c.add(recurrent("smoke", "lstm", 3, 2, 8, DType.F32, pass));
            c.add(recurrent("smoke", "gru", 3, 17, 8, DType.BF16, pass));  // batch 17: the step graph (16 and under: persistent)
            if (pass.equals("infer")) {
                continue;  // attention's inference differs from its forward only in what is released
            }
            c.add(attention("smoke", 2, 2, 16, 8, false, DType.F16, pass));
            c.add(attention("smoke", 1, 2, 16, 8, true, DType.F32, pass));
            c.add(mha("smoke", 2, 8, 16, 2, false, DType.BF16, pass));
            c.add(mha("smoke", 1, 8, 16, 2, true, DType.F32, pass));
        }
        c.add(recurrent("smoke", "lstm", 3, 2, 8, DType.F32, GRAPH_PASS));
        c.add(recurrent("smoke", "gru", 3, 17, 8, DType.BF16, GRAPH_PASS));
        c.add(decode("smoke", 1, 4, 2, 64, 8, DType.BF16));
        return c;
    }

    static List<BenchCase> rnn() {
        List<BenchCase> c = new ArrayList<>();
        for (String pass : List.of("fwd", "fwd+bwd")) {
            for (DType dt : List.of(DType.F32, DType.BF16)) {
                for (int t : new int[]{1, 100, 1000}) {
                    for (int b : new int[]{1, 8, 64, 256}) {
                        for (int h : new int[]{256, 512, 1024, 2048}) {
                            c.add(recurrent("rnn", "lstm", t, b, h, dt, pass));
                            if (t == 100) {
                                c.add(recurrent("rnn", "gru", t, b, h, dt, pass));
                            }
                        }
                    }
                }
            }
        }
        // Inference beside the training forward at T = 100, where the per-step cost shows: the
        // cells write no trace (RecurrentGpu.forwardOnStream), cuDNN's inference mode keeps no
        // reserve space. And the same forward as one graph launch, against cuDNN's captured in a
        // CUDA graph by PyTorch: what a framework that repeats the call pays.
        for (String pass : List.of("infer", GRAPH_PASS)) {
            for (DType dt : List.of(DType.F32, DType.BF16)) {
                for (int b : new int[]{8, 256}) {
                    for (int h : new int[]{512, 1024}) {
                        c.add(recurrent("rnn", "lstm", 100, b, h, dt, pass));
                        c.add(recurrent("rnn", "gru", 100, b, h, dt, pass));
                    }
                }
            }
        }
        return c;
    }

    /**
     * B·L = 16k tokens, hidden 2048 split into heads of D; multi-head self-attention beside them at
     * L = 1k and 4k (E = 2048, B·L = 8k tokens); then decoding against long caches.
     */
    static List<BenchCase> attention() {
        List<BenchCase> c = new ArrayList<>();
        for (String pass : List.of("fwd", "fwd+bwd")) {
            for (DType dt : List.of(DType.BF16, DType.F16, DType.F32)) {
                for (int d : new int[]{64, 128}) {
                    for (boolean causal : new boolean[]{false, true}) {
                        for (int l : new int[]{512, 1024, 2048, 4096, 8192, 16384}) {
                            c.add(attention("attn", 16384 / l, 2048 / d, l, d, causal, dt, pass));
                            if (l == 1024 || l == 4096) {
                                c.add(mha("attn", 8192 / l, l, 2048, 2048 / d, causal, dt, pass));
                            }
                        }
                    }
                }
            }
        }
        for (int lk : new int[]{4096, 16384, 65536, 131072}) {
            c.add(decode("attn", 2, 32, 8, lk, 128, DType.BF16));
        }
        return c;
    }

    static BenchCase mha(String suite, int b, int l, int e, int heads, boolean causal, DType dt, String pass) {
        double el = dt.byteSize();
        double n = (double) b * l;
        double projections = 8.0 * n * e * e;
        double attention = 4.0 * b * (double) l * l * e * (causal ? 0.5 : 1);
        boolean both = pass.equals("fwd+bwd");
        double fwdBytes = 4.0 * e * e * el + 10 * n * e * el;
        double bytes = both ? fwdBytes + 4.0 * e * e * (el + 4) + 20 * n * e * el : fwdBytes;
        Map<String, Integer> shape = shape("B", b, "L", l, "E", e, "H", heads, "causal", causal ? 1 : 0);
        return new BenchCase(suite, "mha", shape, dt, pass, both ? 3 * projections + 3.5 * attention : projections + attention, bytes,
                null);
    }

    /** A case's shape: names and extents, in the order its key lists them. */
    private static Map<String, Integer> shape(Object... namesAndExtents) {
        Map<String, Integer> m = new LinkedHashMap<>();
        for (int i = 0; i < namesAndExtents.length; i += 2) {
            m.put((String) namesAndExtents[i], (Integer) namesAndExtents[i + 1]);
        }
        return m;
    }

    static BenchCase recurrent(String suite, String op, int t, int b, int h, DType dt, String pass) {
        int gates = op.equals("lstm") ? 4 : 3;
        double e = dt.byteSize();
        double fwdFlops = 2.0 * t * b * (2.0 * h) * gates * h;
        double io = (double) t * b * h * e * 2;
        double weights = (double) gates * h * h * e;
        boolean both = pass.equals("fwd+bwd");
        double bytes = both ? 2.0 * t * weights + weights + 3 * (io + (double) t * b * gates * h * e)
                : t * weights + weights + io;
        Map<String, Integer> shape = shape("T", t, "B", b, "I", h, "H", h);
        long elements = (long) t * b * h;
        String skip = elements > RNN_ELEMENT_LIMIT
                ? "T*B*H = " + elements + " is over the suite's limit of 2^27 activation elements (~20 GB of device memory)"
                : null;
        return new BenchCase(suite, op, shape, dt, pass, both ? 3 * fwdFlops : fwdFlops, bytes, skip);
    }

    static BenchCase attention(String suite, int b, int heads, int l, int d, boolean causal, DType dt, String pass) {
        double e = dt.byteSize();
        double fwdFlops = 4.0 * b * heads * l * (double) l * d * (causal ? 0.5 : 1);
        double tensor = (double) b * heads * l * d * e;
        double lse = (double) b * heads * l * 4;
        boolean both = pass.equals("fwd+bwd");
        double bytes = both ? 4 * tensor + lse + 8 * tensor + lse : 4 * tensor + lse;
        Map<String, Integer> shape = shape("B", b, "H", heads, "L", l, "D", d, "causal", causal ? 1 : 0);
        return new BenchCase(suite, "sdpa", shape, dt, pass, both ? 3.5 * fwdFlops : fwdFlops, bytes, null);
    }

    static BenchCase decode(String suite, int b, int heads, int kvHeads, int lk, int d, DType dt) {
        double e = dt.byteSize();
        double flops = 4.0 * b * heads * lk * d;
        double bytes = 2.0 * b * kvHeads * lk * d * e + 2.0 * b * heads * d * e;
        Map<String, Integer> shape = shape("B", b, "H", heads, "Hkv", kvHeads, "Lq", 1, "Lk", lk, "D", d);
        return new BenchCase(suite, "decode", shape, dt, "fwd", flops, bytes, null);
    }
}
