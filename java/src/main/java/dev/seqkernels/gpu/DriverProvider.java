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

    /** The provider of a binding, when its artifact is present. */
    static Optional<DriverProvider> find(String binding) {
        for (DriverProvider p : ServiceLoader.load(DriverProvider.class)) {
            if (p.binding().equals(binding)) {
                return Optional.of(p);
            }
        }
        return Optional.empty();
    }

    /**
     * The driver of a binding packaged apart, or a DriverException saying which artifact to add
     * when it is not on the class or module path.
     */
    static Driver load(String binding, String artifact) {
        return find(binding).orElseThrow(() -> new DriverException("the " + binding + " binding is a separate artifact ("
                + artifact + ") that is not on the class path or module path; add it to use this binding")).driver();
    }
}
