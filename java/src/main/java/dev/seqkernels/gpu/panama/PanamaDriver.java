package dev.seqkernels.gpu.panama;

import dev.seqkernels.DType;
import dev.seqkernels.gpu.DeviceProperties;
import dev.seqkernels.gpu.Dim3;
import dev.seqkernels.gpu.Driver;
import dev.seqkernels.gpu.DriverException;
import dev.seqkernels.gpu.Gemm;
import dev.seqkernels.gpu.KernelArgs;
import dev.seqkernels.gpu.KernelImages;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.ConcurrentHashMap;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * The panama binding: {@link Driver} over the CUDA driver API ({@code libcuda.so.1}) and cuBLAS
 * ({@code libcublas.so.13} or {@code .so.12}) through java.lang.foreign.
 *
 * <p>Uses device 0's primary context (cuCtxCreate changed in CUDA 13; the primary context is what
 * the runtime and PyTorch share) and the versioned exports ({@code cuMemAlloc_v2}, ...). Every call
 * makes the context current on the calling thread first, so any Java thread may call; streams
 * separate concurrent work. Every CUresult and cublasStatus_t is checked; failures name the call,
 * the error's name and text. cuBLAS is found lazily (system property {@value #CUBLAS_PROPERTY}, the
 * CUDA library directories, LD_LIBRARY_PATH, and the nvidia/cublas/lib folder of Python wheels);
 * without it everything but {@link #gemm} works, and gemm says what was searched.
 */
public final class PanamaDriver implements Driver {
    public static final String CUBLAS_PROPERTY = "seqkernels.cublas.path";
    private static final Linker LINKER = Linker.nativeLinker();
    private static PanamaDriver instance;
    private static String unavailable;

    private final SymbolLookup cuda;
    private final MemorySegment context;
    private final int device;
    private final Map<Long, Long> allocations = new ConcurrentHashMap<>();
    private final Map<Long, String> functionNames = new ConcurrentHashMap<>();
    private final Map<String, MethodHandle> handles = new ConcurrentHashMap<>();
    private final ThreadLocal<Boolean> current = ThreadLocal.withInitial(() -> false);
    private Cublas cublas;

    private PanamaDriver(SymbolLookup cuda) {
        this.cuda = cuda;
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
            SymbolLookup lib;
            try {
                lib = SymbolLookup.libraryLookup("libcuda.so.1", Arena.global());
            } catch (IllegalArgumentException e) {
                throw new DriverException("panama: libcuda.so.1 (the NVIDIA driver) is not on this machine; use the cpu or emu backend");
            }
            instance = new PanamaDriver(lib);
            return instance;
        } catch (DriverException e) {
            unavailable = e.getMessage();
            throw e;
        }
    }

    // ---------------------------------------------------------------- plumbing

    private MethodHandle handle(SymbolLookup lib, String symbol, FunctionDescriptor fd) {
        return handles.computeIfAbsent(symbol, s -> LINKER.downcallHandle(lib.find(s).orElseThrow(
                () -> new DriverException("panama: the driver library lacks " + s + " (driver too old for CUDA 12?)")), fd));
    }

    private int call(String symbol, FunctionDescriptor fd, Object... args) {
        try {
            return (int) handle(cuda, symbol, fd).invokeWithArguments(args);
        } catch (RuntimeException e) {
            throw e;
        } catch (Throwable t) {
            throw new DriverException("panama " + symbol + ": " + t);
        }
    }

    private void check(int rc, String what) {
        if (rc != 0) {
            throw new DriverException("panama " + what + ": " + errorName(rc));
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

    /** Makes the primary context current on this thread (once per thread). */
    private void makeCurrent() {
        if (!current.get()) {
            check(call("cuCtxSetCurrent", FunctionDescriptor.of(JAVA_INT, ADDRESS), context), "cuCtxSetCurrent");
            current.set(true);
        }
    }

    private void cu(String symbol, FunctionDescriptor fd, String what, Object... args) {
        makeCurrent();
        check(call(symbol, fd, args), what);
    }

    private static MemorySegment stream(long s) {
        return MemorySegment.ofAddress(s);
    }

    // ---------------------------------------------------------------- Driver

    @Override
    public String name() {
        return "panama";
    }

    @Override
    public DeviceProperties properties() {
        try (Arena arena = Arena.ofConfined()) {
            makeCurrent();
            MemorySegment name = arena.allocate(256);
            cu("cuDeviceGetName", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT), "cuDeviceGetName", name, 256, device);
            MemorySegment total = arena.allocate(JAVA_LONG);
            cu("cuDeviceTotalMem_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT), "cuDeviceTotalMem_v2", total, device);
            return new DeviceProperties(name.getString(0), attribute(75), attribute(76), attribute(16), attribute(8),
                    attribute(97), total.get(JAVA_LONG, 0));
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
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment p = arena.allocate(JAVA_LONG);
            cu("cuMemAlloc_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG), "cuMemAlloc_v2(" + bytes + " bytes)",
                    p, Math.max(1, bytes));
            long ptr = p.get(JAVA_LONG, 0);
            allocations.put(ptr, bytes);
            return ptr;
        }
    }

    @Override
    public void free(long devicePtr) {
        if (allocations.remove(devicePtr) == null) {
            throw new DriverException("panama free: 0x" + Long.toHexString(devicePtr) + " was not allocated by this driver");
        }
        cu("cuMemFree_v2", FunctionDescriptor.of(JAVA_INT, JAVA_LONG), "cuMemFree_v2", devicePtr);
    }

    @Override
    public long memoryInUse() {
        return allocations.values().stream().mapToLong(Long::longValue).sum();
    }

    @Override
    public void memset(long devicePtr, int byteValue, long bytes) {
        cu("cuMemsetD8_v2", FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_INT, JAVA_LONG), "cuMemsetD8_v2", devicePtr,
                byteValue & 0xff, bytes);
    }

    @Override
    public void memsetAsync(long devicePtr, int byteValue, long bytes, long stream) {
        cu("cuMemsetD8Async", FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_INT, JAVA_LONG, ADDRESS), "cuMemsetD8Async",
                devicePtr, byteValue & 0xff, bytes, stream(stream));
    }

    private static void checkHost(MemorySegment host, long bytes, String call) {
        if (!host.isNative() || host.byteSize() < bytes) {
            throw new DriverException("panama " + call + ": the host segment must be native memory of at least " + bytes + " bytes");
        }
    }

    @Override
    public void copyHostToDevice(long dst, MemorySegment src, long bytes) {
        checkHost(src, bytes, "copyHostToDevice");
        cu("cuMemcpyHtoD_v2", FunctionDescriptor.of(JAVA_INT, JAVA_LONG, ADDRESS, JAVA_LONG), "cuMemcpyHtoD_v2", dst, src, bytes);
    }

    @Override
    public void copyDeviceToHost(MemorySegment dst, long src, long bytes) {
        checkHost(dst, bytes, "copyDeviceToHost");
        cu("cuMemcpyDtoH_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG, JAVA_LONG), "cuMemcpyDtoH_v2", dst, src, bytes);
    }

    @Override
    public void copyDeviceToDevice(long dst, long src, long bytes) {
        cu("cuMemcpyDtoD_v2", FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_LONG), "cuMemcpyDtoD_v2", dst, src, bytes);
    }

    @Override
    public void copyHostToDeviceAsync(long dst, MemorySegment src, long bytes, long stream) {
        checkHost(src, bytes, "copyHostToDeviceAsync");
        cu("cuMemcpyHtoDAsync_v2", FunctionDescriptor.of(JAVA_INT, JAVA_LONG, ADDRESS, JAVA_LONG, ADDRESS), "cuMemcpyHtoDAsync_v2",
                dst, src, bytes, stream(stream));
    }

    @Override
    public void copyDeviceToHostAsync(MemorySegment dst, long src, long bytes, long stream) {
        checkHost(dst, bytes, "copyDeviceToHostAsync");
        cu("cuMemcpyDtoHAsync_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG, JAVA_LONG, ADDRESS), "cuMemcpyDtoHAsync_v2",
                dst, src, bytes, stream(stream));
    }

    @Override
    public void copyDeviceToDeviceAsync(long dst, long src, long bytes, long stream) {
        cu("cuMemcpyDtoDAsync_v2", FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_LONG, ADDRESS), "cuMemcpyDtoDAsync_v2",
                dst, src, bytes, stream(stream));
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
            return s.get(ADDRESS, 0).address();
        }
    }

    /** CU_STREAM_CAPTURE_MODE_THREAD_LOCAL: only this thread's unsafe calls (syncs) break the capture. */
    private static final int CAPTURE_THREAD_LOCAL = 1;

    @Override
    public void beginCapture(long stream) {
        if (stream == 0) {
            throw new DriverException("beginCapture: the default stream cannot be captured; use a created stream");
        }
        cu("cuStreamBeginCapture_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT), "cuStreamBeginCapture_v2",
                stream(stream), CAPTURE_THREAD_LOCAL);
    }

    @Override
    public long endCapture(long stream) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment graph = arena.allocate(ADDRESS);
            cu("cuStreamEndCapture", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS), "cuStreamEndCapture", stream(stream), graph);
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
        cu("cuGraphLaunch", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS), "cuGraphLaunch", stream(graph), stream(stream));
    }

    @Override
    public void destroyGraph(long graph) {
        cu("cuGraphExecDestroy", FunctionDescriptor.of(JAVA_INT, ADDRESS), "cuGraphExecDestroy", stream(graph));
    }

    @Override
    public void destroyStream(long stream) {
        cu("cuStreamDestroy_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS), "cuStreamDestroy_v2", stream(stream));
    }

    @Override
    public void synchronize(long stream) {
        cu("cuStreamSynchronize", FunctionDescriptor.of(JAVA_INT, ADDRESS), "cuStreamSynchronize", stream(stream));
    }

    @Override
    public long createEvent() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment e = arena.allocate(ADDRESS);
            cu("cuEventCreate", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT), "cuEventCreate", e, 0);
            return e.get(ADDRESS, 0).address();
        }
    }

    @Override
    public void destroyEvent(long event) {
        cu("cuEventDestroy_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS), "cuEventDestroy_v2", stream(event));
    }

    @Override
    public void recordEvent(long event, long stream) {
        cu("cuEventRecord", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS), "cuEventRecord", stream(event), stream(stream));
    }

    @Override
    public float elapsedMillis(long start, long end) {
        try (Arena arena = Arena.ofConfined()) {
            cu("cuEventSynchronize", FunctionDescriptor.of(JAVA_INT, ADDRESS), "cuEventSynchronize", stream(end));
            MemorySegment ms = arena.allocate(JAVA_FLOAT);
            // CUDA 12.8 added cuEventElapsedTime_v2; older drivers only have the original.
            String symbol = cuda.find("cuEventElapsedTime_v2").isPresent() ? "cuEventElapsedTime_v2" : "cuEventElapsedTime";
            cu(symbol, FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS), symbol, ms, stream(start), stream(end));
            return ms.get(JAVA_FLOAT, 0);
        }
    }

    @Override
    public long loadModule(String family) {
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
                    f, stream(module), arena.allocateFrom(name));
            long handle = f.get(ADDRESS, 0).address();
            functionNames.put(handle, name);
            return handle;
        }
    }

    @Override
    public void launch(long function, Dim3 grid, Dim3 block, int sharedBytes, long stream, KernelArgs args) {
        launch("cuLaunchKernel", function, grid, block, sharedBytes, stream, args);
    }

    @Override
    public void launchCooperative(long function, Dim3 grid, Dim3 block, int sharedBytes, long stream, KernelArgs args) {
        launch("cuLaunchCooperativeKernel", function, grid, block, sharedBytes, stream, args);
    }

    /** Dynamic shared memory a kernel gets without opting in; CUfunction_attribute's MAX_DYNAMIC_SHARED_SIZE_BYTES. */
    private static final int DEFAULT_DYNAMIC_SHARED = 48 * 1024;
    private static final int CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;

    private void launch(String symbol, long function, Dim3 grid, Dim3 block, int sharedBytes, long stream, KernelArgs args) {
        String what = symbol + " of " + functionNames.getOrDefault(function, "?") + " grid " + grid + " block " + block
                + " shared " + sharedBytes;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment params = args.pack(arena);
            if (sharedBytes > DEFAULT_DYNAMIC_SHARED) {  // above 48 KB a kernel must opt in, per function
                cu("cuFuncSetAttribute", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT), what, stream(function),
                        CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, sharedBytes);
            }
            if (symbol.equals("cuLaunchKernel")) {
                cu(symbol, FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT,
                        JAVA_INT, ADDRESS, ADDRESS, ADDRESS), what, stream(function), grid.x(), grid.y(), grid.z(), block.x(),
                        block.y(), block.z(), sharedBytes, stream(stream), params, MemorySegment.NULL);
            } else {
                cu(symbol, FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT,
                        JAVA_INT, ADDRESS, ADDRESS), what, stream(function), grid.x(), grid.y(), grid.z(), block.x(), block.y(),
                        block.z(), sharedBytes, stream(stream), params);
            }
        }
    }

    @Override
    public void gemm(Gemm g, long stream) {
        makeCurrent();
        cublas().gemm(g, stream);
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

    /** cuBLAS through FFM: one handle, strided-batched GemmEx with fp32 compute (no TF32). */
    static final class Cublas {
        private static final int CUDA_R_32F = 0;
        private static final int CUDA_R_16F = 2;
        private static final int CUDA_R_16BF = 14;
        private static final int CUBLAS_COMPUTE_32F = 68;
        private static final int CUBLAS_GEMM_DEFAULT = -1;

        private final MethodHandle setStream;
        private final MethodHandle gemm;
        private final MethodHandle statusString;
        private final MemorySegment handle;

        private Cublas(SymbolLookup lib) {
            MethodHandle create = LINKER.downcallHandle(find(lib, "cublasCreate_v2"), FunctionDescriptor.of(JAVA_INT, ADDRESS));
            setStream = LINKER.downcallHandle(find(lib, "cublasSetStream_v2"), FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
            statusString = LINKER.downcallHandle(find(lib, "cublasGetStatusString"), FunctionDescriptor.of(ADDRESS, JAVA_INT));
            gemm = LINKER.downcallHandle(find(lib, "cublasGemmStridedBatchedEx"), FunctionDescriptor.of(JAVA_INT, ADDRESS,
                    JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_LONG,
                    JAVA_INT, JAVA_INT, JAVA_LONG, ADDRESS, JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_INT));
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment h = arena.allocate(ADDRESS);
                status((int) create.invokeExact(h), "cublasCreate_v2");
                handle = h.get(ADDRESS, 0);
            } catch (RuntimeException e) {
                throw e;
            } catch (Throwable t) {
                throw new DriverException("panama cublasCreate_v2: " + t);
            }
        }

        private static MemorySegment find(SymbolLookup lib, String s) {
            return lib.find(s).orElseThrow(() -> new DriverException("panama: the cuBLAS library lacks " + s));
        }

        static Cublas load() {
            List<Path> tried = new ArrayList<>();
            for (Path candidate : candidates()) {
                tried.add(candidate);
                if (Files.isRegularFile(candidate)) {
                    return new Cublas(SymbolLookup.libraryLookup(candidate, Arena.global()));
                }
            }
            for (String soname : List.of("libcublas.so.13", "libcublas.so.12")) {
                try {
                    return new Cublas(SymbolLookup.libraryLookup(soname, Arena.global()));
                } catch (IllegalArgumentException notOnLoaderPath) {
                    tried.add(Path.of(soname));
                }
            }
            throw new DriverException("panama: cuBLAS (libcublas.so.13 or .so.12) was not found; looked at " + tried
                    + "; point -D" + CUBLAS_PROPERTY + " at the library");
        }

        private static List<Path> candidates() {
            List<Path> c = new ArrayList<>();
            Optional.ofNullable(System.getProperty(CUBLAS_PROPERTY)).map(Path::of).ifPresent(c::add);
            List<String> dirs = new ArrayList<>(List.of("/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib",
                    "/usr/lib/x86_64-linux-gnu"));
            Optional.ofNullable(System.getenv("LD_LIBRARY_PATH")).ifPresent(p -> dirs.addAll(List.of(p.split(":"))));
            for (String root : List.of("/usr/local/lib", "/usr/lib", System.getProperty("user.home") + "/.local/lib")) {
                try (var pys = Files.newDirectoryStream(Path.of(root), "python3*")) {
                    for (Path py : pys) {
                        for (String site : List.of("site-packages", "dist-packages")) {
                            dirs.add(py.resolve(site).resolve("nvidia/cublas/lib").toString());
                        }
                    }
                } catch (java.io.IOException | RuntimeException noSuchRoot) {
                    // a root that does not exist has no Python wheels to offer
                }
            }
            for (String d : dirs) {
                if (!d.isEmpty()) {
                    c.add(Path.of(d, "libcublas.so.13"));
                    c.add(Path.of(d, "libcublas.so.12"));
                }
            }
            return c;
        }

        private void status(int rc, String what) {
            if (rc != 0) {
                String text;
                try {
                    text = cString((MemorySegment) statusString.invokeExact(rc));
                } catch (Throwable t) {
                    text = "status " + rc;
                }
                throw new DriverException("panama " + what + ": " + text + " (cublasStatus_t " + rc + ")");
            }
        }

        private static int type(DType t) {
            return switch (t) {
                case F32 -> CUDA_R_32F;
                case F16 -> CUDA_R_16F;
                case BF16 -> CUDA_R_16BF;
                default -> throw new DriverException("panama gemm: unsupported dtype " + t);
            };
        }

        synchronized void gemm(Gemm g, long stream) {
            try (Arena arena = Arena.ofConfined()) {
                status((int) setStream.invokeExact(handle, MemorySegment.ofAddress(stream)), "cublasSetStream_v2");
                MemorySegment alpha = arena.allocateFrom(JAVA_FLOAT, g.alpha());
                MemorySegment beta = arena.allocateFrom(JAVA_FLOAT, g.beta());
                int rc = (int) gemm.invokeExact(handle, g.transA() ? 1 : 0, g.transB() ? 1 : 0, g.m(), g.n(), g.k(), alpha,
                        g.a(), type(g.inputType()), g.lda(), g.strideA(), g.b(), type(g.inputType()), g.ldb(), g.strideB(), beta,
                        g.c(), type(g.outputType()), g.ldc(), g.strideC(), g.batch(), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
                status(rc, "cublasGemmStridedBatchedEx m=" + g.m() + " n=" + g.n() + " k=" + g.k() + " batch=" + g.batch());
            } catch (RuntimeException e) {
                throw e;
            } catch (Throwable t) {
                throw new DriverException("panama cublasGemmStridedBatchedEx: " + t);
            }
        }
    }
}
