package dev.seqkernels.gpu;

import java.lang.foreign.MemorySegment;
import java.util.Optional;

/**
 * The seam every GPU code path is written against, once: memory, copies, streams, events,
 * modules, launches and GEMM. Three bindings implement it: panama and jcuda (a real GPU, later
 * issues) and emu (the SIMT emulator in native/, which runs the same kernel sources on the CPU).
 *
 * <p>Device pointers and stream/event/module/function handles are plain {@code long}s so a
 * framework can pass its own. Stream 0 is the default stream. Every failure throws
 * {@link DriverException} naming the call. A driver is thread-safe; see each binding for how.
 */
public interface Driver extends AutoCloseable {
    /** The binding: "emu", "panama" or "jcuda". */
    String name();

    DeviceProperties properties();

    /**
     * The driver that owns the handles this one hands out: itself, or the driver a wrapper passes its
     * calls to (the benchmark's recording driver), so per-driver resources are shared across wrappers.
     */
    default Driver base() {
        return this;
    }

    /** The stand-in driver this binding runs over (a test fixture on the emulator), when it does. */
    default Optional<StandIn> standIn() {
        return Optional.empty();
    }

    long malloc(long bytes);

    void free(long devicePtr);

    void memset(long devicePtr, int byteValue, long bytes);

    void memsetAsync(long devicePtr, int byteValue, long bytes, long stream);

    /**
     * The checks every binding makes on a host segment before a copy, so a bad one is a
     * DriverException and never a fault in native code: native memory, alive, large enough, and
     * writable when the copy writes it.
     */
    static void checkHostSegment(String binding, String call, MemorySegment host, long bytes, boolean written) {
        if (host == null) {
            throw new DriverException(binding + " " + call + ": the host segment is null");
        }
        if (bytes < 0 || !host.isNative() || host.byteSize() < bytes) {
            throw new DriverException(binding + " " + call + ": the host segment must be native memory of at least " + bytes
                    + " bytes (it is " + (host.isNative() ? "native, " + host.byteSize() + " bytes" : "on the Java heap") + ")");
        }
        if (!host.scope().isAlive()) {
            throw new DriverException(binding + " " + call + ": the host segment's arena is closed");
        }
        if (!host.isAccessibleBy(Thread.currentThread())) {
            throw new DriverException(binding + " " + call + ": the host segment is confined to another thread");
        }
        if (written && host.isReadOnly()) {
            throw new DriverException(binding + " " + call + ": the host segment is read-only");
        }
    }

    void copyHostToDevice(long dst, MemorySegment src, long bytes);

    void copyDeviceToHost(MemorySegment dst, long src, long bytes);

    void copyDeviceToDevice(long dst, long src, long bytes);

    /** The host segment must stay valid until the stream reaches the copy (pinned memory for real overlap). */
    void copyHostToDeviceAsync(long dst, MemorySegment src, long bytes, long stream);

    void copyDeviceToHostAsync(MemorySegment dst, long src, long bytes, long stream);

    void copyDeviceToDeviceAsync(long dst, long src, long bytes, long stream);

    /**
     * Page-locked host memory of {@code bytes} for asynchronous copies that really overlap (a plain
     * native segment on the emulator). Free it with {@link #freeHost}.
     */
    MemorySegment allocHost(long bytes);

    void freeHost(MemorySegment pinned);

    long createStream();

    void destroyStream(long stream);

    void synchronize(long stream);

    long createEvent();

    void destroyEvent(long event);

    void recordEvent(long event, long stream);

    /**
     * Makes work issued to {@code stream} after this call wait until the work before the last
     * {@link #recordEvent} of {@code event} has completed (cuStreamWaitEvent); the host does not wait.
     */
    void waitEvent(long stream, long event);

    /** Milliseconds between two recorded events (after both completed). */
    float elapsedMillis(long start, long end);

    /**
     * Kernel family {@code family} (cuda/&lt;family&gt;.cu), loaded once per driver: every later
     * call returns the same module, so any number of backends share it and device memory does not
     * grow. Throws "kernels not built" when the build had no nvcc.
     */
    long loadModule(String family);

    /** A kernel of a loaded module by its extern "C" name. */
    long function(long module, String name);

    /**
     * Launches a kernel. The arguments are checked against the kernel's parameter list as the
     * driver knows it (count and sizes; {@link KernelArgs#check}) before anything runs.
     */
    void launch(long function, Dim3 grid, Dim3 block, int sharedBytes, long stream, KernelArgs args);

    /**
     * A launch whose blocks are all resident at once, for kernels that synchronize the whole grid.
     * A grid larger than what fits (see {@link #maxActiveBlocksPerMultiprocessor}, and fewer SMs
     * under MPS) fails with status {@link DriverException#COOPERATIVE_LAUNCH_TOO_LARGE}.
     */
    void launchCooperative(long function, Dim3 grid, Dim3 block, int sharedBytes, long stream, KernelArgs args);

    /** How many blocks of {@code function} fit on one multiprocessor at once with this block size and dynamic shared memory. */
    int maxActiveBlocksPerMultiprocessor(long function, int blockThreads, int dynamicSharedBytes);

    /**
     * Starts recording the work later issued on {@code stream} (a created stream, not the default
     * one) into a graph instead of running it: kernel launches, GEMMs, memsets and device copies.
     * The issuing thread must not synchronize while recording.
     */
    void beginCapture(long stream);

    /** Ends the recording begun on {@code stream}; returns it as an executable graph. */
    long endCapture(long stream);

    /** Runs an executable graph from {@link #endCapture} on {@code stream}, as one launch. */
    void launchGraph(long graph, long stream);

    void destroyGraph(long graph);

    /** Column-major strided-batched GEMM, cuBLAS's convention; see {@link Gemm}. */
    void gemm(Gemm gemm, long stream);

    /** Device memory this driver allocated and has not freed, in bytes. */
    long memoryInUse();

    @Override
    void close();
}
