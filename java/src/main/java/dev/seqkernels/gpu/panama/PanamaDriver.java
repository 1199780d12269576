package dev.seqkernels.gpu.panama;

import dev.seqkernels.gpu.CudaLibrary;
import dev.seqkernels.gpu.DeviceAllocations;
import dev.seqkernels.gpu.DeviceProperties;
import dev.seqkernels.gpu.Dim3;
import dev.seqkernels.gpu.Driver;
import dev.seqkernels.gpu.DriverException;
import dev.seqkernels.gpu.Gemm;
import dev.seqkernels.gpu.KernelArgs;
import dev.seqkernels.gpu.KernelImages;
import dev.seqkernels.gpu.StandIn;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * The panama binding: {@link Driver} over the CUDA driver API ({@code libcuda.so.1}, see
 * {@link CudaLibrary}) and cuBLAS ({@link Cublas}) through java.lang.foreign.
 *
 * <p>Uses device 0's primary context (cuCtxCreate changed in CUDA 13; the primary context is what
 * the runtime and PyTorch share) and the versioned exports ({@code cuMemAlloc_v2}, ...). The
 * driver's current context belongs to the OS thread: a platform thread makes it current once, a
 * virtual thread before every call (it may run on another carrier each time), and a virtual
 * thread's stream captures are RELAXED, because it may end a capture on another OS thread. Every
 * CUresult and cublasStatus_t is checked; failures name the call, the error's name and text (and,
 * over the stand-in driver, its diagnostic). Events are tracked so that none is handed to the
 * driver after destroy; copies and memsets that overrun an allocation of this binding are refused
 * before the driver sees them; launch arguments are checked against cuFuncGetParamInfo.
 */
public final class PanamaDriver implements Driver {
    private static final Linker LINKER = Linker.nativeLinker();
    private static PanamaDriver instance;
    private static String unavailable;

    private final SymbolLookup cuda;
    private final Optional<StandIn> standIn;
    private final MemorySegment context;
    private final int device;
    private final DeviceAllocations allocations = new DeviceAllocations("panama");
    private final Map<String, Long> modules = new ConcurrentHashMap<>();
    private final Map<Long, String> functionNames = new ConcurrentHashMap<>();
    private final Map<Long, long[]> parameterSizes = new ConcurrentHashMap<>();
    private final Set<Long> events = ConcurrentHashMap.newKeySet();
    private final Set<Long> destroyedStreams = ConcurrentHashMap.newKeySet();
    private final Map<String, MethodHandle> handles = new ConcurrentHashMap<>();
    private final ThreadLocal<Boolean> current = ThreadLocal.withInitial(() -> false);
    private final MethodHandle setCurrent;
    private Cublas cublas;

