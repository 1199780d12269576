package dev.seqkernels.gpu;

import dev.seqkernels.Backends;
import dev.seqkernels.Compare;
import dev.seqkernels.DType;
import dev.seqkernels.TestData;
import dev.seqkernels.Tensor;
import dev.seqkernels.ops.Activation;
import dev.seqkernels.ops.Attention;
import dev.seqkernels.ops.AttentionGradients;
import dev.seqkernels.ops.AttentionResult;
import dev.seqkernels.ops.CausalAlignment;
import dev.seqkernels.ops.Mask;
import dev.seqkernels.ops.Gru;
import dev.seqkernels.ops.Lstm;
import dev.seqkernels.ops.RecurrentOp;
import dev.seqkernels.ops.RecurrentResult;
import dev.seqkernels.ops.Rnn;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import java.util.LinkedHashMap;
import java.util.Map;
import java.util.function.Function;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * NaN and overflow (docs/CONVENTIONS.md, "NaN and overflow"): every kernel the runtime can select
 * gives NaN exactly where the CPU reference does, and the reference's finite values elsewhere.
 * The reference's own NaN pattern is checked against the rule first, so a reference that drops a
 * NaN fails too. Scores beyond fp32's range (+inf in the kernels, finite in the double reference)
 * give the reference's result when the overflowing keys tie or one dominates: their v, lse +inf.
 */
@PerBinding
@DeviceDependent
class NanPropagationTest {

    private static final int T = 4;
    private static final int NAN_STEP = 1;
    private static final int NAN_ENTRY = 1;

    /**
     * The recurrent kernels the runtime selects: the per-step loop pinned to v1, its vec4 cells
     * (fused steps), the persistent kernel in F32 and in 16 bits (H = 8: it needs H % 8 == 0; sm_75
     * skips it), and the 16-bit state's fused steps (BF16, whose finite values the
     * 2x-rule tests judge: here only where the NaNs are).
     */
    enum StepKernel {
        V1, VEC4, PERSISTENT, STATE16, PERSISTENT16;

        DType dtype() {
            return this == STATE16 || this == PERSISTENT16 ? DType.BF16 : DType.F32;
        }

        int hidden() {
            return this == PERSISTENT16 ? 8 : 4;
        }
    }

    /** LSTM and GRU (both reset forms) with one NaN input element: that entry's outputs from that step on are NaN, nothing else. */
    @ParameterizedTest
    @EnumSource(StepKernel.class)
    void aNanInputReachesExactlyTheReferencesRecurrentOutputs(StepKernel kernel) {
        int batch = kernel == StepKernel.VEC4 ? RecurrentGpu.PERSISTENT_MAX_BATCH + 1 : 2;
        recurrentCase(kernel, "lstm", b -> Lstm.builder().inputSize(3).hiddenSize(kernel.hidden()).backend(b).build(), batch);
        recurrentCase(kernel, "gru", b -> Gru.builder().inputSize(3).hiddenSize(kernel.hidden()).backend(b).build(), batch);
        if (kernel == StepKernel.V1 || kernel == StepKernel.PERSISTENT || kernel == StepKernel.PERSISTENT16) {  // the step cells of a reset-first GRU are v1's
            recurrentCase(kernel, "gru reset first", b -> Gru.builder().inputSize(3).hiddenSize(kernel.hidden()).linearBeforeReset(false)
                    .backend(b).build(), batch);
        }
    }

    /** Each activation, with and without clip, maps a NaN pre-activation to NaN (an Elman RNN: h = f(clip(a))), in every kernel. */
    @ParameterizedTest
    @EnumSource(Activation.Kind.class)
    void everyActivationAndClipKeepNaN(Activation.Kind kind) {
        for (StepKernel kernel : StepKernel.values()) {
            if (kernel != StepKernel.PERSISTENT16) {  // the next test's: sm_75 skips it
                activationCases(kernel, kind);
            }
        }
    }

    /** The same through the 16-bit persistent kernel. */
    @ParameterizedTest
    @EnumSource(Activation.Kind.class)
    void everyActivationAndClipKeepNaNInThe16BitPersistentKernel(Activation.Kind kind) {
        activationCases(StepKernel.PERSISTENT16, kind);
    }

    private static void activationCases(StepKernel kernel, Activation.Kind kind) {
        int batch = kernel == StepKernel.VEC4 ? RecurrentGpu.PERSISTENT_MAX_BATCH + 1 : 2;
        recurrentCase(kernel, "rnn " + kind, b -> Rnn.builder().inputSize(3).hiddenSize(kernel.hidden()).activations(Activation.of(kind))
                .backend(b).build(), batch);
        recurrentCase(kernel, "rnn " + kind + " clip 0.5", b -> Rnn.builder().inputSize(3).hiddenSize(kernel.hidden())
                .activations(Activation.of(kind)).clip(0.5).backend(b).build(), batch);
    }

