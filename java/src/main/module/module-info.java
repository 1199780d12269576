/**
 * seqkernels' core: host and device tensors, the ops (LSTM, GRU, RNN, attention, multi-head
 * attention) with their double-precision CPU reference, and their GPU path over the panama
 * binding (libcuda and cuBLAS through java.lang.foreign) or the SIMT emulator, with the kernels'
 * fatbins and the emulator library inside the jar. Nothing beyond java.base. Bindings packaged
 * apart (seqkernels-jcuda) are found as {@link dev.seqkernels.gpu.DriverProvider} services.
 *
 * <p>Run with {@code --enable-native-access=dev.seqkernels} (on the class path:
 * {@code ALL-UNNAMED}).
 */
module dev.seqkernels {
    exports dev.seqkernels;
    exports dev.seqkernels.ops;
    exports dev.seqkernels.gpu;
    // The command line reports on the emulator (seqk info); nothing else outside the core uses it.
    exports dev.seqkernels.gpu.emu to dev.seqkernels.tools;

    uses dev.seqkernels.gpu.DriverProvider;
}