    private PanamaDriver(SymbolLookup cuda) {
        this.cuda = cuda;
        this.standIn = StandIn.of(cuda);
        this.setCurrent = handle("cuCtxSetCurrent", FunctionDescriptor.of(JAVA_INT, ADDRESS));
        try (Arena arena = Arena.ofConfined()) {
            check(call("cuInit", FunctionDescriptor.of(JAVA_INT, JAVA_INT), 0), "cuInit");
            MemorySegment count = arena.allocate(JAVA_INT);
            check(call("cuDeviceGetCount", FunctionDescriptor.of(JAVA_INT, ADDRESS), count), "cuDeviceGetCount");
            if (count.get(JAVA_INT, 0) == 0) {
                throw new DriverException("panama: the NVIDIA driver is present but reports no CUDA device");
            }
            MemorySegment dev = arena.allocate(JAVA_INT);
            check(call("cuDeviceGet", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT), dev, 0), "cuDeviceGet");
            this.device = dev.get(JAVA_INT, 0);
            MemorySegment ctx = arena.allocate(ADDRESS);
            check(call("cuDevicePrimaryCtxRetain", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT), ctx, device),
                    "cuDevicePrimaryCtxRetain");
            this.context = ctx.get(ADDRESS, 0);
        }
    }

    /** The process-wide binding; throws {@link DriverException} with one sentence when it cannot load. */
    public static synchronized PanamaDriver instance() {
        if (instance != null) {
            return instance;
        }
        if (unavailable != null) {
            throw new DriverException(unavailable);
        }
        try {
            instance = new PanamaDriver(CudaLibrary.lookup("panama"));
            return instance;
        } catch (DriverException e) {
            unavailable = e.getMessage();
            throw e;
        }
    }

    /** The stand-in driver behind this binding, when that is what libcuda.so.1 is (tests). */
    @Override
    public Optional<StandIn> standIn() {
        return standIn;
    }

    // ---------------------------------------------------------------- plumbing

    private MethodHandle handle(String symbol, FunctionDescriptor fd) {
        return handles.computeIfAbsent(symbol, s -> LINKER.downcallHandle(cuda.find(s).orElseThrow(
                () -> new DriverException("panama: the driver library lacks " + s + " (driver too old for CUDA 12?)")), fd));
    }

    private static int invoke(MethodHandle mh, String symbol, Object... args) {
        try {
            return (int) mh.invokeWithArguments(args);
        } catch (IllegalStateException e) {
            // The JDK refuses a segment argument whose arena another thread closed after our checks.
            throw new DriverException("panama " + symbol + ": a host segment's arena was closed during the call (" + e.getMessage() + ")");
        } catch (RuntimeException e) {
            throw e;
        } catch (Throwable t) {
            throw new DriverException("panama " + symbol + ": " + t);
        }
    }

    /** A call that needs no context (initialization, error names). */
    private int call(String symbol, FunctionDescriptor fd, Object... args) {
        return invoke(handle(symbol, fd), symbol, args);
    }

    private void check(int rc, String what) {
        if (rc != 0) {
            String why = standIn.map(s -> "; stand-in: " + s.diagnostic()).orElse("");
            throw new DriverException("panama " + what + ": " + errorName(rc) + why, rc);
        }
    }

    private String errorName(int rc) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment name = arena.allocate(ADDRESS);
            MemorySegment text = arena.allocate(ADDRESS);
            call("cuGetErrorName", FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS), rc, name);
            call("cuGetErrorString", FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS), rc, text);
            return cString(name.get(ADDRESS, 0)) + " (" + cString(text.get(ADDRESS, 0)) + ", CUresult " + rc + ")";
        }
    }

    static String cString(MemorySegment p) {
        return p.equals(MemorySegment.NULL) ? "?" : p.reinterpret(Long.MAX_VALUE).getString(0);
    }

    /**
     * Makes the primary context current on the OS thread that is about to call the driver: once
     * per platform thread; before every call on a virtual thread, which may have moved to another
     * carrier since its last call.
     */
    private void makeCurrent() {
        boolean virtual = Thread.currentThread().isVirtual();
        if (virtual || !current.get()) {
            check(invoke(setCurrent, "cuCtxSetCurrent", context), "cuCtxSetCurrent");
            if (!virtual) {
                current.set(true);
            }
        }
    }

    /** CUDA_ERROR_INVALID_CONTEXT: the calling OS thread has no (or another) current context. */
    private static final int INVALID_CONTEXT = 201;

    /**
     * A call in the primary context. The handle is resolved first, so little can run between the
     * two calls; a call that still finds no context on its OS thread (a virtual thread moved, or a
     * framework changed the thread's context) makes it current again and is retried once.
     */
    private void cu(String symbol, FunctionDescriptor fd, String what, Object... args) {
        MethodHandle mh = handle(symbol, fd);
        makeCurrent();
        int rc = invoke(mh, symbol, args);
        if (rc == INVALID_CONTEXT) {
            check(invoke(setCurrent, "cuCtxSetCurrent", context), "cuCtxSetCurrent");
            rc = invoke(mh, symbol, args);
        }
        check(rc, what);
    }

    private MemorySegment stream(long s, String call) {
        if (destroyedStreams.contains(s)) {
            throw new DriverException("panama " + call + ": stream 0x" + Long.toHexString(s) + " was destroyed");
        }
        return MemorySegment.ofAddress(s);
    }

    private static MemorySegment handleOf(long h) {
        return MemorySegment.ofAddress(h);
    }

    // ---------------------------------------------------------------- Driver

    @Override
    public String name() {
        return "panama";
    }

    @Override
    public DeviceProperties properties() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment name = arena.allocate(256);
            cu("cuDeviceGetName", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT), "cuDeviceGetName", name, 256, device);
            MemorySegment total = arena.allocate(JAVA_LONG);
            cu("cuDeviceTotalMem_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT), "cuDeviceTotalMem_v2", total, device);
            return new DeviceProperties(name.getString(0), attribute(75), attribute(76), attribute(16), attribute(8),
                    attribute(97), total.get(JAVA_LONG, 0), standIn.isPresent());
        }
    }

    /** cuDeviceGetAttribute: 75/76 compute capability, 16 SM count, 8 shared memory per block, 97 its opt-in maximum. */
    private int attribute(int attr) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment v = arena.allocate(JAVA_INT);
            cu("cuDeviceGetAttribute", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT), "cuDeviceGetAttribute(" + attr + ")",
                    v, attr, device);
            return v.get(JAVA_INT, 0);
        }
    }

    @Override
    public long malloc(long bytes) {
        if (bytes < 0) {
            throw new DriverException("panama malloc: negative size " + bytes);
        }
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment p = arena.allocate(JAVA_LONG);
            cu("cuMemAlloc_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG), "cuMemAlloc_v2(" + bytes + " bytes)",
                    p, Math.max(1, bytes));
            long ptr = p.get(JAVA_LONG, 0);
            allocations.add(ptr, bytes);
            return ptr;
        }
    }

    @Override
    public void free(long devicePtr) {
        long bytes = allocations.remove(devicePtr);  // claimed first: two threads cannot both free it
        try {
            cu("cuMemFree_v2", FunctionDescriptor.of(JAVA_INT, JAVA_LONG), "cuMemFree_v2", devicePtr);
        } catch (DriverException e) {
            allocations.add(devicePtr, bytes);
            throw e;
        }
    }

    @Override
    public long memoryInUse() {
        return allocations.inUse();
    }

    @Override
    public void memset(long devicePtr, int byteValue, long bytes) {
        allocations.checkRange("memset", "destination", devicePtr, bytes);
        cu("cuMemsetD8_v2", FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_INT, JAVA_LONG), "cuMemsetD8_v2", devicePtr,
                byteValue & 0xff, bytes);
    }

    @Override
    public void memsetAsync(long devicePtr, int byteValue, long bytes, long stream) {
        allocations.checkRange("memsetAsync", "destination", devicePtr, bytes);
        cu("cuMemsetD8Async", FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_INT, JAVA_LONG, ADDRESS), "cuMemsetD8Async",
                devicePtr, byteValue & 0xff, bytes, stream(stream, "memsetAsync"));
    }

    private static void checkHost(MemorySegment host, long bytes, String call) {
        Driver.checkHostSegment("panama", call, host, bytes, call.startsWith("copyDeviceToHost"));
    }

    @Override
    public void copyHostToDevice(long dst, MemorySegment src, long bytes) {
        checkHost(src, bytes, "copyHostToDevice");
        allocations.checkRange("copyHostToDevice", "destination", dst, bytes);
        cu("cuMemcpyHtoD_v2", FunctionDescriptor.of(JAVA_INT, JAVA_LONG, ADDRESS, JAVA_LONG), "cuMemcpyHtoD_v2", dst, src, bytes);
    }

    @Override
    public void copyDeviceToHost(MemorySegment dst, long src, long bytes) {
        checkHost(dst, bytes, "copyDeviceToHost");
        allocations.checkRange("copyDeviceToHost", "source", src, bytes);
        cu("cuMemcpyDtoH_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG, JAVA_LONG), "cuMemcpyDtoH_v2", dst, src, bytes);
    }

    @Override
    public void copyDeviceToDevice(long dst, long src, long bytes) {
        allocations.checkRange("copyDeviceToDevice", "destination", dst, bytes);
        allocations.checkRange("copyDeviceToDevice", "source", src, bytes);
        cu("cuMemcpyDtoD_v2", FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_LONG), "cuMemcpyDtoD_v2", dst, src, bytes);
    }

    @Override
    public void copyHostToDeviceAsync(long dst, MemorySegment src, long bytes, long stream) {
        checkHost(src, bytes, "copyHostToDeviceAsync");
        allocations.checkRange("copyHostToDeviceAsync", "destination", dst, bytes);
        cu("cuMemcpyHtoDAsync_v2", FunctionDescriptor.of(JAVA_INT, JAVA_LONG, ADDRESS, JAVA_LONG, ADDRESS), "cuMemcpyHtoDAsync_v2",
                dst, src, bytes, stream(stream, "copyHostToDeviceAsync"));
    }

    @Override
    public void copyDeviceToHostAsync(MemorySegment dst, long src, long bytes, long stream) {
        checkHost(dst, bytes, "copyDeviceToHostAsync");
        allocations.checkRange("copyDeviceToHostAsync", "source", src, bytes);
        cu("cuMemcpyDtoHAsync_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG, JAVA_LONG, ADDRESS), "cuMemcpyDtoHAsync_v2",
                dst, src, bytes, stream(stream, "copyDeviceToHostAsync"));
    }

    @Override
    public void copyDeviceToDeviceAsync(long dst, long src, long bytes, long stream) {
        allocations.checkRange("copyDeviceToDeviceAsync", "destination", dst, bytes);
        allocations.checkRange("copyDeviceToDeviceAsync", "source", src, bytes);
        cu("cuMemcpyDtoDAsync_v2", FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_LONG, ADDRESS), "cuMemcpyDtoDAsync_v2",
                dst, src, bytes, stream(stream, "copyDeviceToDeviceAsync"));
    }

    @Override
    public MemorySegment allocHost(long bytes) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment p = arena.allocate(ADDRESS);
            cu("cuMemAllocHost_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG), "cuMemAllocHost_v2(" + bytes + " bytes)",
                    p, Math.max(1, bytes));
            return p.get(ADDRESS, 0).reinterpret(Math.max(1, bytes));
        }
    }

    @Override
    public void freeHost(MemorySegment pinned) {
        cu("cuMemFreeHost", FunctionDescriptor.of(JAVA_INT, ADDRESS), "cuMemFreeHost", pinned);
    }

    @Override
    public long createStream() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment s = arena.allocate(ADDRESS);
            cu("cuStreamCreate", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT), "cuStreamCreate", s, 1 /* non-blocking */);
            long handle = s.get(ADDRESS, 0).address();
            destroyedStreams.remove(handle);  // the driver may hand out a destroyed stream's address again
            return handle;
        }
    }

    /** CU_STREAM_CAPTURE_MODE_THREAD_LOCAL: only this thread's unsafe calls (syncs) break the capture. */
    private static final int CAPTURE_THREAD_LOCAL = 1;
    /** CU_STREAM_CAPTURE_MODE_RELAXED: the capture may end on another OS thread (a virtual thread's carrier changes). */
    private static final int CAPTURE_RELAXED = 2;

    @Override
    public void beginCapture(long stream) {
        if (stream == 0) {
            throw new DriverException("beginCapture: the default stream cannot be captured; use a created stream");
        }
        int mode = Thread.currentThread().isVirtual() ? CAPTURE_RELAXED : CAPTURE_THREAD_LOCAL;
        cu("cuStreamBeginCapture_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT), "cuStreamBeginCapture_v2",
                stream(stream, "beginCapture"), mode);
    }

    @Override
    public long endCapture(long stream) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment graph = arena.allocate(ADDRESS);
            cu("cuStreamEndCapture", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS), "cuStreamEndCapture",
                    stream(stream, "endCapture"), graph);
            MemorySegment g = graph.get(ADDRESS, 0);
            MemorySegment exec = arena.allocate(ADDRESS);
            try {
                cu("cuGraphInstantiateWithFlags", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, JAVA_LONG),
                        "cuGraphInstantiateWithFlags", exec, g, 0L);
            } finally {
                cu("cuGraphDestroy", FunctionDescriptor.of(JAVA_INT, ADDRESS), "cuGraphDestroy", g);
            }
            return exec.get(ADDRESS, 0).address();
        }
    }

    @Override
    public void launchGraph(long graph, long stream) {
        cu("cuGraphLaunch", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS), "cuGraphLaunch", handleOf(graph),
                stream(stream, "launchGraph"));
    }

    @Override
    public void destroyGraph(long graph) {
        cu("cuGraphExecDestroy", FunctionDescriptor.of(JAVA_INT, ADDRESS), "cuGraphExecDestroy", handleOf(graph));
    }

    @Override
    public void destroyStream(long stream) {
        cu("cuStreamDestroy_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS), "cuStreamDestroy_v2", stream(stream, "destroyStream"));
        destroyedStreams.add(stream);
    }

    @Override
    public void synchronize(long stream) {
        cu("cuStreamSynchronize", FunctionDescriptor.of(JAVA_INT, ADDRESS), "cuStreamSynchronize", stream(stream, "synchronize"));
    }

    @Override
    public long createEvent() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment e = arena.allocate(ADDRESS);
            cu("cuEventCreate", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT), "cuEventCreate", e, 0);
            long handle = e.get(ADDRESS, 0).address();
            events.add(handle);
            return handle;
        }
    }

    /** An event this binding created and has not destroyed; the driver never sees any other. */
    private MemorySegment event(long event, String call) {
        if (!events.contains(event)) {
            throw new DriverException("panama " + call + ": unknown event 0x" + Long.toHexString(event)
                    + " (destroyed, or not created by this binding)");
        }
        return handleOf(event);
    }

    @Override
    public void destroyEvent(long event) {
        if (!events.remove(event)) {  // claimed first: two threads cannot both destroy it
            throw new DriverException("panama destroyEvent: unknown event 0x" + Long.toHexString(event)
                    + " (destroyed, or not created by this binding)");
        }
        try {
            cu("cuEventDestroy_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS), "cuEventDestroy_v2", handleOf(event));
        } catch (DriverException e) {
            events.add(event);
            throw e;
        }
    }

    @Override
    public void recordEvent(long event, long stream) {
        cu("cuEventRecord", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS), "cuEventRecord", event(event, "recordEvent"),
                stream(stream, "recordEvent"));
    }

    @Override
    public void waitEvent(long stream, long event) {
        cu("cuStreamWaitEvent", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, JAVA_INT), "cuStreamWaitEvent",
                stream(stream, "waitEvent"), event(event, "waitEvent"), 0);
    }

    @Override
    public float elapsedMillis(long start, long end) {
        MemorySegment s = event(start, "elapsedMillis");
        MemorySegment e = event(end, "elapsedMillis");
        try (Arena arena = Arena.ofConfined()) {
            cu("cuEventSynchronize", FunctionDescriptor.of(JAVA_INT, ADDRESS), "cuEventSynchronize", e);
            MemorySegment ms = arena.allocate(JAVA_FLOAT);
            // CUDA 12.8 added cuEventElapsedTime_v2; older drivers only have the original.
            String symbol = cuda.find("cuEventElapsedTime_v2").isPresent() ? "cuEventElapsedTime_v2" : "cuEventElapsedTime";
            cu(symbol, FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS), symbol, ms, s, e);
            return ms.get(JAVA_FLOAT, 0);
        }
    }

    @Override
    public long loadModule(String family) {
        return modules.computeIfAbsent(family, this::load);
    }

    private long load(String family) {
        byte[] image = KernelImages.read(family);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment data = arena.allocate(image.length + 1L, 16);
            MemorySegment.copy(image, 0, data, java.lang.foreign.ValueLayout.JAVA_BYTE, 0, image.length);
            MemorySegment module = arena.allocate(ADDRESS);
            cu("cuModuleLoadData", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS), "cuModuleLoadData(" + family + ".fatbin)",
                    module, data);
            return module.get(ADDRESS, 0).address();
        }
    }

    @Override
    public long function(long module, String name) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment f = arena.allocate(ADDRESS);
            cu("cuModuleGetFunction", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS), "cuModuleGetFunction(" + name + ")",
                    f, handleOf(module), arena.allocateFrom(name));
            long handle = f.get(ADDRESS, 0).address();
            functionNames.put(handle, name);
            return handle;
        }
    }

    /** The kernel's parameter sizes from cuFuncGetParamInfo (CUDA 12.4+), or null on an older driver. */
    private long[] parameterSizes(long function) {
        if (cuda.find("cuFuncGetParamInfo").isEmpty()) {
            return null;
        }
        return parameterSizes.computeIfAbsent(function, f -> {
            MethodHandle info = handle("cuFuncGetParamInfo", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG, ADDRESS, ADDRESS));
            List<Long> sizes = new ArrayList<>();
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment offset = arena.allocate(JAVA_LONG);
                MemorySegment size = arena.allocate(JAVA_LONG);
                makeCurrent();
                // CUDA_ERROR_INVALID_VALUE past the last parameter: that is how the count is found.
                for (int rc; (rc = invoke(info, "cuFuncGetParamInfo", handleOf(f), (long) sizes.size(), offset, size)) != 1; ) {
                    check(rc, "cuFuncGetParamInfo(" + functionNames.getOrDefault(f, "?") + ", " + sizes.size() + ")");
                    sizes.add(size.get(JAVA_LONG, 0));
                }
            }
            return sizes.stream().mapToLong(Long::longValue).toArray();
        });
    }

    @Override
    public void launch(long function, Dim3 grid, Dim3 block, int sharedBytes, long stream, KernelArgs args) {
        launch("cuLaunchKernel", function, grid, block, sharedBytes, stream, args);
    }

    @Override
    public void launchCooperative(long function, Dim3 grid, Dim3 block, int sharedBytes, long stream, KernelArgs args) {
        launch("cuLaunchCooperativeKernel", function, grid, block, sharedBytes, stream, args);
    }

    @Override
    public int maxActiveBlocksPerMultiprocessor(long function, int blockThreads, int dynamicSharedBytes) {
        allowDynamicShared(function, dynamicSharedBytes);  // the driver counts a launch it would refuse as 0 blocks
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment n = arena.allocate(JAVA_INT);
            cu("cuOccupancyMaxActiveBlocksPerMultiprocessor", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, JAVA_INT, JAVA_LONG),
                    "cuOccupancyMaxActiveBlocksPerMultiprocessor of " + functionNames.getOrDefault(function, "?"), n,
                    handleOf(function), blockThreads, (long) dynamicSharedBytes);
            return n.get(JAVA_INT, 0);
        }
    }

    /** Shared memory a block gets without opting in: 48 KB, static and dynamic together. */
    private static final int DEFAULT_SHARED = 48 * 1024;
    private static final int CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES = 1;
    private static final int CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;
    /** Per function: the dynamic shared memory it may use now (48 KB minus its static shared memory until raised). */
    private final Map<Long, Integer> dynamicSharedLimits = new ConcurrentHashMap<>();

    /**
     * Opts {@code function} in to {@code bytes} of dynamic shared memory when that is above its
     * limit (cuFuncSetAttribute, per function). The limit is only ever raised, under a lock, so
     * concurrent launches of one function with different sizes cannot lower it under each other.
     */
    private void allowDynamicShared(long function, int bytes) {
        int limit = dynamicSharedLimits.computeIfAbsent(function, f -> {
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment v = arena.allocate(JAVA_INT);
                cu("cuFuncGetAttribute", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, ADDRESS),
                        "cuFuncGetAttribute(SHARED_SIZE_BYTES)", v, CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, handleOf(f));
                return DEFAULT_SHARED - v.get(JAVA_INT, 0);
            }
        });
        if (bytes > limit) {
            synchronized (dynamicSharedLimits) {
                if (bytes > dynamicSharedLimits.get(function)) {
                    cu("cuFuncSetAttribute", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT),
                            "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES, " + bytes + ") of "
                                    + functionNames.getOrDefault(function, "?"), handleOf(function),
                            CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes);
                    dynamicSharedLimits.put(function, bytes);
                }
            }
        }
    }

    private void launch(String symbol, long function, Dim3 grid, Dim3 block, int sharedBytes, long stream, KernelArgs args) {
        String name = functionNames.getOrDefault(function, "?");
        args.check("panama", name, parameterSizes(function));
        String what = symbol + " of " + name + " grid " + grid + " block " + block + " shared " + sharedBytes;
        allowDynamicShared(function, sharedBytes);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment params = args.pack(arena);
            if (symbol.equals("cuLaunchKernel")) {
                cu(symbol, FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT,
                        JAVA_INT, ADDRESS, ADDRESS, ADDRESS), what, handleOf(function), grid.x(), grid.y(), grid.z(), block.x(),
                        block.y(), block.z(), sharedBytes, stream(stream, "launch"), params, MemorySegment.NULL);
            } else {
                cu(symbol, FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT,
                        JAVA_INT, ADDRESS, ADDRESS), what, handleOf(function), grid.x(), grid.y(), grid.z(), block.x(), block.y(),
                        block.z(), sharedBytes, stream(stream, "launchCooperative"), params);
            }
        }
    }

    @Override
    public void gemm(Gemm g, long stream) {
        MemorySegment s = stream(stream, "gemm");
        cublas().gemm(g, s, this::makeCurrent);  // made current inside cuBLAS's lock, where it launches
    }

    private synchronized Cublas cublas() {
        if (cublas == null) {
            cublas = Cublas.load();
        }
        return cublas;
    }

    /** The process-wide driver stays loaded; closing it does nothing. */
    @Override
    public void close() {
    }
}
