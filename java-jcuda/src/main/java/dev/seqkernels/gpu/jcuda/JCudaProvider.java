package dev.seqkernels.gpu.jcuda;

import dev.seqkernels.gpu.Driver;
import dev.seqkernels.gpu.DriverProvider;

/** Makes the jcuda binding visible to the core ({@code Backends}) when this artifact is present. */
public final class JCudaProvider implements DriverProvider {
    @Override
    public String binding() {
        return "jcuda";
    }

    @Override
    public Driver driver() {
        return JCudaDriver.instance();
    }
}
