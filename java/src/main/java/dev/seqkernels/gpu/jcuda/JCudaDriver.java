package dev.seqkernels.gpu.jcuda;

import dev.seqkernels.DType;
import dev.seqkernels.gpu.DeviceProperties;
import dev.seqkernels.gpu.Dim3;
import dev.seqkernels.gpu.Driver;
import dev.seqkernels.gpu.DriverException;
import dev.seqkernels.gpu.Gemm;
import dev.seqkernels.gpu.KernelArgs;
import dev.seqkernels.gpu.KernelImages;
import jcuda.Pointer;
import jcuda.driver.CUcontext;
import jcuda.driver.CUdevice;
import jcuda.driver.CUdeviceptr;
import jcuda.driver.CUevent;
import jcuda.driver.CUfunction;
import jcuda.driver.CUmodule;
import jcuda.driver.CUstream;
import jcuda.jcublas.JCublas2;
import jcuda.jcublas.cublasHandle;
import jcuda.runtime.cudaStream_t;

import java.lang.foreign.MemorySegment;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;

import static jcuda.driver.JCudaDriver.*;

/**
 * The jcuda binding: {@link Driver} over JCuda's driver API and JCublas (12.6.0 from Maven
 * Central, natives by classifier). JCuda's driver natives need only libcuda.so.1, so they work on
 * newer drivers; JCublas needs libcublas.so.12, which a CUDA-13-only host lacks: then everything
 * but {@link #gemm} works and gemm says so, pointing to the panama binding.
 *
 * <p>Device pointers and streams cross as raw {@code long} addresses ({@link Raw}), so memory and
 * streams from the panama binding or a framework can be handed in. Modules, functions and events
 * are handles this driver numbers. The primary context is made current on each calling thread.
 * Not yet run on a GPU.
 */
public final class JCudaDriver implements Driver {
    private static JCudaDriver instance;
    private static String unavailable;

    private final CUcontext context = new CUcontext();
    private final CUdevice device = new CUdevice();
    private final Map<Long, Long> allocations = new ConcurrentHashMap<>();
    private final Map<Long, CUmodule> modules = new ConcurrentHashMap<>();
    private final Map<Long, CUfunction> functions = new ConcurrentHashMap<>();
    private final Map<Long, String> functionNames = new ConcurrentHashMap<>();
    private final Map<Long, CUevent> events = new ConcurrentHashMap<>();
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

    private static String firstLine(Throwable t) {
        String m = String.valueOf(t.getMessage());
        int nl = m.indexOf('\n');
        return nl < 0 ? m : m.substring(0, nl);
    }

    private static void check(int rc, String what) {
        if (rc != 0) {
            String[] name = new String[1];
            String[] text = new String[1];
            cuGetErrorName(rc, name);
            cuGetErrorString(rc, text);
            throw new DriverException("jcuda " + what + ": " + name[0] + " (" + text[0] + ", CUresult " + rc + ")");
        }
    }

    private void makeCurrent() {
        if (!current.get()) {
            check(cuCtxSetCurrent(context), "cuCtxSetCurrent");
            current.set(true);
        }
    }

    private static CUdeviceptr ptr(long address) {
        return Raw.at(new CUdeviceptr(), address);
    }

    private static CUstream stream(long address) {
        return Raw.at(new CUstream(), address);
    }

    private static Pointer host(MemorySegment segment, long bytes, String call) {
        if (!segment.isNative() || segment.byteSize() < bytes) {
            throw new DriverException("jcuda " + call + ": the host segment must be native memory of at least " + bytes + " bytes");
        }
        return Pointer.to(segment.asSlice(0, bytes).asByteBuffer());
    }

    @Override
    public String name() {
        return "jcuda";
    }

