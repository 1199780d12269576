package dev.seqkernels.gpu;

import java.util.Optional;
import java.util.ServiceLoader;

/**
 * A GPU binding shipped in its own artifact, found at run time through {@link ServiceLoader}:
 * the core knows the jcuda binding only by this interface, so a framework that does not want
 * JCuda leaves {@code seqkernels-jcuda} out and the core has no dependency beyond the JDK.
 * Providers are listed in {@code META-INF/services} on the class path and by {@code provides} in
 * their module descriptor on the module path.
 */
public interface DriverProvider {
    /** The binding's name, as backends are named: "jcuda". */
    String binding();

    /** The binding's shared driver; a {@link DriverException} with the reason when it cannot load here. */
    Driver driver();

    /**
     * The provider of a binding, when its artifact is present: looked for in the core's own module
     * layer (the core as a named module) or class loader, then in the thread's context class loader
     * (a plugin loader that sees both). An artifact that is present but cannot load (JCuda itself
     * missing, a broken service entry) is a DriverException saying so.
     */
    static Optional<DriverProvider> find(String binding) {
        Module core = DriverProvider.class.getModule();
        ServiceLoader<DriverProvider> own = core.isNamed() && core.getLayer() != null
                ? ServiceLoader.load(core.getLayer(), DriverProvider.class)
                : ServiceLoader.load(DriverProvider.class, DriverProvider.class.getClassLoader());
        Optional<DriverProvider> found = find(own, binding);
        ClassLoader context = Thread.currentThread().getContextClassLoader();
        if (found.isEmpty() && context != null && context != DriverProvider.class.getClassLoader()) {
            found = find(ServiceLoader.load(DriverProvider.class, context), binding);
        }
        return found;
    }

    private static Optional<DriverProvider> find(ServiceLoader<DriverProvider> loader, String binding) {
        try {
            for (DriverProvider p : loader) {
                if (p.binding().equals(binding)) {
                    return Optional.of(p);
                }
            }
            return Optional.empty();
        } catch (java.util.ServiceConfigurationError | LinkageError e) {
            throw new DriverException(binding + ": its artifact is present but its provider cannot load (" + e + ")");
        }
    }

    /**
     * The driver of a binding packaged apart, or a DriverException saying which artifact to add
     * when it is not on the class or module path, or what is missing when it is there but cannot load
     * (for jcuda: JCuda's own jars).
     */
    static Driver load(String binding, String artifact) {
        DriverProvider provider = find(binding).orElseThrow(() -> new DriverException("the " + binding + " binding is a separate artifact ("
                + artifact + ") that is not on the class path or module path; add it to use this binding"));
        try {
            return provider.driver();
        } catch (LinkageError e) {
            throw new DriverException(binding + ": " + artifact + " is present but a library it needs is not (" + e + ")");
        }
    }
}
