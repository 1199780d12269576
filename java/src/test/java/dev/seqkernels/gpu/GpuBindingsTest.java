package dev.seqkernels.gpu;

import dev.seqkernels.Backends;
import dev.seqkernels.SeqkException;
import dev.seqkernels.gpu.panama.PanamaDriver;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;


import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Without an NVIDIA driver the GPU bindings answer with one clear sentence, never a crash. */
class GpuBindingsTest {
    /** Whether a libcuda.so.1 loads here: an NVIDIA driver wherever the loader finds it, or the stand-in. */
    private static boolean driverPresent() {
        try {
            CudaLibrary.lookup("probe");
            return true;
        } catch (DriverException absent) {
            return false;
        }
    }

    @Test
    void aMissingDriverIsOneSentence() {
        Assumptions.assumeFalse(driverPresent(), "skipped: a libcuda.so.1 loads here");
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
        Assumptions.assumeFalse(driverPresent(), "skipped: a libcuda.so.1 loads here");
        var e = assertThrows(SeqkException.BackendUnavailable.class, () -> Backends.byName("jcuda"));
        assertTrue(e.getMessage().startsWith("backend 'jcuda' is not available: jcuda: JCuda's driver natives could not load")
                && e.getMessage().endsWith("they need libcuda.so.1, the NVIDIA driver"), e.getMessage());
        assertFalse(e.getMessage().contains("\n"));
        assertThrows(DriverException.class, dev.seqkernels.gpu.jcuda.JCudaDriver::instance, "asking again gives the same answer");
    }
}