    @Override
    public DeviceProperties properties() {
        makeCurrent();
        byte[] name = new byte[256];
        check(cuDeviceGetName(name, name.length, device), "cuDeviceGetName");
        long[] total = new long[1];
        check(cuDeviceTotalMem(total, device), "cuDeviceTotalMem");
        int len = 0;
        while (len < name.length && name[len] != 0) {
            len++;
        }
        return new DeviceProperties(new String(name, 0, len, java.nio.charset.StandardCharsets.US_ASCII), attribute(75),
                attribute(76), attribute(16), attribute(8), attribute(97), total[0]);
    }

    private int attribute(int attr) {
        int[] v = new int[1];
        check(cuDeviceGetAttribute(v, attr, device), "cuDeviceGetAttribute(" + attr + ")");
        return v[0];
    }

    @Override
    public long malloc(long bytes) {
        makeCurrent();
        CUdeviceptr p = new CUdeviceptr();
        check(cuMemAlloc(p, Math.max(1, bytes)), "cuMemAlloc(" + bytes + " bytes)");
        long address = Raw.address(p);
        allocations.put(address, bytes);
        return address;
    }

    @Override
    public void free(long devicePtr) {
        if (allocations.remove(devicePtr) == null) {
            throw new DriverException("jcuda free: 0x" + Long.toHexString(devicePtr) + " was not allocated by this driver");
        }
        makeCurrent();
        check(cuMemFree(ptr(devicePtr)), "cuMemFree");
    }

    @Override
    public long memoryInUse() {
        return allocations.values().stream().mapToLong(Long::longValue).sum();
    }

    @Override
    public void memset(long devicePtr, int byteValue, long bytes) {
        makeCurrent();
        check(cuMemsetD8(ptr(devicePtr), (byte) byteValue, bytes), "cuMemsetD8");
    }

    @Override
    public void memsetAsync(long devicePtr, int byteValue, long bytes, long stream) {
        makeCurrent();
        check(cuMemsetD8Async(ptr(devicePtr), (byte) byteValue, bytes, stream(stream)), "cuMemsetD8Async");
    }

    @Override
    public void copyHostToDevice(long dst, MemorySegment src, long bytes) {
        makeCurrent();
        check(cuMemcpyHtoD(ptr(dst), host(src, bytes, "copyHostToDevice"), bytes), "cuMemcpyHtoD");
    }

    @Override
    public void copyDeviceToHost(MemorySegment dst, long src, long bytes) {
        makeCurrent();
        check(cuMemcpyDtoH(host(dst, bytes, "copyDeviceToHost"), ptr(src), bytes), "cuMemcpyDtoH");
    }

    @Override
    public void copyDeviceToDevice(long dst, long src, long bytes) {
        makeCurrent();
        check(cuMemcpyDtoD(ptr(dst), ptr(src), bytes), "cuMemcpyDtoD");
    }

    @Override
    public void copyHostToDeviceAsync(long dst, MemorySegment src, long bytes, long stream) {
        makeCurrent();
        check(cuMemcpyHtoDAsync(ptr(dst), host(src, bytes, "copyHostToDeviceAsync"), bytes, stream(stream)), "cuMemcpyHtoDAsync");
    }

    @Override
    public void copyDeviceToHostAsync(MemorySegment dst, long src, long bytes, long stream) {
        makeCurrent();
        check(cuMemcpyDtoHAsync(host(dst, bytes, "copyDeviceToHostAsync"), ptr(src), bytes, stream(stream)), "cuMemcpyDtoHAsync");
    }

    @Override
    public void copyDeviceToDeviceAsync(long dst, long src, long bytes, long stream) {
        makeCurrent();
        check(cuMemcpyDtoDAsync(ptr(dst), ptr(src), bytes, stream(stream)), "cuMemcpyDtoDAsync");
    }

    @Override
    public MemorySegment allocHost(long bytes) {
        makeCurrent();
        Pointer p = new Pointer();
        check(cuMemAllocHost(p, Math.max(1, bytes)), "cuMemAllocHost(" + bytes + " bytes)");
        return MemorySegment.ofAddress(Raw.address(p)).reinterpret(Math.max(1, bytes));
    }