    private static void recurrentCase(StepKernel kernel, String name, Function<dev.seqkernels.Backend, RecurrentOp> make, int batch) {
        if (kernel == StepKernel.PERSISTENT16) {
            GpuTargets.assumeTensorCores("the 16-bit persistent kernel");
        }
        GpuBackend backend = GpuTargets.newBackend();
        if (kernel == StepKernel.V1) {
            backend.recurrentPath().stepChoice(RecurrentGpu.StepChoice.V1);
        }
        RecurrentOp gpu = make.apply(backend);
        RecurrentOp cpu = make.apply(Backends.byName("cpu"));
        var c = gpu.config();
        DType dt = kernel.dtype();
        boolean persistent = RecurrentGpu.persistentPlan(c, batch, dt, GpuTargets.driver().properties(), RecurrentGpu.StepChoice.AUTO) != null;
        String cell = RecurrentGpu.stepCellKernel(c.cell(), c.hiddenSize(), c.projSize(), c.linearBeforeReset(), RecurrentGpu.StepChoice.AUTO);
        boolean vec4 = cell.endsWith("_vec4") || cell.endsWith("_fused");
        switch (kernel) {
            case PERSISTENT, PERSISTENT16 -> assertTrue(persistent, name + ": the rule must pick the persistent kernel");
            case VEC4, STATE16 -> assertTrue(vec4 && !persistent, name + ": the rule must pick the vec4 step cells");
            case V1 -> { }
        }
        TestData data = new TestData();
        Map<String, Tensor> p = data.params(dt, 0.5, c.parameterShapes());
        Map<String, Tensor> p64 = new LinkedHashMap<>();
        p.forEach((n, t) -> p64.put(n, t.to(DType.F64)));
        Tensor x = data.tensor(dt, 1, T, batch, 3);
        x.set(Double.NaN, NAN_STEP, NAN_ENTRY, 0);
        String tag = name + " " + kernel + " " + GpuTargets.binding() + " " + data;
        try (RecurrentResult got = gpu.forward(p, x); RecurrentResult want = cpu.forward(p64, x.to(DType.F64))) {
            double[] ref = want.output().toDoubleArray();
            int width = (int) want.output().size(2);
            for (int i = 0; i < ref.length; i++) {
                int t = i / (batch * width);
                int b = i / width % batch;
                boolean poisoned = b == NAN_ENTRY && t >= NAN_STEP;
                assertEquals(poisoned, Double.isNaN(ref[i]), tag + ": the reference's output (t " + t + ", b " + b + ") is "
                        + ref[i] + "; a NaN input must reach exactly its entry's later outputs");
            }
            Compare.Tolerance tol = dt == DType.F32 ? Compare.tolerance(DType.F32) : Compare.FINITE_ONLY;
            checkNan(tag + " output", got.output(), want.output(), tol);
            checkNan(tag + " hn", got.hn(), want.hn(), tol);
            if (want.cn() != null) {
                checkNan(tag + " cn", got.cn(), want.cn(), tol);
            }
        }
    }

    /** The attention forward kernels the runtime selects, each with a storage type and head size that picks it. */
    enum AttnKernel {
        V1_F32(DType.F32, false, 16, false), V1_BF16(DType.BF16, false, 16, false),
        TC64_F16(DType.F16, false, 16, false), TC64_BF16(DType.BF16, false, 16, false), TC128_BF16(DType.BF16, false, 72, false),
        TC256_BF16(DType.BF16, false, 136, false),
        TF32X64(DType.F32, true, 16, false), TF32X128(DType.F32, true, 72, false),
        SPLIT_F32(DType.F32, false, 14, true), SPLIT_BF16(DType.BF16, false, 12, true),
        DECODE_F32(DType.F32, false, 16, true), DECODE_BF16(DType.BF16, false, 136, true), DECODE_TC_BF16(DType.BF16, false, 16, true);

        final DType dtype;
        final boolean tf32;
        final int headDim;
        final boolean split;

        AttnKernel(DType dtype, boolean tf32, int headDim, boolean split) {
            this.dtype = dtype;
            this.tf32 = tf32;
            this.headDim = headDim;
            this.split = split;
        }

        boolean pinnedToV1() {
            return name().startsWith("V1");
        }

        String expected() {
            return switch (this) {
                case V1_F32, V1_BF16 -> "attn_fwd";
                case TC64_F16, TC64_BF16 -> "attn_fwd_tc64";
                case TC128_BF16 -> "attn_fwd_tc128";
                case TC256_BF16 -> "attn_fwd_tc256";
                case TF32X64 -> "attn_fwd_tf32x64";
                case TF32X128 -> "attn_fwd_tf32x128";
                case SPLIT_F32, SPLIT_BF16 -> "attn_fwd_split";
                case DECODE_F32 -> "attn_fwd_decode64";
                case DECODE_BF16 -> "attn_fwd_decode256";
                case DECODE_TC_BF16 -> "attn_fwd_decode_tc64";
            };
        }

        Compare.Tolerance tolerance() {
            return tf32 ? Compare.TF32 : Compare.tolerance(dtype);
        }
    }

    private static final int BATCH = 2;
    private static final int Q_HEADS = 2;
    private static final int VALUE_DIM = 8;

