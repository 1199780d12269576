package dev.seqkernels.gpu.jcuda;

import dev.seqkernels.DType;
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
import jcuda.Pointer;
import jcuda.driver.CUcontext;
import jcuda.driver.CUdevice;
import jcuda.driver.CUdeviceptr;
import jcuda.driver.CUevent;
import jcuda.driver.CUfunction;
import jcuda.driver.CUfunction_attribute;
import jcuda.driver.CUgraph;
import jcuda.driver.CUgraphExec;
import jcuda.driver.CUmodule;
import jcuda.driver.CUstream;
import jcuda.jcublas.JCublas2;
import jcuda.jcublas.cublasHandle;
import jcuda.runtime.cudaStream_t;

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
import java.util.concurrent.atomic.AtomicLong;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static jcuda.driver.JCudaDriver.*;

/**
 * The jcuda binding: {@link Driver} over JCuda's driver API and JCublas (12.6.0 from Maven
 * Central, natives by classifier). JCuda's driver natives need only libcuda.so.1, so they work on
 * newer drivers; JCublas needs libcublas.so.12, which a CUDA-13-only host lacks: then everything
 * but {@link #gemm} works and gemm says so, pointing to the panama binding.
 *
 * <p>Device pointers, streams and host memory cross as raw addresses ({@link Raw}), so memory and
 * streams from the panama binding or a framework can be handed in, and host copies of any size
 * (no ByteBuffer, whose size is an int). Modules, functions and events are handles this driver
 * numbers; modules are loaded once per family. The primary context is made current once per
 * platform thread and before every call on a virtual thread (which may change carriers), whose
 * captures are RELAXED. JCuda 12.6 predates cuFuncGetParamInfo (CUDA 12.4), so launch arguments
 * are checked against it through java.lang.foreign on the same libcuda.so.1. GEMMs go through
 * {@code cublasGemmStridedBatchedEx_new}, which takes a cublasComputeType_t (the older entry
 * takes a cudaDataType and maps it itself).
 */
public final class JCudaDriver implements Driver {
    private static JCudaDriver instance;
    private static String unavailable;

    private final CUcontext context = new CUcontext();
    private final CUdevice device = new CUdevice();
    private final Optional<StandIn> standIn;
    private final MethodHandle paramInfo;
    private final DeviceAllocations allocations = new DeviceAllocations("jcuda");
    private final Map<String, Long> moduleHandles = new ConcurrentHashMap<>();
    private final Map<Long, CUmodule> modules = new ConcurrentHashMap<>();
    private final Map<Long, CUfunction> functions = new ConcurrentHashMap<>();
    private final Map<String, Long> functionHandles = new ConcurrentHashMap<>();
    private final Map<Long, String> functionNames = new ConcurrentHashMap<>();
    private final Map<Long, long[]> parameterSizes = new ConcurrentHashMap<>();
    private final Map<Long, CUevent> events = new ConcurrentHashMap<>();
    private final Set<Long> destroyedStreams = ConcurrentHashMap.newKeySet();
    private final AtomicLong handles = new AtomicLong(1);
    private final ThreadLocal<Boolean> current = ThreadLocal.withInitial(() -> false);
    private cublasHandle blas;

