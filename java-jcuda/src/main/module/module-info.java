/**
 * The jcuda binding of seqkernels (JCuda and JCublas, with their natives for linux-x86_64), an
 * alternative to the core's panama binding; the core finds it as a
 * {@link dev.seqkernels.gpu.DriverProvider} when this module is present. JCuda's jars carry no
 * module names, so they are the automatic modules {@code jcuda} and {@code jcublas}.
 */
module dev.seqkernels.jcuda {
    requires dev.seqkernels;
    requires jcuda;
    requires jcublas;

    provides dev.seqkernels.gpu.DriverProvider with dev.seqkernels.gpu.jcuda.JCudaProvider;
}