    /** One attention call on the kernel under test and on the reference, with its shapes. */
    private record AttnRun(AttnKernel kernel, int qLen, int kvLen, int valueDim, CausalAlignment causal, int[] keyLengths,
                           int[] queryLengths, Tensor q, Tensor k, Tensor v, TestData data) {
        static AttnRun of(AttnKernel kernel) {
            int qLen = kernel.split ? 2 : 9;
            int kvLen = kernel.split ? 1100 : 70;
            return of(kernel, qLen, kvLen, VALUE_DIM, CausalAlignment.BOTTOM_RIGHT, new int[]{kvLen, kvLen - 5},
                    new int[]{qLen, qLen - 1});
        }

        static AttnRun of(AttnKernel kernel, int qLen, int kvLen, int valueDim, CausalAlignment causal, int[] keyLengths,
                          int[] queryLengths) {
            TestData data = new TestData();
            return new AttnRun(kernel, qLen, kvLen, valueDim, causal, keyLengths, queryLengths,
                    data.tensor(kernel.dtype, 1, BATCH, Q_HEADS, qLen, kernel.headDim),
                    data.tensor(kernel.dtype, 1, BATCH, 1, kvLen, kernel.headDim),
                    data.tensor(kernel.dtype, 1, BATCH, 1, kvLen, valueDim), data);
        }

        GpuBackend backend() {
            GpuBackend backend = GpuTargets.newBackend();
            if (kernel.pinnedToV1()) {
                backend.attentionPath().kernelChoice(AttentionGpu.KernelChoice.V1);
            }
            var choice = kernel.pinnedToV1() ? AttentionGpu.KernelChoice.V1 : AttentionGpu.KernelChoice.AUTO;
            AttentionGpu.SplitPlan plan = kernel.pinnedToV1() ? null : splitPlan();
            DeviceProperties device = GpuTargets.driver().properties();
            String onSm90 = plan != null ? splitKernel(9, KernelReport.SM90_SHARED_PER_BLOCK_OPTIN).name()
                    : AttentionGpu.forwardKernel(kernel.dtype, kernel.headDim, valueDim, 9, choice, kernel.tf32);
            assertEquals(kernel.expected(), onSm90, kernel + ": the rule must pick the kernel under test on an sm_90");
            String chosen = plan != null ? splitKernel(device.computeMajor(), device.sharedMemoryPerBlockOptin()).name()
                    : AttentionGpu.forwardKernel(kernel.dtype, kernel.headDim, valueDim, device.computeMajor(), choice, kernel.tf32);
            // A tiled kernel runs only where its instances' shared memory fits (AttentionGpu.tiledInstance), else v1.
            boolean tiled = plan == null && !chosen.equals("attn_fwd");
            int optin = device.sharedMemoryPerBlockOptin();
            boolean fits = !tiled || AttentionGpu.tiledInstance(chosen, kernel.dtype, false, true, optin) != null
                    && AttentionGpu.tiledInstance(chosen, kernel.dtype, true, false, optin) != null;
            org.junit.jupiter.api.Assumptions.assumeTrue(chosen.equals(kernel.expected()) && fits, () -> "skipped: " + kernel.expected()
                    + " is not what the rule picks and runs on this device (" + device.name() + "): " + chosen);
            assertTrue(plan == null || plan.splits() >= 2, kernel + ": split-KV must really split");
            return backend;
        }

        /**
         * The split kernel the rule picks for this run on a device of that compute capability and
         * opt-in shared memory (the uploaded k and v are contiguous and aligned).
         */
        AttentionGpu.SplitKernel splitKernel(int computeMajor, int sharedPerBlockOptin) {
            int perChunk = 16 / kernel.dtype.byteSize();
            return AttentionGpu.splitKernel(kernel.dtype, kernel.headDim, valueDim, kernel.headDim % perChunk == 0 && valueDim % perChunk == 0,
                    computeMajor, sharedPerBlockOptin);
        }

        /** The split-KV plan for this run under AUTO, or null where the rule takes no split. */
        AttentionGpu.SplitPlan splitPlan() {
            return AttentionGpu.splitPlan(BATCH, Q_HEADS, 1, qLen, kvLen, GpuTargets.driver().properties().multiprocessors(),
                    AttentionGpu.KernelChoice.AUTO, splitKernel(9, KernelReport.SM90_SHARED_PER_BLOCK_OPTIN).rowsPerBlock());
        }

        Attention op(dev.seqkernels.Backend backend) {
            return Attention.builder().causal(causal).allowTf32(kernel.tf32).backend(backend).build();
        }

        AttentionResult gpu() {
            return gpu(null);
        }

        AttentionResult cpu() {
            return cpu(null);
        }

        AttentionResult gpu(Mask mask) {
            return op(backend()).forward(Attention.inputs(q, k, v).keyLengths(keyLengths).queryLengths(queryLengths).mask(mask));
        }

        AttentionResult cpu(Mask mask) {
            return op(Backends.byName("cpu")).forward(Attention.inputs(q.to(DType.F64), k.to(DType.F64), v.to(DType.F64))
                    .keyLengths(keyLengths).queryLengths(queryLengths).mask(mask));
        }

        /** Whether row i of batch entry b may attend to key j (the causal mask within the valid lengths; no explicit mask). */
        boolean allowed(int b, int i, int j) {
            int diagonal = causal == CausalAlignment.BOTTOM_RIGHT ? i + keyLengths[b] - queryLengths[b] : causal == CausalAlignment.TOP_LEFT ? i
                    : Integer.MAX_VALUE;
            return i < queryLengths[b] && j < keyLengths[b] && j <= diagonal;
        }

        String tag() {
            return kernel + " " + GpuTargets.binding() + " " + data;
        }
    }

