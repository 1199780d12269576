package dev.seqkernels.gpu.jcuda;

import dev.seqkernels.Backends;
import dev.seqkernels.SeqkException;
import dev.seqkernels.gpu.DriverException;
import dev.seqkernels.gpu.DriverProvider;
import dev.seqkernels.gpu.GpuTargets;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The jcuda artifact on the class path: the core finds the binding, and without a driver it is one sentence. */
class JCudaBindingTest {
    @Test
    void theCoreFindsTheBindingThroughItsProvider() {
        DriverProvider provider = DriverProvider.find("jcuda").orElseThrow();
        assertInstanceOf(JCudaProvider.class, provider);
        assertTrue(DriverProvider.find("panama").isEmpty(), "panama is the core's own, not a provider");
    }

    /**
     * The core and this artifact in a class loader of their own without JCuda's jars (and no help
     * from the context class loader): the provider is found beside the core, and the missing library
     * is one sentence from backend jcuda, while auto goes on to cpu.
     */
    @Test
    void withoutJCudaItselfTheBindingIsOneSentence() throws Exception {
        java.net.URL[] urls = {DriverProvider.class.getProtectionDomain().getCodeSource().getLocation(),
                JCudaProvider.class.getProtectionDomain().getCodeSource().getLocation()};
        Thread thread = Thread.currentThread();
        ClassLoader context = thread.getContextClassLoader();
        try (java.net.URLClassLoader loader = new java.net.URLClassLoader(urls, ClassLoader.getPlatformClassLoader())) {
            thread.setContextClassLoader(null);
            Class<?> backends = loader.loadClass("dev.seqkernels.Backends");
            @SuppressWarnings("unchecked")
            java.util.Map<String, String> availability = (java.util.Map<String, String>) backends.getMethod("availability").invoke(null);
            String jcuda = availability.get("jcuda");
            assertTrue(jcuda.startsWith("jcuda: dev.seqkernels:seqkernels-jcuda is present but a library it needs is not")
                    && jcuda.contains("jcuda/"), jcuda);
            Object auto = backends.getMethod("byName", String.class).invoke(null, "auto");
            assertEquals("cpu", auto.getClass().getMethod("name").invoke(auto));
        } finally {
            thread.setContextClassLoader(context);
        }
    }

    @Test
    void jcudaWithoutADriverIsOneSentence() {
        Assumptions.assumeFalse(GpuTargets.libcudaLoads(), "skipped: a libcuda.so.1 loads here");
        var e = assertThrows(SeqkException.BackendUnavailable.class, () -> Backends.byName("jcuda"));
        assertTrue(e.getMessage().startsWith("backend 'jcuda' is not available: jcuda: JCuda's driver natives could not load")
                && e.getMessage().endsWith("they need libcuda.so.1, the NVIDIA driver"), e.getMessage());
        assertFalse(e.getMessage().contains("\n"));
        assertThrows(DriverException.class, JCudaDriver::instance, "asking again gives the same answer");
        assertEquals("cpu", Backends.byName("auto").name(), "auto does not pick an unavailable binding");
    }
}
