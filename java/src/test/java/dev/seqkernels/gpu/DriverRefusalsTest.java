package dev.seqkernels.gpu;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;
import java.util.Arrays;
import java.util.concurrent.atomic.AtomicInteger;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeFalse;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * What the CUDA driver refuses, called directly through java.lang.foreign with the CUresult a
 * real driver returns: over the stand-in in CI (its whole point), and over the real driver on a
 * GPU host, where the same assertions check that the stand-in refuses what a real driver refuses.
 * Skipped on the emu binding, which has no libcuda.
 */
@PerBinding
class DriverRefusalsTest {
    private static final int SUCCESS = 0;
    private static final int INVALID_VALUE = 1;
    private static final int INVALID_IMAGE = 200;
    private static final int INVALID_CONTEXT = 201;
    private static final int INVALID_HANDLE = 400;
    private static final int CAPTURE_UNSUPPORTED = 900;
    private static final int CAPTURE_INVALIDATED = 901;
    private static final int CAPTURE_MODE_THREAD_LOCAL = 1;
    private static final int MAX_DYNAMIC_SHARED = 8;

    private SymbolLookup cuda;
    private MemorySegment context;
    private final java.util.List<MemorySegment> modules = new java.util.ArrayList<>();

    @org.junit.jupiter.api.AfterEach
    void unloadModules() {
        for (MemorySegment m : modules) {
            assertEquals(SUCCESS, call("cuModuleUnload", FunctionDescriptor.of(JAVA_INT, ADDRESS), m));
        }
    }