    /**
     * NaN in a query row (a live one and a fully masked one), in a key row every live row of its
     * entry attends to, in one value column of such a key, and in keys and values past the key
     * length (never read): the reference's NaN pattern is the rule's, and the kernel's is the
     * reference's; fully masked rows stay (0, -inf). Non-finite v at keys the causal mask hides
     * from the first rows of entry 0 (the tensor-core kernels load them in a tile those rows
     * share): NaN in column 6 of key d - 4 (d = the last row's diagonal key), -inf and +inf in
     * column 7 of keys d - 5 and d - 3; a row that sees only the -inf is -inf there, one that sees
     * both is NaN, and the rows before see none of them and stay finite. Backward (the tensor-core
     * one for the 16-bit kernels, else v1) likewise.
     */
    @ParameterizedTest
    @EnumSource(AttnKernel.class)
    void attentionNaNsFollowTheReference(AttnKernel kernel) {
        AttnRun run = AttnRun.of(kernel);
        int lastKey = run.kvLen - 1;
        int nanRowIndex = run.qLen - 1;
        run.q.set(Double.NaN, 0, 0, nanRowIndex, 3);            // entry 0, head 0, its last row: a live row
        run.q.set(Double.NaN, 1, 1, run.qLen - 1, 0);           // entry 1's last row is past its query length
        run.k.set(Double.NaN, 1, 0, 0, 1);                      // entry 1, key 0: every live row of entry 1 sees it
        run.v.set(Double.NaN, 0, 0, 0, 5);                      // entry 0, key 0, value column 5
        run.k.set(Double.NaN, 1, 0, lastKey, 0);                // past entry 1's key length
        run.v.set(Double.NaN, 1, 0, lastKey, 2);
        int diagonal = run.keyLengths[0] - 1;                   // entry 0's last row may attend up to here
        run.v.set(Double.NaN, 0, 0, diagonal - 4, 6);
        run.v.set(Double.POSITIVE_INFINITY, 0, 0, diagonal - 3, 7);
        run.v.set(Double.NEGATIVE_INFINITY, 0, 0, diagonal - 5, 7);
        try (AttentionResult got = run.gpu(); AttentionResult want = run.cpu()) {
            double[] out = want.out().toDoubleArray();
            double[] lse = want.lse().toDoubleArray();
            for (int b = 0; b < BATCH; b++) {
                for (int h = 0; h < Q_HEADS; h++) {
                    for (int i = 0; i < run.qLen; i++) {
                        int row = (b * Q_HEADS + h) * run.qLen + i;
                        boolean live = run.allowed(b, i, 0);
                        boolean nanRow = live && (b == 1 || (h == 0 && i == nanRowIndex));
                        String where = run.tag() + ": reference row (b " + b + ", h " + h + ", i " + i + ")";
                        if (!live) {
                            assertEquals(Double.NEGATIVE_INFINITY, lse[row], where + " is fully masked: lse -inf");
                        } else {
                            assertEquals(nanRow, Double.isNaN(lse[row]), where + " lse " + lse[row]);
                        }
                        for (int e = 0; e < VALUE_DIM; e++) {
                            boolean sees6 = live && b == 0 && run.allowed(b, i, diagonal - 4);
                            boolean seesUp = live && b == 0 && run.allowed(b, i, diagonal - 3);
                            boolean seesDown = live && b == 0 && run.allowed(b, i, diagonal - 5);
                            boolean nan = nanRow || live && b == 0 && e == 5 || e == 6 && sees6 || e == 7 && seesUp && seesDown;
                            double o = out[row * VALUE_DIM + e];
                            assertEquals(nan, Double.isNaN(o), where + " column " + e + ": " + o);
                            if (!nan && e == 7 && seesDown) {
                                assertEquals(Double.NEGATIVE_INFINITY, o, where + " column 7 sees -inf only");
                            } else if (!nan) {
                                assertTrue(Double.isFinite(o), where + " column " + e + " sees no non-finite v: " + o);
                            }
                            if (!live) {
                                assertEquals(0.0, o, where + " is fully masked: out 0");
                            }
                        }
                    }
                }
            }
            checkNan(run.tag() + " out", got.out(), want.out(), kernel.tolerance());
            checkNan(run.tag() + " lse", got.lse(), want.lse(), kernel.tf32 ? Compare.tolerance(DType.F16) : Compare.tolerance(DType.F32));
            checkBackwardNanPattern(run, got, want);
        }
    }

    /**
     * An explicit mask that blocks key 2 for the even query rows, whose v holds NaN in column 2 and
     * +inf in column 3 (entry 0): the odd rows are NaN and +inf there, the even rows stay finite
     * (the tensor-core kernels load key 2 in a tile both kinds of rows share).
     */
    @ParameterizedTest
    @EnumSource(AttnKernel.class)
    void anExplicitMaskHidesNonFiniteValues(AttnKernel kernel) {
        AttnRun run = AttnRun.of(kernel);
        int key = 2;
        Tensor blocked = Tensor.allocate(DType.F32, run.qLen, run.kvLen);
        for (int i = 0; i < run.qLen; i += 2) {
            blocked.set(1.0, i, key);
        }
        run.v.set(Double.NaN, 0, 0, key, 2);
        run.v.set(Double.POSITIVE_INFINITY, 0, 0, key, 3);
        try (AttentionResult got = run.gpu(Mask.blocked(blocked)); AttentionResult want = run.cpu(Mask.blocked(blocked))) {
            double[] out = want.out().toDoubleArray();
            for (int h = 0; h < Q_HEADS; h++) {
                for (int i = 0; i < run.queryLengths[0]; i++) {
                    int row = h * run.qLen + i;
                    String where = run.tag() + ": reference row (b 0, h " + h + ", i " + i + ")";
                    boolean sees = i % 2 == 1;
                    double nanColumn = out[row * VALUE_DIM + 2];
                    double infColumn = out[row * VALUE_DIM + 3];
                    assertEquals(sees, Double.isNaN(nanColumn), where + " column 2: " + nanColumn);
                    assertEquals(sees, infColumn == Double.POSITIVE_INFINITY, where + " column 3: " + infColumn);
                    assertTrue(sees || Double.isFinite(infColumn), where + " column 3: " + infColumn);
                }
            }
            checkNan(run.tag() + " out", got.out(), want.out(), kernel.tolerance());
            checkNan(run.tag() + " lse", got.lse(), want.lse(), kernel.tf32 ? Compare.tolerance(DType.F16) : Compare.tolerance(DType.F32));
        } finally {
            blocked.close();
        }
    }

    /**
     * A split whose first key only the last query row may see: bottom-right causal, entry 0's key
     * length one past the first split's end, the key's v NaN in column 2 and +inf in column 3. Row
     * 0 has no key in that split; it must stay finite (the split's output for it is 0, never 0 x inf:
     * the tensor-core decode kernel's warp multiplies its zero weights by that v in the same mma
     * tile as row 1's), while row 1 is NaN and +inf there, as the reference says.
     */
    @ParameterizedTest
    @EnumSource(value = AttnKernel.class, names = {"SPLIT_F32", "SPLIT_BF16", "DECODE_F32", "DECODE_BF16", "DECODE_TC_BF16"})
    void aRowWithNoKeyInASplitStaysOutOfItsValues(AttnKernel kernel) {
        AttnRun base = AttnRun.of(kernel);
        assertTrue(base.splitPlan().splits() >= 2, kernel + ": split-KV must really split");
        int key = (int) base.splitPlan().keysPerSplit();  // the second split's first key
        AttnRun run = AttnRun.of(kernel, base.qLen, base.kvLen, VALUE_DIM, CausalAlignment.BOTTOM_RIGHT, new int[]{key + 1, base.kvLen},
                null);
        assertEquals(2, run.qLen, "rows 0 and 1 of entry 0");
        run.v.set(Double.NaN, 0, 0, key, 2);
        run.v.set(Double.POSITIVE_INFINITY, 0, 0, key, 3);
        try (AttentionResult got = run.gpu(); AttentionResult want = run.cpu()) {
            double[] out = want.out().toDoubleArray();
            for (int h = 0; h < Q_HEADS; h++) {
                for (int i = 0; i < run.qLen; i++) {
                    int row = h * run.qLen + i;
                    String where = run.tag() + ": reference row (b 0, h " + h + ", i " + i + ")";
                    boolean sees = i == 1;
                    assertEquals(sees, Double.isNaN(out[row * VALUE_DIM + 2]), where + " column 2");
                    assertEquals(sees, out[row * VALUE_DIM + 3] == Double.POSITIVE_INFINITY, where + " column 3");
                }
            }
            checkNan(run.tag() + " out", got.out(), want.out(), kernel.tolerance());
            checkNan(run.tag() + " lse", got.lse(), want.lse(), Compare.tolerance(DType.F32));
        }
    }

