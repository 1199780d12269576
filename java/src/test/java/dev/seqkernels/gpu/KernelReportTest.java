package dev.seqkernels.gpu;

import dev.seqkernels.gpu.emu.EmuDriver;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.Collectors;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The nvcc build's sm_90 report: no kernel spills unless allowed, and both builds hold the same kernels. */
class KernelReportTest {
    private static KernelReport builtReport() {
        KernelReport report = KernelReport.load();
        Assumptions.assumeTrue(report.built(), () -> "skipped: " + report.note() + " (the build found no nvcc)");
        return report;
    }

    @Test
    void noKernelSpillsUnlessAllowed() throws IOException {
        KernelReport report = builtReport();
        Path allowedFile = Path.of(System.getProperty("seqkernels.root", "..")).resolve("cuda/spill-allowed.txt");
        Set<String> allowed = Files.readAllLines(allowedFile).stream().map(String::trim)
                .filter(l -> !l.isEmpty() && !l.startsWith("#")).map(l -> l.split("\\s+")[0]).collect(Collectors.toSet());
        assertTrue(!report.kernels().isEmpty(), "the report lists no kernels");
        for (KernelReport.Entry e : report.kernels()) {
            assertTrue(!e.spills() || allowed.contains(e.kernel()), () -> e.kernel() + " spills on sm_90 (" + e.spillStoreBytes()
                    + " bytes stored, " + e.spillLoadBytes() + " loaded) and is not in cuda/spill-allowed.txt");
        }
    }

    @Test
    void gpuAndEmulatorBuildsHoldTheSameKernels() {
        KernelReport report = builtReport();
        Set<String> gpu = report.kernels().stream().map(KernelReport.Entry::kernel).collect(Collectors.toCollection(TreeSet::new));
        Set<String> emulated = new TreeSet<>(EmuDriver.instance().kernelNames());
        assertEquals(gpu, emulated, "extern \"C\" kernel names must be identical in the nvcc and emulator builds");
    }

    /**
     * Every architecture the report lists has its entry in every fatbin: SASS (an ELF entry) for
     * sm_XX, PTX for compute_XX; Blackwell (sm_100, sm_120) included, so those GPUs need no JIT.
     */
    @Test
    void fatbinsHoldEveryListedArchitecture() {
        KernelReport report = builtReport();
        assertTrue(report.architectures().containsAll(List.of("sm_90", "sm_100", "sm_120", "compute_90")), report.architectures()::toString);
        for (String family : List.of("attention", "recurrent", "util", "reduce", "lstm_cell", "selftest")) {
            ByteBuffer image = ByteBuffer.wrap(KernelImages.read(family)).order(ByteOrder.LITTLE_ENDIAN);
            assertEquals(0xBA55ED50, image.getInt(0), family + ".fatbin is a fatbin");
            Set<String> held = new TreeSet<>();
            int at = image.getShort(6);
            long end = at + image.getLong(8);
            while (at < end) {
                int kind = image.getShort(at);
                int headerSize = image.getInt(at + 4);
                long payload = image.getLong(at + 8);
                int arch = image.getInt(at + 28);
                held.add((kind == 2 ? "sm_" : "compute_") + arch);
                at += headerSize + (int) payload;
            }
            assertEquals(new TreeSet<>(report.architectures()), held, family + ".fatbin");
        }
    }

