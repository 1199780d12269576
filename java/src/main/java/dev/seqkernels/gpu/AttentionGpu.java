package dev.seqkernels.gpu;

import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.Tensor;
import dev.seqkernels.ops.Attention;
import dev.seqkernels.ops.AttentionGradients;
import dev.seqkernels.ops.AttentionResult;
import dev.seqkernels.ops.CausalAlignment;
import dev.seqkernels.ops.Mask;
import dev.seqkernels.ops.MhaGradients;
import dev.seqkernels.ops.MhaResult;
import dev.seqkernels.ops.MultiHeadAttention;

import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The GPU path of Attention and MultiHeadAttention, written once against {@link Driver}, with
 * cuda/attention.cu's kernels (code under cuda/attention/). Masks become f32 additive biases (-inf blocks) with broadcast
 * strides; multi-head attention projects with GEMMs into [B*L, E] buffers that the attention
 * kernels read and write through head strides (no transposes), in its interior type
 * ({@link #mhaInteriorType}): an F16 or BF16 op's 16 bits end to end (16-bit GEMM operands with
 * fp32 accumulation, the 16-bit attention kernels: on tensor cores where the rules below pick them),
 * F32 for F32 ops and under V1.
 *
 * <p>Forward kernel selection: decoding shapes (Lq &lt;= 16 and Lk &gt;= 1024, any dtype, D and Dv up
 * to 256) take split-KV ({@link #splitPlan}: enough key splits for about two blocks per
 * multiprocessor, then {@code attn_fwd_combine}); the split kernel ({@link #splitKernel}) is
 * {@code attn_fwd_decode_tc64/128} (tensor cores, 16 query rows of a GQA group per block) for F16
 * and BF16 up to 128 on sm_80+, {@code attn_fwd_decode64/128/256} (SIMT, 4 rows) for F32 and for
 * 16-bit above 128, both with 16-byte copies of k and v tiles and so for rows 16-byte aligned and
 * contiguous, and where their shared memory fits (not on sm_75); otherwise {@code attn_fwd_split},
 * which reads any strides. Otherwise
 * ({@link #forwardKernel}) the tiled tensor-core kernel
 * {@code attn_fwd_tc64} (D and Dv up to 64), {@code attn_fwd_tc128} (up to 128) or
 * {@code attn_fwd_tc256} (up to 256; q in shared memory) when the storage is F16 or BF16 and the
 * device is sm_80 or newer, where the instance's shared memory fits ({@link #tiledInstance});
 * {@code attn_fwd_tf32x64/128} likewise for F32 storage when the op allows TF32
 * ({@link Attention.Builder#allowTf32}); v1 otherwise (F32 without TF32, which includes multi-head
 * attention's F32 interior unless the op allows TF32; TF32 above 128; older GPUs).
 * Backward ({@link #backwardKernel}) recomputes from the LSE whichever forward wrote: the tiled
 * tensor-core kernels {@code attn_bwd_dq_tc64} then {@code attn_bwd_dkdv_tc64} (D and Dv up to
 * 64; {@code _tc128} up to 128) when the storage is F16 or BF16, the device is sm_80 or newer and the probabilities are not
 * an output (multi-head attention's weights add their gradient to dP, which only v1 takes); v1's
 * {@code attn_bwd_dq} then {@code attn_bwd_dkdv} otherwise; the tensor-core kernels in their
 * {@code _nobias} instance ({@link #tcInstance}) when there is no explicit mask and
 * the tiles they stream (dq: k and v; dk/dv: q and dout) load in 16-byte rows. Both pairs write delta, dq, dk and dv
 * in f32 alike; the tensor-core pair reads dout in the storage type (as FlashAttention's does), v1's
 * in f32 ({@link #doutType}): the host path uploads it so and the device path gathers it so, in one
 * pass either way.
 */
final class AttentionGpu {
    private static final int THREADS = 128;
    /** Query rows per block of the tensor-core forward (4 warps x 16). */
    private static final int TC_ROWS = 64;

    /** AUTO: the selection rules above, forward and backward; V1: always the plain ports (tests compare the two). */
    enum KernelChoice { AUTO, V1 }

    private volatile KernelChoice kernelChoice = KernelChoice.AUTO;

    private final Driver driver;
    private final long module;
    private final long util;
    private final Map<String, Long> functions = new java.util.concurrent.ConcurrentHashMap<>();
    private final DeviceCasts casts;

    AttentionGpu(Driver driver) {
        this.driver = driver;
        this.casts = new DeviceCasts(driver, this::utilFn);
        this.module = driver.loadModule("attention");
        this.util = driver.loadModule("util");
    }

    private long fn(String name, DType dt) {
        return functions.computeIfAbsent(name + "_" + RecurrentGpu.suffix(dt), n -> driver.function(module, n));
    }

    void kernelChoice(KernelChoice choice) {
        kernelChoice = choice;
    }

    /**
     * The instance of a tiled kernel (without the dtype suffix): a 16-bit tensor-core kernel's
     * (forward, backward dq and dk/dv) {@code _nobias} instance when there is no
     * explicit mask and every row it streams through shared memory loads in 16-byte chunks (its
     * mask code is only the causal and length boundaries, its loads only cp.async, its loops over
     * the whole of DMAX), else the kernel itself, which takes every option at run time. The TF32
     * kernels have one instance.
     */
    static String tcInstance(String kernel, boolean bias, boolean sixteenByteRows) {
        boolean twoInstances = kernel.startsWith("attn_fwd_tc") || kernel.startsWith("attn_bwd_dkdv_tc")
                || kernel.startsWith("attn_bwd_dq_tc");
        return twoInstances && !bias && sixteenByteRows ? kernel + "_nobias" : kernel;
    }

    /**
     * Key rows per tile of a tiled forward instance (as cuda/attention.cu instantiates them): 64
     * for the 16-bit kernels up to 128, but 32 for attn_fwd_tc128 with every option (its
     * registers); at 256 32 (no bias) and 16 (every option); 32 / 16 for the TF32 kernels.
     */
    static int keysPerTile(String instance) {
        return switch (instance) {
            case "attn_fwd_tc64", "attn_fwd_tc64_nobias", "attn_fwd_tc128_nobias" -> 64;
            case "attn_fwd_tc128", "attn_fwd_tc256_nobias", "attn_fwd_tf32x64" -> 32;
            case "attn_fwd_tc256", "attn_fwd_tf32x128" -> 16;
            default -> throw new IllegalArgumentException("not a tiled forward instance: " + instance);
        };
    }

    /** The columns a tiled kernel's tiles hold (DMAX): the number its name ends with ({@code attn_fwd_tc256_nobias}: 256). */
    static int tileColumns(String kernel) {
        Matcher m = TILE_COLUMNS.matcher(kernel);
        if (!m.find()) {
            throw new IllegalArgumentException("not a tiled kernel: " + kernel);
        }
        return Integer.parseInt(m.group(1));
    }

    private static final Pattern TILE_COLUMNS = Pattern.compile("(?:tc|tf32x)(\\d+)(?:_nobias)?$");

    /**
     * The tiled forward's `vec` argument: bit 0, the tiles it loads have 16-byte rows; bit 1, so
     * has out (Dv a multiple of 8, unit column stride, 16-byte aligned rows), for the 16-bit
     * no-bias kernels' 16-byte stores of the staged output (the general and TF32 kernels read bit 0 only).
     */
    static int tiledFlags(boolean sixteenByteTiles, int valueDim, long[] outStrides, long outPointer, DType dt) {
        boolean out16 = valueDim % (16 / dt.byteSize()) == 0 && alignedRows(outStrides, outPointer, dt);
        return (sixteenByteTiles ? 1 : 0) | (out16 ? 2 : 0);
    }

    /**
     * The tiled forward instance to launch for forwardKernel's pick ({@link #tcInstance}), or null
     * for v1: when the pick is v1, or where the instance's shared memory exceeds the device's
     * opt-in limit (no sm_80+ GPU has less than the 101,376 bytes the 256-column instance without
     * bias takes, but the rule does not assume it).
     */
    static String tiledInstance(String kernel, DType dt, boolean bias, boolean sixteenByteRows, int sharedPerBlockOptin) {
        if (kernel.equals("attn_fwd")) {
            return null;
        }
        String instance = tcInstance(kernel, bias, sixteenByteRows);
        return forwardSharedBytes(instance, dt) <= sharedPerBlockOptin ? instance : null;
    }

    /**
     * Dynamic shared memory of a tiled forward instance: two buffers of k and v tiles, their rows
     * padded (16-bit: by 8 elements; TF32: by 4 floats, plus each warp's 16 rows of P), and above
     * 128 columns the block's q tile (64 rows, padded likewise), which the kernel keeps in shared
     * memory there (cuda/attention/forward_tc.cuh).
     */
    static int forwardSharedBytes(String instance, DType dt) {
        int dmax = tileColumns(instance);
        int keys = keysPerTile(instance);
        if (dt == DType.F32) {
            return 2 * 2 * keys * (dmax + 4) * 4 + 4 * 16 * (keys + 4) * 4;
        }
        int qTile = queryTileInSharedMemory(instance) ? TC_ROWS * (dmax + 8) * 2 : 0;
        return 2 * 2 * keys * (dmax + 8) * 2 + qTile;
    }

    /**
     * Whether a tiled 16-bit forward kernel or instance keeps the block's q tile in shared memory
     * (above 128 columns, where cuda/attention/forward_tc.cuh's Q_SHARED holds): it then loads q by
     * the 16-byte rule k and v follow, and needs the tile's bytes.
     */
    static boolean queryTileInSharedMemory(String kernel) {
        return kernel.startsWith("attn_fwd_tc") && tileColumns(kernel) > 128;
    }

    /**
     * Multi-head attention's interior type: of the projected q, k and v, the merged attention output,
     * the gradients entering and leaving the attention backward (dMerged; dq, dk and dv), and of
     * every projection GEMM's operands (which accumulate in fp32). The storage type for an F16 or
     * BF16 op under AUTO: 16 bits end to end with the 16-bit attention kernels in between (on tensor
     * cores where {@link #forwardKernel} and {@link #backwardKernel} pick them), as
     * PyTorch's 16-bit nn.MultiheadAttention runs. F32 for F32 ops, and for V1, whose interior is all F32.
     */
    static DType mhaInteriorType(DType storage, KernelChoice choice) {
        boolean sixteenBit = storage == DType.F16 || storage == DType.BF16;
        return sixteenBit && choice == KernelChoice.AUTO ? storage : DType.F32;
    }

    /** The forward kernel's name (without the dtype suffix): the selection rule in the class comment. */
    static String forwardKernel(DType dt, int headDim, int valueDim, int computeMajor, KernelChoice choice, boolean allowTf32) {
        boolean sixteenBit = dt == DType.F16 || dt == DType.BF16;
        boolean tf32 = dt == DType.F32 && allowTf32;
        int widest = Math.max(headDim, valueDim);
        if (!(sixteenBit || tf32) || computeMajor < 8 || choice != KernelChoice.AUTO || widest > (tf32 ? 128 : 256)) {
            return "attn_fwd";
        }
        return (tf32 ? "attn_fwd_tf32x" : "attn_fwd_tc") + (widest <= 64 ? 64 : widest <= 128 ? 128 : 256);
    }

    /**
     * The backward kernels' name stem (the rule in the class comment): {@code attn_bwd_tc64} or
     * {@code attn_bwd_tc128} for a tensor-core pair ({@code attn_bwd_dq_tcN}, {@code attn_bwd_dkdv_tcN}),
     * else {@code attn_bwd} (v1's).
     */
    static String backwardKernel(DType dt, int headDim, int valueDim, int computeMajor, KernelChoice choice, boolean probsOutput) {
        boolean sixteenBit = dt == DType.F16 || dt == DType.BF16;
        int widest = Math.max(headDim, valueDim);
        if (!sixteenBit || computeMajor < 8 || choice != KernelChoice.AUTO || widest > 128 || probsOutput) {
            return "attn_bwd";
        }
        return widest <= 64 ? "attn_bwd_tc64" : "attn_bwd_tc128";
    }

    /** How split-KV cuts the key range: {@code splits} ranges of {@code keysPerSplit} keys (the last may be shorter). */
    record SplitPlan(long keysPerSplit, long splits) {
    }

    /**
     * A split-KV forward's split kernel: its name stem (the dtype suffix is added at launch), the
     * query rows one block handles (a GQA group's rows are cut into groups of that many), and its
     * dynamic shared memory. Every split kernel takes 128 threads and feeds attn_fwd_combine.
     */
    record SplitKernel(String name, int rowsPerBlock, int sharedBytes) {
    }

    /**
     * The split kernel (the rule in the class comment): {@code attn_fwd_decode_tc64} / {@code 128}
     * (16 rows a block) for F16 and BF16 with D and Dv up to 128 on sm_80+; {@code attn_fwd_decode64},
     * {@code 128} or {@code 256} (SIMT, 4 rows; the widest of D and Dv rounded up) for F32, and for
     * 16-bit above 128; both copy k and v in 16-byte chunks, so they need k's and v's rows 16-byte
     * aligned and contiguous, and each must fit its shared memory in the device's per-block opt-in
     * limit (neither does on sm_75's 64 KB). Otherwise {@code attn_fwd_split} (4 rows, one per warp,
     * no shared memory), which reads any strides.
     */
    static SplitKernel splitKernel(DType dt, int headDim, int valueDim, boolean sixteenByteRows, int computeMajor,
                                   int sharedPerBlockOptin) {
        SplitKernel strided = new SplitKernel("attn_fwd_split", 4, 0);
        if (!sixteenByteRows) {
            return strided;
        }
        int widest = Math.max(headDim, valueDim);
        boolean sixteenBit = dt == DType.F16 || dt == DType.BF16;
        SplitKernel tiled;
        if (sixteenBit && widest <= 128) {
            if (computeMajor < 8) {
                return strided;
            }
            int dmax = widest <= 64 ? 64 : 128;
            // decode_tc::Tiling: 2 stages x (k + v) x 64 keys x (dmax + 8), then the q tile of 16 rows.
            tiled = new SplitKernel("attn_fwd_decode_tc" + dmax, 16, (2 * 2 * 64 * (dmax + 8) + 16 * (dmax + 8)) * 2);
        } else {
            int dmax = widest <= 64 ? 64 : widest <= 128 ? 128 : 256;
            // decode::Tiling: 16 KB of k and of v per stage (at most 128 keys), two stages; q rows, the
            // tile's weights, each row's rescale factor and sum, in f32.
            int keys = Math.min(128, 16384 / (dmax * dt.byteSize()));
            tiled = new SplitKernel("attn_fwd_decode" + dmax, 4,
                    2 * 2 * keys * dmax * dt.byteSize() + 4 * dmax * 4 + 4 * keys * 4 + 2 * 4 * 4);
        }
        return tiled.sharedBytes() <= sharedPerBlockOptin ? tiled : strided;
    }

    /** The blocks of one key split: (batch entry, kv head, group of rowsPerBlock query rows of the kv head). */
    static long blocksPerSplit(int batch, int qHeads, int kvHeads, int qLen, int rowsPerBlock) {
        long rowGroups = ((long) qHeads / kvHeads * qLen + rowsPerBlock - 1) / rowsPerBlock;
        return (long) batch * kvHeads * rowGroups;
    }

    /**
     * The most keys in one split: the split kernels count a split's keys in 32 bits (from its first
     * key), with room for a tile past the end.
     */
    static final long MAX_KEYS_PER_SPLIT = 1L << 30;

    /**
     * Split-KV for decoding: Lq &lt;= 16 and Lk &gt;= 1024 (AUTO only), with as many splits (at least
     * 256 keys each) as give about two blocks per multiprocessor, and at most
     * {@link #MAX_KEYS_PER_SPLIT} keys each, for a split kernel whose blocks take rowsPerBlock query
     * rows each; null when the rule does not apply or there is no query row.
     */
    static SplitPlan splitPlan(int batch, int qHeads, int kvHeads, int qLen, int kvLen, int multiprocessors, KernelChoice choice,
                               int rowsPerBlock) {
        if (choice != KernelChoice.AUTO || qLen > 16 || kvLen < 1024) {
            return null;
        }
        long blocksPerSplit = blocksPerSplit(batch, qHeads, kvHeads, qLen, rowsPerBlock);
        if (blocksPerSplit == 0) {
            return null;  // no query row: nothing to split (the forward writes nothing)
        }
        long wanted = (2L * Math.max(1, multiprocessors) + blocksPerSplit - 1) / blocksPerSplit;
        long splits = Math.max((kvLen + MAX_KEYS_PER_SPLIT - 1) / MAX_KEYS_PER_SPLIT, Math.max(1, Math.min(wanted, kvLen / 256)));
        long keysPerSplit = (kvLen + splits - 1) / splits;
        return new SplitPlan(keysPerSplit, (kvLen + keysPerSplit - 1) / keysPerSplit);
    }

    /**
     * Whether the tensor-core forward may load k and v in 16-byte chunks: every row of D and Dv
     * elements starts 16-byte aligned and is contiguous.
     */
    private static boolean sixteenByteRows(Geometry g, DeviceTensor k, DeviceTensor v) {
        int perChunk = 16 / k.dtype().byteSize();
        return g.headDim() % perChunk == 0 && g.valueDim() % perChunk == 0 && alignedRows(g.k(), k) && alignedRows(g.v(), v);
    }

    private static boolean alignedRows(long[] strides, DeviceTensor t) {
        return alignedRows(strides, t.pointer(), t.dtype());
    }

    /** Whether rows of (b, h, l, e) strides from pointer are 16-byte rows: unit column stride, the rest and the base 16-byte aligned. */
    private static boolean alignedRows(long[] strides, long pointer, DType dt) {
        long bytes = dt.byteSize();
        return strides[3] == 1 && (pointer % 16) == 0 && (strides[0] * bytes) % 16 == 0 && (strides[1] * bytes) % 16 == 0
                && (strides[2] * bytes) % 16 == 0;
    }

    private long utilFn(String name) {
        return functions.computeIfAbsent(name, n -> driver.function(util, n));
    }

    /** Sizes, element strides (b, h, l, e) of q, k, v and out, and the masks' broadcast strides. */
    record Geometry(int batch, int qHeads, int kvHeads, int qLen, int kvLen, int headDim, int valueDim, long[] q, long[] k,
                    long[] v, long[] o) {
        /** The largest head and value dimension the GPU kernels take (their tiles hold up to 256 columns). */
        static final int MAX_HEAD_DIM = 256;

        Geometry {
            requireHeadDims(headDim, valueDim);
        }

        static void requireHeadDims(int headDim, int valueDim) {
            if (headDim > MAX_HEAD_DIM || valueDim > MAX_HEAD_DIM) {
                throw new SeqkException.Unsupported("attention on the GPU takes head and value dimensions up to "
                        + MAX_HEAD_DIM + ", got head_dim " + headDim + " and value_dim " + valueDim
                        + " (the cpu backend takes any size)");
            }
        }

        long rows() {
            return (long) batch * qHeads * qLen;
        }

        long keyRows() {
            return (long) batch * kvHeads * kvLen;
        }
    }

    /** A mask as an f32 additive bias on the device, with its strides over (b, h, i, j). */
    record Bias(DeviceTensor values, long[] strides) {
    }

    /** Everything backward needs, on the device; released when the forward's result is closed. */
    record Saved(DeviceScope scope, Geometry g, DeviceTensor q, DeviceTensor k, DeviceTensor v, DeviceTensor lse,
                 DeviceTensor keyLengths, DeviceTensor queryLengths, Bias[] biases, int causal, double scale)
            implements AutoCloseable {
        /** An explicit mask (an additive or boolean bias term) takes part: the tiled kernels' general instances. */
        boolean hasExplicitMask() {
            return biases[0] != null || biases[1] != null;
        }

        @Override
        public void close() {
            scope.close();
        }
    }

    private static Saved withGeometry(Saved sv, Geometry g) {
        return new Saved(sv.scope(), g, sv.q(), sv.k(), sv.v(), sv.lse(), sv.keyLengths(), sv.queryLengths(), sv.biases(),
                sv.causal(), sv.scale());
    }

    private static long[] contiguous(long... shape) {
        return Tensor.contiguousStrides(shape);
    }

    /** The AttnShape struct of cuda/attention/common.cuh, word by word. */
    private static long[] shapeWords(Geometry g, Bias[] biases, int causal, double scale) {
        long[] w = new long[7 + 16 + 8 + 2];
        long[] head = {g.batch(), g.qHeads(), g.kvHeads(), g.qLen(), g.kvLen(), g.headDim(), g.valueDim()};
        System.arraycopy(head, 0, w, 0, 7);
        System.arraycopy(g.q(), 0, w, 7, 4);
        System.arraycopy(g.k(), 0, w, 11, 4);
        System.arraycopy(g.v(), 0, w, 15, 4);
        System.arraycopy(g.o(), 0, w, 19, 4);
        for (int m = 0; m < 2; m++) {
            if (biases[m] != null) {
                System.arraycopy(biases[m].strides(), 0, w, 23 + 4 * m, 4);
            }
        }
        w[31] = causal;
        w[32] = Double.doubleToRawLongBits(scale);
        return w;
    }

    private static int causalCode(CausalAlignment c) {
        return switch (c) {
            case NONE -> 0;
            case TOP_LEFT -> 1;
            case BOTTOM_RIGHT -> 2;
        };
    }

    /** A mask's additive f32 values on the device, broadcast onto (b, h, i, j) by the given strides. */
    private static Bias bias(DeviceScope s, Mask mask, long[] strides, Upload upload) {
        double[] v = mask.tensor().toDoubleArray();
        for (int i = 0; i < v.length; i++) {
            v[i] = mask.bias(v[i]);
        }
        return new Bias(upload.of(s, Tensor.of(DType.F32, v, mask.tensor().shape())), strides);
    }

    /**
     * How a host temporary (a mask's biases, lengths) goes up: the host-tensor ops copy it at once
     * and free it (they synchronize anyway); the device-resident entry points copy it on the
     * caller's stream and keep it until the result closes.
     */
    @FunctionalInterface
    interface Upload {
        DeviceTensor of(DeviceScope s, Tensor temporary);

        Upload AT_ONCE = DeviceScope::uploadAndClose;

        static Upload onStream(long stream) {
            return (s, t) -> s.uploadOnStream(t, stream);
        }
    }

    /** Right-aligned broadcast of an SDPA mask of rank 1..4 onto [B, Hq, Lq, Lk]. */
    private static long[] broadcastStrides(long[] shape) {
        long[] full = {1, 1, 1, 1};
        System.arraycopy(shape, 0, full, 4 - shape.length, shape.length);
        long[] st = contiguous(full);
        for (int i = 0; i < 4; i++) {
            if (full[i] == 1) {
                st[i] = 0;
            }
        }
        return st;
    }

    private DeviceTensor lengths(DeviceScope s, int[] lengths, Upload upload) {
        if (lengths == null) {
            return null;
        }
        double[] d = new double[lengths.length];
        for (int i = 0; i < d.length; i++) {
            d[i] = lengths[i];
        }
        return upload.of(s, Tensor.of(DType.I32, d, d.length));
    }

    private static long ptr(DeviceTensor t) {
        return t == null ? 0 : t.pointer();
    }

    private static long ptr(Bias b) {
        return b == null ? 0 : b.values().pointer();
    }

    private static Dim3 grid(long n) {
        long blocks = Math.max(1, (n + THREADS - 1) / THREADS);
        if (blocks > Integer.MAX_VALUE) {
            throw new SeqkException.Unsupported("attention: " + n + " elements exceed one launch's blocks");
        }
        return Dim3.of((int) blocks);
    }

    private void runSplitForward(DType dt, Saved sv, DeviceTensor out, DeviceScope temp, SplitKernel kernel, SplitPlan plan,
                                 long stream) {
        Geometry g = sv.g();
        long[] words = shapeWords(g, sv.biases(), sv.causal(), sv.scale());
        DeviceTensor partOut = temp.allocate(DType.F32, plan.splits(), g.rows(), g.valueDim());
        // Each split's running max m and sum l per row: [2][splits][rows] (m, then l).
        DeviceTensor partMl = temp.allocate(DType.F32, 2, plan.splits(), g.rows());
        long blocks = blocksPerSplit(g.batch(), g.qHeads(), g.kvHeads(), g.qLen(), kernel.rowsPerBlock()) * plan.splits();
        if (blocks > Integer.MAX_VALUE) {
            throw new SeqkException.Unsupported("attention: " + blocks + " split-KV blocks exceed one launch");
        }
        driver.launch(fn(kernel.name(), dt), Dim3.of((int) blocks), Dim3.of(128), kernel.sharedBytes(), stream, new KernelArgs()
                .pointer(sv.q().pointer()).pointer(sv.k().pointer()).pointer(sv.v().pointer()).pointer(partOut.pointer())
                .pointer(partMl.pointer()).pointer(ptr(sv.keyLengths())).pointer(ptr(sv.queryLengths()))
                .pointer(ptr(sv.biases()[0])).pointer(ptr(sv.biases()[1])).struct(words).i64(plan.keysPerSplit())
                .i64(plan.splits()));
        driver.launch(fn("attn_fwd_combine", dt), grid(g.rows() * g.valueDim()), Dim3.of(THREADS), 0, stream, new KernelArgs()
                .pointer(partOut.pointer()).pointer(partMl.pointer()).pointer(out.pointer()).pointer(sv.lse().pointer())
                .struct(words).i64(plan.splits()));
    }

    /** out (dt, with g.o strides), lse [rows] f32. */
    private void runForward(DType dt, Saved sv, DeviceTensor out, DeviceScope temp, boolean allowTf32, long stream) {
        Geometry g = sv.g();
        DeviceProperties device = driver.properties();
        SplitKernel split = splitKernel(dt, g.headDim(), g.valueDim(), sixteenByteRows(g, sv.k(), sv.v()), device.computeMajor(),
                device.sharedMemoryPerBlockOptin());
        SplitPlan plan = splitPlan(g.batch(), g.qHeads(), g.kvHeads(), g.qLen(), g.kvLen(), device.multiprocessors(), kernelChoice,
                split.rowsPerBlock());
        if (plan != null) {
            runSplitForward(dt, sv, out, temp, split, plan, stream);
            return;
        }
        String kernel = forwardKernel(dt, g.headDim(), g.valueDim(), device.computeMajor(), kernelChoice, allowTf32);
        // Above 128 columns the tiled kernel loads q into shared memory too, by the same 16-byte rule.
        boolean vec = sixteenByteRows(g, sv.k(), sv.v()) && (!queryTileInSharedMemory(kernel) || alignedRows(g.q(), sv.q()));
        String instance = tiledInstance(kernel, dt, sv.hasExplicitMask(), vec, device.sharedMemoryPerBlockOptin());
        if (instance != null) {
            int shared = forwardSharedBytes(instance, dt);
            long blocks = (long) g.batch() * g.qHeads() * ((g.qLen() + TC_ROWS - 1) / TC_ROWS);
            if (blocks > Integer.MAX_VALUE) {
                throw new SeqkException.Unsupported("attention: " + blocks + " blocks of query rows exceed one launch");
            }
            if (blocks == 0) {
                return;  // no query row (batch, heads or Lq 0): out and lse have no element
            }
            driver.launch(fn(instance, dt), Dim3.of((int) blocks), Dim3.of(128), shared, stream, new KernelArgs()
                    .pointer(sv.q().pointer()).pointer(sv.k().pointer()).pointer(sv.v().pointer()).pointer(out.pointer())
                    .pointer(sv.lse().pointer()).pointer(ptr(sv.keyLengths())).pointer(ptr(sv.queryLengths()))
                    .pointer(ptr(sv.biases()[0])).pointer(ptr(sv.biases()[1]))
                    .struct(shapeWords(g, sv.biases(), sv.causal(), sv.scale())).i32(tiledFlags(vec, g.valueDim(), g.o(), out.pointer(), dt)));
            return;
        }
        DeviceTensor acc = temp.allocate(DType.F32, g.rows(), g.valueDim());
        driver.launch(fn("attn_fwd", dt), grid(g.rows()), Dim3.of(THREADS), 0, stream, new KernelArgs()
                .pointer(sv.q().pointer()).pointer(sv.k().pointer()).pointer(sv.v().pointer()).pointer(out.pointer())
                .pointer(sv.lse().pointer()).pointer(acc.pointer()).pointer(ptr(sv.keyLengths())).pointer(ptr(sv.queryLengths()))
                .pointer(ptr(sv.biases()[0])).pointer(ptr(sv.biases()[1])).struct(shapeWords(g, sv.biases(), sv.causal(), sv.scale())));
    }

    /**
     * dq, dk, dv f32 (q, k, v strides) from dout (out strides, in {@link #doutType}'s type) and,
     * optionally, dprobs f32 [B, Hq, Lq, Lk]. {@code out} is the forward's output (dt) with its own
     * strides {@code outStrides}: the tensor-core backward reads it ({@link #backwardReadsOut}), v1's
     * does not (it may be null then).
     */
    private void runBackward(DType dt, Saved sv, DeviceTensor out, long[] outStrides, DeviceTensor dout, DeviceTensor dprobs,
                             DeviceTensor dq, DeviceTensor dk, DeviceTensor dv, DeviceScope temp, long stream) {
        Geometry g = sv.g();
        long[] words = shapeWords(g, sv.biases(), sv.causal(), sv.scale());
        DeviceTensor delta = temp.allocate(DType.F32, g.rows());
        String kernel = backwardKernel(dt, g.headDim(), g.valueDim(), driver.properties().computeMajor(), kernelChoice, dprobs != null);
        DType reads = doutType(dt, kernel);  // from this call's one read of the rule (kernelChoice is a test hook)
        if (dout.dtype() != reads) {
            throw new IllegalStateException("attention backward: dout in " + dout.dtype() + " where " + kernel + " reads " + reads);
        }
        if (!kernel.equals("attn_bwd")) {
            if (out == null || out.dtype() != dt) {
                throw new IllegalStateException("attention backward: " + kernel + " reads the forward's out in " + dt + ", given "
                        + (out == null ? "none" : out.dtype()));
            }
            runBackwardTc(kernel.endsWith("64") ? 64 : 128, dt, sv, out, outStrides, dout, delta, dq, dk, dv, words, temp, stream);
            return;
        }
        driver.launch(fn("attn_bwd_dq", dt), grid(g.rows()), Dim3.of(THREADS), 0, stream, new KernelArgs()
                .pointer(sv.q().pointer()).pointer(sv.k().pointer()).pointer(sv.v().pointer()).pointer(dout.pointer())
                .pointer(ptr(dprobs)).pointer(sv.lse().pointer()).pointer(delta.pointer()).pointer(dq.pointer())
                .pointer(ptr(sv.keyLengths())).pointer(ptr(sv.queryLengths())).pointer(ptr(sv.biases()[0]))
                .pointer(ptr(sv.biases()[1])).struct(words));
        driver.launch(fn("attn_bwd_dkdv", dt), grid(g.keyRows()), Dim3.of(THREADS), 0, stream, new KernelArgs()
                .pointer(sv.q().pointer()).pointer(sv.k().pointer()).pointer(sv.v().pointer()).pointer(dout.pointer())
                .pointer(ptr(dprobs)).pointer(sv.lse().pointer()).pointer(delta.pointer()).pointer(dk.pointer())
                .pointer(dv.pointer()).pointer(ptr(sv.keyLengths())).pointer(ptr(sv.queryLengths()))
                .pointer(ptr(sv.biases()[0])).pointer(ptr(sv.biases()[1])).struct(words));
    }

    /**
     * The dtype the backward kernels read dout in: the op's 16-bit storage type for the tensor-core
     * pair, f32 for v1's.
     */
    DType doutType(DType dt, Geometry g, boolean probsOutput) {
        return doutType(dt, backwardKernel(dt, g.headDim(), g.valueDim(), driver.properties().computeMajor(), kernelChoice, probsOutput));
    }

    private static DType doutType(DType dt, String backwardKernel) {
        return backwardKernel.equals("attn_bwd") ? DType.F32 : dt;
    }

    /**
     * Whether the backward the rule picks reads the forward's out: the tensor-core backward takes
     * delta = rowsum(dout * out) (attn_bwd_delta), v1's sums P dP over the keys instead.
     */
    boolean backwardReadsOut(DType dt, Geometry g, boolean probsOutput) {
        return !backwardKernel(dt, g.headDim(), g.valueDim(), driver.properties().computeMajor(), kernelChoice, probsOutput)
                .equals("attn_bwd");
    }

    /** Query rows per block of attn_bwd_delta (a warp each). */
    private static final int DELTA_ROWS = 4;

    /** Key rows per block of the tensor-core backward's dk/dv kernel (4 warps x 16). */
    private static final int TC_BWD_KEYS = 64;

    /**
     * Key rows per tile of a tensor-core dq instance (cuda/attention.cu): 64 at 64 columns, 32 at
     * 128, and 16 in the no-bias instance at 128 (with tiles of 32 ptxas spilled it).
     */
    static int dqKeyTile(String instance) {
        return switch (instance) {
            case "attn_bwd_dq_tc64", "attn_bwd_dq_tc64_nobias" -> 64;
            case "attn_bwd_dq_tc128" -> 32;
            case "attn_bwd_dq_tc128_nobias" -> 16;
            default -> throw new IllegalArgumentException("not a tensor-core dq instance: " + instance);
        };
    }

    /**
     * The tensor-core backward for head dimensions up to dmax (64 or 128), dout in dt (with the out
     * strides), out (dt) with outStrides: attn_bwd_delta (delta = rowsum(dout * out), a warp per
     * query row), attn_bwd_dq_tcN (each row's count of +inf keys and dq; grid as the forward's, key
     * tiles of {@link #dqKeyTile}) and attn_bwd_dkdv_tcN (one block per 64 keys of a (b, kv head),
     * query tiles of 32 / 16), the last two in the instance {@link #tcInstance} picks (the same tiles
     * and shared memory either way but dq's at 128).
     */
    private void runBackwardTc(int dmax, DType dt, Saved sv, DeviceTensor out, long[] outStrides, DeviceTensor dout, DeviceTensor delta,
                               DeviceTensor dq, DeviceTensor dk, DeviceTensor dv, long[] words, DeviceScope temp, long stream) {
        Geometry g = sv.g();
        long rowBlocks = (long) g.batch() * g.qHeads() * ((g.qLen() + TC_ROWS - 1) / TC_ROWS);
        long keyBlocks = (long) g.batch() * g.kvHeads() * ((g.kvLen() + TC_BWD_KEYS - 1) / TC_BWD_KEYS);
        long deltaBlocks = (g.rows() + DELTA_ROWS - 1) / DELTA_ROWS;
        if (Math.max(deltaBlocks, Math.max(rowBlocks, keyBlocks)) > Integer.MAX_VALUE) {
            throw new SeqkException.Unsupported("attention backward: "
                    + Math.max(deltaBlocks, Math.max(rowBlocks, keyBlocks)) + " blocks exceed one launch");
        }
        DeviceTensor hotKeys = temp.allocate(DType.F32, g.rows());
        int perChunk = 16 / dt.byteSize();
        boolean kvRows = sixteenByteRows(g, sv.k(), sv.v());
        // dout is read with the out strides, as the kernels index it.
        boolean qRows = g.headDim() % perChunk == 0 && g.valueDim() % perChunk == 0 && alignedRows(g.q(), sv.q())
                && alignedRows(g.o(), dout);
        boolean bias = sv.hasExplicitMask();
        String dqInstance = tcInstance("attn_bwd_dq_tc" + dmax, bias, kvRows);
        int keyTile = dqKeyTile(dqInstance);
        int queryTile = dmax == 64 ? 32 : 16;
        // k and v tiles plus each warp's 16-row scratch; q and dout tiles, their rows' statistics and scratch.
        int dqShared = 2 * 2 * keyTile * (dmax + 8) * 2 + 4 * 16 * keyTile * 2;
        int dkdvShared = 2 * 2 * queryTile * (dmax + 8) * 2 + 2 * 3 * queryTile * 4 + 4 * 16 * queryTile * 2;
        // No query row: dq and delta are empty and no key gets a gradient term (dk, dv zero); no key: dk, dv empty.
        if (rowBlocks > 0) {
            driver.launch(fn("attn_bwd_delta", dt), Dim3.of((int) deltaBlocks), Dim3.of(32 * DELTA_ROWS), 0, stream, new KernelArgs()
                    .pointer(out.pointer()).pointer(dout.pointer()).pointer(delta.pointer()).struct(words).struct(outStrides));
            driver.launch(fn(dqInstance, dt), Dim3.of((int) rowBlocks), Dim3.of(128), dqShared, stream, new KernelArgs()
                    .pointer(sv.q().pointer()).pointer(sv.k().pointer()).pointer(sv.v().pointer()).pointer(dout.pointer())
                    .pointer(sv.lse().pointer()).pointer(delta.pointer()).pointer(hotKeys.pointer()).pointer(dq.pointer())
                    .pointer(ptr(sv.keyLengths())).pointer(ptr(sv.queryLengths())).pointer(ptr(sv.biases()[0]))
                    .pointer(ptr(sv.biases()[1])).struct(words).i32(kvRows ? 1 : 0));
        }
        if (keyBlocks > 0) {
            driver.launch(fn(tcInstance("attn_bwd_dkdv_tc" + dmax, bias, qRows), dt), Dim3.of((int) keyBlocks), Dim3.of(128), dkdvShared, stream, new KernelArgs()
                    .pointer(sv.q().pointer()).pointer(sv.k().pointer()).pointer(sv.v().pointer()).pointer(dout.pointer())
                    .pointer(sv.lse().pointer()).pointer(delta.pointer()).pointer(hotKeys.pointer()).pointer(dk.pointer())
                    .pointer(dv.pointer()).pointer(ptr(sv.keyLengths())).pointer(ptr(sv.queryLengths()))
                    .pointer(ptr(sv.biases()[0])).pointer(ptr(sv.biases()[1])).struct(words).i32(qRows ? 1 : 0));
        }
    }

    // ------------------------------------------------------------------ scaled dot-product attention

    AttentionResult forward(Attention op, Attention.Inputs in) {
        DType dt = in.q().dtype();
        RecurrentGpu.suffix(dt);
        long[] qs = in.q().shape();
        Geometry g = new Geometry((int) qs[0], (int) qs[1], (int) in.k().size(1), (int) qs[2], (int) in.k().size(2),
                (int) qs[3], (int) in.v().size(3), contiguous(in.q().shape()), contiguous(in.k().shape()),
                contiguous(in.v().shape()), contiguous(qs[0], qs[1], qs[2], in.v().size(3)));
        DeviceScope scope = new DeviceScope(driver);
        try (PendingResults results = new PendingResults(); DeviceScope temp = new DeviceScope(driver)) {
            Bias[] biases = {in.mask() == null ? null : bias(scope, in.mask(), broadcastStrides(in.mask().tensor().shape()), Upload.AT_ONCE), null};
            Saved sv = new Saved(scope, g, scope.upload(in.q()), scope.upload(in.k()), scope.upload(in.v()),
                    scope.allocate(DType.F32, g.batch(), g.qHeads(), g.qLen()), lengths(scope, in.keyLengths(), Upload.AT_ONCE),
                    lengths(scope, in.queryLengths(), Upload.AT_ONCE), biases, causalCode(op.causal()), op.scaleFor(g.headDim()));
            DeviceTensor out = temp.allocate(dt, g.batch(), g.qHeads(), g.qLen(), g.valueDim());
            runForward(dt, sv, out, temp, op.allowTf32(), 0);
            Tensor outHost = results.keep(out.toHost());
            Tensor lseHost = results.keep(sv.lse().toHost());
            results.handOver();
            return new AttentionResult(outHost, lseHost, sv);
        } catch (RuntimeException e) {
            scope.close();
            throw e;
        }
    }

    AttentionGradients backward(AttentionResult forward, Tensor dOut) {
        if (!(forward.saved() instanceof Saved sv)) {
            throw foreign();
        }
        DType dt = forward.out().dtype();
        Geometry g = sv.g();
        try (DeviceScope temp = new DeviceScope(driver)) {
            DeviceTensor dq = temp.allocate(DType.F32, g.batch(), g.qHeads(), g.qLen(), g.headDim());
            DeviceTensor dk = temp.allocate(DType.F32, g.batch(), g.kvHeads(), g.kvLen(), g.headDim());
            DeviceTensor dv = temp.allocate(DType.F32, g.batch(), g.kvHeads(), g.kvLen(), g.valueDim());
            requireForwardOut(sv, dt, forward.out().shape());
            DeviceTensor out = backwardReadsOut(dt, g, false) ? temp.upload(forward.out(), dt) : null;
            runBackward(dt, sv, out, g.o(), temp.upload(dOut, doutType(dt, g, false)), null, dq, dk, dv, temp, 0);
            return new AttentionGradients(download(dq, dt), download(dk, dt), download(dv, dt));
        }
    }

    /**
     * The out a result carries is the forward's own (its dtype and shape), as the tensor-core
     * backward reads it: a result rebuilt around another tensor is refused rather than read out of
     * its bounds.
     */
    private static void requireForwardOut(Saved sv, DType dtype, long[] shape) {
        Geometry g = sv.g();
        long[] os = {g.batch(), g.qHeads(), g.qLen(), g.valueDim()};
        if (!java.util.Arrays.equals(shape, os) || dtype != sv.q().dtype()) {
            throw new SeqkException.ShapeMismatch("attention backward: forward.out is " + dtype + java.util.Arrays.toString(shape)
                    + ", but the forward's out was " + sv.q().dtype() + java.util.Arrays.toString(os));
        }
    }

    private static Tensor download(DeviceTensor f32, DType dt) {
        try (Tensor host = f32.toHost()) {
            return host.to(dt);
        }
    }

    // ------------------------------------------------------------------ device-resident SDPA

    /**
     * {@link DeviceAttention#forward}: q, k and v are read where the caller has them (any strides),
     * out goes to {@code into} (any strides) or a new contiguous tensor, and every copy and launch is
     * issued on {@code stream}, in order, with nothing freed or synchronized before the result is
     * closed: split-KV's scratch, the masks' and lengths' uploads and lse live in the result.
     */
    DeviceAttentionResult forwardOnDevice(Attention op, DeviceTensor q, DeviceTensor k, DeviceTensor v, Mask mask, int[] keyLengths,
                                          int[] queryLengths, DeviceTensor into, long stream, boolean training) {
        DType dt = q.dtype();
        RecurrentGpu.suffix(dt);
        q.pointer();
        k.pointer();
        v.pointer();
        if (into != null && !DeviceTensor.oneToOne(into.shape(), into.strides())) {
            throw new SeqkException.ShapeMismatch("attention: argument 'out' has strides " + java.util.Arrays.toString(into.strides())
                    + " over shape " + java.util.Arrays.toString(into.shape()) + " (zero or overlapping): out needs an element per position");
        }
        long[] qs = q.shape();
        long[] os = {qs[0], qs[1], qs[2], v.shape()[3]};
        Geometry g = new Geometry((int) qs[0], (int) qs[1], (int) k.shape()[1], (int) qs[2], (int) k.shape()[2], (int) qs[3],
                (int) os[3], q.strides(), k.strides(), v.strides(), into == null ? contiguous(os) : into.strides());
        DeviceScope scope = new DeviceScope(driver);
        try {
            DeviceTensor out = into != null ? into : scope.allocate(dt, os);
            Upload upload = Upload.onStream(stream);
            Bias[] biases = {mask == null ? null : bias(scope, mask, broadcastStrides(mask.tensor().shape()), upload), null};
            Saved sv = new Saved(scope, g, q, k, v, scope.allocate(DType.F32, g.batch(), g.qHeads(), g.qLen()),
                    lengths(scope, keyLengths, upload), lengths(scope, queryLengths, upload), biases, causalCode(op.causal()),
                    op.scaleFor(g.headDim()));
            runForward(dt, sv, out, scope, op.allowTf32(), stream);
            return new DeviceAttentionResult(out, sv.lse(), training ? sv : scope);
        } catch (RuntimeException e) {
            scope.closeAfterFailure(stream, e);
            throw e;
        }
    }

    /**
     * {@link DeviceAttention#backward}: dOut (any strides) is gathered on the device into the dtype the
     * backward kernels read ({@link #doutType}: f32, or the 16-bit storage type for tensor cores); dq, dk
     * and dv are computed in f32 with q's, k's and v's strides (over the span those reach, zeroed
     * first) and rounded to the op's dtype on the device. All on {@code stream}; the temporaries live
     * in the gradients until they are closed.
     */
    DeviceAttentionGradients backwardOnDevice(DeviceAttentionResult forward, DeviceTensor dOut, long stream) {
        if (!(forward.saved() instanceof Saved sv)) {
            throw new SeqkException.InvalidConfig("attention: this forward ran in inference mode and kept nothing for backward;"
                    + " run it without inference() to differentiate");
        }
        DType dt = forward.out().dtype();
        Geometry g = sv.g();
        long[] os = {g.batch(), g.qHeads(), g.qLen(), g.valueDim()};
        Geometry contiguousOut = new Geometry(g.batch(), g.qHeads(), g.kvHeads(), g.qLen(), g.kvLen(), g.headDim(), g.valueDim(),
                g.q(), g.k(), g.v(), contiguous(os));
        // Everything that can refuse is checked before the first launch: a call that failed after
        // queueing work would have to free memory the stream may still read.
        sv.lse().pointer();
        forward.out().pointer();  // the tensor-core backward reads it, with its own strides
        requireForwardOut(sv, forward.out().dtype(), forward.out().shape());
        dOut.pointer();
        String[] names = {"q", "k", "v"};
        DeviceTensor[] inputs = {sv.q(), sv.k(), sv.v()};
        for (int i = 0; i < 3; i++) {
            inputs[i].pointer();
            if (!DeviceTensor.oneToOne(inputs[i].shape(), inputs[i].strides())) {
                throw new SeqkException.ShapeMismatch("attention backward: " + names[i] + " has strides "
                        + java.util.Arrays.toString(inputs[i].strides()) + " over shape " + java.util.Arrays.toString(inputs[i].shape())
                        + " (zero or overlapping), and its gradient, laid out the same way, needs an element per position;"
                        + " run the forward on a contiguous copy to differentiate");
            }
        }
        DeviceScope scope = new DeviceScope(driver);
        try {
            DeviceTensor laidOut = casts.laidOut(scope, dOut, doutType(dt, g, false), stream);
            DeviceTensor dq32 = zerosLike(scope, sv.q(), stream);
            DeviceTensor dk32 = zerosLike(scope, sv.k(), stream);
            DeviceTensor dv32 = zerosLike(scope, sv.v(), stream);
            runBackward(dt, withGeometry(sv, contiguousOut), forward.out(), forward.out().strides(), laidOut, null, dq32, dk32, dv32,
                    scope, stream);
            return new DeviceAttentionGradients(rounded(scope, dq32, dt, stream), rounded(scope, dk32, dt, stream),
                    rounded(scope, dv32, dt, stream), scope);
        } catch (RuntimeException e) {
            scope.closeAfterFailure(stream, e);
            throw e;
        }
    }

    /** Zeroed f32 device memory with like's shape and strides, zeroed on the stream. */
    private DeviceTensor zerosLike(DeviceScope scope, DeviceTensor like, long stream) {
        DeviceTensor t = scope.keep(DeviceTensor.allocateStrided(driver, DType.F32, like.shape(), like.strides()));
        driver.memsetAsync(t.pointer(), 0, Math.max(1, DeviceTensor.spanOf(like.shape(), like.strides()) * 4), stream);
        return t;
    }

    /** An f32 strided tensor as dt (its whole span rounded on the device); f32 itself as it is. */
    private DeviceTensor rounded(DeviceScope scope, DeviceTensor f32, DType dt, long stream) {
        if (dt == DType.F32) {
            return f32;
        }
        long span = DeviceTensor.spanOf(f32.shape(), f32.strides());
        DeviceTensor t = scope.keep(DeviceTensor.allocateStrided(driver, dt, f32.shape(), f32.strides()));
        driver.launch(utilFn("cast_f32_to_" + RecurrentGpu.suffix(dt)), grid(span), Dim3.of(THREADS), 0, stream,
                new KernelArgs().pointer(f32.pointer()).pointer(t.pointer()).i64(span));
        return t;
    }

    // ------------------------------------------------------------------ multi-head attention

    /** Projection weights on the device in the interior type, split per role (biases null without bias). */
    private record Weights(DeviceTensor wq, DeviceTensor wk, DeviceTensor wv, DeviceTensor bq, DeviceTensor bk,
                           DeviceTensor bv, DeviceTensor wo, DeviceTensor bo) {
    }

    /**
     * The projection parameters as device tensors of {@code type} (the interior type), each
     * converted in bulk and uploaded once (no per-element work): the packed in_proj_weight
     * [E + 2 kv, E] (and in_proj_bias) is uploaded whole, its q, k and v rows are views, and
     * {@code stack} gets the whole of both for self-attention's single GEMM (null with separate q, k
     * and v weights, which self-attention never has: they exist only when kdim or vdim differs from E).
     */
    private static Weights weights(DeviceScope s, Map<String, Tensor> p, int e, int kv, DeviceTensor[] stack, DType type) {
        DeviceTensor[] w;
        if (p.containsKey("in_proj_weight")) {
            stack[0] = s.upload(p.get("in_proj_weight"), type);
            w = qkvRows(stack[0], e, kv);
        } else {
            w = new DeviceTensor[]{s.upload(p.get("q_proj_weight"), type), s.upload(p.get("k_proj_weight"), type),
                    s.upload(p.get("v_proj_weight"), type)};
        }
        DeviceTensor[] b = {null, null, null};
        if (p.containsKey("in_proj_bias")) {
            stack[1] = s.upload(p.get("in_proj_bias"), type);
            b = qkvRows(stack[1], e, kv);
        }
        DeviceTensor bo = p.containsKey("out_proj.bias") ? s.upload(p.get("out_proj.bias"), type) : null;
        return new Weights(w[0], w[1], w[2], b[0], b[1], b[2], s.upload(p.get("out_proj.weight"), type), bo);
    }

    /** The q, k and v rows (E, kv, kv of them) of a packed in-projection weight or bias, as views. */
    private static DeviceTensor[] qkvRows(DeviceTensor packed, int e, int kv) {
        return new DeviceTensor[]{packed.narrow(0, 0, e), packed.narrow(0, e, kv), packed.narrow(0, (long) e + kv, kv)};
    }

    /**
     * y [rows, out] in {@code type} (F32, or x's 16-bit type) = x [rows, in] W^T (+ bias): operands
     * in x's type (W and the bias too), fp32 accumulation, TF32 products when {@code tf32}. The bias
     * is broadcast into y first and the GEMM adds it to its fp32 sum (beta 1), so y is rounded once.
     */
    private DeviceTensor project(DeviceScope s, DeviceTensor x, DeviceTensor w, DeviceTensor bias, int rows, int in, int out,
                                 DType type, boolean tf32, long stream) {
        DeviceTensor y = s.allocate(type, rows, out);
        if (bias != null) {  // read here only: the bias's row seen rows times
            casts.gather(DeviceTensor.wrap(driver, bias.pointer(), bias.dtype(), new long[]{rows, out}, new long[]{0, 1}), y, stream);
        }
        Linear.forward(driver, x.pointer(), in, w.pointer(), in, y.pointer(), out, rows, in, out, bias == null ? 0f : 1f, x.dtype(),
                type, stream, tf32);
        return y;
    }

    /** Column sums (fp32) of the first {@code cols} columns of a [rows, lda] buffer (or view) of any of the three types. */
    private DeviceTensor columnSum(DeviceScope s, DeviceTensor a, int rows, int cols, int lda, long stream) {
        DeviceTensor out = s.allocate(DType.F32, cols);
        driver.launch(utilFn("column_sum_" + RecurrentGpu.suffix(a.dtype())), grid(cols), Dim3.of(THREADS), 0, stream, new KernelArgs()
                .pointer(a.pointer()).pointer(out.pointer()).i32(rows).i32(cols).i32(lda));
        return out;
    }

    /** An input [L, B, F] or batch-first [B, L, F] as a batch-major [B*L, F] device buffer of {@code type}. */
    private static DeviceTensor batchMajor(DeviceScope s, Tensor t, boolean batchFirst, DType type) {
        return s.upload(batchFirst ? t : t.permute(1, 0, 2), type);
    }

    /** A batch-major [B, L, F] device buffer (F32 or the op's dtype) as a host tensor in the op's layout and dtype. */
    private static Tensor opLayout(DeviceTensor buffer, int batch, int len, int features, boolean batchFirst, DType dt) {
        try (Tensor host = buffer.toHost()) {
            Tensor shaped = Tensor.wrap(host.segment(), buffer.dtype(), batch, len, features);
            return (batchFirst ? shaped : shaped.permute(1, 0, 2)).to(dt);
        }
    }

    /** {@code packedWidth}: E + 2 kv when q, k and v came from one GEMM (self-attention), else 0. */
    record MhaSaved(List<Object> config, PreparedCopies prepared, DeviceScope scope, Saved attention, Weights w, DeviceTensor query,
                    DeviceTensor key, DeviceTensor value, DeviceTensor merged, int packedWidth) implements AutoCloseable {
        /**
         * The forward's {@link #mhaInteriorType}: the type of query, key and value (batch-major), the
         * weights, the attention's q, k, v and merged.
         */
        DType interior() {
            return query.dtype();
        }

        @Override
        public void close() {
            scope.close();
        }
    }

    /**
     * Multi-head attention's projections prepared on this driver: an F32 copy of each parameter, by
     * name, and for an F16 or BF16 op one in that type too (the 16-bit interior's operands; F32 for
     * V1); a packed in-projection's q, k and v rows are views of its copies, so an update of the
     * packed parameter reaches them. Closing frees them.
     */
    PreparedCopies prepareMha(MultiHeadAttention op, Map<String, Tensor> params, DType dt) {
        RecurrentGpu.suffix(dt);
        PreparedCopies copies = new PreparedCopies(driver, this, this::utilFn);
        try {
            for (var e : params.entrySet()) {
                copies.putF32(e.getKey(), e.getValue());
                if (mhaInteriorType(dt, KernelChoice.AUTO) != DType.F32) {  // what the 16-bit interior reads
                    copies.putNarrow(e.getKey(), e.getValue(), dt);
                }
            }
            return copies;
        } catch (RuntimeException e) {
            copies.close();
            throw e;
        }
    }

    /** The projections' weights in {@code type} as views of prepared copies (no copy of their own). */
    private Weights weights(PreparedCopies p, int e, int kv, DType type) {
        DeviceTensor[] w;
        if (p.get("in_proj_weight", type) != null) {
            w = qkvRows(p.get("in_proj_weight", type), e, kv);
        } else {
            w = new DeviceTensor[]{p.get("q_proj_weight", type), p.get("k_proj_weight", type), p.get("v_proj_weight", type)};
        }
        DeviceTensor packedBias = p.get("in_proj_bias", type);
        DeviceTensor[] b = packedBias != null ? qkvRows(packedBias, e, kv) : new DeviceTensor[]{null, null, null};
        return new Weights(w[0], w[1], w[2], b[0], b[1], b[2], p.get("out_proj.weight", type), p.get("out_proj.bias", type));
    }

    MhaResult mhaForward(MultiHeadAttention op, Map<String, Tensor> params, AutoCloseable preparedWeights, MultiHeadAttention.Inputs in) {
        PreparedCopies prepared = preparedHere(preparedWeights);
        DType dt = in.query().dtype();
        RecurrentGpu.suffix(dt);
        boolean bf = op.batchFirst();
        MultiHeadAttention.Sizes sz = op.sizes(in);
        // Self-attention (one tensor as query, key and value): q, k and v from one GEMM into [B*L, E + 2 kv].
        boolean packed = in.query() == in.key() && in.key() == in.value();
        DType interior = mhaInteriorType(dt, kernelChoice);
        DeviceScope scope = new DeviceScope(driver);
        try (DeviceScope temp = new DeviceScope(driver)) {
            DeviceTensor query = batchMajor(scope, in.query(), bf, interior);
            DeviceTensor key = packed ? query : batchMajor(scope, in.key(), bf, interior);
            DeviceTensor value = packed ? query : batchMajor(scope, in.value(), bf, interior);
            MhaCore core = mhaOnStream(op, params, prepared, sz, query, key, value, packed, in.keyPaddingMask(), in.attnMask(), scope,
                    temp, Upload.AT_ONCE, 0);
            Tensor weights = op.needWeights() ? headAveragedWeights(core.saved().attention(), temp, dt) : null;
            return new MhaResult(opLayout(core.out(), sz.batch(), sz.qLen(), op.embedDim(), bf, dt), weights, core.saved());
        } catch (RuntimeException ex) {
            scope.close();
            throw ex;
        }
    }

    private PreparedCopies preparedHere(AutoCloseable preparedWeights) {
        if (preparedWeights != null && !(preparedWeights instanceof PreparedCopies p && p.owner() == this)) {
            throw new SeqkException.InvalidConfig(driver.name() + ": these prepared weights were made for another backend");
        }
        return (PreparedCopies) preparedWeights;
    }

    /** A multi-head attention forward's output [B*q_len, E] (batch-major, in the interior type) and what backward needs. */
    private record MhaCore(DeviceTensor out, MhaSaved saved) {
    }

    /**
     * Multi-head attention on the device, every GEMM, copy and launch on {@code stream}: query, key
     * and value [B*L, F] (batch-major, in the interior type {@link #mhaInteriorType}, which their
     * dtype is; one tensor when {@code packed}) projected, attended per head through strides, merged
     * and projected out (each GEMM writing the interior type, rounded once from its fp32 sum). What backward needs goes into {@code scope}, the rest into
     * {@code temp}; the masks go up through {@code upload}.
     */
    private MhaCore mhaOnStream(MultiHeadAttention op, Map<String, Tensor> params, PreparedCopies prepared, MultiHeadAttention.Sizes sz,
                                DeviceTensor query, DeviceTensor key, DeviceTensor value, boolean packed, Mask keyPaddingMask,
                                Mask attnMask, DeviceScope scope, DeviceScope temp, Upload upload, long stream) {
        int batch = sz.batch();
        int lq = sz.qLen();
        int lk = sz.kvLen();
        Linear.checkRows(driver.name(), "batch x q_len", (long) batch * lq);
        Linear.checkRows(driver.name(), "batch x kv_len", (long) batch * lk);
        int e = op.embedDim();
        int hd = op.headDim();
        int heads = op.numHeads();
        int kv = op.kvWidth();
        Geometry.requireHeadDims(hd, hd);
        DType interior = query.dtype();
        boolean tf32 = op.allowTf32() && interior == DType.F32;
        int width = packed ? e + 2 * kv : 0;
        DeviceTensor[] stack = prepared != null
                ? new DeviceTensor[]{prepared.get("in_proj_weight", interior), prepared.get("in_proj_bias", interior)}
                : new DeviceTensor[2];
        Weights w = prepared != null ? weights(prepared, e, kv, interior) : weights(scope, params, e, kv, stack, interior);
        if (packed && stack[0] == null) {
            throw new IllegalStateException("self-attention with separate q, k and v weights: kdim and vdim are E here");
        }
        DeviceTensor q;
        DeviceTensor k;
        DeviceTensor v;
        // Heads through strides: element (b, h, l, d) of a [B*L, width] buffer is at b*L*width + h*hd + l*width + d.
        long[] qStrides;
        long[] kvStrides;
        if (packed) {
            DeviceTensor qkv = project(scope, query, stack[0], stack[1], batch * lq, e, width, interior, tf32, stream);
            q = qkv.narrow(1, 0, e);
            k = qkv.narrow(1, e, kv);
            v = qkv.narrow(1, (long) e + kv, kv);
            qStrides = new long[]{(long) lq * width, hd, width, 1};
            kvStrides = new long[]{(long) lk * width, hd, width, 1};
        } else {
            q = project(scope, query, w.wq(), w.bq(), batch * lq, e, e, interior, tf32, stream);
            k = project(scope, key, w.wk(), w.bk(), batch * lk, op.kdim(), kv, interior, tf32, stream);
            v = project(scope, value, w.wv(), w.bv(), batch * lk, op.vdim(), kv, interior, tf32, stream);
            qStrides = new long[]{(long) lq * e, hd, e, 1};
            kvStrides = new long[]{(long) lk * kv, hd, kv, 1};
        }
        long[] outStrides = {(long) lq * e, hd, e, 1};
        Geometry g = new Geometry(batch, heads, op.numKvHeads(), lq, lk, hd, hd, qStrides, kvStrides, kvStrides, outStrides);
        Bias[] biases = {
                keyPaddingMask == null ? null : bias(scope, keyPaddingMask, new long[]{lk, 0, 0, 1}, upload),
                attnMask == null ? null : bias(scope, attnMask, attnMask.tensor().rank() == 2
                        ? new long[]{0, 0, lk, 1} : new long[]{(long) heads * lq * lk, (long) lq * lk, lk, 1}, upload)};
        Saved sv = new Saved(scope, g, q, k, v, scope.allocate(DType.F32, batch, heads, lq), null, null, biases,
                causalCode(op.causal()), 1.0 / Math.sqrt(hd));
        DeviceTensor merged = scope.allocate(interior, (long) batch * lq, e);
        runForward(interior, sv, merged, temp, tf32, stream);
        DeviceTensor out = project(temp, merged, w.wo(), w.bo(), batch * lq, e, e, interior, tf32, stream);
        return new MhaCore(out, new MhaSaved(mhaConfig(op), prepared, scope, sv, w, query, key, value, merged, width));
    }

    /** The attention weights averaged over heads [B, q_len, kv_len] in dt, on the host (the host path's needWeights). */
    private Tensor headAveragedWeights(Saved sv, DeviceScope temp, DType dt) {
        Geometry g = sv.g();
        DeviceTensor probs = temp.allocate(DType.F32, g.batch(), g.qHeads(), g.qLen(), g.kvLen());
        driver.launch(fn("attn_probs", sv.q().dtype()), grid(g.rows()), Dim3.of(THREADS), 0, 0, new KernelArgs()
                .pointer(sv.q().pointer()).pointer(sv.k().pointer()).pointer(sv.lse().pointer()).pointer(probs.pointer())
                .pointer(0).pointer(0).pointer(ptr(sv.biases()[0])).pointer(ptr(sv.biases()[1]))
                .struct(shapeWords(g, sv.biases(), sv.causal(), sv.scale())));
        return averageHeads(probs, g.batch(), g.qHeads(), g.qLen(), g.kvLen(), dt);
    }

    private static Tensor averageHeads(DeviceTensor probs, int batch, int heads, int lq, int lk, DType dt) {
        try (Tensor p = probs.toHost()) {
            long count = (long) batch * lq * lk;
            if (count > Integer.MAX_VALUE - 8) {
                throw new SeqkException.Unsupported("attention weights of " + batch + " x " + lq + " x " + lk
                        + " elements exceed a Java array; use needWeights(false)");
            }
            double[] avg = new double[(int) count];
            for (int b = 0; b < batch; b++) {
                for (int h = 0; h < heads; h++) {
                    for (int i = 0; i < lq * lk; i++) {
                        avg[b * lq * lk + i] += p.getFlat(((long) b * heads + h) * lq * lk + i) / heads;
                    }
                }
            }
            return Tensor.of(dt, avg, batch, lq, lk);
        }
    }

    MhaGradients mhaBackward(MultiHeadAttention op, Map<String, Tensor> params, MhaResult forward, Tensor dOut,
                             Tensor dAttnWeights) {
        MhaSaved ms = mhaSaved(op, forward.saved());
        Geometry g = ms.attention().g();
        DType dt = forward.out().dtype();
        boolean bf = op.batchFirst();
        int batch = g.batch();
        int lq = g.qLen();
        int lk = g.kvLen();
        int heads = g.qHeads();
        try (DeviceScope s = new DeviceScope(driver)) {
            DeviceTensor dProbs = null;
            if (dAttnWeights != null) {
                double[] dw = dAttnWeights.toDoubleArray();
                double[] expanded = new double[batch * heads * lq * lk];
                for (int b = 0; b < batch; b++) {
                    for (int h = 0; h < heads; h++) {
                        for (int i = 0; i < lq * lk; i++) {
                            expanded[(b * heads + h) * lq * lk + i] = dw[b * lq * lk + i] / heads;
                        }
                    }
                }
                dProbs = s.uploadAndClose(Tensor.of(DType.F32, expanded, batch, heads, lq, lk));
            }
            MhaGrads d = mhaBackwardOnStream(op, ms, batchMajor(s, dOut, bf, ms.interior()), dProbs, s, 0);
            int[] widths = {op.embedDim(), op.kdim(), op.vdim()};
            int[] lens = {lq, lk, lk};
            Tensor[] dIn = new Tensor[3];
            for (int r = 0; r < 3; r++) {
                dIn[r] = opLayout(d.inputs()[r], batch, lens[r], widths[r], bf, dt);
            }
            Map<String, Tensor> grads = op.parameterGradients(new MultiHeadAttention.Projections(values(d.weights()[0]),
                    values(d.weights()[1]), values(d.weights()[2]), values(d.biases()[0]), values(d.biases()[1]), values(d.biases()[2]),
                    values(d.wo()), values(d.bo())), dt);
            return new MhaGradients(dIn[0], dIn[1], dIn[2], grads);
        }
    }

    /**
     * {@link DeviceMultiHeadAttention#forward}: query, key and value (the op's dtype and layout, any
     * strides) are gathered batch-major into the interior type on the device (one pass), {@link #mhaOnStream} runs on the
     * caller's stream with the result's scope for everything, and the output is put back in the op's
     * layout and rounded to its dtype on the device. Nothing is waited for or freed unless the call fails.
     */
    DeviceMhaResult mhaForwardOnDevice(MultiHeadAttention op, AutoCloseable preparedWeights, DeviceTensor query, DeviceTensor key,
                                       DeviceTensor value, Mask keyPaddingMask, Mask attnMask, DeviceTensor into, long stream,
                                       boolean training) {
        PreparedCopies prepared = preparedHere(preparedWeights);
        if (prepared == null) {
            throw new IllegalStateException("a device forward without device copies of its weights");
        }
        DType dt = query.dtype();
        RecurrentGpu.suffix(dt);
        boolean bf = op.batchFirst();
        long[] qs = query.shape();
        long[] ks = key.shape();
        MultiHeadAttention.Sizes sz = new MultiHeadAttention.Sizes((int) qs[bf ? 0 : 1], (int) qs[bf ? 1 : 0], (int) ks[bf ? 1 : 0]);
        boolean packed = query == key && key == value;
        DType interior = mhaInteriorType(dt, kernelChoice);
        DeviceScope scope = new DeviceScope(driver);
        try {
            DeviceTensor q = batchMajor(scope, query, bf, interior, stream);
            DeviceTensor k = packed ? q : batchMajor(scope, key, bf, interior, stream);
            DeviceTensor v = packed ? q : batchMajor(scope, value, bf, interior, stream);
            MhaCore core = mhaOnStream(op, Map.of(), prepared, sz, q, k, v, packed, keyPaddingMask, attnMask, scope, scope,
                    Upload.onStream(stream), stream);
            DeviceTensor out = opLayout(scope, core.out(), sz.batch(), sz.qLen(), op.embedDim(), bf, dt, into, stream);
            return new DeviceMhaResult(out, training ? core.saved() : scope);
        } catch (RuntimeException e) {
            scope.closeAfterFailure(stream, e);
            throw e;
        }
    }

    /**
     * {@link DeviceMultiHeadAttention#backward}: dOut gathered like the inputs, {@link #mhaBackwardOnStream}
     * on the caller's stream, the input gradients put back in the op's layout and every gradient
     * rounded to the op's dtype (a packed in-projection's q, k and v parts joined) on the device.
     */
    DeviceMhaGradients mhaBackwardOnDevice(MultiHeadAttention op, AutoCloseable preparedWeights, DeviceMhaResult forward, DeviceTensor dOut,
                                           long stream) {
        MhaSaved ms = mhaSaved(op, forward.saved());
        if (ms.prepared() != preparedWeights) {
            throw new SeqkException.InvalidConfig("multi_head_attention: backward takes the prepared weights its forward used"
                    + " (it reads them again), not others");
        }
        Geometry g = ms.attention().g();
        DType dt = forward.out().dtype();
        boolean bf = op.batchFirst();
        DeviceScope scope = new DeviceScope(driver);
        try {
            MhaGrads d = mhaBackwardOnStream(op, ms, batchMajor(scope, dOut, bf, ms.interior(), stream), null, scope, stream);
            int[] widths = {op.embedDim(), op.kdim(), op.vdim()};
            int[] lens = {g.qLen(), g.kvLen(), g.kvLen()};
            DeviceTensor[] dIn = new DeviceTensor[3];
            for (int r = 0; r < 3; r++) {
                dIn[r] = opLayout(scope, d.inputs()[r], g.batch(), lens[r], widths[r], bf, dt, null, stream);
            }
            Map<String, DeviceTensor> params = new java.util.LinkedHashMap<>();
            for (var entry : op.parameterShapes().entrySet()) {
                DeviceTensor f32 = switch (entry.getKey()) {
                    case "in_proj_weight" -> joined(scope, stream, d.weights());
                    case "q_proj_weight" -> d.weights()[0];
                    case "k_proj_weight" -> d.weights()[1];
                    case "v_proj_weight" -> d.weights()[2];
                    case "in_proj_bias" -> joined(scope, stream, d.biases());
                    case "out_proj.weight" -> d.wo();
                    case "out_proj.bias" -> d.bo();
                    default -> throw new IllegalStateException("unhandled parameter " + entry.getKey());
                };
                params.put(entry.getKey(), rounded(scope, f32, dt, stream, entry.getValue()));
            }
            return new DeviceMhaGradients(dIn[0], dIn[1], dIn[2], params, scope);
        } catch (RuntimeException e) {
            scope.closeAfterFailure(stream, e);
            throw e;
        }
    }

    /**
     * A device tensor in the op's layout ([L, B, F], batch first [B, L, F], any strides) as a
     * batch-major [B, L, F] copy in {@code type} (F32 or its own), one gather on the stream.
     */
    private DeviceTensor batchMajor(DeviceScope scope, DeviceTensor t, boolean batchFirst, DType type, long stream) {
        return casts.laidOut(scope, batchFirst ? t : t.permute(1, 0, 2), type, stream);
    }

    /**
     * A batch-major [B*L, F] buffer (F32 or the op's dtype) in the op's layout and dtype, contiguous,
     * made on the stream: into the caller's buffer when one is given (checked contiguous, of that
     * shape and dtype), else a new tensor of the scope.
     */
    private DeviceTensor opLayout(DeviceScope scope, DeviceTensor buffer, int batch, int len, int features, boolean batchFirst, DType dt,
                                  DeviceTensor into, long stream) {
        long[] bl = {batch, len, features};
        DeviceTensor seen = DeviceTensor.wrap(driver, buffer.pointer(), buffer.dtype(), bl, Tensor.contiguousStrides(bl));  // read here only
        DeviceTensor source = batchFirst ? seen : seen.permute(1, 0, 2);
        if (into != null) {
            casts.copyInto(scope, source, into, stream);
            return into;
        }
        return casts.laidOut(scope, source, dt, stream);
    }

    /** Contiguous F32 parts joined end to end (rows of a packed parameter), on the stream. */
    private DeviceTensor joined(DeviceScope scope, long stream, DeviceTensor... parts) {
        long n = 0;
        for (DeviceTensor p : parts) {
            n += p.numel();
        }
        DeviceTensor all = scope.allocate(DType.F32, n);
        long at = 0;
        for (DeviceTensor p : parts) {
            driver.copyDeviceToDeviceAsync(all.pointer() + at * 4, p.pointer(), p.byteSize(), stream);
            at += p.numel();
        }
        return all;
    }

    /** Contiguous F32 values as a new tensor of {@code shape} in dt, rounded on the stream (F32: copied). */
    private DeviceTensor rounded(DeviceScope scope, DeviceTensor f32, DType dt, long stream, long[] shape) {
        DeviceTensor t = scope.allocate(dt, shape);
        if (dt == DType.F32) {
            driver.copyDeviceToDeviceAsync(t.pointer(), f32.pointer(), t.byteSize(), stream);
        } else {
            casts.fromF32(f32, t, stream);
        }
        return t;
    }

    /** What a forward's saved state must share with the op running its backward: everything that shapes the buffers and the math. */
    private static List<Object> mhaConfig(MultiHeadAttention op) {
        return List.of(op.embedDim(), op.numHeads(), op.numKvHeads(), op.kdim(), op.vdim(), op.bias(), op.batchFirst(), op.causal());
    }

    /**
     * A multi-head attention forward's saved state, checked to be this backend's (this driver's),
     * made by an op of this configuration, and its prepared weights still open.
     */
    private MhaSaved mhaSaved(MultiHeadAttention op, Object saved) {
        if (!(saved instanceof MhaSaved ms)) {
            throw foreign();
        }
        if (ms.scope().driver() != driver) {
            throw new SeqkException.InvalidConfig("multi_head_attention: this forward result was made on another driver ("
                    + ms.scope().driver().name() + "); run backward with the op that made it");
        }
        if (!ms.config().equals(mhaConfig(op))) {
            throw new SeqkException.InvalidConfig("multi_head_attention: this forward result was made by an op of another configuration"
                    + " (embed_dim, heads, kv heads, kdim, vdim, bias, batch_first, causal = " + ms.config() + "); run backward with that op");
        }
        if (ms.w().wo().isClosed()) {
            throw new SeqkException.TensorClosed("multi_head_attention: the prepared weights this forward used were closed;"
                    + " keep them open until its backward");
        }
        return ms;
    }

    /**
     * Multi-head attention's gradients on the device: of query, key and value [B*L, F] (batch-major,
     * in the interior type), and in F32 of the q, k and v projection weights and biases and of the
     * output projection's.
     */
    private record MhaGrads(DeviceTensor[] inputs, DeviceTensor[] weights, DeviceTensor[] biases, DeviceTensor wo, DeviceTensor bo) {
    }

    /**
     * Multi-head attention's backward on the device, every GEMM and launch on {@code stream}: dy the
     * output's gradient [B*q_len, E] (batch-major, in the forward's interior type), dProbs the
     * head-expanded gradient of the attention weights (f32) or null. In a 16-bit interior, dMerged
     * (dy Wo) is written in 16 bits and the attention's f32 dq, dk and dv are rounded once to 16 bits
     * before their projections' GEMMs, as the forward rounds q, k, v and merged. The input gradients
     * are written in the interior type (rounded once, as the forward's output), the weight and bias
     * gradients in f32. Everything goes into {@code s}.
     */
    private MhaGrads mhaBackwardOnStream(MultiHeadAttention op, MhaSaved ms, DeviceTensor dy, DeviceTensor dProbs, DeviceScope s,
                                         long stream) {
        Saved sv = ms.attention();
        Geometry g = sv.g();
        Weights w = ms.w();
        DType interior = ms.interior();
        int batch = g.batch();
        int lq = g.qLen();
        int lk = g.kvLen();
        int e = op.embedDim();
        int kv = op.kvWidth();
        boolean tf32 = op.allowTf32() && interior == DType.F32;
        DeviceTensor dWo = s.allocate(DType.F32, e, e);
        Linear.weightGrad(driver, dy.pointer(), e, ms.merged().pointer(), e, dWo.pointer(), e, batch * lq, e, e, 0f, interior, tf32, stream);
        DeviceTensor dMerged = s.allocate(interior, (long) batch * lq, e);
        Linear.inputGrad(driver, dy.pointer(), e, w.wo().pointer(), e, dMerged.pointer(), e, batch * lq, e, e, 0f, interior, interior,
                tf32, stream);
        if (doutType(interior, g, dProbs != null) != interior) {  // v1's backward reads dout in f32: widened exactly
            dMerged = casts.gathered(s, dMerged, stream);
        }
        int width = ms.packedWidth();
        long[][] shapes = width > 0 ? new long[][]{{(long) batch * lq, width}}
                : new long[][]{{(long) batch * lq, e}, {(long) batch * lk, kv}, {(long) batch * lk, kv}};
        DeviceTensor[] grads32 = new DeviceTensor[shapes.length];
        for (int i = 0; i < shapes.length; i++) {
            grads32[i] = s.allocate(DType.F32, shapes[i]);
        }
        DeviceTensor[] dProj32 = qkvParts(grads32, e, kv);
        runBackward(interior, sv, ms.merged(), g.o(), dMerged, dProbs, dProj32[0], dProj32[1], dProj32[2], s, stream);
        // The projections read dq, dk and dv in the interior type: the packed buffer (or each) rounded once.
        DeviceTensor[] grads = new DeviceTensor[shapes.length];
        for (int i = 0; i < shapes.length; i++) {
            grads[i] = casts.rounded(s, grads32[i], interior, stream);
        }
        DeviceTensor[] dProj = qkvParts(grads, e, kv);
        DeviceTensor[] inputs = {ms.query(), ms.key(), ms.value()};
        DeviceTensor[] ws = {w.wq(), w.wk(), w.wv()};
        int[] widths = {e, op.kdim(), op.vdim()};
        int[] outs = {e, kv, kv};
        int[] lens = {lq, lk, lk};
        DeviceTensor[] dIn = new DeviceTensor[3];
        DeviceTensor[] dW = new DeviceTensor[3];
        DeviceTensor[] dB = new DeviceTensor[3];
        for (int r = 0; r < 3; r++) {
            int rows = batch * lens[r];
            int ld = width > 0 ? width : outs[r];
            dW[r] = s.allocate(DType.F32, outs[r], widths[r]);
            Linear.weightGrad(driver, dProj[r].pointer(), ld, inputs[r].pointer(), widths[r], dW[r].pointer(), widths[r],
                    rows, widths[r], outs[r], 0f, interior, tf32, stream);
            dB[r] = columnSum(s, dProj[r], rows, outs[r], ld, stream);
            dIn[r] = s.allocate(interior, rows, widths[r]);
            Linear.inputGrad(driver, dProj[r].pointer(), ld, ws[r].pointer(), widths[r], dIn[r].pointer(), widths[r],
                    rows, widths[r], outs[r], 0f, interior, interior, tf32, stream);
        }
        return new MhaGrads(dIn, dW, dB, dWo, columnSum(s, dy, batch * lq, e, e, stream));
    }

    /**
     * dq, dk and dv as views: of one [B*L, E + 2 kv] buffer (self-attention's packed projection:
     * the gradients land in q's, k's and v's strides), or the three buffers themselves.
     */
    private static DeviceTensor[] qkvParts(DeviceTensor[] buffers, int e, int kv) {
        if (buffers.length == 3) {
            return buffers;
        }
        DeviceTensor packed = buffers[0];
        return new DeviceTensor[]{packed.narrow(1, 0, e), packed.narrow(1, e, kv), packed.narrow(1, (long) e + kv, kv)};
    }

    private SeqkException foreign() {
        return new SeqkException.Unsupported(driver.name() + ": this forward result was not made by the " + driver.name()
                + " backend (or was closed)");
    }

    private static double[] values(DeviceTensor f32) {
        try (Tensor t = f32.toHost()) {
            return t.toDoubleArray();
        }
    }

}