    /**
     * Scores that overflow fp32 downward over a whole split, on the tensor-core decode kernel:
     * entry 0's head 0, row 1 has q = 1e19 in column 0 and every key of the second split k = -1e20
     * there, so its scores in that split are -inf in fp32 (finite in double) and the split's sum l
     * is 0; one of those keys has v NaN in column 2. The tensor-core kernels read such a key's v
     * (weight 0), as the reference does (docs/CONVENTIONS.md): the row is NaN in column 2, so the
     * split's output must keep 0 x NaN rather than be zeroed for its l = 0.
     */
    @ParameterizedTest
    @EnumSource(value = AttnKernel.class, names = {"DECODE_TC_BF16"})
    void aSplitWhoseScoresAllOverflowDownwardStillReadsItsValues(AttnKernel kernel) {
        AttnRun run = AttnRun.of(kernel);
        assertTrue(run.splitPlan().splits() >= 2, kernel + ": split-KV must really split");
        int first = (int) run.splitPlan().keysPerSplit();
        int last = (int) Math.min(run.kvLen, 2L * first);
        run.q.set(1e19, 0, 0, 1, 0);
        for (int j = first; j < last; j++) {
            run.k.set(-1e20, 0, 0, j, 0);
        }
        run.v.set(Double.NaN, 0, 0, first + 3, 2);
        try (AttentionResult got = run.gpu(); AttentionResult want = run.cpu()) {
            assertTrue(Double.isNaN(want.out().toDoubleArray()[VALUE_DIM + 2]), run.tag() + ": the reference's row (b 0, h 0, i 1) is NaN");
            checkNan(run.tag() + " out", got.out(), want.out(), kernel.tolerance());
        }
    }

    /**
     * Non-finite v at blocked keys all over the tile, on the tensor-core and TF32 kernels (v1 as
     * the control): 40 live query rows (three warps), 24 value columns (three 8-column blocks), top-left
     * causal, and an explicit mask blocking keys 9, 10, 20 and 40 for the even rows. Entry 0's v has
     * NaN at those keys in columns 1, 9, 17 and 23 and +inf at key 12, column 13: a row gets NaN (or
     * +inf) exactly where it may attend to the key, as the reference says. Key 30, blocked for every
     * row, holds the largest float in column 5, which TF32 rounds to infinity: no row sees it.
     */
    @ParameterizedTest
    @EnumSource(value = AttnKernel.class, names = {"V1_F32", "TC64_F16", "TC64_BF16", "TC128_BF16", "TC256_BF16", "TF32X64", "TF32X128"})
    void nonFiniteValuesAtBlockedKeysAnywhereInTheTile(AttnKernel kernel) {
        int qLen = 44;
        int kvLen = 70;
        AttnRun run = AttnRun.of(kernel, qLen, kvLen, 24, CausalAlignment.TOP_LEFT, null, null);
        int[] maskedKeys = {9, 10, 20, 40};
        int[] columns = {1, 9, 17, 23};
        Tensor blocked = Tensor.allocate(DType.F32, qLen, kvLen);
        for (int i = 0; i < qLen; i += 2) {
            for (int j : maskedKeys) {
                blocked.set(1.0, i, j);
            }
        }
        for (int x = 0; x < maskedKeys.length; x++) {
            run.v.set(Double.NaN, 0, 0, maskedKeys[x], columns[x]);
        }
        run.v.set(Double.POSITIVE_INFINITY, 0, 0, 12, 13);
        for (int i = 0; i < qLen; i++) {
            blocked.set(1.0, i, 30);  // key 30 is blocked for every row: its v (the largest float, inf after TF32's rounding) never counts
        }
        run.v.set(Float.MAX_VALUE, 0, 0, 30, 5);
        try (AttentionResult got = run.gpu(Mask.blocked(blocked)); AttentionResult want = run.cpu(Mask.blocked(blocked))) {
            double[] out = want.out().toDoubleArray();
            for (int h = 0; h < Q_HEADS; h++) {
                for (int i = 0; i < qLen; i++) {
                    int row = h * qLen + i;
                    String where = run.tag() + ": reference row (b 0, h " + h + ", i " + i + ")";
                    for (int x = 0; x < maskedKeys.length; x++) {
                        boolean sees = maskedKeys[x] <= i && i % 2 == 1;
                        assertEquals(sees, Double.isNaN(out[row * 24 + columns[x]]), where + " column " + columns[x]);
                    }
                    assertEquals(12 <= i, out[row * 24 + 13] == Double.POSITIVE_INFINITY, where + " column 13");
                }
            }
            checkNan(run.tag() + " out", got.out(), want.out(), kernel.tolerance());
        } finally {
            blocked.close();
        }
    }