    @BeforeEach
    void driver() {
        assumeFalse(GpuTargets.binding().equals("emu"), "skipped: the emu binding has no libcuda to call");
        GpuTargets.driver();  // initialized by the binding under test
        cuda = CudaLibrary.lookup("test");
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment ctx = arena.allocate(ADDRESS);
            assertEquals(SUCCESS, call("cuDevicePrimaryCtxRetain", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT), ctx, 0));
            context = ctx.get(ADDRESS, 0);
        }
        assertEquals(SUCCESS, call("cuCtxSetCurrent", FunctionDescriptor.of(JAVA_INT, ADDRESS), context));
    }

    private int call(String symbol, FunctionDescriptor fd, Object... args) {
        MethodHandle mh = Linker.nativeLinker().downcallHandle(cuda.find(symbol).orElseThrow(), fd);
        try {
            return (int) mh.invokeWithArguments(args);
        } catch (Throwable t) {
            throw new AssertionError(symbol + ": " + t, t);
        }
    }

    private long alloc(long bytes) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment p = arena.allocate(JAVA_LONG);
            assertEquals(SUCCESS, call("cuMemAlloc_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG), p, bytes));
            return p.get(JAVA_LONG, 0);
        }
    }

    private int free(long p) {
        return call("cuMemFree_v2", FunctionDescriptor.of(JAVA_INT, JAVA_LONG), p);
    }

    private MemorySegment stream() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment s = arena.allocate(ADDRESS);
            assertEquals(SUCCESS, call("cuStreamCreate", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT), s, 1));
            return s.get(ADDRESS, 0);
        }
    }

    private void destroy(MemorySegment stream) {
        assertEquals(SUCCESS, call("cuStreamDestroy_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS), stream));
    }

    private MemorySegment function(String family, String kernel) {
        byte[] image = KernelImages.read(family);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment data = arena.allocate(image.length + 1L, 16);
            MemorySegment.copy(image, 0, data, java.lang.foreign.ValueLayout.JAVA_BYTE, 0, image.length);
            MemorySegment module = arena.allocate(ADDRESS);
            assertEquals(SUCCESS, call("cuModuleLoadData", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS), module, data));
            modules.add(module.get(ADDRESS, 0));
            MemorySegment f = arena.allocate(ADDRESS);
            assertEquals(SUCCESS, call("cuModuleGetFunction", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS), f,
                    module.get(ADDRESS, 0), arena.allocateFrom(kernel)));
            return f.get(ADDRESS, 0);
        }
    }

    private static final FunctionDescriptor LAUNCH = FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT,
            JAVA_INT, JAVA_INT, JAVA_INT, ADDRESS, ADDRESS, ADDRESS);

    /** selftest_reverse_f32(in, out) on one block of n threads with `shared` bytes of dynamic shared memory. */
    private int launchReverse(MemorySegment f, long in, long out, int n, int shared) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment params = arena.allocate(ADDRESS, 2);
            params.setAtIndex(ADDRESS, 0, arena.allocateFrom(JAVA_LONG, in));
            params.setAtIndex(ADDRESS, 1, arena.allocateFrom(JAVA_LONG, out));
            return call("cuLaunchKernel", LAUNCH, f, 1, 1, 1, n, 1, 1, shared, MemorySegment.NULL, params, MemorySegment.NULL);
        }
    }

    @Test
    void aThreadWithoutACurrentContextIsRefused() throws InterruptedException {
        AtomicInteger rc = new AtomicInteger(-1);
        Thread fresh = Thread.ofPlatform().start(() -> {
            try (Arena arena = Arena.ofConfined()) {
                rc.set(call("cuMemAlloc_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG), arena.allocate(JAVA_LONG), 64L));
            }
        });
        fresh.join();
        assertEquals(INVALID_CONTEXT, rc.get(), "an OS thread that never made a context current");
    }

    /** Allocating or synchronizing on a thread that captures is refused, and the capture is then invalidated. */
    @Test
    void unsafeCallsDuringACaptureAreRefusedAndInvalidateIt() {
        FunctionDescriptor begin = FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT);
        FunctionDescriptor end = FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS);
        MemorySegment s = stream();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment graph = arena.allocate(ADDRESS);
            assertEquals(SUCCESS, call("cuStreamBeginCapture_v2", begin, s, CAPTURE_MODE_THREAD_LOCAL));
            assertEquals(CAPTURE_UNSUPPORTED, call("cuMemAlloc_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG),
                    arena.allocate(JAVA_LONG), 64L), "cuMemAlloc during a capture");
            assertEquals(CAPTURE_INVALIDATED, call("cuStreamEndCapture", end, s, graph));
            assertEquals(MemorySegment.NULL, graph.get(ADDRESS, 0), "no graph from an invalidated capture");

            assertEquals(SUCCESS, call("cuStreamBeginCapture_v2", begin, s, CAPTURE_MODE_THREAD_LOCAL));
            assertEquals(CAPTURE_UNSUPPORTED, call("cuStreamSynchronize", FunctionDescriptor.of(JAVA_INT, ADDRESS), s),
                    "synchronizing the capturing stream");
            assertEquals(CAPTURE_INVALIDATED, call("cuStreamEndCapture", end, s, graph));
        } finally {
            destroy(s);
        }
    }

    /**
     * Above 48 KB of dynamic shared memory a kernel must opt in, and the opt-in stops at the
     * device's maximum; until it opts in, the occupancy of such a launch is 0 blocks.
     */
    @Test
    void dynamicSharedMemoryAbove48KbNeedsTheOptIn() {
        MemorySegment f = function("selftest", "selftest_reverse_f32");
        FunctionDescriptor occupancy = FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, JAVA_INT, JAVA_LONG);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment blocks = arena.allocate(JAVA_INT);
            assertEquals(SUCCESS, call("cuOccupancyMaxActiveBlocksPerMultiprocessor", occupancy, blocks, f, 64, 100 * 1024L));
            assertEquals(0, blocks.get(JAVA_INT, 0), "100 KB of dynamic shared memory before the opt-in");
        }
        long in = alloc(4096);
        long out = alloc(4096);
        FunctionDescriptor set = FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT);
        try {
            assertEquals(SUCCESS, launchReverse(f, in, out, 64, 48 * 1024), "48 KB needs no opt-in");
            assertEquals(INVALID_VALUE, launchReverse(f, in, out, 64, 64 * 1024), "64 KB without the opt-in");
            assertEquals(SUCCESS, call("cuFuncSetAttribute", set, f, MAX_DYNAMIC_SHARED, 64 * 1024));
            assertEquals(SUCCESS, launchReverse(f, in, out, 64, 64 * 1024), "64 KB after opting in");
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment blocks = arena.allocate(JAVA_INT);
                assertEquals(SUCCESS, call("cuOccupancyMaxActiveBlocksPerMultiprocessor", occupancy, blocks, f, 64, 64 * 1024L));
                assertTrue(blocks.get(JAVA_INT, 0) >= 1, "64 KB after opting in: " + blocks.get(JAVA_INT, 0) + " blocks");
            }
            int optin = GpuTargets.driver().properties().sharedMemoryPerBlockOptin();
            assertEquals(INVALID_VALUE, call("cuFuncSetAttribute", set, f, MAX_DYNAMIC_SHARED, optin + 1024), "beyond the opt-in maximum");
            assertEquals(SUCCESS, call("cuCtxSynchronize", FunctionDescriptor.of(JAVA_INT)));
        } finally {
            assertEquals(SUCCESS, free(in));
            assertEquals(SUCCESS, free(out));
        }
    }

    /** A parameter buffer (cuLaunchKernel's extra) must have the size of the kernel's .param list, as cuFuncGetParamInfo gives it. */
    @Test
    void aParameterBufferOfAnotherSizeIsRefused() {
        MemorySegment f = function("selftest", "selftest_reverse_f32");
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment offset = arena.allocate(JAVA_LONG);
            MemorySegment size = arena.allocate(JAVA_LONG);
            FunctionDescriptor info = FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG, ADDRESS, ADDRESS);
            assertEquals(SUCCESS, call("cuFuncGetParamInfo", info, f, 1L, offset, size));
            assertEquals(8, offset.get(JAVA_LONG, 0));
            assertEquals(8, size.get(JAVA_LONG, 0));
            assertEquals(INVALID_VALUE, call("cuFuncGetParamInfo", info, f, 2L, offset, size), "past the last parameter");

            long in = alloc(4096);
            long out = alloc(4096);
            MemorySegment buffer = arena.allocate(MemoryLayout.sequenceLayout(2, JAVA_LONG));
            buffer.setAtIndex(JAVA_LONG, 0, in);
            buffer.setAtIndex(JAVA_LONG, 1, out);
            MemorySegment bufferSize = arena.allocateFrom(JAVA_LONG, 12);
            MemorySegment extra = arena.allocate(ADDRESS, 5);
            extra.setAtIndex(ADDRESS, 0, MemorySegment.ofAddress(1));  // CU_LAUNCH_PARAM_BUFFER_POINTER
            extra.setAtIndex(ADDRESS, 1, buffer);
            extra.setAtIndex(ADDRESS, 2, MemorySegment.ofAddress(2));  // CU_LAUNCH_PARAM_BUFFER_SIZE
            extra.setAtIndex(ADDRESS, 3, bufferSize);
            extra.setAtIndex(ADDRESS, 4, MemorySegment.NULL);          // CU_LAUNCH_PARAM_END
            try {
                assertEquals(INVALID_VALUE, call("cuLaunchKernel", LAUNCH, f, 1, 1, 1, 32, 1, 1, 128, MemorySegment.NULL,
                        MemorySegment.NULL, extra), "a 12-byte buffer for a kernel taking 16");
                bufferSize.set(JAVA_LONG, 0, 16);
                assertEquals(SUCCESS, call("cuLaunchKernel", LAUNCH, f, 1, 1, 1, 32, 1, 1, 128, MemorySegment.NULL,
                        MemorySegment.NULL, extra), "the right size");
                assertEquals(SUCCESS, call("cuCtxSynchronize", FunctionDescriptor.of(JAVA_INT)));
            } finally {
                assertEquals(SUCCESS, free(in));
                assertEquals(SUCCESS, free(out));
            }
        }
    }

    @Test
    void anImageThatIsNotAModuleIsRefused() {
        try (Arena arena = Arena.ofConfined()) {
            byte[] junk = new byte[4096];
            Arrays.fill(junk, (byte) 0x5a);
            MemorySegment data = arena.allocate(junk.length + 1L, 16);
            MemorySegment.copy(junk, 0, data, java.lang.foreign.ValueLayout.JAVA_BYTE, 0, junk.length);
            assertEquals(INVALID_IMAGE, call("cuModuleLoadData", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS),
                    arena.allocate(ADDRESS), data));
        }
    }

    /**
     * Over the stand-in only (on a real driver these are undefined behaviour): a destroyed event and
     * a freed pointer are refused and recorded as misuses, which fail any test that makes them.
     */
    @Test
    void theStandInRecordsDestroyedHandlesAndFreedPointers() {
        StandIn standIn = GpuTargets.standIn().orElse(null);
        assumeTrue(standIn != null, "skipped: use after destroy is undefined on a real driver");
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment e = arena.allocate(ADDRESS);
            assertEquals(SUCCESS, call("cuEventCreate", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT), e, 0));
            MemorySegment event = e.get(ADDRESS, 0);
            assertEquals(SUCCESS, call("cuEventDestroy_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS), event));
            assertEquals(INVALID_HANDLE, call("cuEventRecord", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS), event,
                    MemorySegment.NULL));
            long p = alloc(64);
            assertEquals(SUCCESS, free(p));
            assertEquals(INVALID_VALUE, free(p), "a second free");
            String misuse = standIn.takeMisuse();
            assertTrue(misuse.contains("use after destroy") && misuse.contains("cuMemFree_v2"), misuse);
            assertEquals("", standIn.takeMisuse(), "taking the misuses clears them");
        }
    }

    /** cuBLAS runs the GEMMs it has (f32, f16 and bf16 inputs, fp32 compute) and refuses combinations it lacks. */
    @Test
    void cublasRefusesTypeCombinationsItLacks() {
        SymbolLookup blas;
        try {
            blas = SymbolLookup.libraryLookup("libcublas.so.13", Arena.global());
        } catch (IllegalArgumentException notOnTheLoaderPath) {
            assumeTrue(false, "skipped: libcublas.so.13 is not on the loader path here (" + notOnTheLoaderPath.getMessage() + ")");
            return;
        }
        Linker linker = Linker.nativeLinker();
        MethodHandle create = linker.downcallHandle(blas.find("cublasCreate_v2").orElseThrow(), FunctionDescriptor.of(JAVA_INT, ADDRESS));
        MethodHandle destroy = linker.downcallHandle(blas.find("cublasDestroy_v2").orElseThrow(), FunctionDescriptor.of(JAVA_INT, ADDRESS));
        MethodHandle gemm = linker.downcallHandle(blas.find("cublasGemmStridedBatchedEx").orElseThrow(), FunctionDescriptor.of(JAVA_INT,
                ADDRESS, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_LONG,
                JAVA_INT, JAVA_INT, JAVA_LONG, ADDRESS, JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_INT));
        int r32f = 0, r16f = 2, r16bf = 14, compute32f = 68, computeFastTf32 = 77, defaultAlgo = -1;
        long a = alloc(4 * 64);
        long b = alloc(4 * 64);
        long c = alloc(4 * 64);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment h = arena.allocate(ADDRESS);
            assertEquals(SUCCESS, (int) create.invokeExact(h));
            MemorySegment handle = h.get(ADDRESS, 0);
            MemorySegment one = arena.allocateFrom(java.lang.foreign.ValueLayout.JAVA_FLOAT, 1f);
            MemorySegment zero = arena.allocateFrom(java.lang.foreign.ValueLayout.JAVA_FLOAT, 0f);
            int[][] combos = {
                {r32f, r32f, r32f, compute32f, 0}, {r16f, r16f, r32f, compute32f, 0}, {r16bf, r16bf, r16bf, compute32f, 0},
                {r32f, r32f, r32f, computeFastTf32, 0}, {r16f, r16f, r32f, computeFastTf32, 15}, {r16f, r16bf, r32f, compute32f, 15}};
            for (int[] t : combos) {
                int rc = (int) gemm.invokeExact(handle, 0, 0, 8, 8, 8, one, a, t[0], 8, 0L, b, t[1], 8, 0L, zero, c, t[2], 8, 0L, 1,
                        t[3], defaultAlgo);
                assertEquals(t[4], rc, "A " + t[0] + " B " + t[1] + " C " + t[2] + " compute " + t[3]);
            }
            assertEquals(SUCCESS, (int) destroy.invokeExact(handle));
            assertEquals(SUCCESS, call("cuCtxSynchronize", FunctionDescriptor.of(JAVA_INT)));
        } catch (Throwable t) {
            throw t instanceof AssertionError e ? e : new AssertionError(t);
        } finally {
            free(a);
            free(b);
            free(c);
        }
    }
}
