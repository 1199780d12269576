package dev.seqkernels.gpu.emu;

import dev.seqkernels.gpu.DeviceProperties;
import dev.seqkernels.gpu.Dim3;
import dev.seqkernels.gpu.Driver;
import dev.seqkernels.gpu.DriverException;
import dev.seqkernels.gpu.Gemm;
import dev.seqkernels.gpu.KernelArgs;
import dev.seqkernels.gpu.KernelReport;

import java.io.IOException;
import java.io.InputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * The emu binding: {@link Driver} over the SIMT emulator library ({@code libseqk_emu.so}, built
 * from native/ and cuda/ by g++ and shipped as a class-path resource), through java.lang.foreign.
 *
 * <p>Device memory is host memory owned by the emulator (poisoned with NaN and guarded, see
 * native/emu/runtime.cpp); streams and events exist as handles, and every call completes before
 * it returns. The emulator is single-threaded: calls from several Java threads are serialized on
 * the one process-wide instance, which {@link #instance()} returns.
 */
public final class EmuDriver implements Driver {
    private static final String RESOURCE = "/dev/seqkernels/native/linux-x86_64/libseqk_emu.so";
    /**
     * The GPU the emulator reports, read once when it is first loaded: {@code sm_90} (the default:
     * an H100's limits) or {@code sm_75} (a T4's: compute capability 7.5, so no kernel choice picks
     * a 16-bit or TF32 tensor-core kernel; 64 KB of shared memory per block and per multiprocessor,
     * 1,024 threads and 16 blocks per multiprocessor, which the launch and occupancy checks hold
     * kernels to; and GEMMs that allow TF32 computed in fp32, as cuBLAS's FAST_TF32 allows but does
     * not require it). Kernels run the same either way. {@code mvn test -Dseqkernels.emu.device=sm_75}
     * runs the GPU tests as on a T4.
     */
    public static final String DEVICE_PROPERTY = "seqkernels.emu.device";
    /**
     * The multiprocessors the emulator reports, read when it is first loaded (as {@link #DEVICE_PROPERTY}
     * is): a count from 1 to 264, or this machine's processors when unset. The launch plans (persistent grids, split-KV
     * splits) follow it, so a value fixes them across machines: the core's test run sets the stand-in
     * driver's 4, so the grids the stand-in runs are the ones race-checked here.
     */
    public static final String MULTIPROCESSORS_PROPERTY = "seqkernels.emu.multiprocessors";
    /** A T4's shared memory per block (opt-in included) and per multiprocessor; threads and blocks per multiprocessor. */
    private static final int SM75_SHARED = 65536;
    private static final int SM75_THREADS_PER_SM = 1024;
    private static final int SM75_BLOCKS_PER_SM = 16;
    private static EmuDriver instance;

    private final MethodHandle lastError;
    private final MethodHandle setChecking;
    private final MethodHandle setSchedule;
    private final MethodHandle kernelCount;
    private final MethodHandle kernelName;
    private final MethodHandle kernelArity;
    private final MethodHandle kernelParam;
    private final MethodHandle malloc;
    private final MethodHandle free;
    private final MethodHandle memoryInUse;
    private final MethodHandle takePeak;
    private final MethodHandle takeLdmatrixCounts;
    private final MethodHandle memcpy;
    private final MethodHandle copyToDevice;
    private final MethodHandle copyToHost;
    private final MethodHandle memset;
    private final MethodHandle launch;
    private final MethodHandle gemm;
    private final List<String> functions = new ArrayList<>();
    private final List<long[]> parameterSizes = new ArrayList<>();
    private final Map<Long, Long> events = new HashMap<>();
    private final Map<Long, Arena> pinned = new java.util.concurrent.ConcurrentHashMap<>();
    /** Streams being captured, with the work recorded so far; and the graphs made of such recordings. */
    private final Map<Long, List<Runnable>> capturing = new HashMap<>();
    private final Map<Long, List<Runnable>> graphs = new HashMap<>();
    private long nextHandle = 1;
    private boolean checking = true;
    private final DeviceProperties device;

    private EmuDriver(SymbolLookup lib, DeviceProperties device) {
        this.device = device;
        Linker linker = Linker.nativeLinker();
        lastError = bind(linker, lib, "seqk_emu_last_error", FunctionDescriptor.of(ADDRESS));
        setChecking = bind(linker, lib, "seqk_emu_set_checking", FunctionDescriptor.ofVoid(JAVA_INT));
        setSchedule = bind(linker, lib, "seqk_emu_set_schedule", FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_INT));
        kernelCount = bind(linker, lib, "seqk_emu_kernel_count", FunctionDescriptor.of(JAVA_INT));
        kernelName = bind(linker, lib, "seqk_emu_kernel_name", FunctionDescriptor.of(ADDRESS, JAVA_INT));
        kernelArity = bind(linker, lib, "seqk_emu_kernel_arity", FunctionDescriptor.of(JAVA_INT, ADDRESS));
        kernelParam = bind(linker, lib, "seqk_emu_kernel_param", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, ADDRESS,
                ADDRESS, ADDRESS));
        malloc = bind(linker, lib, "seqk_emu_malloc", FunctionDescriptor.of(JAVA_INT, JAVA_LONG, ADDRESS));
        free = bind(linker, lib, "seqk_emu_free", FunctionDescriptor.of(JAVA_INT, JAVA_LONG));
        memoryInUse = bind(linker, lib, "seqk_emu_memory_in_use", FunctionDescriptor.ofVoid(ADDRESS, ADDRESS));
        takePeak = bind(linker, lib, "seqk_emu_take_peak", FunctionDescriptor.of(JAVA_LONG));
        takeLdmatrixCounts = bind(linker, lib, "seqk_emu_take_ldmatrix_counts", FunctionDescriptor.ofVoid(ADDRESS, ADDRESS, ADDRESS));
        memcpy = bind(linker, lib, "seqk_emu_memcpy", FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_INT));
        copyToDevice = bind(linker, lib, "seqk_emu_copy_to_device", FunctionDescriptor.of(JAVA_INT, JAVA_LONG, ADDRESS, JAVA_LONG));
        copyToHost = bind(linker, lib, "seqk_emu_copy_to_host", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG, JAVA_LONG));
        memset = bind(linker, lib, "seqk_emu_memset", FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_INT, JAVA_LONG));
        launch = bind(linker, lib, "seqk_emu_launch", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT, JAVA_INT,
                JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT));
        gemm = bind(linker, lib, "seqk_emu_gemm", FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT,
                JAVA_INT, JAVA_FLOAT, JAVA_LONG, JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_INT, JAVA_LONG, JAVA_FLOAT, JAVA_LONG,
                JAVA_INT, JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT));
    }

    /** The process-wide emulator; loads the library on first use. */
    public static synchronized EmuDriver instance() {
        if (instance == null) {
            DeviceProperties device = reportedDevice();  // a bad value is refused before the library is extracted
            instance = new EmuDriver(SymbolLookup.libraryLookup(extractLibrary(), Arena.global()), device);
        }
        return instance;
    }

    /** Whether the emulator library was built into this jar (g++ was present at build time). */
    public static boolean libraryPresent() {
        return EmuDriver.class.getResource(RESOURCE) != null;
    }

    private static Path extractLibrary() {
        try (InputStream in = EmuDriver.class.getResourceAsStream(RESOURCE)) {
            if (in == null) {
                throw new DriverException("emu: the SIMT emulator library is not in this build (" + RESOURCE
                        + "); it is built by tools/build-emulator.sh, which needs g++");
            }
            Path dir = Files.createTempDirectory("seqkernels-emu");
            Path lib = dir.resolve("libseqk_emu.so");
            Files.copy(in, lib, StandardCopyOption.REPLACE_EXISTING);
            lib.toFile().deleteOnExit();
            dir.toFile().deleteOnExit();
            return lib;
        } catch (IOException e) {
            throw new DriverException("emu: could not extract the emulator library: " + e.getMessage());
        }
    }

    private static MethodHandle bind(Linker linker, SymbolLookup lib, String symbol, FunctionDescriptor fd) {
        MemorySegment address = lib.find(symbol).orElseThrow(
                () -> new DriverException("emu: the emulator library lacks " + symbol + " (stale build?)"));
        return linker.downcallHandle(address, fd);
    }

    private void check(int rc, String call) {
        if (rc != 0) {
            throw new DriverException("emu " + call + ": " + error());
        }
    }

    private String error() {
        try {
            return ((MemorySegment) lastError.invokeExact()).reinterpret(Long.MAX_VALUE).getString(0);
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    private static RuntimeException rethrow(Throwable t) {
        if (t instanceof RuntimeException r) {
            return r;
        }
        if (t instanceof Error e) {
            throw e;
        }
        return new IllegalStateException(t);
    }

    @Override
    public String name() {
        return "emu";
    }

    @Override
    public DeviceProperties properties() {
        return device;
    }

    /**
     * The properties of the {@link #DEVICE_PROPERTY} device with {@link #MULTIPROCESSORS_PROPERTY}
     * multiprocessors; a device other than sm_90 or sm_75, or a count that is not 1 to 264, is refused by name.
     */
    public static DeviceProperties reportedDevice() {
        String name = System.getProperty(DEVICE_PROPERTY, "sm_90");
        String count = System.getProperty(MULTIPROCESSORS_PROPERTY);
        int cpus;
        if (count == null) {
            cpus = Runtime.getRuntime().availableProcessors();
        } else {
            try {
                cpus = Integer.parseInt(count.strip());
            } catch (NumberFormatException e) {
                cpus = 0;
            }
            if (cpus < 1 || cpus > 264) {
                throw new DriverException("emu: " + MULTIPROCESSORS_PROPERTY + " must be a count from 1 to 264, not '" + count + "'");
            }
        }
        long memory = Runtime.getRuntime().maxMemory();
        return switch (name) {
            case "sm_90" -> new DeviceProperties("seqkernels SIMT emulator (sm_90 limits)", 9, 0, cpus, 49152,
                    KernelReport.SM90_SHARED_PER_BLOCK_OPTIN, memory, true);
            case "sm_75" -> new DeviceProperties("seqkernels SIMT emulator (sm_75 limits)", 7, 5, cpus, 49152, SM75_SHARED, memory, true);
            default -> throw new DriverException("emu: " + DEVICE_PROPERTY + " must be sm_90 or sm_75, not '" + name + "'");
        };
    }

    private boolean turing() {
        return device.computeMajor() == 7;
    }

    /** The order in which a block's threads run between barriers and collectives (native/emu/seqk_emu.h). */
    public enum Schedule {
        /** Thread 0, 1, 2, ... at every pass (the default). */
        ROUND_ROBIN,
        /** The last thread first. */
        REVERSE,
        /** A new shuffle, from the seed, at every pass. */
        RANDOM,
        /** One warp runs until every lane of it blocks, then the next: warps drift far apart. */
        WARP_AHEAD
    }

    /**
     * Sets the schedule for the launches that follow, its seed (for RANDOM), and whether cp.async
     * copies land when issued rather than when waited for. The checks do not depend on it; the
     * data a racy kernel reads does.
     */
    public synchronized void setSchedule(Schedule schedule, long seed, boolean cpAsyncLandsAtIssue) {
        try {
            check((int) setSchedule.invokeExact(schedule.ordinal(), seed, cpAsyncLandsAtIssue ? 1 : 0), "setSchedule");
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** Turns the checks on or off: guards, bounds, alignment, races, collectives, launch resources (on by default). */
    public synchronized void setChecking(boolean on) {
        try {
            setChecking.invokeExact(on ? 1 : 0);
            checking = on;
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** Every kernel the emulator library holds, by extern "C" name. */
    public synchronized List<String> kernelNames() {
        try {
            int n = (int) kernelCount.invokeExact();
            List<String> names = new ArrayList<>(n);
            for (int i = 0; i < n; i++) {
                names.add(((MemorySegment) kernelName.invokeExact(i)).reinterpret(Long.MAX_VALUE).getString(0));
            }
            return names;
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    @Override
    public synchronized long malloc(long bytes) {
        if (bytes < 0) {
            throw new DriverException("emu malloc: negative size " + bytes);
        }
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment out = arena.allocate(JAVA_LONG);
            check((int) malloc.invokeExact(bytes, out), "malloc(" + bytes + ")");
            return out.get(JAVA_LONG, 0);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    @Override
    public synchronized void free(long devicePtr) {
        try {
            check((int) free.invokeExact(devicePtr), "free");
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    @Override
    public synchronized long memoryInUse() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment bytes = arena.allocate(JAVA_LONG);
            MemorySegment count = arena.allocate(JAVA_LONG);
            memoryInUse.invokeExact(bytes, count);
            return bytes.get(JAVA_LONG, 0);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** The most device memory in use at once since the previous call (bytes); counting starts anew. */
    public synchronized long takePeakMemory() {
        try {
            return (long) takePeak.invokeExact();
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /**
     * The ldmatrix instructions run since the previous call (one per warp), the 8x8 matrices they
     * loaded and the shared-memory wavefronts they took (native/emu/seqk_emu.h says how a
     * matrix's rows are counted); counting starts anew.
     */
    public record LdmatrixCounts(long instructions, long matrices, long wavefronts) {
        /** Wavefronts per matrix: 1.0 when every ldmatrix was free of bank conflicts; NaN when none ran. */
        public double wavefrontsPerMatrix() {
            return matrices == 0 ? Double.NaN : (double) wavefronts / matrices;
        }
    }

    /** See {@link LdmatrixCounts}. */
    public synchronized LdmatrixCounts takeLdmatrixCounts() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment counts = arena.allocate(JAVA_LONG, 3);
            takeLdmatrixCounts.invokeExact(counts, counts.asSlice(8), counts.asSlice(16));
            return new LdmatrixCounts(counts.get(JAVA_LONG, 0), counts.get(JAVA_LONG, 8), counts.get(JAVA_LONG, 16));
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    @Override
    public synchronized void memset(long devicePtr, int byteValue, long bytes) {
        try {
            check((int) memset.invokeExact(devicePtr, byteValue, bytes), "memset");
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    @Override
    public void memsetAsync(long devicePtr, int byteValue, long bytes, long stream) {
        if (!captured(stream, () -> memset(devicePtr, byteValue, bytes))) {
            memset(devicePtr, byteValue, bytes);
        }
    }

    /** Records {@code work} when {@code stream} is being captured (and says so); otherwise leaves it to the caller. */
    private synchronized boolean captured(long stream, Runnable work) {
        List<Runnable> recording = capturing.get(stream);
        if (recording == null) {
            return false;
        }
        recording.add(work);
        return true;
    }

    /** A launch recorded with its own copy of the arguments (the caller may go on appending to them). */
    private synchronized boolean capturedLaunch(long stream, long function, Dim3 grid, Dim3 block, int sharedBytes,
                                                KernelArgs args, boolean cooperative) {
        if (!capturing.containsKey(stream)) {
            return false;
        }
        KernelArgs kept = args.copy();
        return captured(stream, () -> run(function, grid, block, sharedBytes, kept, cooperative));
    }

    @Override
    public synchronized void beginCapture(long stream) {
        if (stream == 0) {
            throw new DriverException("emu beginCapture: the default stream cannot be captured; use a created stream");
        }
        if (capturing.containsKey(stream)) {
            throw new DriverException("emu beginCapture: stream " + stream + " is already being captured");
        }
        capturing.put(stream, new ArrayList<>());
    }

    @Override
    public synchronized long endCapture(long stream) {
        List<Runnable> recording = capturing.remove(stream);
        if (recording == null) {
            throw new DriverException("emu endCapture: stream " + stream + " is not being captured");
        }
        long graph = nextHandle++;
        graphs.put(graph, List.copyOf(recording));
        return graph;
    }

    @Override
    public void launchGraph(long graph, long stream) {
        List<Runnable> work;
        synchronized (this) {
            work = graphs.get(graph);
        }
        if (work == null) {
            throw new DriverException("emu launchGraph: unknown graph " + graph);
        }
        if (!captured(stream, () -> launchGraph(graph, stream))) {
            work.forEach(Runnable::run);
        }
    }

    @Override
    public synchronized void destroyGraph(long graph) {
        if (graphs.remove(graph) == null) {
            throw new DriverException("emu destroyGraph: unknown graph " + graph);
        }
    }

    private synchronized void copy(long dst, long src, long bytes, int kind, String call) {
        try {
            check((int) memcpy.invokeExact(dst, src, bytes, kind), call);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /**
     * Host memory crosses as a segment (ADDRESS), not as a raw address: the JDK keeps its arena
     * alive for the call, so a concurrent close fails cleanly instead of unmapping under the copy.
     */
    @Override
    public void copyHostToDevice(long dst, MemorySegment src, long bytes) {
        hostCopy("copyHostToDevice", src, bytes, false, () -> (int) copyToDevice.invokeExact(dst, src, bytes));
    }

    @Override
    public void copyDeviceToHost(MemorySegment dst, long src, long bytes) {
        hostCopy("copyDeviceToHost", dst, bytes, true, () -> (int) copyToHost.invokeExact(dst, src, bytes));
    }

    /** A native copy with one host side; returns the emulator's status. */
    private interface HostCopy {
        int run() throws Throwable;
    }

    private synchronized void hostCopy(String call, MemorySegment host, long bytes, boolean written, HostCopy copy) {
        Driver.checkHostSegment("emu", call, host, bytes, written);
        try {
            check(copy.run(), call);
        } catch (IllegalStateException e) {
            throw new DriverException("emu " + call + ": the host segment's arena was closed during the call (" + e.getMessage() + ")");
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    @Override
    public void copyDeviceToDevice(long dst, long src, long bytes) {
        copy(dst, src, bytes, 2, "copyDeviceToDevice");
    }

    @Override
    public void copyHostToDeviceAsync(long dst, MemorySegment src, long bytes, long stream) {
        copyHostToDevice(dst, src, bytes);
    }

    @Override
    public void copyDeviceToHostAsync(MemorySegment dst, long src, long bytes, long stream) {
        copyDeviceToHost(dst, src, bytes);
    }

    @Override
    public void copyDeviceToDeviceAsync(long dst, long src, long bytes, long stream) {
        if (!captured(stream, () -> copyDeviceToDevice(dst, src, bytes))) {
            copyDeviceToDevice(dst, src, bytes);
        }
    }

    /** The emulator has no DMA: pinned memory is ordinary native memory, tracked so freeHost can check it. */
    @Override
    public MemorySegment allocHost(long bytes) {
        Arena arena = Arena.ofShared();
        MemorySegment s = arena.allocate(Math.max(1, bytes), 64);
        pinned.put(s.address(), arena);
        return s;
    }

    @Override
    public void freeHost(MemorySegment segment) {
        Arena arena = pinned.remove(segment.address());
        if (arena == null) {
            throw new DriverException("emu freeHost: the segment was not allocated by allocHost");
        }
        arena.close();
    }

    @Override
    public synchronized long createStream() {
        return nextHandle++;
    }

    @Override
    public void destroyStream(long stream) {
    }

    @Override
    public synchronized void synchronize(long stream) {
        if (capturing.containsKey(stream)) {
            throw new DriverException("emu synchronize: stream " + stream + " is being captured");
        }
    }

    @Override
    public synchronized long createEvent() {
        long h = nextHandle++;
        events.put(h, -1L);
        return h;
    }

    @Override
    public synchronized void destroyEvent(long event) {
        if (events.remove(event) == null) {
            throw new DriverException("emu destroyEvent: unknown event " + event);
        }
    }

    @Override
    public synchronized void recordEvent(long event, long stream) {
        if (!events.containsKey(event)) {
            throw new DriverException("emu recordEvent: unknown event " + event);
        }
        events.put(event, System.nanoTime());
    }

    /**
     * Work runs when issued here, so a wait orders nothing; the event must exist and (stricter than
     * CUDA, where such a wait is a no-op) have been recorded, since a wait on an unrecorded event
     * orders nothing on a GPU either and is always a bug in the caller.
     */
    @Override
    public synchronized void waitEvent(long stream, long event) {
        Long recorded = events.get(event);
        if (recorded == null) {
            throw new DriverException("emu waitEvent: unknown event " + event);
        }
        if (recorded < 0) {
            throw new DriverException("emu waitEvent: event " + event + " was never recorded, so the wait would order nothing");
        }
    }

    @Override
    public synchronized float elapsedMillis(long start, long end) {
        Long s = events.get(start);
        Long e = events.get(end);
        if (s == null || e == null || s < 0 || e < 0) {
            throw new DriverException("emu elapsedMillis: both events must exist and be recorded");
        }
        return (e - s) / 1e6f;
    }

    @Override
    public long loadModule(String family) {
        // The emulator library holds every family; the handle only names it.
        return family.hashCode();
    }

    @Override
    public synchronized long function(long module, String name) {
        long[] sizes;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment cName = arena.allocateFrom(name);
            int arity = (int) kernelArity.invokeExact(cName);
            if (arity < 0) {
                throw new DriverException("emu function: no kernel named " + name + " in the emulator library");
            }
            sizes = new long[arity];
            MemorySegment size = arena.allocate(JAVA_INT);
            MemorySegment align = arena.allocate(JAVA_INT);
            MemorySegment pointer = arena.allocate(JAVA_INT);
            for (int i = 0; i < arity; i++) {
                check((int) kernelParam.invokeExact(cName, i, size, align, pointer), "function(" + name + ")");
                sizes[i] = Integer.toUnsignedLong(size.get(JAVA_INT, 0));
            }
        } catch (Throwable t) {
            throw rethrow(t);
        }
        functions.add(name);
        parameterSizes.add(sizes);
        return functions.size() - 1;
    }

    /**
     * What an sm_90 fits (from the kernel report's registers and shared memory, as
     * {@link KernelReport.Entry#blocksPerMultiprocessor}; on the sm_75 device also what its 64 KB
     * of shared memory, 1,024 threads and 16 blocks per multiprocessor hold), and at most the
     * emulator's 264 co-resident blocks (one OS thread each) spread over the multiprocessors it reports.
     */
    @Override
    public int maxActiveBlocksPerMultiprocessor(long function, int blockThreads, int dynamicSharedBytes) {
        int cap = Math.max(1, Math.min(32, 264 / properties().multiprocessors()));
        KernelReport.Entry e = KernelReport.load().entry(functionName(function));
        if (turing()) {
            int staticShared = e == null ? 0 : e.sharedBytes();
            int byShared = SM75_SHARED / Math.max(1, staticShared + dynamicSharedBytes);
            int byThreads = SM75_THREADS_PER_SM / Math.max(1, (blockThreads + 31) / 32 * 32);
            cap = Math.min(cap, Math.min(SM75_BLOCKS_PER_SM, Math.min(byShared, byThreads)));
        }
        return e == null ? cap : Math.min(cap, e.blocksPerMultiprocessor(blockThreads, dynamicSharedBytes));
    }

    /**
     * A launch must fit the reported device, as a GPU refuses it otherwise: static (from the kernel
     * report) and dynamic shared memory within the device's opt-in maximum (227 KB on sm_90, 64 KB
     * on sm_75); and what the kernel report says the kernel needs: threads within its
     * __launch_bounds__, registers x threads within a block's 65,536. (Without nvcc there is no
     * report: only the dynamic shared memory is checked.)
     */
    private void checkResources(String name, Dim3 block, int sharedBytes) {
        KernelReport.Entry e = KernelReport.load().entry(name);
        int threads = block.x() * block.y() * block.z();
        if (!checking) {
            return;
        }
        int staticShared = e == null ? 0 : e.sharedBytes();
        if ((long) staticShared + sharedBytes > device.sharedMemoryPerBlockOptin()) {
            throw new DriverException("emu launch of " + name + ": " + staticShared + " bytes of static and " + sharedBytes
                    + " of dynamic shared memory exceed the sm_" + device.computeMajor() + device.computeMinor() + " maximum of "
                    + device.sharedMemoryPerBlockOptin(), 1);
        }
        if (e == null) {
            return;
        }
        if (threads > e.maxThreadsPerBlock() && threads <= KernelReport.SM90_THREADS_PER_BLOCK) {  // larger: a shape error
            throw new DriverException("emu launch of " + name + ": too many resources requested for launch: a block of " + threads
                    + " threads exceeds the kernel's __launch_bounds__ of " + e.maxThreadsPerBlock(), DriverException.LAUNCH_OUT_OF_RESOURCES);
        }
        if (e.registersPerBlock(threads) > KernelReport.SM90_REGISTERS) {
            throw new DriverException("emu launch of " + name + ": too many resources requested for launch: " + e.registers()
                    + " registers x " + threads + " threads need " + e.registersPerBlock(threads) + " of a block's "
                    + KernelReport.SM90_REGISTERS, DriverException.LAUNCH_OUT_OF_RESOURCES);
        }
    }

    @Override
    public void launch(long function, Dim3 grid, Dim3 block, int sharedBytes, long stream, KernelArgs args) {
        if (!capturedLaunch(stream, function, grid, block, sharedBytes, args, false)) {
            run(function, grid, block, sharedBytes, args, false);
        }
    }

    /**
     * Runs every block at once (one OS thread each) so that grid-wide synchronization is real; a
     * grid larger than {@link #maxActiveBlocksPerMultiprocessor} x multiprocessors is refused with
     * COOPERATIVE_LAUNCH_TOO_LARGE, as a driver refuses it.
     */
    @Override
    public void launchCooperative(long function, Dim3 grid, Dim3 block, int sharedBytes, long stream, KernelArgs args) {
        checkResources(functionName(function), block, sharedBytes);  // a block that cannot launch at all says so first
        long blocks = (long) grid.x() * grid.y() * grid.z();
        long fit = (long) maxActiveBlocksPerMultiprocessor(function, block.x() * block.y() * block.z(), sharedBytes)
                * properties().multiprocessors();
        if (blocks > fit) {
            throw new DriverException("emu cooperative launch of " + functionName(function) + ": " + blocks + " blocks, but only "
                    + fit + " fit at once", DriverException.COOPERATIVE_LAUNCH_TOO_LARGE);
        }
        if (!capturedLaunch(stream, function, grid, block, sharedBytes, args, true)) {
            run(function, grid, block, sharedBytes, args, true);
        }
    }

    private synchronized String functionName(long function) {
        if (function < 0 || function >= functions.size()) {
            throw new DriverException("emu launch: unknown function handle " + function);
        }
        return functions.get((int) function);
    }

    private synchronized void run(long function, Dim3 grid, Dim3 block, int sharedBytes, KernelArgs args, boolean cooperative) {
        String name = functionName(function);
        args.check("emu", name, parameterSizes.get((int) function));
        checkResources(name, block, sharedBytes);
        try (Arena arena = Arena.ofConfined()) {
            int rc = (int) launch.invokeExact(arena.allocateFrom(name), grid.x(), grid.y(), grid.z(), block.x(), block.y(),
                    block.z(), sharedBytes, args.pack(arena), args.size(), cooperative ? 1 : 0);
            if (rc != 0) {
                throw new DriverException("emu " + (cooperative ? "cooperative launch" : "launch") + " of " + name + " grid "
                        + grid + " block " + block + " shared " + sharedBytes + ": " + error());
            }
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    @Override
    public synchronized void gemm(Gemm g, long stream) {
        if (captured(stream, () -> gemm(g, 0))) {
            return;
        }
        try {
            int rc = (int) gemm.invokeExact(g.transA() ? 1 : 0, g.transB() ? 1 : 0, g.m(), g.n(), g.k(), g.alpha(), g.a(),
                    g.lda(), g.strideA(), g.b(), g.ldb(), g.strideB(), g.beta(), g.c(), g.ldc(), g.strideC(), g.batch(),
                    dtypeCode(g.inputType()), dtypeCode(g.outputType()), g.tf32() && !turing() ? 1 : 0);
            check(rc, "gemm m=" + g.m() + " n=" + g.n() + " k=" + g.k() + " batch=" + g.batch());
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static int dtypeCode(dev.seqkernels.DType t) {
        return switch (t) {
            case F32 -> 0;
            case F16 -> 1;
            case BF16 -> 2;
            default -> throw new DriverException("emu gemm: unsupported dtype " + t);
        };
    }

    /** The process-wide emulator stays loaded; closing it does nothing. */
    @Override
    public void close() {
    }
}