    /**
     * An infinite v at an allowed key whose weight is 0 (its score 7200 below the row's maximum, so
     * 0 in double too): 0 x inf is NaN in the reference, and in every kernel, on a tile a mask
     * touches (the recompute) as on one it does not. The key is entry 0's last, which only its last
     * row (in both heads) may attend to under the bottom-right causal mask. The row before it sees
     * the dominant key (last - 1) but not the infinite one, and gets the same query: its output is
     * that key's v, finite. With a random query instead, its scores against that key (k of 120 /
     * sqrt(D) per element) would be about 30 in magnitude, and TF32's rounding of q (2^-11
     * relative) would move them by about 1e-2, a test of conditioning rather than of 0 x inf (seed
     * 43887677500925: out relative L2 1.2e-3, TF32X64).
     */
    @ParameterizedTest
    @EnumSource(AttnKernel.class)
    void anInfiniteValueUnderAZeroWeightIsNaN(AttnKernel kernel) {
        AttnRun run = AttnRun.of(kernel);
        int row = run.qLen - 1;
        int last = run.keyLengths[0] - 1;
        for (int e = 0; e < kernel.headDim; e++) {
            for (int h = 0; h < Q_HEADS; h++) {
                run.q.set(30.0, 0, h, row, e);
                run.q.set(30.0, 0, h, row - 1, e);
            }
            run.k.set(-120 / Math.sqrt(kernel.headDim), 0, 0, last, e);   // scores -3600 and +3600
            run.k.set(120 / Math.sqrt(kernel.headDim), 0, 0, last - 1, e);
        }
        run.v.set(Double.POSITIVE_INFINITY, 0, 0, last, 7);
        try (AttentionResult got = run.gpu(); AttentionResult want = run.cpu()) {
            for (int h = 0; h < Q_HEADS; h++) {
                assertTrue(Double.isNaN(want.out().get(0, h, row, 7)), run.tag() + ": the reference's 0 x inf is NaN");
                for (int e = 0; e < VALUE_DIM; e++) {
                    assertEquals(run.v.get(0, 0, last - 1, e), want.out().get(0, h, row - 1, e), 1e-12,
                            run.tag() + ": the reference's row before it is the dominant key's v");
                }
            }
            checkNan(run.tag() + " out", got.out(), want.out(), kernel.tolerance());
        }
    }

    /**
     * Scores beyond fp32's range: entry 0's query row 1 and keys 3, a and b of 1e19 (D = 16 or 72,
     * scale 1/sqrt(D): scores of 4e38 and more, +inf in fp32, finite and tied in double). Their row
     * gives the mean of the three keys' v and lse +inf (the reference's lse rounds to +inf in F32);
     * other rows of entry 0 see those keys at about 1e19 and take their mean too. Keys a and b are
     * in split-KV's second split (in different warps' keys of attn_fwd_decode_tc's first tile), key 3
     * in its first, so the combine must weigh splits (and the tensor-core decode its warps) by their
     * counts of such keys. Fully masked rows stay (0, -inf). Backward (as the rule picks) has the reference's NaN
     * pattern: no NaN (the values are rounding noise at these scales in both; not compared).
     * The queries are made nonnegative: another row's score against a hot key is 1e19 times the
     * sum of its query's elements, and with mixed signs that sum could cancel far enough that the
     * fp32 dot product's rounding (about 1e12 there) failed F32's relative L2 on the lse (seed
     * 24634607573703: 2.3e-5, DECODE_F32), a test of conditioning rather than of these semantics.
     */
    @ParameterizedTest
    @EnumSource(value = AttnKernel.class, names = {"TC64_F16"}, mode = EnumSource.Mode.EXCLUDE)
    void scoresBeyondFp32RangeAreInfiniteAndShareTheWeight(AttnKernel kernel) {
        AttnRun run = AttnRun.of(kernel);
        for (long i = 0; i < run.q.numel(); i++) {
            run.q.setFlat(i, Math.abs(run.q.getFlat(i)));
        }
        long keysPerSplit = kernel.split ? run.splitPlan().keysPerSplit() : 20;
        int[] hot = {3, (int) keysPerSplit + 1, (int) keysPerSplit + 17};
        for (int e = 0; e < kernel.headDim; e++) {
            run.q.set(1e19, 0, 0, 1, e);
            for (int j : hot) {
                run.k.set(1e19, 0, 0, j, e);
            }
        }
        try (AttentionResult got = run.gpu(); AttentionResult want = run.cpu()) {
            // The reference ran on widened F64 copies; for F32, F16 and BF16 inputs it stores lse in F32.
            Tensor wantLse = want.lse().to(DType.F32);
            double[] lse = wantLse.toDoubleArray();
            assertEquals(Double.POSITIVE_INFINITY, lse[1], run.tag() + ": the reference's lse of the overflowing row rounds to +inf");
            double[] out = want.out().toDoubleArray();
            for (int e = 0; e < VALUE_DIM; e++) {
                double mean = 0;
                for (int j : hot) {
                    mean += run.v.get(0, 0, j, e) / hot.length;
                }
                assertEquals(mean, out[VALUE_DIM + e], 1e-6, run.tag() + ": the reference's overflowing row is the hot keys' mean v");
            }
            checkNan(run.tag() + " out", got.out(), want.out(), kernel.tolerance());
            checkNan(run.tag() + " lse", got.lse(), wantLse, kernel.tf32 ? Compare.tolerance(DType.F16) : Compare.tolerance(DType.F32));
            checkBackwardNanPattern(run, got, want);
        }
    }

