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
}
