package example.embedding;

import dev.seqkernels.Backends;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

import java.io.IOException;
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

    /** The core's jar; a visible skip under mvn test, where the reactor hands over class directories instead. */
    private static Path coreJar() {
        Path core = coreLocation();
        Assumptions.assumeTrue(Files.isRegularFile(core),
                () -> "skipped: the core is " + core + " (mvn test), not its jar; mvn verify (./seqk test) checks the jar");
        return core;
    }

    @Test
    void theCoresModuleDescriptor() {
        ModuleDescriptor d = ModuleFinder.of(coreJar()).find("dev.seqkernels").orElseThrow().descriptor();
        assertEquals(Set.of("java.base"), d.requires().stream().map(ModuleDescriptor.Requires::name).collect(Collectors.toSet()));
        assertEquals(new TreeSet<>(List.of("dev.seqkernels", "dev.seqkernels.gpu", "dev.seqkernels.ops")),
                d.exports().stream().filter(e -> !e.isQualified()).map(ModuleDescriptor.Exports::source).collect(Collectors.toCollection(TreeSet::new)),
                "only the public packages are exported");
        assertEquals(Set.of("dev.seqkernels.gpu.DriverProvider"), d.uses());
    }

    /** Runs java with these arguments; returns its output, failing with it when the exit status is not 0. */
    private static String java(List<String> args) throws IOException, InterruptedException {
        List<String> command = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString()));
        command.addAll(args);
        Process p = new ProcessBuilder(command).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
        assertEquals(0, p.waitFor(), () -> String.join(" ", command) + "\n" + out);
        return out;
    }

    /**
     * The example in a JVM of its own with the core's jar on the module path (and only the example's
     * classes on the class path): the core is the named module dev.seqkernels, and the LSTM and
     * attention run on the emulator from there.
     */
    @Test
    void theExampleRunsWithTheCoreAsANamedModule() throws Exception {
        Path example = Path.of(EmbeddingExample.class.getProtectionDomain().getCodeSource().getLocation().toURI());
        String out = java(List.of("--module-path", coreJar().toString(), "--add-modules", "dev.seqkernels",
                "--enable-native-access=dev.seqkernels", "-cp", example.toString(), EmbeddingExample.class.getName(), "emu"));
        assertTrue(out.contains("seqkernels from module dev.seqkernels") && out.contains("lstm: 160 values, attention: 64 values"), out);
    }

    /**
     * The command line with seqkernels-tools, the core, seqkernels-jcuda and every dependency on the
     * module path: the tools' descriptor resolves, the jcuda binding is found as a service (it fails
     * for want of a driver, not of its artifact), and Jackson reaches the benchmark cases' records.
     */
    @Test
    void theToolsRunOnTheModulePath() throws Exception {
        coreJar();
        Path tools = Path.of(System.getProperty("seqkernels.root", "../.."), "java-tools", "target");
        Path[] jars;
        try (var listed = Files.list(tools)) {
            jars = listed.filter(f -> f.getFileName().toString().matches("seqkernels-tools-[^-]+(-SNAPSHOT)?\\.jar")).toArray(Path[]::new);
        }
        Assumptions.assumeTrue(jars.length == 1 && Files.isDirectory(tools.resolve("lib")),
                () -> "skipped: seqkernels-tools is not packaged in " + tools + " (mvn verify from the root packages it first)");
        List<String> launch = List.of("--module-path", tools.resolve("lib") + java.io.File.pathSeparator + jars[0],
                "--enable-native-access=dev.seqkernels,dev.seqkernels.jcuda,jcuda,jcublas", "-m", "dev.seqkernels.tools/dev.seqkernels.cli.Main");
        List<String> info = new ArrayList<>(launch);
        info.add("info");
        String described = java(info);
        assertTrue(described.matches("(?s).*\\n  emu +available.*") && described.contains("jcuda ") && !described.contains("separate artifact"),
                described);
        List<String> list = new ArrayList<>(launch);
        list.addAll(List.of("bench", "--suite", "smoke", "--list"));
        String cases = java(list);
        assertTrue(cases.contains("\"cases\"") && cases.contains("\"op\" : \"lstm\""), cases);
    }

    /**
     * The core, seqkernels-jcuda and JCuda's jars in a module layer of their own, with no context
     * class loader to help: the core finds the binding in its own layer (it then fails for want of a
     * driver, not of its artifact), and the named core hides its internals.
     */
    @Test
    void aLayerWithTheJcudaArtifactFindsItsBinding() throws Exception {
        coreJar();
        Path lib = Path.of(System.getProperty("seqkernels.root", "../.."), "java-tools", "target", "lib");
        Assumptions.assumeTrue(Files.isDirectory(lib), () -> "skipped: " + lib + " holds seqkernels-jcuda and JCuda after mvn verify");
        List<Path> jars = new ArrayList<>();
        try (var listed = Files.list(lib)) {
            listed.filter(f -> f.getFileName().toString().matches("(seqkernels|seqkernels-jcuda|jcuda|jcublas)-[0-9].*\\.jar")
                    && !f.getFileName().toString().contains("natives")).forEach(jars::add);
        }
        ModuleFinder finder = ModuleFinder.of(jars.toArray(Path[]::new));
        Configuration cf = ModuleLayer.boot().configuration().resolveAndBind(finder, ModuleFinder.of(), Set.of("dev.seqkernels"));
        ModuleLayer.Controller controller = ModuleLayer.defineModulesWithOneLoader(cf, List.of(ModuleLayer.boot()),
                ClassLoader.getPlatformClassLoader());
        Module core = controller.layer().findModule("dev.seqkernels").orElseThrow();
        assertTrue(controller.layer().findModule("dev.seqkernels.jcuda").isPresent(), "service binding resolved the jcuda module");
        controller.enableNativeAccess(core);
        assertFalse(core.isExported("dev.seqkernels.cpu"), "the CPU reference's internals are not exported");
        assertFalse(core.isExported("dev.seqkernels.gpu.panama"), "the bindings' internals are not exported");
        Thread thread = Thread.currentThread();
        ClassLoader context = thread.getContextClassLoader();
        try {
            thread.setContextClassLoader(null);
            Class<?> backends = controller.layer().findLoader("dev.seqkernels").loadClass("dev.seqkernels.Backends");
            assertEquals(core, backends.getModule());
            @SuppressWarnings("unchecked")
            Map<String, String> availability = (Map<String, String>) backends.getMethod("availability").invoke(null);
            assertFalse(availability.get("jcuda").contains("separate artifact"), availability.get("jcuda"));
            assertTrue(availability.get("jcuda").startsWith("jcuda: "), availability.get("jcuda"));
        } finally {
            thread.setContextClassLoader(context);
        }
    }
}