    /**
     * +inf scores first met in a tile no mask touches, past the first: the tensor-core forward's
     * unmasked loop leaves such a tile to its masked step, which does it over for the warps that
     * left it (the others keep theirs) and takes the tiles after it. No mask, full lengths, 64 query
     * rows (one block of 4 warps). Hot rows have q = (+inf, 0, ...); k's column 0 is negative
     * before the first hot key and nonzero after, so a hot row's scores are -inf before it and +inf
     * at its positive keys after: it is the mean v of those keys, lse +inf, as in the reference.
     * Every other row, and entry 1, stay the reference's finite values (the backward of +inf scores
     * is scoresBeyondFp32RangeAreInfiniteAndShareTheWeight's). Two cases: 200 keys (3 tiles of 64 without a mask, then 8 keys past
     * the length's boundary), hot from key 64 (tile 1) in row 20 (warp 1); and 192 keys (every tile
     * unmasked: the masked loop has only the tile done over), hot from key 160 (in the last tile) in
     * rows 20 and 50 (warps 1 and 3). At 256 columns (key tiles of 32) those are tile 2 of 6 unmasked
     * and the last tile, hot from its start; the staged output follows the tile done over. The
     * gradients have the reference's NaN pattern: the tensor-core backward's unmasked loops (dq's
     * key tiles 0-2, dk/dv's hot loop over both query tiles), which weigh by exp2 for finite lse
     * rows only, are left to the masked ones in a block with a hot row. Not at 256, whose backward
     * is v1's: v1 skips every -inf score as if a mask blocked it, so a hot row's 0 x +inf q at its
     * -inf keys, NaN in the reference's dk, is never formed there.
     */
    @ParameterizedTest
    @EnumSource(value = AttnKernel.class, names = {"TC64_F16", "TC64_BF16", "TC128_BF16", "TC256_BF16"})
    void infiniteScoresInATileNoMaskTouchesAreRedoneByTheMaskedStep(AttnKernel kernel) {
        redoneHotTile(kernel, 200, 64, 20);
        redoneHotTile(kernel, 192, 160, 20, 50);
    }

    private static void redoneHotTile(AttnKernel kernel, int kvLen, int firstHotKey, int... hotRows) {
        int qLen = 64;
        AttnRun run = AttnRun.of(kernel, qLen, kvLen, VALUE_DIM, CausalAlignment.NONE, new int[]{kvLen, kvLen}, new int[]{qLen, qLen});
        for (int row : hotRows) {
            for (int e = 0; e < kernel.headDim; e++) {
                run.q.set(e == 0 ? Double.POSITIVE_INFINITY : 0.0, 0, 0, row, e);
            }
        }
        double[] mean = new double[VALUE_DIM];
        int hotKeys = 0;
        for (int j = 0; j < kvLen; j++) {
            double x = Math.abs(run.k.get(0, 0, j, 0)) + 0.5;
            boolean hot = j >= firstHotKey && run.k.get(0, 0, j, 0) >= 0;
            run.k.set(hot ? x : -x, 0, 0, j, 0);
            if (hot) {
                hotKeys++;
                for (int e = 0; e < VALUE_DIM; e++) {
                    mean[e] += run.v.get(0, 0, j, e);
                }
            }
        }
        String tag = run.tag() + " (" + kvLen + " keys, hot from " + firstHotKey + ")";
        assertTrue(hotKeys > 0, tag + ": the hot tiles have +inf keys");
        try (AttentionResult got = run.gpu(); AttentionResult want = run.cpu()) {
            Tensor wantLse = want.lse().to(DType.F32);
            for (int row : hotRows) {
                assertEquals(Double.POSITIVE_INFINITY, wantLse.get(0, 0, row), tag + ": the reference's lse of hot row " + row);
                for (int e = 0; e < VALUE_DIM; e++) {
                    assertEquals(mean[e] / hotKeys, want.out().get(0, 0, row, e), 1e-9,
                            tag + ": the reference's hot row " + row + " is its +inf keys' mean v");
                }
            }
            checkNan(tag + " out", got.out(), want.out(), kernel.tolerance());
            checkNan(tag + " lse", got.lse(), wantLse, Compare.tolerance(DType.F32));
            if (kernel != AttnKernel.TC256_BF16) {
                checkBackwardNanPattern(run, got, want);
            }
        }
    }

    /**
     * Non-finite inputs at pairs a mask blocks, in the backward: the tensor-core backward multiplies
     * whole tiles, so a blocked pair's 0 times a NaN q, k or dout must be kept out of the gradients,
     * as in v1, which never reads it. Bottom-right causal: entry 0's row i sees keys up to i + 61,
     * entry 1's up to i + 57. NaN in q's row 0 of entry 0 (head 0; it does not see keys 62..69:
     * their dk stays finite), in dout's row 3 of entry 0 (head 1, column 4; it does not see keys
     * 65..69: their dv stays finite there) and in k's key 64 of entry 1 (only its row 7 sees it: the dq of rows 0..6
     * stays finite). The gradients have the reference's NaN pattern, which is checked to be that.
     */
    @ParameterizedTest
    @EnumSource(value = AttnKernel.class, names = {"V1_F32", "V1_BF16", "TC64_F16", "TC64_BF16", "TC128_BF16"})
    void nonFiniteInputsAtBlockedPairsStayOutOfTheGradients(AttnKernel kernel) {
        AttnRun run = AttnRun.of(kernel);
        run.q.set(Double.NaN, 0, 0, 0, 1);
        run.k.set(Double.NaN, 1, 0, 64, 2);
        Tensor seed = run.data.tensor(kernel.dtype, 1, BATCH, Q_HEADS, run.qLen, VALUE_DIM);
        seed.set(Double.NaN, 0, 1, 3, 4);
        try (AttentionResult got = run.gpu(); AttentionResult want = run.cpu();
             AttentionGradients g = run.op(run.backend()).backward(got, seed);
             AttentionGradients r = run.op(Backends.byName("cpu")).backward(want, seed.to(DType.F64))) {
            String tag = run.tag();
            assertTrue(Double.isNaN(r.dk().get(0, 0, 10, 0)) && Double.isFinite(r.dk().get(0, 0, 66, 0)),
                    tag + ": the reference's dk is NaN where row 0 looks, finite past its diagonal");
            assertTrue(Double.isNaN(r.dv().get(0, 0, 64, 4)) && Double.isFinite(r.dv().get(0, 0, 67, 4)),
                    tag + ": the reference's dv (column 4) is NaN where row 3 looks, finite past its diagonal");
            assertTrue(Double.isNaN(r.dq().get(1, 0, 7, 0)) && Double.isFinite(r.dq().get(1, 0, 6, 0)),
                    tag + ": the reference's dq is NaN for the row that sees key 64 only");
            checkNanPatterns(tag, g, r);
        } finally {
            seed.close();
        }
    }