    /**
     * The main-loop figures: the 16-bit tensor-core forward's main loop is its unmasked key-tile
     * loop, one S = q k^T and one P v per tile and nothing else with an mma (the masked loop's
     * recompute path is not in it): (DMAX/16)(BN/8) + (BN/16)(DMAX/8) = 64 at 64/64, 128/32 and
     * 256/16, 128 for the no-bias instances at 128 (key tiles of 64) and 256 (32). The no-bias instances meet the
     * static target of issue 13: at most 8 PTX instructions per mma, each instruction of the loop
     * body counted once, every path (their loop bodies hold no inner loop: the tile loads are
     * unrolled). PTX, not SASS (FlashAttention-2's forward: about 3-3.5 SASS per HMMA). The TF32
     * kernel's one loop holds all its mma; the SIMT kernels have none.
     */
    @Test
    void tensorCoreKernelsReportTheirMainLoop() {
        KernelReport report = builtReport();
        Map<String, Integer> perTile = Map.of("attn_fwd_tc64_bf16", 64, "attn_fwd_tc64_nobias_f16", 64, "attn_fwd_tc128_f16", 64,
                "attn_fwd_tc128_nobias_bf16", 128, "attn_fwd_tc256_f16", 64, "attn_fwd_tc256_nobias_bf16", 128);
        perTile.forEach((kernel, mma) -> {
            KernelReport.Entry e = report.entry(kernel);
            assertEquals(mma, e.mainLoopMma(), e::toString);
            assertTrue(e.mma() > e.mainLoopMma() && e.ptxPerMma() > 1 && e.ptxPerMma() < 1000, e::toString);
        });
        for (String kernel : List.of("attn_fwd_tc64_nobias_f16", "attn_fwd_tc64_nobias_bf16", "attn_fwd_tc128_nobias_f16",
                "attn_fwd_tc128_nobias_bf16", "attn_fwd_tc256_nobias_f16", "attn_fwd_tc256_nobias_bf16")) {
            KernelReport.Entry e = report.entry(kernel);
            assertTrue(e.ptxPerMma() <= 8, () -> e + ": at most 8 PTX instructions per mma in the unmasked loop");
        }
        // The backward's no-bias instances (no bias code, unrolled 16-byte loads, loops over all of
        // DMAX) count fewer PTX instructions per mma in their main loop than the general ones, and
        // at most 8, as the forward's: their unmasked loops (dq's, dk/dv's hot loop ahead of the
        // tiles a length or the diagonal touches) weigh by one exp2 per pair. The main loop's mma:
        // dq's one pass (S, dP and dq), 3 x 32 at 64 (key tiles of 64), 3 x 16 at 128 (16);
        // dk/dv's S^T, dP^T, dv and dk, 4 x 16 at 64 (query tiles of 32), and the dk walk's 3 x 16 at 128.
        Map<String, Integer> backwardMma = Map.of("attn_bwd_dq_tc64", 96, "attn_bwd_dq_tc128", 48, "attn_bwd_dkdv_tc64", 64,
                "attn_bwd_dkdv_tc128", 48);
        for (String kernel : List.of("attn_bwd_dq_tc64", "attn_bwd_dq_tc128", "attn_bwd_dkdv_tc64", "attn_bwd_dkdv_tc128")) {
            KernelReport.Entry general = report.entry(kernel + "_bf16");
            KernelReport.Entry noBias = report.entry(kernel + "_nobias_bf16");
            assertTrue(noBias.mainLoopMma() > 0 && noBias.ptxPerMma() < general.ptxPerMma(), () -> noBias + " against " + general);
            assertTrue(noBias.ptxPerMma() <= 8, () -> noBias + ": at most 8 PTX instructions per mma in the unmasked loop");
            assertEquals(backwardMma.get(kernel), noBias.mainLoopMma(), noBias::toString);
        }
        KernelReport.Entry tf32 = report.entry("attn_fwd_tf32x64_f32");
        assertTrue(tf32.mainLoopMma() > 0 && tf32.mainLoopMma() == tf32.mma(), tf32::toString);
        KernelReport.Entry v1 = report.entry("attn_fwd_bf16");
        assertEquals(0, v1.mma(), v1::toString);
        assertTrue(Double.isNaN(v1.ptxPerMma()));
    }

