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
     * The main-loop figures: every tensor-core kernel has one, whose mma.sync are all of the
     * kernel's (the forward's key-tile loop holds every product), and the SIMT kernels have none.
     */
    @Test
    void tensorCoreKernelsReportTheirMainLoop() {
        KernelReport report = builtReport();
        for (String kernel : List.of("attn_fwd_tc64_bf16", "attn_fwd_tc128_f16", "attn_fwd_tf32x64_f32")) {
            KernelReport.Entry e = report.entry(kernel);
            assertTrue(e.mainLoopMma() > 0 && e.mainLoopMma() == e.mma(), e::toString);
            assertTrue(e.ptxPerMma() > 1 && e.ptxPerMma() < 1000, e::toString);
        }
        KernelReport.Entry v1 = report.entry("attn_fwd_bf16");
        assertEquals(0, v1.mma(), v1::toString);
        assertTrue(Double.isNaN(v1.ptxPerMma()));
    }

    /**
     * tools/ptx-main-loop.awk on a PTX text whose loops are known: a loop of 6 instructions with
     * 2 mma.sync (one predicated) nested in one of 10 with the same 2, a later loop with 1, and a
     * kernel with no loop; directives, labels, braces and comments not counted.
     */
    @Test
    void mainLoopCountIsTheLoopWithTheMostMmaInnermostFirst() throws Exception {
        Path ptx = Files.createTempFile("seqk-loops", ".ptx");
        Files.writeString(ptx, """
                .visible .entry k_loops(
                	.param .u64 k_loops_param_0
                )
                {
                	.reg .b32 %r<9>;
                	mov.u32 %r1, 0;
                $L__BB0_1:
                	add.s32 %r1, %r1, 1;
                	add.s32 %r2, %r1, 1;
                $L__BB0_2:
                	// a comment; with a semicolon
                	mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f1, %f2, %f3, %f4}, {%r1, %r2, %r3, %r4}, {%r5, %r6}, {%f1, %f2, %f3, %f4};
                	ld.shared.u32 %r3, [%r4];
                	{
                	.reg .pred p;
                	@%p1 mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f1, %f2, %f3, %f4}, {%r1, %r2, %r3, %r4}, {%r5, %r6}, {%f1, %f2, %f3, %f4};
                	}
                	setp.lt.s32 %p1, %r2, 8;
                	add.s32 %r2, %r2, 1;
                	@%p1 bra $L__BB0_2;
                	setp.lt.s32 %p2, %r1, 8;
                	@%p2 bra $L__BB0_1;
                $L__BB0_3:
                	mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f1, %f2, %f3, %f4}, {%r1, %r2, %r3, %r4}, {%r5, %r6}, {%f1, %f2, %f3, %f4};
                	bra.uni $L__BB0_3;
                	ret;
                }
                .visible .entry k_flat(
                )
                {
                	mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f1, %f2, %f3, %f4}, {%r1, %r2, %r3, %r4}, {%r5, %r6}, {%f1, %f2, %f3, %f4};
                	ret;
                }
                """);
        Path script = Path.of(System.getProperty("seqkernels.root", "..")).resolve("tools/ptx-main-loop.awk");
        Process p = new ProcessBuilder("awk", "-f", script.toString(), ptx.toString()).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
        assertEquals(0, p.waitFor(), out);
        Files.delete(ptx);
        assertEquals("k_loops 3 2 6\nk_flat 1 0 0\n", out);
    }
}