    /**
     * An infinite dout element (row 2 of entry 0, head 0, column 4): every dP of the row is then
     * infinite or NaN, so the reference's delta = sum P dP and every dS of the row are NaN, and dk
     * is NaN for every key the row sees. The tensor-core backward takes delta from rowsum(dout *
     * out), which alone would be an infinity that leaves some dS infinite (v's column 4 has both
     * signs): it makes such a row's delta NaN, as v1's is.
     */
    @ParameterizedTest
    @EnumSource(value = AttnKernel.class, names = {"V1_F32", "V1_BF16", "TC64_F16", "TC64_BF16", "TC128_BF16"})
    void anInfiniteDoutMakesTheRowsGradientsNaNAsTheReferences(AttnKernel kernel) {
        AttnRun run = AttnRun.of(kernel);
        Tensor seed = run.data.tensor(kernel.dtype, 1, BATCH, Q_HEADS, run.qLen, VALUE_DIM);
        seed.set(Double.POSITIVE_INFINITY, 0, 0, 2, 4);
        try (AttentionResult got = run.gpu(); AttentionResult want = run.cpu();
             AttentionGradients g = run.op(run.backend()).backward(got, seed);
             AttentionGradients r = run.op(Backends.byName("cpu")).backward(want, seed.to(DType.F64))) {
            String tag = run.tag();
            assertTrue(Double.isNaN(r.dk().get(0, 0, 0, 0)) && Double.isNaN(r.dq().get(0, 0, 2, 0)),
                    tag + ": the reference's dk and the row's dq are NaN");
            checkNanPatterns(tag, g, r);
        } finally {
            seed.close();
        }
    }

    /** Backward (the one the rule picks: tensor-core for the 16-bit kernels, else v1) from a random dOut: the reference's NaN pattern. */
    private static void checkBackwardNanPattern(AttnRun run, AttentionResult got, AttentionResult want) {
        Tensor seed = run.data.tensor(run.kernel.dtype, 1, got.out().shape());
        try (AttentionGradients g = run.op(run.backend()).backward(got, seed);
             AttentionGradients r = run.op(Backends.byName("cpu")).backward(want, seed.to(DType.F64))) {
            checkNanPatterns(run.tag(), g, r);
        }
    }

    /** dq, dk and dv have the reference's NaN positions. */
    private static void checkNanPatterns(String tag, AttentionGradients got, AttentionGradients ref) {
        checkNanPattern(tag + " dq", got.dq(), ref.dq());
        checkNanPattern(tag + " dk", got.dk(), ref.dk());
        checkNanPattern(tag + " dv", got.dv(), ref.dv());
    }

    /** NaN positions equal, then the table on the finite values (and infinities equal). */
    static void checkNan(String what, Tensor got, Tensor ref, Compare.Tolerance tol) {
        double[] o = got.toDoubleArray();
        double[] r = ref.toDoubleArray();
        checkNanPattern(what, o, r);
        for (int i = 0; i < o.length; i++) {
            if (Double.isNaN(r[i])) {
                o[i] = 0;
                r[i] = 0;
            }
        }
        Compare.Result result = Compare.compare(o, r, tol);
        assertTrue(result.passes(tol), () -> what + " (NaN positions aside): " + result);
    }

    private static void checkNanPattern(String what, Tensor got, Tensor ref) {
        checkNanPattern(what, got.toDoubleArray(), ref.toDoubleArray());
    }

    private static void checkNanPattern(String what, double[] o, double[] r) {
        assertEquals(r.length, o.length, what + ": length");
        int nans = 0;
        for (int i = 0; i < o.length; i++) {
            if (Double.isNaN(o[i]) != Double.isNaN(r[i])) {
                fail(what + ": element " + i + " is " + o[i] + ", the reference's " + r[i]);
            }
            nans += Double.isNaN(r[i]) ? 1 : 0;
        }
        assertTrue(nans < o.length || o.length == 0, what + ": every element NaN tells nothing");
    }

    /** MHA's attention weights of a row whose scores overflow to +inf: the hot keys share the weight, as in the reference. */
    @org.junit.jupiter.api.Test
    void mhaWeightsOfOverflowingScoresAreSharedLikeTheReference() {
        dev.seqkernels.ops.MultiHeadAttention.Builder b = dev.seqkernels.ops.MultiHeadAttention.builder().embedDim(4).numHeads(1)
                .needWeights(true);
        dev.seqkernels.ops.MultiHeadAttention gpu = b.backend(GpuTargets.backend()).build();
        dev.seqkernels.ops.MultiHeadAttention cpu = b.backend("cpu").build();
        Map<String, Tensor> p = new LinkedHashMap<>();
        gpu.parameterShapes().forEach((name, shape) -> {
            Tensor t = Tensor.allocate(DType.F32, shape);
            if (shape.length == 2) {
                for (long i = 0; i < shape[0]; i++) {
                    t.set(1.0, i, i % shape[1]);
                }
            }
            p.put(name, t);
        });
        double big = 3e19;
        Tensor x = Tensor.of(DType.F32, new double[]{big, big, big, big, 0, 0, 0, 0, big, big, big, big}, 3, 1, 4);
        try (var g = gpu.forward(p, dev.seqkernels.ops.MultiHeadAttention.inputs(x, x, x));
             var c = cpu.forward(p, dev.seqkernels.ops.MultiHeadAttention.inputs(x, x, x))) {
            double[] gw = g.attnWeights().toDoubleArray();
            double[] cw = c.attnWeights().toDoubleArray();
            assertEquals(0.5, cw[0], 1e-12, "the reference: two hot keys share row 0");
            for (int i = 0; i < cw.length; i++) {
                assertEquals(cw[i], gw[i], 1e-6, "weight " + i);
            }
        }
    }
}
