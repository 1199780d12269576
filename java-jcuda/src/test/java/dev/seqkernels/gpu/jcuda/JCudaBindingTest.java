package dev.seqkernels.gpu.jcuda;

import dev.seqkernels.Backends;
import dev.seqkernels.SeqkException;
import dev.seqkernels.gpu.CudaLibrary;
import dev.seqkernels.gpu.DriverException;
import dev.seqkernels.gpu.DriverProvider;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The jcuda artifact on the class path: the core finds the binding, and without a driver it is one sentence. */
class JCudaBindingTest {
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
    void theCoreFindsTheBindingThroughItsProvider() {
        DriverProvider provider = DriverProvider.find("jcuda").orElseThrow();
        assertInstanceOf(JCudaProvider.class, provider);
        assertTrue(DriverProvider.find("panama").isEmpty(), "panama is the core's own, not a provider");
    }

    @Test
    void jcudaWithoutADriverIsOneSentence() {
        Assumptions.assumeFalse(driverPresent(), "skipped: a libcuda.so.1 loads here");
        var e = assertThrows(SeqkException.BackendUnavailable.class, () -> Backends.byName("jcuda"));
        assertTrue(e.getMessage().startsWith("backend 'jcuda' is not available: jcuda: JCuda's driver natives could not load")
                && e.getMessage().endsWith("they need libcuda.so.1, the NVIDIA driver"), e.getMessage());
        assertFalse(e.getMessage().contains("\n"));
        assertThrows(DriverException.class, JCudaDriver::instance, "asking again gives the same answer");
        assertEquals("cpu", Backends.byName("auto").name(), "auto does not pick an unavailable binding");
    }
}