    @Override
    public void freeHost(MemorySegment pinned) {
        makeCurrent();
        check(cuMemFreeHost(Raw.at(new Pointer(), pinned.address())), "cuMemFreeHost");
    }

    @Override
    public long createStream() {
        makeCurrent();
        CUstream s = new CUstream();
        check(cuStreamCreate(s, 1 /* non-blocking */), "cuStreamCreate");
        return Raw.address(s);
    }

    @Override
    public void beginCapture(long s) {
        if (s == 0) {
            throw new DriverException("beginCapture: the default stream cannot be captured; use a created stream");
        }
        makeCurrent();
        check(jcuda.driver.JCudaDriver.cuStreamBeginCapture(stream(s), 1 /* CU_STREAM_CAPTURE_MODE_THREAD_LOCAL */),
                "cuStreamBeginCapture");
    }

    @Override
    public long endCapture(long s) {
        makeCurrent();
        jcuda.driver.CUgraph graph = new jcuda.driver.CUgraph();
        check(jcuda.driver.JCudaDriver.cuStreamEndCapture(stream(s), graph), "cuStreamEndCapture");
        jcuda.driver.CUgraphExec exec = new jcuda.driver.CUgraphExec();
        try {
            check(jcuda.driver.JCudaDriver.cuGraphInstantiate(exec, graph, 0L), "cuGraphInstantiate");
        } finally {
            check(jcuda.driver.JCudaDriver.cuGraphDestroy(graph), "cuGraphDestroy");
        }
        return Raw.address(exec);
    }

    @Override
    public void launchGraph(long graph, long s) {
        makeCurrent();
        check(jcuda.driver.JCudaDriver.cuGraphLaunch(Raw.at(new jcuda.driver.CUgraphExec(), graph), stream(s)), "cuGraphLaunch");
    }

    @Override
    public void destroyGraph(long graph) {
        makeCurrent();
        check(jcuda.driver.JCudaDriver.cuGraphExecDestroy(Raw.at(new jcuda.driver.CUgraphExec(), graph)), "cuGraphExecDestroy");
    }

    @Override
    public void destroyStream(long s) {
        makeCurrent();
        check(cuStreamDestroy(stream(s)), "cuStreamDestroy");
    }

    @Override
    public void synchronize(long s) {
        makeCurrent();
        check(cuStreamSynchronize(stream(s)), "cuStreamSynchronize");
    }

    @Override
    public long createEvent() {
        makeCurrent();
        CUevent e = new CUevent();
        check(cuEventCreate(e, 0), "cuEventCreate");
        long h = handles.getAndIncrement();
        events.put(h, e);
        return h;
    }

    private CUevent event(long h, String call) {
        CUevent e = events.get(h);
        if (e == null) {
            throw new DriverException("jcuda " + call + ": unknown event " + h);
        }
        return e;
    }

    @Override
    public void destroyEvent(long h) {
        makeCurrent();
        check(cuEventDestroy(event(h, "destroyEvent")), "cuEventDestroy");
        events.remove(h);
    }

    @Override
    public void recordEvent(long h, long s) {
        makeCurrent();
        check(cuEventRecord(event(h, "recordEvent"), stream(s)), "cuEventRecord");
    }

    @Override
    public float elapsedMillis(long start, long end) {
        makeCurrent();
        check(cuEventSynchronize(event(end, "elapsedMillis")), "cuEventSynchronize");
        float[] ms = new float[1];
        check(cuEventElapsedTime(ms, event(start, "elapsedMillis"), event(end, "elapsedMillis")), "cuEventElapsedTime");
        return ms[0];
    }

    @Override
    public long loadModule(String family) {
        makeCurrent();
        CUmodule m = new CUmodule();
        check(cuModuleLoadData(m, KernelImages.read(family)), "cuModuleLoadData(" + family + ".fatbin)");
        long h = handles.getAndIncrement();
        modules.put(h, m);
        return h;
    }

