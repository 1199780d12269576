package dev.seqkernels.gpu;

import dev.seqkernels.Backends;
import dev.seqkernels.SeqkException;
import dev.seqkernels.gpu.panama.PanamaDriver;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Without an NVIDIA driver the GPU bindings answer with one clear sentence, never a crash. */
class GpuBindingsTest {
    private static boolean driverPresent() {
        return Files.exists(Path.of("/usr/lib/x86_64-linux-gnu/libcuda.so.1")) || Files.exists(Path.of("/usr/lib64/libcuda.so.1"));
    }

    @Test
    void aMissingDriverIsOneSentence() {
        Assumptions.assumeFalse(driverPresent(), "skipped: this machine has an NVIDIA driver");
        var e = assertThrows(SeqkException.BackendUnavailable.class, () -> Backends.byName("panama"));
        assertEquals("backend 'panama' is not available: panama: libcuda.so.1 (the NVIDIA driver) is not on this machine; "
                + "use the cpu or emu backend", e.getMessage());
        assertThrows(DriverException.class, PanamaDriver::instance, "asking again gives the same answer");
        assertFalse(e.getMessage().contains("\n"));
        assertEquals("cpu", Backends.byName("auto").name(), "auto does not pick an unavailable or unverified binding");
        assertTrue(Backends.availability().get("panama").startsWith("panama: libcuda.so.1"));
    }

    @Test
    void jcudaWithoutADriverIsOneSentenceToo() {
        Assumptions.assumeFalse(driverPresent(), "skipped: this machine has an NVIDIA driver");
        var e = assertThrows(SeqkException.BackendUnavailable.class, () -> Backends.byName("jcuda"));
        assertTrue(e.getMessage().startsWith("backend 'jcuda' is not available: jcuda: JCuda's driver natives could not load")
                && e.getMessage().endsWith("they need libcuda.so.1, the NVIDIA driver"), e.getMessage());
        assertFalse(e.getMessage().contains("\n"));
        assertThrows(DriverException.class, dev.seqkernels.gpu.jcuda.JCudaDriver::instance, "asking again gives the same answer");
    }
}
