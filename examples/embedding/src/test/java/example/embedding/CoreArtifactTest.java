package example.embedding;

import dev.seqkernels.Backends;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.io.InputStream;
import java.lang.module.Configuration;
import java.lang.module.ModuleDescriptor;
import java.lang.module.ModuleFinder;
import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.Collectors;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * What a project that depends on dev.seqkernels:seqkernels gets: the core and nothing else on its
 * class path (test libraries aside), and a jar that is the named module dev.seqkernels on the
 * module path, requiring only java.base and exporting only the public packages.
 */
class CoreArtifactTest {
    /** The test run's own libraries, which the example's build adds in test scope. */
    private static final List<String> TEST_LIBRARIES = List.of("junit-", "opentest4j-", "apiguardian-", "surefire", "test-classes");

    private static Path coreLocation() {
        try {
            return Path.of(Backends.class.getProtectionDomain().getCodeSource().getLocation().toURI());
        } catch (URISyntaxException e) {
            throw new AssertionError(e);
        }
    }

    @Test
    void theClassPathIsTheCoreAlone() {
        Path core = coreLocation();
        List<String> others = new ArrayList<>();
        for (String entry : System.getProperty("java.class.path").split(java.io.File.pathSeparator)) {
            Path p = Path.of(entry).toAbsolutePath().normalize();
            String name = p.getFileName().toString();
            boolean mine = p.endsWith(Path.of("target", "classes")) && p.getParent().getParent().endsWith("embedding");
            if (!mine && !p.equals(core) && TEST_LIBRARIES.stream().noneMatch(name::contains) && !entry.contains("surefire")) {
                others.add(entry);
            }
        }
        assertEquals(List.of(), others, "the class path holds more than seqkernels' core");
        String coreName = core.getFileName().toString();
        assertTrue(coreName.equals("classes") && core.getParent().getParent().endsWith("java")
                || coreName.matches("seqkernels-[0-9][^-]*(-SNAPSHOT)?\\.jar"), "the core artifact, not another: " + core);
    }

    @Test
    void theCoresModuleDescriptor() throws IOException {
        ModuleDescriptor d;
        try (InputStream in = Backends.class.getResourceAsStream("/META-INF/versions/25/module-info.class")) {
            assertTrue(in != null, "the core carries its module descriptor in META-INF/versions/25");
            d = ModuleDescriptor.read(in);
        }
        assertEquals("dev.seqkernels", d.name());
        assertEquals(Set.of("java.base"), d.requires().stream().map(ModuleDescriptor.Requires::name).collect(Collectors.toSet()));
        assertEquals(new TreeSet<>(List.of("dev.seqkernels", "dev.seqkernels.gpu", "dev.seqkernels.ops")),
                d.exports().stream().filter(e -> !e.isQualified()).map(ModuleDescriptor.Exports::source).collect(Collectors.toCollection(TreeSet::new)),
                "only the public packages are exported");
        assertEquals(Set.of("dev.seqkernels.gpu.DriverProvider"), d.uses());
    }

    /**
     * The packaged jar (mvn verify, as ./seqk test runs) resolved on a module path in a layer of its
     * own: a named module that loads, reaches its emulator library with native access granted to it,
     * and hides its internals.
     */
    @Test
    void theJarIsANamedModuleOnTheModulePath() throws Exception {
        Path core = coreLocation();
        Assumptions.assumeTrue(Files.isRegularFile(core),
                () -> "skipped: the core is " + core + " (mvn test), not its jar; mvn verify (./seqk test) checks the jar");
        ModuleFinder finder = ModuleFinder.of(core);
        Configuration cf = ModuleLayer.boot().configuration().resolve(finder, ModuleFinder.of(), Set.of("dev.seqkernels"));
        ModuleLayer.Controller controller = ModuleLayer.defineModulesWithOneLoader(cf, List.of(ModuleLayer.boot()),
                ClassLoader.getPlatformClassLoader());
        Module module = controller.layer().findModule("dev.seqkernels").orElseThrow();
        controller.enableNativeAccess(module);
        assertTrue(module.isNamed());
        assertTrue(module.isExported("dev.seqkernels.ops"));
        assertFalse(module.isExported("dev.seqkernels.cpu"), "the CPU reference's internals are not exported");
        assertFalse(module.isExported("dev.seqkernels.gpu.panama"), "the bindings' internals are not exported");
        Class<?> backends = controller.layer().findLoader("dev.seqkernels").loadClass("dev.seqkernels.Backends");
        assertEquals(module, backends.getModule());
        @SuppressWarnings("unchecked")
        Map<String, String> availability = (Map<String, String>) backends.getMethod("availability").invoke(null);
        assertTrue(availability.get("emu").startsWith("available"), "emu in the named module: " + availability.get("emu"));
        assertTrue(availability.get("jcuda").startsWith("the jcuda binding is a separate artifact"), availability.get("jcuda"));
    }
}
