package dev.seqkernels.gpu;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.function.LongConsumer;

/**
 * A {@link Driver} that passes every call through and records the device work an op issues
 * (launches, GEMMs, memsets, device-to-device copies, graph launches; not the work the op itself
 * captures into a graph, which runs when the graph does), so the benchmark harness can time that work
 * again and again between device events without the op's host-to-device and device-to-host copies.
 *
 * <p>While recording, frees are deferred to {@link #close()}: a replay reuses the very pointers the
 * recorded work used, so none of them may go back to the allocator before the last replay. Host
 * copies are performed once and counted ({@link #hostCopyBytes()}), never replayed: a replay
 * computes on whatever the buffers hold, which is the same data for the inputs and, for the
 * buffers the op writes, values of the same magnitude. This is the same contract as a CUDA graph
 * captured from the op's stream, kept in Java so that every binding (the emulator included) has it.
 */
public final class CapturingDriver implements Driver {
    private final Driver inner;
    private final List<LongConsumer> work = new ArrayList<>();
    private final List<Long> deferredFrees = new ArrayList<>();
    private final List<Long> deferredGraphs = new ArrayList<>();
    /** Streams the op is capturing into a graph: their work runs when the graph does, so it is not recorded twice. */
    private final java.util.Set<Long> graphCaptures = new java.util.HashSet<>();
    private long hostCopyBytes;
    private int launches;
    private int graphNodes;
    private int graphLaunches;
    private int cooperativeLaunches;
    private boolean recording = true;

    public CapturingDriver(Driver inner) {
        this.inner = inner;
    }

    /** Ends recording: later calls pass through unrecorded and frees are no longer deferred. */
    public synchronized void stop() {
        recording = false;
    }

    /** Issues the recorded device work once more, in order, on {@code stream}. */
    public void replay(long stream) {
        List<LongConsumer> recorded;
        synchronized (this) {
            if (recording) {
                throw new IllegalStateException("stop() the capture before replaying it");
            }
            recorded = List.copyOf(work);
        }
        for (LongConsumer w : recorded) {
            w.accept(stream);
        }
    }

    /** Kernel launches and GEMMs recorded. */
    public synchronized int launches() {
        return launches;
    }

    /** Kernel launches and GEMMs the op captured into graphs while recording (each graph's nodes, once). */
    public synchronized int graphNodes() {
        return graphNodes;
    }

    /** Graph launches recorded (each also counts as one of {@link #launches}). */
    public synchronized int graphLaunches() {
        return graphLaunches;
    }

    /** Cooperative launches recorded (the persistent kernels; each also counts as one of {@link #launches}). */
    public synchronized int cooperativeLaunches() {
        return cooperativeLaunches;
    }

    /** Bytes copied between host and device while recording (not part of a replay). */
    public synchronized long hostCopyBytes() {
        return hostCopyBytes;
    }

    private synchronized void record(long stream, LongConsumer w, boolean isLaunch) {
        if (!recording) {
            return;
        }
        if (graphCaptures.contains(stream)) {
            graphNodes += isLaunch ? 1 : 0;
        } else {
            work.add(w);
            launches += isLaunch ? 1 : 0;
        }
    }

    private synchronized void countHost(long bytes) {
        if (recording) {
            hostCopyBytes += bytes;
        }
    }

    @Override
    public String name() {
        return inner.name();
    }

    @Override
    public Driver base() {
        return inner.base();
    }

    @Override
    public DeviceProperties properties() {
        return inner.properties();
    }

    @Override
    public long malloc(long bytes) {
        return inner.malloc(bytes);
    }

    @Override
    public void free(long devicePtr) {
        synchronized (this) {
            if (recording || !work.isEmpty()) {
                deferredFrees.add(devicePtr);
                return;
            }
        }
        inner.free(devicePtr);
    }

    @Override
    public void memset(long devicePtr, int byteValue, long bytes) {
        inner.memset(devicePtr, byteValue, bytes);
        record(0, s -> inner.memsetAsync(devicePtr, byteValue, bytes, s), false);
    }

    @Override
    public void memsetAsync(long devicePtr, int byteValue, long bytes, long stream) {
        inner.memsetAsync(devicePtr, byteValue, bytes, stream);
        record(stream, s -> inner.memsetAsync(devicePtr, byteValue, bytes, s), false);
    }

    @Override
    public void copyHostToDevice(long dst, MemorySegment src, long bytes) {
        inner.copyHostToDevice(dst, src, bytes);
        countHost(bytes);
    }

    @Override
    public void copyDeviceToHost(MemorySegment dst, long src, long bytes) {
        inner.copyDeviceToHost(dst, src, bytes);
        countHost(bytes);
    }