    /**
     * tools/ptx-main-loop.awk on a PTX text whose loops are known. k_nested: a loop of 10
     * instructions holding one of 6 with its 2 mma.sync (one predicated): the inner one counts as
     * part of the outer (5 per mma), which beats a later loop with 1 mma in 12 (directives, labels,
     * braces and comments not counted). k_two: a loop with 1 mma in 4 instructions is the main one
     * beside one with 3 in 30 (fewest per mma). k_flat: an mma and no loop. k_cold: a loop of 4
     * instructions in text (header to back branch) whose rarely taken path nvcc laid out before the
     * header (3 more, branching back into the loop): its natural loop counts them, 7. k_irred: a
     * loop the entry jumps into past its first block (irreducible) is not counted, and named on
     * stderr.
     */
    @Test
    void mainLoopIsTheOutermostMmaLoopWithTheFewestInstructionsPerMma() throws Exception {
        Path ptx = Files.createTempFile("seqk-loops", ".ptx");
        Files.writeString(ptx, """
                .visible .entry k_nested(
                \t.param .u64 k_nested_param_0
                )
                {
                \t.reg .b32 %r<9>;
                \tmov.u32 %r1, 0;
                $L__BB0_1:
                \tadd.s32 %r1, %r1, 1;
                \tadd.s32 %r2, %r1, 1;
                $L__BB0_2:
                \t// a comment; with a semicolon
                \tmma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f1, %f2, %f3, %f4}, {%r1, %r2, %r3, %r4}, {%r5, %r6}, {%f1, %f2, %f3, %f4};
                \tld.shared.u32 %r3, [%r4];
                \t{
                \t.reg .pred p;
                \t@%p1 mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f1, %f2, %f3, %f4}, {%r1, %r2, %r3, %r4}, {%r5, %r6}, {%f1, %f2, %f3, %f4};
                \t}
                \tsetp.lt.s32 %p1, %r2, 8;
                \tadd.s32 %r2, %r2, 1;
                \t@%p1 bra $L__BB0_2;
                \tsetp.lt.s32 %p2, %r1, 8;
                \t@%p2 bra $L__BB0_1;
                $L__BB0_3:
                \tmma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f1, %f2, %f3, %f4}, {%r1, %r2, %r3, %r4}, {%r5, %r6}, {%f1, %f2, %f3, %f4};
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tbra.uni $L__BB0_3;
                \tret;
                }
                .visible .entry k_two(
                )
                {
                $L__BB1_1:
                \tmma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f1, %f2, %f3, %f4}, {%r1, %r2, %r3, %r4}, {%r5, %r6}, {%f1, %f2, %f3, %f4};
                \tmma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f1, %f2, %f3, %f4}, {%r1, %r2, %r3, %r4}, {%r5, %r6}, {%f1, %f2, %f3, %f4};
                \tmma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f1, %f2, %f3, %f4}, {%r1, %r2, %r3, %r4}, {%r5, %r6}, {%f1, %f2, %f3, %f4};
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \t@%p3 bra $L__BB1_1;
                $L__BB1_2:
                \tmma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f1, %f2, %f3, %f4}, {%r1, %r2, %r3, %r4}, {%r5, %r6}, {%f1, %f2, %f3, %f4};
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \t@%p1 bra $L__BB1_2;
                \tret;
                }
                .visible .entry k_flat(
                )
                {
                \tmma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f1, %f2, %f3, %f4}, {%r1, %r2, %r3, %r4}, {%r5, %r6}, {%f1, %f2, %f3, %f4};
                \tret;
                }
                .visible .entry k_cold(
                )
                {
                \tbra.uni $L__BB3_2;
                $L__BB3_1:
                \tadd.s32 %r5, %r5, 1;
                \tadd.s32 %r5, %r5, 1;
                \tbra.uni $L__BB3_3;
                $L__BB3_2:
                \tmma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f1, %f2, %f3, %f4}, {%r1, %r2, %r3, %r4}, {%r5, %r6}, {%f1, %f2, %f3, %f4};
                \t@%p1 bra $L__BB3_1;
                $L__BB3_3:
                \tadd.s32 %r5, %r5, 1;
                \t@%p2 bra $L__BB3_2;
                \tret;
                }
                .visible .entry k_irred(
                )
                {
                \t@%p1 bra $L__BB4_2;
                $L__BB4_1:
                \tmma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f1, %f2, %f3, %f4}, {%r1, %r2, %r3, %r4}, {%r5, %r6}, {%f1, %f2, %f3, %f4};
                $L__BB4_2:
                \tadd.s32 %r5, %r5, 1;
                \t@%p2 bra $L__BB4_1;
                \tret;
                }
                """);
        Path script = Path.of(System.getProperty("seqkernels.root", "..")).resolve("tools/ptx-main-loop.awk");
        Path errors = Files.createTempFile("seqk-loops", ".err");
        Process p = new ProcessBuilder("awk", "-f", script.toString(), ptx.toString()).redirectError(errors.toFile()).start();
        String out = new String(p.getInputStream().readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
        assertEquals(0, p.waitFor(), out);
        String err = Files.readString(errors);
        Files.delete(ptx);
        Files.delete(errors);
        assertEquals("k_nested 3 2 10\nk_two 4 1 4\nk_flat 1 0 0\nk_cold 1 1 7\nk_irred 1 0 0\n", out, err);
        assertEquals("ptx-main-loop.awk: k_irred: the loop at block 3 is entered other than through its header; not counted\n", err);
    }
}
