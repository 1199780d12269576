package dev.seqkernels.gpu;

import dev.seqkernels.Backends;
import dev.seqkernels.Compare;
import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.TestData;
import dev.seqkernels.Tensor;
import dev.seqkernels.gpu.emu.EmuDriver;
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
import dev.seqkernels.ops.RecurrentResult;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static dev.seqkernels.gpu.RecurrentGpuTest.check;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The attention ops' GPU path (AttentionGpu + cuda/attention.cu) through the binding under test
 * ({@link GpuTargets}) against the CPU reference.
 */
@PerBinding
class AttentionGpuTest {

    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"F32", "F16", "BF16"})
    void sdpaWithGroupedHeadsMasksLengthsAndDeadRows(DType dtype) {
        TestData data = new TestData();
        Tensor q = data.tensor(dtype, 1, 2, 4, 9, 7);
        Tensor k = data.tensor(dtype, 1, 2, 2, 6, 7);
        Tensor v = data.tensor(dtype, 1, 2, 2, 6, 5);
        double[] m = new double[9 * 6];
        for (int i = 0; i < m.length; i++) {
            m[i] = data.nextBoolean(0.8) ? 1 : 0;
        }
        Tensor allowed = Tensor.of(DType.BOOL, m, 1, 1, 9, 6);
        // Bottom-right causal with Lq > Lk leaves the first rows with no key; batch 1 also has a query length.
        Attention.Inputs inputs = Attention.inputs(q, k, v).mask(Mask.allowed(allowed)).keyLengths(new int[]{6, 4})
                .queryLengths(new int[]{9, 7});
        compare(dtype, data, CausalAlignment.BOTTOM_RIGHT, Double.NaN, inputs, q, k, v);
    }

    @Test
    void sdpaOddLongShapesWithAdditiveMask() {
        TestData data = new TestData();
        Tensor q = data.tensor(DType.F32, 1, 1, 2, 37, 59);
        Tensor k = data.tensor(DType.F32, 1, 1, 1, 1025, 59);
        Tensor v = data.tensor(DType.F32, 1, 1, 1, 1025, 24);
        Tensor add = data.tensor(DType.F32, 2, 37, 1025);
        compare(DType.F32, data, CausalAlignment.NONE, 0.3, Attention.inputs(q, k, v).mask(Mask.additive(add)), q, k, v);
    }

    /**
     * Self-attention (one tensor as query, key and value) takes one projection GEMM into a packed
     * [B*L, E + 2 kv] buffer: 4 launches fewer (2 GEMMs, 2 bias broadcasts) than the same call with three
     * distinct copies, and both match the reference, gradients included (GQA, padding mask, weights):
     * F32 by the table, BF16 (16 bits end to end) by the 2x rule ({@link #mhaAgrees}).
     */
    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"F32", "BF16"})
    @DeviceDependent
    void mhaSelfAttentionProjectsWithOneGemm(DType dtype) {
        TestData data = new TestData();
        MultiHeadAttention.Builder b = MultiHeadAttention.builder().embedDim(12).numHeads(4).numKvHeads(2).needWeights(true)
                .causal(CausalAlignment.TOP_LEFT);
        MultiHeadAttention cpu = b.backend("cpu").build();
        MultiHeadAttention plain = b.backend(Backends.CPU_SAME_PRECISION).build();
        Map<String, Tensor> p = data.params(dtype, 0.5, cpu.parameterShapes());
        Map<String, Tensor> p64 = new LinkedHashMap<>();
        p.forEach((n, t) -> p64.put(n, t.to(DType.F64)));
        Tensor x = data.tensor(dtype, 1, 7, 2, 12);
        Tensor padding = Tensor.of(DType.BOOL, new double[]{0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0}, 2, 7);
        Tensor seed = data.tensor(dtype, 1, 7, 2, 12);
        Tensor seedW = data.tensor(dtype, 1, 2, 7, 7);
        int[] launches = new int[2];
        String tag = "mha self-attention " + dtype + " " + data;
        for (int run = 0; run < 2; run++) {
            boolean same = run == 0;
            try (CapturingDriver counting = new CapturingDriver(GpuTargets.driver())) {
                MultiHeadAttention gpu = b.backend(new GpuBackend(counting)).build();
                MultiHeadAttention.Inputs in = same ? MultiHeadAttention.inputs(x, x, x)
                        : MultiHeadAttention.inputs(x, x.to(dtype), x.to(dtype));
                try (MhaResult got = gpu.forward(p, in.keyPaddingMask(Mask.blocked(padding)));
                     MhaResult want = cpu.forward(p64, MultiHeadAttention.inputs(x.to(DType.F64), x.to(DType.F64), x.to(DType.F64))
                             .keyPaddingMask(Mask.blocked(padding)));
                     MhaResult base = plain.forward(p, MultiHeadAttention.inputs(x, x, x).keyPaddingMask(Mask.blocked(padding)))) {
                    launches[run] = counting.launches();
                    try (MhaGradients g = gpu.backward(p, got, seed, seedW);
                         MhaGradients r = cpu.backward(p64, want, seed.to(DType.F64), seedW.to(DType.F64));
                         MhaGradients pg = plain.backward(p, base, seed, seedW)) {
                        mhaAgrees(tag, dtype, got, base, want, g, pg, r);
                    }
                }
            }
        }
        assertEquals(launches[1] - 4, launches[0], "forward launches: self-attention " + launches[0] + ", distinct tensors " + launches[1]);
    }

    /** Both sides of every condition of the forward kernel choice. */
    @Test
    void forwardKernelSelectionRule() {
        var auto = AttentionGpu.KernelChoice.AUTO;
        assertEquals("attn_fwd_tc64", AttentionGpu.forwardKernel(DType.BF16, 64, 64, 9, auto, false));
        assertEquals("attn_fwd_tc64", AttentionGpu.forwardKernel(DType.F16, 59, 24, 8, auto, false));
        assertEquals("attn_fwd_tc128", AttentionGpu.forwardKernel(DType.F16, 64, 65, 8, auto, false));
        assertEquals("attn_fwd_tc128", AttentionGpu.forwardKernel(DType.BF16, 128, 128, 9, auto, false));
        assertEquals("attn_fwd_tc256", AttentionGpu.forwardKernel(DType.BF16, 129, 64, 9, auto, false), "D above 128");
        assertEquals("attn_fwd_tc256", AttentionGpu.forwardKernel(DType.F16, 64, 129, 8, auto, false), "Dv above 128");
        assertEquals("attn_fwd_tc256", AttentionGpu.forwardKernel(DType.BF16, 256, 256, 12, auto, false));
        assertEquals("attn_fwd", AttentionGpu.forwardKernel(DType.BF16, 256, 256, 7, auto, false), "256 wide before sm_80");
        assertEquals("attn_fwd", AttentionGpu.forwardKernel(DType.F32, 64, 64, 9, auto, false), "F32 storage");
        assertEquals("attn_fwd", AttentionGpu.forwardKernel(DType.F16, 64, 64, 7, auto, false), "no mma.m16n8k16 before sm_80");
        assertEquals("attn_fwd", AttentionGpu.forwardKernel(DType.F16, 64, 64, 9, AttentionGpu.KernelChoice.V1, false), "pinned to v1");
        assertEquals("attn_fwd_tf32x64", AttentionGpu.forwardKernel(DType.F32, 64, 40, 8, auto, true), "F32 with TF32 allowed");
        assertEquals("attn_fwd_tf32x128", AttentionGpu.forwardKernel(DType.F32, 65, 40, 9, auto, true));
        assertEquals("attn_fwd", AttentionGpu.forwardKernel(DType.F32, 64, 64, 7, auto, true), "no tf32 mma before sm_80");
        assertEquals("attn_fwd", AttentionGpu.forwardKernel(DType.F32, 130, 64, 9, auto, true), "TF32 also stops at 128");
        assertEquals("attn_fwd_tc64", AttentionGpu.forwardKernel(DType.BF16, 64, 64, 9, auto, true), "allowTf32 leaves 16-bit alone");
    }

    /**
     * The tensor-core forward's and backward's instances: no explicit mask and 16-byte rows take
     * _nobias; either one missing, the general kernel.
     */
    @Test
    void tensorCoreInstanceRule() {
        assertEquals("attn_fwd_tc64_nobias", AttentionGpu.tcInstance("attn_fwd_tc64", false, true));
        assertEquals("attn_fwd_tc128_nobias", AttentionGpu.tcInstance("attn_fwd_tc128", false, true));
        assertEquals("attn_fwd_tc256_nobias", AttentionGpu.tcInstance("attn_fwd_tc256", false, true));
        assertEquals("attn_fwd_tc256", AttentionGpu.tcInstance("attn_fwd_tc256", true, true), "an explicit mask at 256");
        assertEquals("attn_fwd_tc64", AttentionGpu.tcInstance("attn_fwd_tc64", true, true), "an explicit mask");
        assertEquals("attn_fwd_tc128", AttentionGpu.tcInstance("attn_fwd_tc128", false, false), "element loads");
        assertEquals("attn_fwd_tf32x64", AttentionGpu.tcInstance("attn_fwd_tf32x64", false, true), "TF32 has one instance");
        for (String backward : List.of("attn_bwd_dq_tc64", "attn_bwd_dq_tc128", "attn_bwd_dkdv_tc64", "attn_bwd_dkdv_tc128")) {
            assertEquals(backward + "_nobias", AttentionGpu.tcInstance(backward, false, true), backward);
            assertEquals(backward, AttentionGpu.tcInstance(backward, true, true), backward + ": an explicit mask");
            assertEquals(backward, AttentionGpu.tcInstance(backward, false, false), backward + ": element loads");
        }
        assertEquals(64, AttentionGpu.dqKeyTile("attn_bwd_dq_tc64"), "dq at 64: key tiles of 64");
        assertEquals(64, AttentionGpu.dqKeyTile("attn_bwd_dq_tc64_nobias"), "dq at 64 without bias: the same tiles");
        assertEquals(32, AttentionGpu.dqKeyTile("attn_bwd_dq_tc128"), "dq at 128: key tiles of 32");
        assertEquals(16, AttentionGpu.dqKeyTile("attn_bwd_dq_tc128_nobias"), "dq at 128 without bias: key tiles of 16");
        assertThrows(IllegalArgumentException.class, () -> AttentionGpu.dqKeyTile("attn_bwd_dkdv_tc128"), "not a dq instance");
        assertEquals("attn_bwd_dq", AttentionGpu.tcInstance("attn_bwd_dq", false, true), "v1 has one instance");
    }

    /**
     * Each tiled forward instance's shared memory (cuda/attention.cu's sums; above 128 columns the
     * q tile as well), and the rule that launches an instance only where it fits the device's
     * opt-in limit, both sides of it: the 256-column instance without bias takes exactly the
     * 99 KB that sm_86, sm_89 and sm_120 allow a block.
     */
    @Test
    void tiledInstanceFitsTheDevicesSharedMemoryOrV1Runs() {
        assertEquals(36_864, AttentionGpu.forwardSharedBytes("attn_fwd_tc64_nobias", DType.BF16));
        assertEquals(34_816, AttentionGpu.forwardSharedBytes("attn_fwd_tc128", DType.F16));
        assertEquals(69_632, AttentionGpu.forwardSharedBytes("attn_fwd_tc128_nobias", DType.BF16));
        assertEquals(4 * 16 * 264 * 2 + 64 * 264 * 2, AttentionGpu.forwardSharedBytes("attn_fwd_tc256", DType.BF16));
        assertEquals(101_376, AttentionGpu.forwardSharedBytes("attn_fwd_tc256_nobias", DType.F16));
        assertEquals(44_032, AttentionGpu.forwardSharedBytes("attn_fwd_tf32x64", DType.F32));
        assertEquals(38_912, AttentionGpu.forwardSharedBytes("attn_fwd_tf32x128", DType.F32));
        assertEquals(256, AttentionGpu.tileColumns("attn_fwd_tc256_nobias"));
        assertEquals(64, AttentionGpu.tileColumns("attn_fwd_tf32x64"));
        assertThrows(IllegalArgumentException.class, () -> AttentionGpu.tileColumns("attn_fwd"));
        assertTrue(AttentionGpu.queryTileInSharedMemory("attn_fwd_tc256_nobias"));
        assertTrue(AttentionGpu.queryTileInSharedMemory("attn_fwd_tc256"));
        assertFalse(AttentionGpu.queryTileInSharedMemory("attn_fwd_tc128_nobias"), "q in registers up to 128");
        assertFalse(AttentionGpu.queryTileInSharedMemory("attn_fwd_tf32x128"));
        assertFalse(AttentionGpu.queryTileInSharedMemory("attn_fwd"), "v1 has no tiles");

        assertEquals("attn_fwd_tc256_nobias", AttentionGpu.tiledInstance("attn_fwd_tc256", DType.BF16, false, true, 101_376));
        assertNull(AttentionGpu.tiledInstance("attn_fwd_tc256", DType.BF16, false, true, 101_375), "one byte short: v1");
        assertEquals("attn_fwd_tc256", AttentionGpu.tiledInstance("attn_fwd_tc256", DType.BF16, true, true, 67_584));
        assertNull(AttentionGpu.tiledInstance("attn_fwd_tc256", DType.BF16, true, true, 67_583));
        assertEquals("attn_fwd_tc128_nobias", AttentionGpu.tiledInstance("attn_fwd_tc128", DType.F16, false, true, 101_376));
        assertNull(AttentionGpu.tiledInstance("attn_fwd", DType.F16, false, true, 232_448), "v1 is not tiled");
    }

    /**
     * The tiled forward's flags: bit 0 as given (16-byte tile rows), bit 1 where out has 16-byte
     * rows for the staged output's 16-byte stores; each condition on both sides (BF16: chunks of 8).
     */
    @Test
    void tiledFlagsSayWhereOutHasSixteenByteRows() {
        long[] rows = {4 * 16 * 24, 16 * 24, 24, 1};  // [b][h][l][e] with rows of 24 elements, 48 bytes
        assertEquals(3, AttentionGpu.tiledFlags(true, 16, rows, 256, DType.BF16));
        assertEquals(2, AttentionGpu.tiledFlags(false, 16, rows, 256, DType.BF16));
        assertEquals(1, AttentionGpu.tiledFlags(true, 12, rows, 256, DType.BF16), "Dv not a multiple of 8");
        assertEquals(0, AttentionGpu.tiledFlags(false, 16, rows, 256 + 8, DType.BF16), "base 8 bytes off");
        assertEquals(0, AttentionGpu.tiledFlags(false, 16, new long[]{4 * 16 * 17, 16 * 17, 17, 1}, 256, DType.BF16), "rows of 34 bytes");
        assertEquals(0, AttentionGpu.tiledFlags(false, 16, new long[]{4 * 16 * 24, 16 * 24 + 4, 24, 1}, 256, DType.BF16), "head stride");
        assertEquals(0, AttentionGpu.tiledFlags(false, 16, new long[]{4 * 16 * 24 + 4, 16 * 24, 24, 1}, 256, DType.BF16), "batch stride");
        assertEquals(0, AttentionGpu.tiledFlags(false, 16, new long[]{4 * 16 * 48, 16 * 48, 48, 2}, 256, DType.BF16), "column stride 2");
        assertEquals(2, AttentionGpu.tiledFlags(false, 4, new long[]{64, 16, 4, 1}, 256, DType.F32), "F32: chunks of 4");
    }

    /**
     * Key rows per tile of each tiled forward instance (which sizes the launch's shared memory) are
     * the ones cuda/attention.cu instantiates: its SEQK_ATTENTION_TC(suffix, T, DMAX, BN, BN_NOBIAS)
     * and SEQK_ATTENTION_TF32(DMAX, BN) lines, read from the source. A tile larger than the launch's
     * shared memory would also be an emulator fault; a smaller one would go unnoticed but for this.
     */
    @Test
    void keysPerTileOfEachForwardInstanceAreTheSourcesTiles() throws IOException {
        String source = Files.readString(Path.of(System.getProperty("seqkernels.root", "..")).resolve("cuda/attention.cu"));
        Matcher tc = Pattern.compile("(?m)^SEQK_ATTENTION_TC\\(\\w+, [\\w:]+, (\\d+), (\\d+), (\\d+)\\);").matcher(source);
        int instances = 0;
        while (tc.find()) {
            String kernel = "attn_fwd_tc" + tc.group(1);
            assertEquals(Integer.parseInt(tc.group(2)), AttentionGpu.keysPerTile(kernel), kernel);
            assertEquals(Integer.parseInt(tc.group(3)), AttentionGpu.keysPerTile(kernel + "_nobias"), kernel + "_nobias");
            instances += 2;
        }
        Matcher tf32 = Pattern.compile("(?m)^SEQK_ATTENTION_TF32\\((\\d+), (\\d+)\\);").matcher(source);
        while (tf32.find()) {
            String kernel = "attn_fwd_tf32x" + tf32.group(1);
            assertEquals(Integer.parseInt(tf32.group(2)), AttentionGpu.keysPerTile(kernel), kernel);
            instances++;
        }
        assertEquals(2 * 3 * 2 + 2, instances, "the 16-bit instances (two dtypes, three sizes, two each) and the TF32 ones, found in the source");
        assertThrows(IllegalArgumentException.class, () -> AttentionGpu.keysPerTile("attn_fwd"), "v1 has no tiles");
    }

    /**
     * The tensor-core forward on the emulator at all three sizes: 16-byte loads (D = Dv = 64, 128
     * and 256; D = 40, Dv = 24; D = 64, Dv = 40; D = 136, Dv = 200) and element loads (D = 36,
     * Dv = 20; D = 130, Dv = 72), several query and key tiles (unmasked ones before masked ones),
     * causal alignments, lengths, GQA and an additive mask; both instances, each case checked to
     * run the one the rules pick. Each against the double reference by the tolerance table and by
     * FlashAttention's rule (error at most 2x that of the plain same-precision implementation,
     * the CPU reference's same-precision mode), and against v1.
     */
    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"F16", "BF16"})
    @DeviceDependent
    void tensorCoreForwardMatchesReferenceV1AndTheTwoTimesRule(DType dtype) {
        GpuTargets.assumeTensorCores("the tensor-core forward");
        TestData data = new TestData();
        tensorCoreCase(data, dtype, 2, 4, 2, 100, 200, 64, 64, CausalAlignment.BOTTOM_RIGHT, new int[]{200, 77}, new int[]{100, 90}, false);
        tensorCoreCase(data, dtype, 1, 2, 2, 70, 130, 128, 128, CausalAlignment.NONE, null, null, true);
        tensorCoreCase(data, dtype, 1, 3, 1, 65, 33, 40, 24, CausalAlignment.TOP_LEFT, new int[]{30}, null, false);
        // the _nobias instance: unmasked tiles with rows past a query length, and an odd count of 8-column v blocks
        tensorCoreCase(data, dtype, 2, 2, 1, 130, 150, 64, 40, CausalAlignment.NONE, new int[]{150, 131}, new int[]{130, 70}, false);
        // the general instance without a mask: unmasked tiles with element loads and an odd block count
        tensorCoreCase(data, dtype, 1, 2, 2, 70, 200, 36, 20, CausalAlignment.NONE, null, null, false);
        // above 128 (q in shared memory): the no-bias instance with causal tiles, lengths and dead rows;
        // the general one with an additive mask, and with element loads (D not a multiple of 8)
        tensorCoreCase(data, dtype, 1, 2, 1, 70, 100, 256, 256, CausalAlignment.BOTTOM_RIGHT, new int[]{100}, new int[]{61}, false);
        tensorCoreCase(data, dtype, 1, 2, 2, 65, 40, 136, 200, CausalAlignment.NONE, null, null, true);
        tensorCoreCase(data, dtype, 1, 1, 1, 20, 50, 130, 72, CausalAlignment.TOP_LEFT, null, null, false);
    }

    private static void tensorCoreCase(TestData data, DType dtype, int batch, int hq, int hkv, int lq, int lk, int d, int dv,
                                       CausalAlignment causal, int[] keyLengths, int[] queryLengths, boolean additiveMask) {
        Tensor q = data.tensor(dtype, 1, batch, hq, lq, d);
        Tensor k = data.tensor(dtype, 1, batch, hkv, lk, d);
        Tensor v = data.tensor(dtype, 1, batch, hkv, lk, dv);
        Tensor add = additiveMask ? data.tensor(DType.F32, 1, lq, lk) : null;
        List<String> resolved = new CopyOnWriteArrayList<>();
        GpuBackend tensorCores = new GpuBackend(RecordingDriver.recordingFunctions(GpuTargets.driver(), resolved));
        GpuBackend plainPort = GpuTargets.newBackend();
        plainPort.attentionPath().kernelChoice(AttentionGpu.KernelChoice.V1);
        int widest = Math.max(d, dv);
        String instance = "attn_fwd_tc" + (widest <= 64 ? 64 : widest <= 128 ? 128 : 256)
                + (!additiveMask && d % 8 == 0 && dv % 8 == 0 ? "_nobias_" : "_") + RecurrentGpu.suffix(dtype);
        String tag = "tc " + dtype + " D=" + d + " Dv=" + dv + " Lq=" + lq + " Lk=" + lk + " " + causal + " " + data;
        Attention.Inputs in = Attention.inputs(q, k, v).keyLengths(keyLengths).queryLengths(queryLengths);
        Attention.Inputs ref = Attention.inputs(q.to(DType.F64), k.to(DType.F64), v.to(DType.F64)).keyLengths(keyLengths)
                .queryLengths(queryLengths);
        if (add != null) {
            in.mask(Mask.additive(add));
            ref.mask(Mask.additive(add.to(DType.F64)));
        }
        try (AttentionResult got = Attention.builder().causal(causal).backend(tensorCores).build().forward(in);
             AttentionResult v1 = Attention.builder().causal(causal).backend(plainPort).build().forward(in);
             AttentionResult plain = Attention.builder().causal(causal).backend(Backends.CPU_SAME_PRECISION).build().forward(in);
             AttentionResult want = Attention.builder().causal(causal).backend("cpu").build().forward(ref)) {
            assertEquals(List.of(instance), resolved.stream().filter(name -> name.startsWith("attn_fwd")).distinct().toList(),
                    tag + ": the forward ran in the instance the rules pick");
            check(tag + " out", got.out(), want.out(), dtype);
            check(tag + " lse", got.lse(), want.lse(), DType.F32);
            check(tag + " out vs v1", got.out(), v1.out(), dtype);
            Compare.TwoTimes rule = Compare.twiceThePlain(got.out().toDoubleArray(), plain.out().toDoubleArray(),
                    want.out().toDoubleArray(), dtype);
            assertNull(rule.firstBad(), () -> tag + ": " + rule.firstBad());
        }
    }

    /**
     * The TF32 mode (opt-in) on the emulator: within the TF32 tolerance of the reference, with
     * 16-byte loads (D = Dv = 64) and element loads (D = 37, Dv = 100), masks, lengths and GQA; and
     * measurably less exact than F32 (so the tf32 kernel, not v1, ran). Backward (v1) from its LSE.
     */
    @Test
    @DeviceDependent
    void tf32ModeMatchesReferenceWithinItsTolerance() {
        GpuTargets.assumeTensorCores("the TF32 forward");
        TestData data = new TestData();
        double[] errors = new double[2];
        int[][] dims = {{64, 64}, {37, 100}};
        for (int c = 0; c < 2; c++) {
            Tensor q = data.tensor(DType.F32, 1, 2, 4, 70, dims[c][0]);
            Tensor k = data.tensor(DType.F32, 1, 2, 2, 90, dims[c][0]);
            Tensor v = data.tensor(DType.F32, 1, 2, 2, 90, dims[c][1]);
            Attention.Inputs in = Attention.inputs(q, k, v).keyLengths(new int[]{90, 41}).queryLengths(new int[]{70, 66});
            Attention.Inputs ref = Attention.inputs(q.to(DType.F64), k.to(DType.F64), v.to(DType.F64)).keyLengths(new int[]{90, 41})
                    .queryLengths(new int[]{70, 66});
            Attention tf32 = Attention.builder().causal(CausalAlignment.BOTTOM_RIGHT).allowTf32(true).backend(GpuTargets.backend()).build();
            Attention plainTf32 = Attention.builder().causal(CausalAlignment.BOTTOM_RIGHT).allowTf32(true)
                    .backend(Backends.CPU_SAME_PRECISION).build();
            Attention cpu = Attention.builder().causal(CausalAlignment.BOTTOM_RIGHT).backend("cpu").build();
            try (AttentionResult got = tf32.forward(in); AttentionResult plain = plainTf32.forward(in); AttentionResult want = cpu.forward(ref)) {
                String tag = "tf32 D=" + dims[c][0] + " Dv=" + dims[c][1] + " " + data;
                var r = Compare.compare(got.out().toDoubleArray(), want.out().toDoubleArray(), Compare.TF32);
                assertTrue(r.passes(Compare.TF32), () -> tag + ": " + r);
                check(tag + " lse", got.lse(), want.lse(), DType.F16);
                errors[c] = r.relL2();
                Compare.TwoTimes rule = Compare.twiceThePlain(got.out().toDoubleArray(), plain.out().toDoubleArray(),
                        want.out().toDoubleArray(), DType.F32);
                assertNull(rule.firstBad(), () -> tag + ": " + rule.firstBad());
                Tensor seed = data.tensor(DType.F32, 1, got.out().shape());
                try (AttentionGradients g = tf32.backward(got, seed); AttentionGradients w = cpu.backward(want, seed.to(DType.F64))) {
                    var rq = Compare.compare(g.dq().toDoubleArray(), w.dq().toDoubleArray(), Compare.TF32);
                    assertTrue(rq.passes(Compare.TF32), () -> tag + " dq: " + rq);
                }
            }
        }
        assertTrue(errors[0] > 1e-6 && errors[1] > 1e-6, "TF32 rounding shows (F32 v1 is ~1e-7): " + errors[0] + ", " + errors[1]);
    }

    /** Split-KV's rule on both sides of each bound, and its cut for a long decode on a 132-SM GPU. */
    @Test
    void splitKvSelectionRule() {
        var auto = AttentionGpu.KernelChoice.AUTO;
        assertEquals(null, AttentionGpu.splitPlan(1, 8, 8, 17, 4096, 132, auto, 4), "Lq above 16");
        assertEquals(null, AttentionGpu.splitPlan(1, 8, 8, 16, 1023, 132, auto, 4), "Lk below 1024");
        assertEquals(null, AttentionGpu.splitPlan(1, 8, 8, 1, 4096, 132, AttentionGpu.KernelChoice.V1, 4), "pinned to v1");
        assertEquals(null, AttentionGpu.splitPlan(0, 8, 8, 1, 4096, 132, auto, 4), "no batch entry: no query row");
        assertEquals(null, AttentionGpu.splitPlan(1, 8, 8, 0, 4096, 132, auto, 16), "Lq 0: no query row");
        AttentionGpu.SplitPlan decode = AttentionGpu.splitPlan(2, 32, 8, 1, 131072, 132, auto, 4);
        assertEquals(17, decode.splits(), "2 x 8 kv heads x 1 row group = 16 blocks per split; 2 x 132 / 16 -> 17");
        assertEquals(7711, decode.keysPerSplit());
        AttentionGpu.SplitPlan grouped = AttentionGpu.splitPlan(1, 64, 8, 4, 131072, 132, auto, 16);
        assertEquals(17, grouped.splits(), "8 query heads x 4 rows = 32 rows of a kv head: 2 groups of 16, 16 blocks per split");
        AttentionGpu.SplitPlan short16 = AttentionGpu.splitPlan(1, 1, 1, 16, 1024, 132, auto, 4);
        assertEquals(4, short16.splits(), "at least 256 keys per split");
        AttentionGpu.SplitPlan busy = AttentionGpu.splitPlan(64, 32, 32, 1, 2048, 132, auto, 4);
        assertEquals(1, busy.splits(), "2048 blocks already fill the GPU");
        AttentionGpu.SplitPlan atTheBound = AttentionGpu.splitPlan(64, 32, 32, 1, 1 << 30, 132, auto, 4);
        assertEquals(new AttentionGpu.SplitPlan(1L << 30, 1), atTheBound, "2^30 keys: one split holds them");
        AttentionGpu.SplitPlan pastTheBound = AttentionGpu.splitPlan(64, 32, 32, 1, (1 << 30) + 1, 132, auto, 4);
        assertEquals(new AttentionGpu.SplitPlan((1L << 29) + 1, 2), pastTheBound, "a key more: two splits (32-bit key counts)");
        AttentionGpu.SplitPlan longest = AttentionGpu.splitPlan(64, 32, 32, 1, Integer.MAX_VALUE, 132, auto, 4);
        assertEquals(new AttentionGpu.SplitPlan(1L << 30, 2), longest);
    }

    /** Which split kernel runs a split-KV forward: each side of the row alignment, the storage type, the GPU, the widths and the shared-memory fit. */
    @Test
    void splitKernelSelectionRule() {
        int h100 = 232448;
        assertEquals(new AttentionGpu.SplitKernel("attn_fwd_split", 4, 0), AttentionGpu.splitKernel(DType.BF16, 128, 128, false, 9, h100),
                "rows not 16-byte aligned and contiguous");
        assertEquals(new AttentionGpu.SplitKernel("attn_fwd_decode_tc64", 16, (2 * 2 * 64 * 72 + 16 * 72) * 2),
                AttentionGpu.splitKernel(DType.BF16, 64, 8, true, 8, h100), "two stages of k and v tiles of 64 padded rows, the q tile");
        assertEquals(new AttentionGpu.SplitKernel("attn_fwd_decode_tc128", 16, (2 * 2 * 64 * 136 + 16 * 136) * 2),
                AttentionGpu.splitKernel(DType.F16, 32, 65, true, 9, h100), "the wider of D and Dv");
        assertEquals("attn_fwd_decode_tc128", AttentionGpu.splitKernel(DType.BF16, 128, 128, true, 9, h100).name());
        assertEquals("attn_fwd_decode256", AttentionGpu.splitKernel(DType.BF16, 136, 64, true, 9, h100).name(), "above 128: SIMT");
        assertEquals("attn_fwd_split", AttentionGpu.splitKernel(DType.BF16, 128, 128, true, 7, 65536).name(), "no mma before sm_80");
        assertEquals("attn_fwd_split", AttentionGpu.splitKernel(DType.BF16, 256, 256, true, 7, 65536).name(),
                "sm_75's 64 KB hold no decode kernel");
        assertEquals(new AttentionGpu.SplitKernel("attn_fwd_decode128", 4, 2 * 2 * 32 * 128 * 4 + 4 * 128 * 4 + 4 * 32 * 4 + 2 * 4 * 4),
                AttentionGpu.splitKernel(DType.F32, 128, 128, true, 9, h100), "F32: SIMT, 32 keys of 512 bytes per 16 KB stage");
        assertEquals("attn_fwd_decode128", AttentionGpu.splitKernel(DType.F32, 128, 128, true, 8, 68128).name(), "fits exactly");
        assertEquals("attn_fwd_split", AttentionGpu.splitKernel(DType.F32, 128, 128, true, 8, 68127).name(), "a byte short");
        assertEquals(new AttentionGpu.SplitKernel("attn_fwd_decode64", 4, 2 * 2 * 64 * 64 * 4 + 4 * 64 * 4 + 4 * 64 * 4 + 2 * 4 * 4),
                AttentionGpu.splitKernel(DType.F32, 64, 8, true, 9, h100));
        assertEquals(new AttentionGpu.SplitKernel("attn_fwd_decode256", 4, 2 * 2 * 16 * 256 * 4 + 4 * 256 * 4 + 4 * 16 * 4 + 2 * 4 * 4),
                AttentionGpu.splitKernel(DType.F32, 256, 256, true, 9, h100));
        assertEquals(new AttentionGpu.SplitKernel("attn_fwd_decode256", 4, 2 * 2 * 32 * 256 * 2 + 4 * 256 * 4 + 4 * 32 * 4 + 2 * 4 * 4),
                AttentionGpu.splitKernel(DType.F16, 256, 8, true, 9, h100), "16-bit at 256: 32 keys per stage");
        assertEquals(8, AttentionGpu.blocksPerSplit(2, 12, 2, 3, 16), "2 entries x 2 kv heads x 2 groups (18 rows in groups of 16)");
    }

    /**
     * On a device whose per-block shared memory holds no decode kernel and that has no mma (sm_75:
     * 64 KB), a decode shape runs attn_fwd_split end to end: the driver reports those limits and
     * records the kernel that ran, and the result matches the reference.
     */
    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"F32", "BF16"})
    void aTuringDeviceDecodesWithTheStridedSplitKernel(DType dtype) {
        DeviceProperties real = GpuTargets.driver().properties();
        DeviceProperties turing = new DeviceProperties(real.name(), 7, 5, real.multiprocessors(), 49152, 65536, real.totalMemory(),
                real.simulated());
        List<String> resolved = new CopyOnWriteArrayList<>();
        Driver driver = RecordingDriver.reporting(RecordingDriver.recordingFunctions(GpuTargets.driver(), resolved), turing);
        TestData data = new TestData();
        Tensor q = data.tensor(dtype, 1, 1, 4, 1, 64);
        Tensor k = data.tensor(dtype, 1, 1, 1, 1100, 64);
        Tensor v = data.tensor(dtype, 1, 1, 1, 1100, 64);
        Attention gpu = Attention.builder().backend(new GpuBackend(driver)).build();
        Attention cpu = Attention.builder().backend("cpu").build();
        try (AttentionResult got = gpu.forward(Attention.inputs(q, k, v));
             AttentionResult want = cpu.forward(Attention.inputs(q.to(DType.F64), k.to(DType.F64), v.to(DType.F64)))) {
            String suffix = RecurrentGpu.suffix(dtype);
            assertTrue(resolved.contains("attn_fwd_split_" + suffix), "the strided split kernel ran: " + resolved);
            assertTrue(resolved.stream().noneMatch(n -> n.startsWith("attn_fwd_decode")), "no decode kernel: " + resolved);
            check("turing decode " + dtype, got.out(), want.out(), dtype);
            check("turing decode " + dtype + " lse", got.lse(), want.lse(), DType.F32);
        }
    }

    /** Split-KV decoding on the emulator, forward (and the backward from its LSE) against the reference. */
    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"F32", "F16", "BF16"})
    void splitKvDecodingMatchesReference(DType dtype) {
        TestData data = new TestData();
        int sms = GpuTargets.driver().properties().multiprocessors();
        assertTrue(AttentionGpu.splitPlan(1, 4, 1, 1, 1500, sms, AttentionGpu.KernelChoice.AUTO, 16).splits() >= 2,
                "the first case must really split on this device");
        Tensor q = data.tensor(dtype, 1, 1, 4, 1, 128);
        Tensor k = data.tensor(dtype, 1, 1, 1, 1500, 128);
        Tensor v = data.tensor(dtype, 1, 1, 1, 1500, 128);
        // 16-bit: forward only here. The backward from a split forward's LSE is the second case's
        // in BF16 (and NanPropagationTest's); at Lq = 1 the tensor-core dq kernel's 64-row blocks
        // are 1/64 used, which the emulator spends about 30 s on. F16 runs the same tensor-core
        // backward code as BF16 (only the conversions differ, which the other tests cover), and
        // costs the emulator about 15 s per binding here: forward only in F16.
        compare(dtype, data, CausalAlignment.NONE, Double.NaN, Attention.inputs(q, k, v), q, k, v, dtype == DType.F32);

        Tensor q2 = data.tensor(dtype, 1, 3, 4, 5, 59);
        Tensor k2 = data.tensor(dtype, 1, 3, 2, 1100, 59);
        Tensor v2 = data.tensor(dtype, 1, 3, 2, 1100, 24);
        Tensor add = data.tensor(DType.F32, 1, 5, 1100);
        compare(dtype, data, CausalAlignment.BOTTOM_RIGHT, Double.NaN, Attention.inputs(q2, k2, v2).mask(Mask.additive(add))
                .keyLengths(new int[]{1100, 300, 0}).queryLengths(new int[]{5, 3, 5}), q2, k2, v2, dtype != DType.F16);
    }

    /**
     * The decode kernels against the reference: attn_fwd_decode_tc (F16, BF16 up to 128) and each
     * tiling of attn_fwd_decode (F32; 16-bit at 256). Masks (bias, both causal alignments, key and
     * query lengths, an entry with no key), GQA groups that fill a block and that do not, D != Dv
     * (and D not a multiple of 16), splits whose last tile is partial or that hold no key a row may
     * see, and the F32 tilings whose tile has fewer keys than threads. The emulator reports as many
     * multiprocessors as the machine has cores, so the three-entry case may run as one split; the
     * one-entry cases split (asserted), but for the SIMT kernel's 4-row blocks of the 24-row case. At D = 59 these would take attn_fwd_split (the test above).
     */
    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"F32", "F16", "BF16"})
    @DeviceDependent
    void decodeKernelsMatchReference(DType dtype) {
        TestData data = new TestData();
        int sms = GpuTargets.driver().properties().multiprocessors();
        int major = GpuTargets.driver().properties().computeMajor();
        int perChunk = 16 / dtype.byteSize();
        boolean f32 = dtype == DType.F32;
        List<String> notPicked = new java.util.ArrayList<>();
        record Case(int batch, int qHeads, int kvHeads, int qLen, int kvLen, int d, int dv, CausalAlignment causal, boolean bias,
                    int[] keyLengths, int[] queryLengths, String kernelF32, String kernel16, boolean splitsInF32) {
        }
        for (Case c : List.of(
                new Case(1, 3, 1, 2, 1300, 64, 32, CausalAlignment.NONE, true, new int[]{1000}, new int[]{1}, "attn_fwd_decode64",
                        "attn_fwd_decode_tc64", true),
                new Case(3, 4, 2, 5, 1100, 96, 128, CausalAlignment.BOTTOM_RIGHT, true, new int[]{1100, 300, 0}, new int[]{5, 4, 5},
                        "attn_fwd_decode128", "attn_fwd_decode_tc128", false),
                new Case(1, 2, 1, 3, 1030, 256, 200, CausalAlignment.NONE, false, null, null, "attn_fwd_decode256", "attn_fwd_decode256", true),
                // 24 rows: two tensor-core blocks (16 and 8 rows), six SIMT ones (no split on 2 cores).
                new Case(1, 8, 1, 3, 1030, 40, 16, CausalAlignment.TOP_LEFT, false, null, null, "attn_fwd_decode64",
                        "attn_fwd_decode_tc64", false),
                // Rows that are not 16-byte multiples: attn_fwd_split's 128 and 256 instances.
                new Case(1, 2, 1, 2, 1100, 102, 70, CausalAlignment.BOTTOM_RIGHT, true, new int[]{900}, null, "attn_fwd_split",
                        "attn_fwd_split", true),
                new Case(1, 2, 1, 2, 1100, 202, 130, CausalAlignment.NONE, false, null, null, "attn_fwd_split", "attn_fwd_split", true))) {
            // A case whose kernel this device's rule never picks is listed and skipped at the end, after the others ran.
            boolean rows = c.d() % perChunk == 0 && c.dv() % perChunk == 0;
            String expected = f32 ? c.kernelF32() : c.kernel16();
            assertEquals(expected, AttentionGpu.splitKernel(dtype, c.d(), c.dv(), rows, 9, KernelReport.SM90_SHARED_PER_BLOCK_OPTIN).name(),
                    "the kernel this case covers, on an sm_90");
            AttentionGpu.SplitKernel kernel = AttentionGpu.splitKernel(dtype, c.d(), c.dv(), rows, major,
                    GpuTargets.driver().properties().sharedMemoryPerBlockOptin());
            if (!kernel.name().equals(expected)) {
                notPicked.add(expected + " (" + kernel.name() + " here) for " + c);
                continue;
            }
            if (c.batch() == 1 && (c.splitsInF32() || !f32)) {
                assertTrue(AttentionGpu.splitPlan(1, c.qHeads(), c.kvHeads(), c.qLen(), c.kvLen(), sms, AttentionGpu.KernelChoice.AUTO,
                        kernel.rowsPerBlock()).splits() >= 2, c + " must really split on this device");
            }
            Tensor q = data.tensor(dtype, 1, c.batch(), c.qHeads(), c.qLen(), c.d());
            Tensor k = data.tensor(dtype, 1, c.batch(), c.kvHeads(), c.kvLen(), c.d());
            Tensor v = data.tensor(dtype, 1, c.batch(), c.kvHeads(), c.kvLen(), c.dv());
            Mask mask = c.bias() ? Mask.additive(data.tensor(DType.F32, 1, c.qLen(), c.kvLen())) : null;
            compare(dtype, data, c.causal(), Double.NaN, Attention.inputs(q, k, v).mask(mask).keyLengths(c.keyLengths())
                    .queryLengths(c.queryLengths()), q, k, v, false, kernel.name());
        }
        org.junit.jupiter.api.Assumptions.assumeTrue(notPicked.isEmpty(), () -> "skipped after the other cases ran: the rule does"
                + " not pick these on this device (" + GpuTargets.driver().properties().name() + "): " + notPicked);
    }

    /**
     * A caller's tensor over a segment at byte offset 2 (no 16-byte, not even 4-byte alignment)
     * is handled: the GPU path copies host tensors into fresh, aligned device memory, so the
     * tensor-core kernel's 16-byte loads stay aligned (the emulator would report a misaligned one).
     */
    @Test
    void hostTensorsAtAnOddOffsetAreHandled() {
        TestData data = new TestData();
        long[] shape = {1, 2, 70, 64};
        Tensor[] qkv = new Tensor[3];
        try (java.lang.foreign.Arena arena = java.lang.foreign.Arena.ofConfined()) {
            for (int i = 0; i < 3; i++) {
                Tensor t = data.tensor(DType.BF16, 1, shape);
                long bytes = t.numel() * DType.BF16.byteSize();
                java.lang.foreign.MemorySegment raw = arena.allocate(bytes + 2, 16).asSlice(2);
                java.lang.foreign.MemorySegment.copy(t.segment(), 0, raw, 0, bytes);
                qkv[i] = Tensor.wrap(raw, DType.BF16, shape);
            }
            compare(DType.BF16, data, CausalAlignment.TOP_LEFT, Double.NaN, Attention.inputs(qkv[0], qkv[1], qkv[2]), qkv[0],
                    qkv[1], qkv[2]);
        }
    }

    /** 256 is the largest head dimension the kernels take: it matches the reference, and 257 is refused before any upload. */
    @Test
    void headDimensionsUpTo256RunAndAbove256AreRefused() {
        TestData data = new TestData();
        Tensor q = data.tensor(DType.BF16, 1, 1, 1, 3, 256);
        Tensor k = data.tensor(DType.BF16, 1, 1, 1, 5, 256);
        Tensor v = data.tensor(DType.BF16, 1, 1, 1, 5, 256);
        compare(DType.BF16, data, CausalAlignment.NONE, Double.NaN, Attention.inputs(q, k, v), q, k, v);

        long before = GpuTargets.driver().memoryInUse();
        Tensor wide = data.tensor(DType.F32, 1, 1, 1, 3, 257);
        Tensor narrowV = data.tensor(DType.F32, 1, 1, 1, 3, 8);
        Attention gpu = Attention.builder().backend(GpuTargets.backend()).build();
        var e = assertThrows(SeqkException.Unsupported.class, () -> gpu.forward(Attention.inputs(wide, wide, narrowV)));
        assertTrue(e.getMessage().contains("up to 256, got head_dim 257"), e::getMessage);
        Tensor wideV = data.tensor(DType.F32, 1, 1, 1, 3, 300);
        var ev = assertThrows(SeqkException.Unsupported.class, () -> gpu.forward(Attention.inputs(narrowV, narrowV, wideV)));
        assertTrue(ev.getMessage().contains("value_dim 300"), ev::getMessage);
        MultiHeadAttention mha = MultiHeadAttention.builder().embedDim(514).numHeads(2).backend(GpuTargets.backend()).build();
        Map<String, Tensor> p = new LinkedHashMap<>();
        mha.parameterShapes().forEach((n, shape) -> p.put(n, data.tensor(DType.F32, 0.1, shape)));
        Tensor x = data.tensor(DType.F32, 1, 2, 1, 514);
        var em = assertThrows(SeqkException.Unsupported.class, () -> mha.forward(p, MultiHeadAttention.inputs(x, x, x)));
        assertTrue(em.getMessage().contains("head_dim 257"), em::getMessage);
        assertEquals(before, GpuTargets.driver().memoryInUse(), "nothing left allocated by the refused calls");
    }

    private static void compare(DType dtype, TestData data, CausalAlignment causal, double scale, Attention.Inputs inputs,
                                Tensor q, Tensor k, Tensor v) {
        compare(dtype, data, causal, scale, inputs, q, k, v, true);
    }

    /** Forward against the reference, then (when {@code backward}) every gradient. */
    private static void compare(DType dtype, TestData data, CausalAlignment causal, double scale, Attention.Inputs inputs,
                                Tensor q, Tensor k, Tensor v, boolean backward) {
        compare(dtype, data, causal, scale, inputs, q, k, v, backward, null);
    }

    /** As above; with {@code kernel} (a name stem), also that the forward ran it (the driver records every function resolved). */
    private static void compare(DType dtype, TestData data, CausalAlignment causal, double scale, Attention.Inputs inputs,
                                Tensor q, Tensor k, Tensor v, boolean backward, String kernel) {
        Attention.Builder b = Attention.builder().causal(causal);
        if (!Double.isNaN(scale)) {
            b.scale(scale);
        }
        List<String> resolved = new CopyOnWriteArrayList<>();
        Attention gpu = kernel == null ? b.backend(GpuTargets.backend()).build()
                : b.backend(new GpuBackend(RecordingDriver.recordingFunctions(GpuTargets.driver(), resolved))).build();
        Attention cpu = b.backend("cpu").build();
        Attention.Inputs ref = Attention.inputs(q.to(DType.F64), k.to(DType.F64), v.to(DType.F64)).mask(inputs.mask() == null ? null
                : new Mask(inputs.mask().meaning(), inputs.mask().meaning() == Mask.Meaning.ADDITIVE ? inputs.mask().tensor().to(DType.F64)
                : inputs.mask().tensor())).keyLengths(inputs.keyLengths()).queryLengths(inputs.queryLengths());
        String tag = "sdpa " + dtype + " " + GpuTargets.binding() + " " + data;
        Attention plain = b.backend(Backends.CPU_SAME_PRECISION).build();
        try (AttentionResult got = gpu.forward(inputs); AttentionResult want = cpu.forward(ref);
             AttentionResult plainOut = plain.forward(inputs)) {
            if (kernel != null) {
                assertTrue(resolved.contains(kernel + "_" + RecurrentGpu.suffix(dtype)), tag + ": " + kernel + " ran (" + resolved + ")");
            }
            check(tag + " out", got.out(), want.out(), dtype);
            check(tag + " lse", got.lse(), want.lse(), DType.F32);
            if (!backward) {
                return;
            }
            Tensor seed = data.tensor(dtype, 1, got.out().shape());
            boolean tensorCores = !AttentionGpu.backwardKernel(dtype, (int) q.size(3), (int) v.size(3),
                    GpuTargets.driver().properties().computeMajor(), AttentionGpu.KernelChoice.AUTO, false).equals("attn_bwd");
            try (AttentionGradients g = gpu.backward(got, seed); AttentionGradients r = cpu.backward(want, seed.to(DType.F64));
                 AttentionGradients pg = plain.backward(plainOut, seed)) {
                gradient(tag + " dq", g.dq(), pg.dq(), r.dq(), dtype, tensorCores);
                gradient(tag + " dk", g.dk(), pg.dk(), r.dk(), dtype, tensorCores);
                gradient(tag + " dv", g.dv(), pg.dv(), r.dv(), dtype, tensorCores);
            }
        }
    }

    /**
     * A result against the reference: by the 2x rule when {@code twoTimes} (16-bit work that rounds
     * where FlashAttention does: the tensor-core backward rounds dout, P and dS to 16 bits; DESIGN.md
     * section 6), else (v1, fp32 inside) by the table.
     */
    private static void gradient(String what, Tensor got, Tensor plain, Tensor want, DType dtype, boolean twoTimes) {
        if (twoTimes) {
            Compare.TwoTimes rule = Compare.twiceThePlain(got.toDoubleArray(), plain.toDoubleArray(), want.toDoubleArray(), dtype);
            assertNull(rule.firstBad(), () -> what + ": " + rule.firstBad());
        } else {
            check(what, got, want, dtype);
        }
    }

    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"F32", "BF16"})
    @DeviceDependent
    void mhaGroupedHeadsSeparateProjectionsWeightsAndMasks(DType dtype) {
        TestData data = new TestData();
        MultiHeadAttention.Builder b = MultiHeadAttention.builder().embedDim(12).numHeads(4).numKvHeads(2).kdim(5).vdim(7)
                .needWeights(true).causal(CausalAlignment.TOP_LEFT);
        MultiHeadAttention gpu = b.backend(GpuTargets.backend()).build();
        MultiHeadAttention cpu = b.backend("cpu").build();
        MultiHeadAttention plain = b.backend(Backends.CPU_SAME_PRECISION).build();
        Map<String, Tensor> p = data.params(dtype, 0.5, gpu.parameterShapes());
        Map<String, Tensor> p64 = new LinkedHashMap<>();
        p.forEach((n, t) -> p64.put(n, t.to(DType.F64)));
        Tensor query = data.tensor(dtype, 1, 6, 2, 12);
        Tensor key = data.tensor(dtype, 1, 8, 2, 5);
        Tensor value = data.tensor(dtype, 1, 8, 2, 7);
        Tensor padding = Tensor.of(DType.BOOL, new double[]{0, 0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0}, 2, 8);
        String tag = "mha " + dtype + " " + GpuTargets.binding() + " " + data;
        try (MhaResult got = gpu.forward(p, MultiHeadAttention.inputs(query, key, value).keyPaddingMask(Mask.blocked(padding)));
             MhaResult want = cpu.forward(p64, MultiHeadAttention.inputs(query.to(DType.F64), key.to(DType.F64), value.to(DType.F64))
                     .keyPaddingMask(Mask.blocked(padding)));
             MhaResult base = plain.forward(p, MultiHeadAttention.inputs(query, key, value).keyPaddingMask(Mask.blocked(padding)))) {
            Tensor seed = data.tensor(dtype, 1, got.out().shape());
            Tensor seedW = data.tensor(dtype, 1, got.attnWeights().shape());
            try (MhaGradients g = gpu.backward(p, got, seed, seedW);
                 MhaGradients r = cpu.backward(p64, want, seed.to(DType.F64), seedW.to(DType.F64));
                 MhaGradients pg = plain.backward(p, base, seed, seedW)) {
                mhaAgrees(tag, dtype, got, base, want, g, pg, r);
            }
        }
    }

    /**
     * A multi-head attention forward (output and weights) and backward (every gradient) against the
     * reference: F32 (an F32 interior) by the table; F16 and BF16 (16 bits end to end) by the 2x rule
     * against the plain same-precision implementation's results ({@code plain}, {@code plainGrads}).
     */
    private static void mhaAgrees(String tag, DType dtype, MhaResult got, MhaResult plain, MhaResult want, MhaGradients grads,
                                  MhaGradients plainGrads, MhaGradients wantGrads) {
        boolean rule = dtype != DType.F32;
        gradient(tag + " out", got.out(), plain.out(), want.out(), dtype, rule);
        gradient(tag + " weights", got.attnWeights(), plain.attnWeights(), want.attnWeights(), dtype, rule);
        gradient(tag + " dquery", grads.dQuery(), plainGrads.dQuery(), wantGrads.dQuery(), dtype, rule);
        gradient(tag + " dkey", grads.dKey(), plainGrads.dKey(), wantGrads.dKey(), dtype, rule);
        gradient(tag + " dvalue", grads.dValue(), plainGrads.dValue(), wantGrads.dValue(), dtype, rule);
        for (String name : grads.params().keySet()) {
            gradient(tag + " d" + name, grads.params().get(name), plainGrads.params().get(name), wantGrads.params().get(name), dtype, rule);
        }
    }

    /** Every op, forward and backward, called 1,000 times on the GPU path leaves device memory where it was. */
    /**
     * Attention's device memory is O(L * D): forward and backward at 8x the sequence length take
     * about 8x the memory (inputs, out, LSE and f32 row accumulators), not 64x (a score matrix).
     */
    @Test
    void workspaceGrowsLinearlyWithSequenceLength() {
        org.junit.jupiter.api.Assumptions.assumeTrue(GpuTargets.binding().equals("emu"),
                "skipped: peak device memory is measured by the emulator, and this run is on " + GpuTargets.binding());
        EmuDriver emu = EmuDriver.instance();
        TestData data = new TestData();
        Attention sdpa = Attention.builder().causal(CausalAlignment.TOP_LEFT).backend("emu").build();
        long[] peaks = new long[2];
        int[] lengths = {64, 512};
        for (int n = 0; n < 2; n++) {
            Tensor q = data.tensor(DType.F32, 1, 1, 2, lengths[n], 16);
            emu.takePeakMemory();
            try (AttentionResult a = sdpa.forward(Attention.inputs(q, q, q)); AttentionGradients g = sdpa.backward(a, a.out())) {
                peaks[n] = emu.takePeakMemory();
                assertTrue(g.dq().numel() > 0);
            }
        }
        double ratio = (double) peaks[1] / peaks[0];
        assertTrue(ratio > 4 && ratio < 12, "peak device memory grew " + ratio + "x for 8x the length (" + peaks[0] + " -> "
                + peaks[1] + " bytes): linear is about 8x, quadratic 64x");
    }

    /** Ops from several Java threads at once on the GPU path give exactly the results they give one at a time. */
    @Test
    void concurrentCallsFromSeveralThreadsAreCorrect() throws Exception {
        TestData data = new TestData();
        Lstm lstm = Lstm.builder().inputSize(3).hiddenSize(5).backend(GpuTargets.backend()).build();
        Attention sdpa = Attention.builder().causal(CausalAlignment.BOTTOM_RIGHT).backend(GpuTargets.backend()).build();
        int threads = 4;
        java.util.List<Map<String, Tensor>> params = new java.util.ArrayList<>();
        java.util.List<Tensor> xs = new java.util.ArrayList<>();
        java.util.List<Tensor> qs = new java.util.ArrayList<>();
        double[][] expected = new double[threads][];
        for (int i = 0; i < threads; i++) {
            params.add(data.params(DType.F32, 0.5, lstm.config().parameterShapes()));
            xs.add(data.tensor(DType.F32, 1, 6, 2, 3));
            qs.add(data.tensor(DType.F32, 1, 1, 2, 5, 4));
            expected[i] = run(lstm, sdpa, params.get(i), xs.get(i), qs.get(i));
        }
        var pool = java.util.concurrent.Executors.newFixedThreadPool(threads);
        try {
            java.util.List<java.util.concurrent.Future<double[]>> results = new java.util.ArrayList<>();
            for (int round = 0; round < 5; round++) {
                for (int i = 0; i < threads; i++) {
                    int k = i;
                    results.add(pool.submit(() -> run(lstm, sdpa, params.get(k), xs.get(k), qs.get(k))));
                }
            }
            for (int r = 0; r < results.size(); r++) {
                org.junit.jupiter.api.Assertions.assertArrayEquals(expected[r % threads], results.get(r).get(),
                        "thread task " + r + " " + data);
            }
        } finally {
            pool.shutdownNow();
        }
    }

    private static double[] run(Lstm lstm, Attention sdpa, Map<String, Tensor> p, Tensor x, Tensor q) {
        try (RecurrentResult r = lstm.forward(p, x); AttentionResult a = sdpa.forward(Attention.inputs(q, q, q))) {
            double[] h = r.hn().toDoubleArray();
            double[] o = a.out().toDoubleArray();
            double[] both = java.util.Arrays.copyOf(h, h.length + o.length);
            System.arraycopy(o, 0, both, h.length, o.length);
            return both;
        }
    }

    /**
     * 200 calls of each op, forward and backward, leave device memory in use where it was: a leak
     * of one allocation per call shows after the first; 200 let anything cached per call (modules,
     * functions, workspaces) reach its steady state, and a leak every few calls show. (1,000 cost
     * the three stand-in runs of this suite about 2.5 minutes of CI's 20.)
     */
    @Test
    void deviceMemoryDoesNotGrowOverRepeatedCalls() {
        TestData data = new TestData();
        Driver emu = GpuTargets.driver();
        Gru gru = Gru.builder().inputSize(3).hiddenSize(4).bidirectional(true).backend(GpuTargets.backend()).build();
        Map<String, Tensor> gp = data.params(DType.F32, 0.5, gru.config().parameterShapes());
        Tensor x = data.tensor(DType.F32, 1, 3, 2, 3);
        Attention sdpa = Attention.builder().backend(GpuTargets.backend()).build();
        Tensor q = data.tensor(DType.F32, 1, 1, 2, 4, 3);
        MultiHeadAttention mha = MultiHeadAttention.builder().embedDim(4).numHeads(2).needWeights(true).backend(GpuTargets.backend()).build();
        Map<String, Tensor> mp = data.params(DType.F32, 0.5, mha.parameterShapes());
        Tensor seq = data.tensor(DType.F32, 1, 3, 2, 4);
        long before = emu.memoryInUse();
        for (int i = 0; i < 200; i++) {
            try (RecurrentResult r = gru.forward(gp, x)) {
                gru.backward(gp, r, r.output(), null, null).close();
            }
            try (AttentionResult a = sdpa.forward(Attention.inputs(q, q, q))) {
                sdpa.backward(a, a.out()).close();
            }
            try (MhaResult m = mha.forward(mp, MultiHeadAttention.inputs(seq, seq, seq))) {
                mha.backward(mp, m, m.out(), m.attnWeights()).close();
            }
        }
        assertEquals(before, emu.memoryInUse(), "device memory in use after 200 calls of each op");
        assertTrue(before >= 0);
    }
}