    @Override
    public void copyDeviceToDevice(long dst, long src, long bytes) {
        inner.copyDeviceToDevice(dst, src, bytes);
        record(0, s -> inner.copyDeviceToDeviceAsync(dst, src, bytes, s), false);
    }

    @Override
    public void copyHostToDeviceAsync(long dst, MemorySegment src, long bytes, long stream) {
        inner.copyHostToDeviceAsync(dst, src, bytes, stream);
        countHost(bytes);
    }

    @Override
    public void copyDeviceToHostAsync(MemorySegment dst, long src, long bytes, long stream) {
        inner.copyDeviceToHostAsync(dst, src, bytes, stream);
        countHost(bytes);
    }

    @Override
    public void copyDeviceToDeviceAsync(long dst, long src, long bytes, long stream) {
        inner.copyDeviceToDeviceAsync(dst, src, bytes, stream);
        record(stream, s -> inner.copyDeviceToDeviceAsync(dst, src, bytes, s), false);
    }

    @Override
    public MemorySegment allocHost(long bytes) {
        return inner.allocHost(bytes);
    }

    @Override
    public void freeHost(MemorySegment pinned) {
        inner.freeHost(pinned);
    }

    @Override
    public long createStream() {
        return inner.createStream();
    }

    @Override
    public void destroyStream(long stream) {
        inner.destroyStream(stream);
    }

    @Override
    public void synchronize(long stream) {
        inner.synchronize(stream);
    }

    @Override
    public long createEvent() {
        return inner.createEvent();
    }

    @Override
    public void destroyEvent(long event) {
        inner.destroyEvent(event);
    }

    @Override
    public void recordEvent(long event, long stream) {
        inner.recordEvent(event, stream);
    }

    @Override
    public void waitEvent(long stream, long event) {
        inner.waitEvent(stream, event);
    }

    @Override
    public float elapsedMillis(long start, long end) {
        return inner.elapsedMillis(start, end);
    }

    @Override
    public long loadModule(String family) {
        return inner.loadModule(family);
    }

    @Override
    public long function(long module, String name) {
        return inner.function(module, name);
    }

    @Override
    public void launch(long function, Dim3 grid, Dim3 block, int sharedBytes, long stream, KernelArgs args) {
        inner.launch(function, grid, block, sharedBytes, stream, args);
        KernelArgs kept = args.copy();
        record(stream, s -> inner.launch(function, grid, block, sharedBytes, s, kept), true);
    }

    @Override
    public void launchCooperative(long function, Dim3 grid, Dim3 block, int sharedBytes, long stream, KernelArgs args) {
        inner.launchCooperative(function, grid, block, sharedBytes, stream, args);
        KernelArgs kept = args.copy();
        synchronized (this) {
            cooperativeLaunches += recording && !graphCaptures.contains(stream) ? 1 : 0;
        }
        record(stream, s -> inner.launchCooperative(function, grid, block, sharedBytes, s, kept), true);
    }

    @Override
    public int maxActiveBlocksPerMultiprocessor(long function, int blockThreads, int dynamicSharedBytes) {
        return inner.maxActiveBlocksPerMultiprocessor(function, blockThreads, dynamicSharedBytes);
    }

    @Override
    public synchronized void beginCapture(long stream) {
        inner.beginCapture(stream);
        graphCaptures.add(stream);
    }

    @Override
    public synchronized long endCapture(long stream) {
        graphCaptures.remove(stream);
        return inner.endCapture(stream);
    }

    @Override
    public void launchGraph(long graph, long stream) {
        inner.launchGraph(graph, stream);
        record(stream, s -> inner.launchGraph(graph, s), true);
        synchronized (this) {
            graphLaunches += recording && !graphCaptures.contains(stream) ? 1 : 0;
        }
    }

    /** Deferred while recording, like frees: a replay launches the graph again. */
    @Override
    public void destroyGraph(long graph) {
        synchronized (this) {
            if (recording || !work.isEmpty()) {
                deferredGraphs.add(graph);
                return;
            }
        }
        inner.destroyGraph(graph);
    }

    @Override
    public void gemm(Gemm gemm, long stream) {
        inner.gemm(gemm, stream);
        record(stream, s -> inner.gemm(gemm, s), true);
    }

    @Override
    public long memoryInUse() {
        return inner.memoryInUse();
    }

    /** Frees what the recorded work used; the wrapped driver stays open (it is shared). */
    @Override
    public void close() {
        List<Long> frees;
        List<Long> graphs;
        synchronized (this) {
            recording = false;
            work.clear();
            frees = List.copyOf(deferredFrees);
            deferredFrees.clear();
            graphs = List.copyOf(deferredGraphs);
            deferredGraphs.clear();
        }
        for (long g : graphs) {
            inner.destroyGraph(g);
        }
        for (long p : frees) {
            inner.free(p);
        }
    }
}
