package dev.seqkernels.gpu;

/**
 * What orchestration code needs to know about a device to plan launches. {@code simulated}: the
 * device is the SIMT emulator on the CPU (the emu binding, or a GPU binding over the stand-in
 * driver), which checks kernels but says nothing about speed; {@code auto} never picks one.
 */
public record DeviceProperties(String name, int computeMajor, int computeMinor, int multiprocessors,
                               int sharedMemoryPerBlock, int sharedMemoryPerBlockOptin, long totalMemory, boolean simulated) {
}
