package dev.seqkernels.gpu;

/** What orchestration code needs to know about a device to plan launches. */
public record DeviceProperties(String name, int computeMajor, int computeMinor, int multiprocessors,
                               int sharedMemoryPerBlock, int sharedMemoryPerBlockOptin, long totalMemory) {
}