    private JCudaDriver() {
        check(cuInit(0), "cuInit");
        int[] count = new int[1];
        check(cuDeviceGetCount(count), "cuDeviceGetCount");
        if (count[0] == 0) {
            throw new DriverException("jcuda: the NVIDIA driver is present but reports no CUDA device");
        }
        check(cuDeviceGet(device, 0), "cuDeviceGet");
        check(cuDevicePrimaryCtxRetain(context, device), "cuDevicePrimaryCtxRetain");
        SymbolLookup cuda = CudaLibrary.lookup("jcuda");  // the libcuda.so.1 JCuda's natives are bound to
        standIn = StandIn.of(cuda);
        paramInfo = cuda.find("cuFuncGetParamInfo").map(f -> Linker.nativeLinker().downcallHandle(f,
                FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG, ADDRESS, ADDRESS))).orElse(null);
    }

    /** The process-wide binding; throws {@link DriverException} with one sentence when it cannot load. */
    public static synchronized JCudaDriver instance() {
        if (instance != null) {
            return instance;
        }
        if (unavailable != null) {
            throw new DriverException(unavailable);
        }
        try {
            CudaLibrary.preloadForJni();
            instance = new JCudaDriver();
            return instance;
        } catch (LinkageError e) {
            unavailable = "jcuda: JCuda's driver natives could not load (" + firstLine(e)
                    + "); they need libcuda.so.1, the NVIDIA driver";
            throw new DriverException(unavailable);
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

    private static String firstLine(Throwable t) {
        String m = String.valueOf(t.getMessage());
        int nl = m.indexOf('\n');
        return nl < 0 ? m : m.substring(0, nl);
    }

    private void check(int rc, String what) {
        if (rc != 0) {
            String[] name = new String[1];
            String[] text = new String[1];
            cuGetErrorName(rc, name);
            cuGetErrorString(rc, text);
            String why = standIn == null ? "" : standIn.map(s -> "; stand-in: " + s.diagnostic()).orElse("");
            throw new DriverException("jcuda " + what + ": " + name[0] + " (" + text[0] + ", CUresult " + rc + ")" + why, rc);
        }
    }

    /** Once per platform thread; before every call on a virtual thread, which may run on another OS thread each time. */
    private void makeCurrent() {
        boolean virtual = Thread.currentThread().isVirtual();
        if (virtual || !current.get()) {
            check(cuCtxSetCurrent(context), "cuCtxSetCurrent");
            if (!virtual) {
                current.set(true);
            }
        }
    }

    /** CUDA_ERROR_INVALID_CONTEXT: the calling OS thread has no (or another) current context. */
    private static final int INVALID_CONTEXT = 201;

    /**
     * A driver call in the primary context; arguments are built before, so little runs between
     * making the context current and the call. A call that still finds no context on its OS thread
     * (a virtual thread moved, or a framework changed the thread's context) makes it current again
     * and is retried once.
     */
    private void cu(java.util.function.IntSupplier call, String what) {
        makeCurrent();
        int rc = call.getAsInt();
        if (rc == INVALID_CONTEXT) {
            check(cuCtxSetCurrent(context), "cuCtxSetCurrent");
            rc = call.getAsInt();
        }
        check(rc, what);
    }

    private static CUdeviceptr ptr(long address) {
        return Raw.at(new CUdeviceptr(), address);
    }

    private CUstream stream(long address, String call) {
        if (destroyedStreams.contains(address)) {
            throw new DriverException("jcuda " + call + ": stream 0x" + Long.toHexString(address) + " was destroyed");
        }
        return Raw.at(new CUstream(), address);
    }

    /** A host segment as a raw pointer (any size; the segment must stay alive until the copy is done). */
    private static Pointer host(MemorySegment segment, long bytes, String call) {
        Driver.checkHostSegment("jcuda", call, segment, bytes, call.startsWith("copyDeviceToHost"));
        return Raw.at(new Pointer(), segment.address());
    }

    @Override
    public String name() {
        return "jcuda";
    }

    @Override
    public DeviceProperties properties() {
        byte[] name = new byte[256];
        cu(() -> cuDeviceGetName(name, name.length, device), "cuDeviceGetName");
        long[] total = new long[1];
        cu(() -> cuDeviceTotalMem(total, device), "cuDeviceTotalMem");
        int len = 0;
        while (len < name.length && name[len] != 0) {
            len++;
        }
        return new DeviceProperties(new String(name, 0, len, java.nio.charset.StandardCharsets.US_ASCII), attribute(75),
                attribute(76), attribute(16), attribute(8), attribute(97), total[0], standIn.isPresent());
    }

    private int attribute(int attr) {
        int[] v = new int[1];
        cu(() -> cuDeviceGetAttribute(v, attr, device), "cuDeviceGetAttribute(" + attr + ")");
        return v[0];
    }

    @Override
    public long malloc(long bytes) {
        if (bytes < 0) {
            throw new DriverException("jcuda malloc: negative size " + bytes);
        }
        CUdeviceptr p = new CUdeviceptr();
        cu(() -> cuMemAlloc(p, Math.max(1, bytes)), "cuMemAlloc(" + bytes + " bytes)");
        long address = Raw.address(p);
        allocations.add(address, bytes);
        return address;
    }

    @Override
    public void free(long devicePtr) {
        long bytes = allocations.remove(devicePtr);  // claimed first: two threads cannot both free it
        CUdeviceptr p = ptr(devicePtr);
        try {
            cu(() -> cuMemFree(p), "cuMemFree");
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
        cu(() -> cuMemsetD8(ptr(devicePtr), (byte) byteValue, bytes), "cuMemsetD8");
    }

    @Override
    public void memsetAsync(long devicePtr, int byteValue, long bytes, long stream) {
        allocations.checkRange("memsetAsync", "destination", devicePtr, bytes);
        CUstream s = stream(stream, "memsetAsync");
        cu(() -> cuMemsetD8Async(ptr(devicePtr), (byte) byteValue, bytes, s), "cuMemsetD8Async");
    }

    @Override
    public void copyHostToDevice(long dst, MemorySegment src, long bytes) {
        Pointer h = host(src, bytes, "copyHostToDevice");
        allocations.checkRange("copyHostToDevice", "destination", dst, bytes);
        cu(() -> cuMemcpyHtoD(ptr(dst), h, bytes), "cuMemcpyHtoD");
    }

    @Override
    public void copyDeviceToHost(MemorySegment dst, long src, long bytes) {
        Pointer h = host(dst, bytes, "copyDeviceToHost");
        allocations.checkRange("copyDeviceToHost", "source", src, bytes);
        cu(() -> cuMemcpyDtoH(h, ptr(src), bytes), "cuMemcpyDtoH");
    }

    @Override
    public void copyDeviceToDevice(long dst, long src, long bytes) {
        allocations.checkRange("copyDeviceToDevice", "destination", dst, bytes);
        allocations.checkRange("copyDeviceToDevice", "source", src, bytes);
        cu(() -> cuMemcpyDtoD(ptr(dst), ptr(src), bytes), "cuMemcpyDtoD");
    }

    @Override
    public void copyHostToDeviceAsync(long dst, MemorySegment src, long bytes, long stream) {
        Pointer h = host(src, bytes, "copyHostToDeviceAsync");
        allocations.checkRange("copyHostToDeviceAsync", "destination", dst, bytes);
        CUstream s = stream(stream, "copyHostToDeviceAsync");
        cu(() -> cuMemcpyHtoDAsync(ptr(dst), h, bytes, s), "cuMemcpyHtoDAsync");
    }

    @Override
    public void copyDeviceToHostAsync(MemorySegment dst, long src, long bytes, long stream) {
        Pointer h = host(dst, bytes, "copyDeviceToHostAsync");
        allocations.checkRange("copyDeviceToHostAsync", "source", src, bytes);
        CUstream s = stream(stream, "copyDeviceToHostAsync");
        cu(() -> cuMemcpyDtoHAsync(h, ptr(src), bytes, s), "cuMemcpyDtoHAsync");
    }

    @Override
    public void copyDeviceToDeviceAsync(long dst, long src, long bytes, long stream) {
        allocations.checkRange("copyDeviceToDeviceAsync", "destination", dst, bytes);
        allocations.checkRange("copyDeviceToDeviceAsync", "source", src, bytes);
        CUstream s = stream(stream, "copyDeviceToDeviceAsync");
        cu(() -> cuMemcpyDtoDAsync(ptr(dst), ptr(src), bytes, s), "cuMemcpyDtoDAsync");
    }

    @Override
    public MemorySegment allocHost(long bytes) {
        Pointer p = new Pointer();
        cu(() -> cuMemAllocHost(p, Math.max(1, bytes)), "cuMemAllocHost(" + bytes + " bytes)");
        return MemorySegment.ofAddress(Raw.address(p)).reinterpret(Math.max(1, bytes));
    }

    @Override
    public void freeHost(MemorySegment pinned) {
        cu(() -> cuMemFreeHost(Raw.at(new Pointer(), pinned.address())), "cuMemFreeHost");
    }

    @Override
    public long createStream() {
        CUstream s = new CUstream();
        cu(() -> cuStreamCreate(s, 1 /* non-blocking */), "cuStreamCreate");
        long handle = Raw.address(s);
        destroyedStreams.remove(handle);  // the driver may hand out a destroyed stream's address again
        return handle;
    }

    @Override
    public void beginCapture(long s) {
        if (s == 0) {
            throw new DriverException("beginCapture: the default stream cannot be captured; use a created stream");
        }
        int mode = Thread.currentThread().isVirtual() ? 2 /* RELAXED */ : 1 /* THREAD_LOCAL */;
        CUstream captured = stream(s, "beginCapture");
        cu(() -> cuStreamBeginCapture(captured, mode), "cuStreamBeginCapture");
    }

    @Override
    public long endCapture(long s) {
        CUstream captured = stream(s, "endCapture");
        CUgraph graph = new CUgraph();
        cu(() -> cuStreamEndCapture(captured, graph), "cuStreamEndCapture");
        CUgraphExec exec = new CUgraphExec();
        try {
            cu(() -> cuGraphInstantiate(exec, graph, 0L), "cuGraphInstantiate");
        } finally {
            cu(() -> cuGraphDestroy(graph), "cuGraphDestroy");
        }
        return Raw.address(exec);
    }

    @Override
    public void launchGraph(long graph, long s) {
        CUstream target = stream(s, "launchGraph");
        cu(() -> cuGraphLaunch(Raw.at(new CUgraphExec(), graph), target), "cuGraphLaunch");
    }

    @Override
    public void destroyGraph(long graph) {
        cu(() -> cuGraphExecDestroy(Raw.at(new CUgraphExec(), graph)), "cuGraphExecDestroy");
    }

    @Override
    public void destroyStream(long s) {
        CUstream target = stream(s, "destroyStream");
        cu(() -> cuStreamDestroy(target), "cuStreamDestroy");
        destroyedStreams.add(s);
    }

    @Override
    public void synchronize(long s) {
        CUstream target = stream(s, "synchronize");
        cu(() -> cuStreamSynchronize(target), "cuStreamSynchronize");
    }

    @Override
    public long createEvent() {
        CUevent e = new CUevent();
        cu(() -> cuEventCreate(e, 0), "cuEventCreate");
        long h = handles.getAndIncrement();
        events.put(h, e);
        return h;
    }

    private CUevent event(long h, String call) {
        CUevent e = events.get(h);
        if (e == null) {
            throw new DriverException("jcuda " + call + ": unknown event " + h + " (destroyed, or not created by this binding)");
        }
        return e;
    }

    @Override
    public void destroyEvent(long h) {
        CUevent e = events.remove(h);  // claimed first: two threads cannot both destroy it
        if (e == null) {
            throw new DriverException("jcuda destroyEvent: unknown event " + h + " (destroyed, or not created by this binding)");
        }
        try {
            cu(() -> cuEventDestroy(e), "cuEventDestroy");
        } catch (DriverException failed) {
            events.put(h, e);
            throw failed;
        }
    }

    @Override
    public void recordEvent(long h, long s) {
        CUevent e = event(h, "recordEvent");
        CUstream target = stream(s, "recordEvent");
        cu(() -> cuEventRecord(e, target), "cuEventRecord");
    }

    @Override
    public void waitEvent(long s, long h) {
        CUstream target = stream(s, "waitEvent");
        CUevent e = event(h, "waitEvent");
        cu(() -> cuStreamWaitEvent(target, e, 0), "cuStreamWaitEvent");
    }

    @Override
    public float elapsedMillis(long start, long end) {
        CUevent s = event(start, "elapsedMillis");
        CUevent e = event(end, "elapsedMillis");
        cu(() -> cuEventSynchronize(e), "cuEventSynchronize");
        float[] ms = new float[1];
        cu(() -> cuEventElapsedTime(ms, s, e), "cuEventElapsedTime");
        return ms[0];
    }

    @Override
    public long loadModule(String family) {
        return moduleHandles.computeIfAbsent(family, f -> {
            byte[] image = KernelImages.read(f);
            CUmodule m = new CUmodule();
            cu(() -> cuModuleLoadData(m, image), "cuModuleLoadData(" + f + ".fatbin)");
            long h = handles.getAndIncrement();
            modules.put(h, m);
            return h;
        });
    }

    /** One handle per (module, kernel), as the driver has one CUfunction for it: backends asking again get the same. */
    @Override
    public long function(long module, String name) {
        CUmodule m = modules.get(module);
        if (m == null) {
            throw new DriverException("jcuda function: unknown module handle " + module);
        }
        return functionHandles.computeIfAbsent(module + ":" + name, key -> {
            CUfunction f = new CUfunction();
            cu(() -> cuModuleGetFunction(f, m, name), "cuModuleGetFunction(" + name + ")");
            long h = handles.getAndIncrement();
            functions.put(h, f);
            functionNames.put(h, name);
            return h;
        });
    }

    /** The kernel's parameter sizes from cuFuncGetParamInfo, or null when the driver predates it. */
    private long[] parameterSizes(long function) {
        if (paramInfo == null) {
            return null;
        }
        return parameterSizes.computeIfAbsent(function, h -> {
            MemorySegment raw = MemorySegment.ofAddress(Raw.address(fn(h)));
            List<Long> sizes = new ArrayList<>();
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment offset = arena.allocate(JAVA_LONG);
                MemorySegment size = arena.allocate(JAVA_LONG);
                makeCurrent();
                // CUDA_ERROR_INVALID_VALUE past the last parameter: that is how the count is found.
                for (int rc; (rc = (int) paramInfo.invokeExact(raw, (long) sizes.size(), offset, size)) != 1; ) {
                    check(rc, "cuFuncGetParamInfo(" + functionNames.getOrDefault(h, "?") + ", " + sizes.size() + ")");
                    sizes.add(size.get(JAVA_LONG, 0));
                }
            } catch (RuntimeException e) {
                throw e;
            } catch (Throwable t) {
                throw new DriverException("jcuda cuFuncGetParamInfo: " + t);
            }
            return sizes.stream().mapToLong(Long::longValue).toArray();
        });
    }

    /** KernelArgs as JCuda's kernel parameter pointer (a pointer to pointers to each value). */
    private static Pointer parameters(KernelArgs args) {
        Pointer[] values = args.args().stream().map(a -> switch (a.kind()) {
            case POINTER -> Pointer.to(ptr(a.bits()));
            case INT -> Pointer.to(new int[]{(int) a.bits()});
            case LONG -> Pointer.to(new long[]{a.bits()});
            case FLOAT -> Pointer.to(new float[]{Float.intBitsToFloat((int) a.bits())});
            case STRUCT -> Pointer.to(a.words());
        }).toArray(Pointer[]::new);
        return Pointer.to(values);
    }

    /** Per function: the dynamic shared memory it may use now (48 KB minus its static shared memory until raised). */
    private final Map<Long, Integer> dynamicSharedLimits = new ConcurrentHashMap<>();

    /**
     * Opts {@code function} in to {@code bytes} of dynamic shared memory when that is above its
     * limit (cuFuncSetAttribute, per function). The limit is only ever raised, under a lock, so
     * concurrent launches of one function with different sizes cannot lower it under each other.
     */
    private void allowDynamicShared(long function, int bytes) {
        CUfunction f = fn(function);
        int limit = dynamicSharedLimits.computeIfAbsent(function, h -> {
            int[] staticShared = new int[1];
            cu(() -> cuFuncGetAttribute(staticShared, CUfunction_attribute.CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, f),
                    "cuFuncGetAttribute(SHARED_SIZE_BYTES)");
            return 48 * 1024 - staticShared[0];
        });
        if (bytes > limit) {
            synchronized (dynamicSharedLimits) {
                if (bytes > dynamicSharedLimits.get(function)) {
                    cu(() -> cuFuncSetAttribute(f, CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes),
                            "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES, " + bytes + ") of " + functionNames.get(function));
                    dynamicSharedLimits.put(function, bytes);
                }
            }
        }
    }

    @Override
    public void launch(long function, Dim3 grid, Dim3 block, int sharedBytes, long stream, KernelArgs args) {
        String name = functionNames.getOrDefault(function, "?");
        args.check("jcuda", name, parameterSizes(function));
        CUstream s = stream(stream, "launch");
        CUfunction f = fn(function);
        Pointer params = parameters(args);
        allowDynamicShared(function, sharedBytes);
        cu(() -> cuLaunchKernel(f, grid.x(), grid.y(), grid.z(), block.x(), block.y(), block.z(), sharedBytes, s, params, null),
                "cuLaunchKernel of " + name + " grid " + grid + " block " + block + " shared " + sharedBytes);
    }

    @Override
    public void launchCooperative(long function, Dim3 grid, Dim3 block, int sharedBytes, long stream, KernelArgs args) {
        String name = functionNames.getOrDefault(function, "?");
        args.check("jcuda", name, parameterSizes(function));
        CUstream s = stream(stream, "launchCooperative");
        CUfunction f = fn(function);
        Pointer params = parameters(args);
        allowDynamicShared(function, sharedBytes);
        cu(() -> cuLaunchCooperativeKernel(f, grid.x(), grid.y(), grid.z(), block.x(), block.y(), block.z(), sharedBytes, s, params),
                "cuLaunchCooperativeKernel of " + name + " grid " + grid + " block " + block);
    }

    @Override
    public int maxActiveBlocksPerMultiprocessor(long function, int blockThreads, int dynamicSharedBytes) {
        allowDynamicShared(function, dynamicSharedBytes);  // the driver counts a launch it would refuse as 0 blocks
        CUfunction f = fn(function);
        int[] n = new int[1];
        cu(() -> cuOccupancyMaxActiveBlocksPerMultiprocessor(n, f, blockThreads, dynamicSharedBytes),
                "cuOccupancyMaxActiveBlocksPerMultiprocessor of " + functionNames.get(function));
        return n[0];
    }

    private CUfunction fn(long h) {
        CUfunction f = functions.get(h);
        if (f == null) {
            throw new DriverException("jcuda launch: unknown function handle " + h);
        }
        return f;
    }

    private static int cudaType(DType t) {
        return switch (t) {
            case F32 -> 0;
            case F16 -> 2;
            case BF16 -> 14;
            default -> throw new DriverException("jcuda gemm: unsupported dtype " + t);
        };
    }

    /** cublasComputeType_t CUBLAS_COMPUTE_32F: fp32 accumulation, no TF32. */
    private static final int CUBLAS_COMPUTE_32F = 68;
    /** cublasComputeType_t CUBLAS_COMPUTE_32F_FAST_TF32: F32 operands rounded to TF32, fp32 accumulation (Gemm.tf32). */
    private static final int CUBLAS_COMPUTE_32F_FAST_TF32 = 77;

    /** Synchronized: one cuBLAS handle; the context is made current once this lock is held, where cuBLAS launches. */
    @Override
    public synchronized void gemm(Gemm g, long stream) {
        CUstream s = stream(stream, "gemm");
        makeCurrent();
        if (blas == null) {
            try {
                CudaLibrary.preloadBeside("libcublas.so.12");
                blas = new cublasHandle();
                cublasStatus(JCublas2.cublasCreate(blas), "cublasCreate");
            } catch (LinkageError e) {
                blas = null;
                throw new DriverException("jcuda: JCublas 12.6 needs libcublas.so.12, which this host lacks (" + firstLine(e)
                        + "); use the panama binding, which also takes libcublas.so.13");
            }
        }
        cublasStatus(JCublas2.cublasSetStream(blas, Raw.at(new cudaStream_t(), Raw.address(s))), "cublasSetStream");
        int rc = JCublas2.cublasGemmStridedBatchedEx_new(blas, g.transA() ? 1 : 0, g.transB() ? 1 : 0, g.m(), g.n(), g.k(),
                Pointer.to(new float[]{g.alpha()}), ptr(g.a()), cudaType(g.inputType()), g.lda(), g.strideA(), ptr(g.b()),
                cudaType(g.inputType()), g.ldb(), g.strideB(), Pointer.to(new float[]{g.beta()}), ptr(g.c()),
                cudaType(g.outputType()), g.ldc(), g.strideC(), g.batch(), g.tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F,
                -1 /* default algo */);
        cublasStatus(rc, "cublasGemmStridedBatchedEx m=" + g.m() + " n=" + g.n() + " k=" + g.k() + " batch=" + g.batch());
    }

    private static void cublasStatus(int rc, String what) {
        if (rc != 0) {
            throw new DriverException("jcuda " + what + ": " + JCublas2.cublasGetStatusString(rc) + " (cublasStatus_t " + rc + ")", rc);
        }
    }

    /** The process-wide driver stays loaded; closing it does nothing. */
    @Override
    public void close() {
    }
}