    @Override
    public long function(long module, String name) {
        CUmodule m = modules.get(module);
        if (m == null) {
            throw new DriverException("jcuda function: unknown module handle " + module);
        }
        makeCurrent();
        CUfunction f = new CUfunction();
        check(cuModuleGetFunction(f, m, name), "cuModuleGetFunction(" + name + ")");
        long h = handles.getAndIncrement();
        functions.put(h, f);
        functionNames.put(h, name);
        return h;
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

    /** Above 48 KB of dynamic shared memory a kernel must opt in, per function. */
    private void allowSharedMemory(long function, int sharedBytes) {
        if (sharedBytes > 48 * 1024) {
            check(jcuda.driver.JCudaDriver.cuFuncSetAttribute(fn(function),
                    jcuda.driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, sharedBytes),
                    "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES, " + sharedBytes + ") of " + functionNames.get(function));
        }
    }

    @Override
    public void launch(long function, Dim3 grid, Dim3 block, int sharedBytes, long stream, KernelArgs args) {
        makeCurrent();
        allowSharedMemory(function, sharedBytes);
        check(cuLaunchKernel(fn(function), grid.x(), grid.y(), grid.z(), block.x(), block.y(), block.z(), sharedBytes,
                stream(stream), parameters(args), null), "cuLaunchKernel of " + functionNames.get(function) + " grid " + grid
                + " block " + block + " shared " + sharedBytes);
    }

    @Override
    public void launchCooperative(long function, Dim3 grid, Dim3 block, int sharedBytes, long stream, KernelArgs args) {
        makeCurrent();
        allowSharedMemory(function, sharedBytes);
        check(cuLaunchCooperativeKernel(fn(function), grid.x(), grid.y(), grid.z(), block.x(), block.y(), block.z(),
                sharedBytes, stream(stream), parameters(args)), "cuLaunchCooperativeKernel of " + functionNames.get(function)
                + " grid " + grid + " block " + block);
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

    @Override
    public synchronized void gemm(Gemm g, long stream) {
        makeCurrent();
        if (blas == null) {
            try {
                blas = new cublasHandle();
                cublasStatus(JCublas2.cublasCreate(blas), "cublasCreate");
            } catch (LinkageError e) {
                blas = null;
                throw new DriverException("jcuda: JCublas 12.6 needs libcublas.so.12, which this host lacks (" + firstLine(e)
                        + "); use the panama binding, which also takes libcublas.so.13");
            }
        }
        cublasStatus(JCublas2.cublasSetStream(blas, Raw.at(new cudaStream_t(), stream)), "cublasSetStream");
        int rc = JCublas2.cublasGemmStridedBatchedEx(blas, g.transA() ? 1 : 0, g.transB() ? 1 : 0, g.m(), g.n(), g.k(),
                Pointer.to(new float[]{g.alpha()}), ptr(g.a()), cudaType(g.inputType()), g.lda(), g.strideA(), ptr(g.b()),
                cudaType(g.inputType()), g.ldb(), g.strideB(), Pointer.to(new float[]{g.beta()}), ptr(g.c()),
                cudaType(g.outputType()), g.ldc(), g.strideC(), g.batch(), 68 /* CUBLAS_COMPUTE_32F */, -1 /* default algo */);
        cublasStatus(rc, "cublasGemmStridedBatchedEx m=" + g.m() + " n=" + g.n() + " k=" + g.k() + " batch=" + g.batch());
    }

    private static void cublasStatus(int rc, String what) {
        if (rc != 0) {
            throw new DriverException("jcuda " + what + ": " + JCublas2.cublasGetStatusString(rc) + " (cublasStatus_t " + rc + ")");
        }
    }

    /** The process-wide driver stays loaded; closing it does nothing. */
    @Override
    public void close() {
    }
}
