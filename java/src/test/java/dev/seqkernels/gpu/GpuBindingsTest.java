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
    @Test
    void aMissingDriverIsOneSentence() {
        Assumptions.assumeFalse(GpuTargets.libcudaLoads(), "skipped: a libcuda.so.1 loads here");
        var e = assertThrows(SeqkException.BackendUnavailable.class, () -> Backends.byName("panama"));
        assertEquals("backend 'panama' is not available: panama: libcuda.so.1 (the NVIDIA driver) is not on this machine; "
                + "use the cpu or emu backend", e.getMessage());
        assertThrows(DriverException.class, PanamaDriver::instance, "asking again gives the same answer");
        assertFalse(e.getMessage().contains("\n"));
        assertEquals("cpu", Backends.byName("auto").name(), "auto does not pick an unavailable or unverified binding");
        assertTrue(Backends.availability().get("panama").startsWith("panama: libcuda.so.1"));
    }

    /** The core alone (this module's tests run without seqkernels-jcuda): jcuda names the artifact to add. */
    @Test
    void jcudaWithoutItsArtifactNamesIt() {
        Assumptions.assumeTrue(DriverProvider.find("jcuda").isEmpty(), "skipped: seqkernels-jcuda is on the class path");
        var e = assertThrows(SeqkException.BackendUnavailable.class, () -> Backends.byName("jcuda"));
        assertEquals("backend 'jcuda' is not available: the jcuda binding is a separate artifact (dev.seqkernels:seqkernels-jcuda) "
                + "that is not on the class path or module path; add it to use this binding", e.getMessage());
        assertTrue(Backends.availability().get("jcuda").startsWith("the jcuda binding is a separate artifact"));
        assertEquals("cpu", Backends.byName("auto").name(), "auto goes on without the jcuda artifact");
    }
}
