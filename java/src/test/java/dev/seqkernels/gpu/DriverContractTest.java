package dev.seqkernels.gpu;

import dev.seqkernels.Compare;
import dev.seqkernels.DType;
import dev.seqkernels.TestData;
import dev.seqkernels.Tensor;
import dev.seqkernels.gpu.emu.EmuDriver;
import org.junit.jupiter.api.Named;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.MethodSource;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import dev.seqkernels.gpu.kernels.RowSumKernel;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The Driver seam's contract, through the binding under test ({@link GpuTargets}): emu in the
 * main run, panama and jcuda over the stand-in driver in theirs, the real driver on a GPU host.
 */
@PerBinding
class DriverContractTest {
    static Stream<Arguments> drivers() {
        return Stream.of(Arguments.of(Named.of(GpuTargets.binding(), (java.util.function.Supplier<Driver>) GpuTargets::driver)));
    }

    /**
     * Stream capture: work issued while capturing runs only when the graph is launched (a row sum
     * into a poisoned output, and a memset), each launch runs it again, and misuse is refused.
     */
    @ParameterizedTest
    @MethodSource("drivers")
    void capturedWorkRunsWhenTheGraphIsLaunched(java.util.function.Supplier<Driver> binding) {
        Driver d = binding.get();
        assertThrows(DriverException.class, () -> d.beginCapture(0), "the default stream cannot be captured");
        Tensor x = Tensor.of(DType.F32, new double[]{1, 2, 3, 4, 5, 6}, 2, 3);
        try (DeviceTensor dx = DeviceTensor.of(d, x); DeviceTensor out = DeviceTensor.allocate(d, DType.F32, 2);
             DeviceTensor flag = DeviceTensor.allocate(d, DType.I32, 1)) {
            RowSumKernel sums = new RowSumKernel(d);
            d.memset(out.pointer(), 0xff, 8);
            d.memset(flag.pointer(), 0, 4);
            long stream = d.createStream();
            try {
                d.beginCapture(stream);
                sums.sum(dx, out, stream);
                d.memsetAsync(flag.pointer(), 1, 4, stream);
                long graph = d.endCapture(stream);
                try {
                    assertTrue(Double.isNaN(out.toHost().getFlat(0)), "nothing ran while capturing");
                    assertEquals(0.0, flag.toHost().getFlat(0));
                    d.launchGraph(graph, stream);
                    d.synchronize(stream);
                    assertArrayEquals(new double[]{6, 15}, out.toHost().toDoubleArray());
                    assertEquals(0x01010101, flag.toHost().getFlat(0));
                    d.memset(out.pointer(), 0, 8);
                    d.launchGraph(graph, stream);
                    d.synchronize(stream);
                    assertArrayEquals(new double[]{6, 15}, out.toHost().toDoubleArray(), "a second launch runs it again");
                } finally {
                    d.destroyGraph(graph);
                }
            } finally {
                d.destroyStream(stream);
            }
        }
    }

    @ParameterizedTest
    @MethodSource("drivers")
    void copiesRoundTripAndMemsetWrites(java.util.function.Supplier<Driver> binding) {
        Driver d = binding.get();
        long before = d.memoryInUse();
        long a = d.malloc(40);
        long b = d.malloc(40);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment host = arena.allocate(40);
            for (int i = 0; i < 10; i++) {
                host.setAtIndex(ValueLayout.JAVA_FLOAT, i, i * 1.5f);
            }
            d.copyHostToDevice(a, host, 40);
            d.copyDeviceToDevice(b, a, 40);
            d.memset(b, 0, 8);
            MemorySegment back = arena.allocate(40);
            d.copyDeviceToHost(back, b, 40);
            assertEquals(0f, back.getAtIndex(ValueLayout.JAVA_FLOAT, 1));
            assertEquals(9 * 1.5f, back.getAtIndex(ValueLayout.JAVA_FLOAT, 9));
            long stream = d.createStream();
            d.copyHostToDeviceAsync(a, host, 40, stream);
            d.copyDeviceToHostAsync(back, a, 40, stream);
            d.synchronize(stream);
            d.destroyStream(stream);
            assertEquals(1.5f, back.getAtIndex(ValueLayout.JAVA_FLOAT, 1));
        } finally {
            d.free(a);
            d.free(b);
        }
        assertEquals(before, d.memoryInUse(), "every allocation was freed");
    }

    @ParameterizedTest
    @MethodSource("drivers")
    void pinnedHostMemoryCarriesAsyncCopies(java.util.function.Supplier<Driver> binding) {
        Driver d = binding.get();
        MemorySegment up = d.allocHost(4096);
        MemorySegment down = d.allocHost(4096);
        long dev = d.malloc(4096);
        long stream = d.createStream();
        try {
            for (int i = 0; i < 1024; i++) {
                up.setAtIndex(ValueLayout.JAVA_INT, i, i * 7 - 3);
            }
            d.copyHostToDeviceAsync(dev, up, 4096, stream);
            d.copyDeviceToHostAsync(down, dev, 4096, stream);
            d.synchronize(stream);
            for (int i = 0; i < 1024; i++) {
                assertEquals(i * 7 - 3, down.getAtIndex(ValueLayout.JAVA_INT, i));
            }
        } finally {
            d.destroyStream(stream);
            d.free(dev);
            d.freeHost(up);
            d.freeHost(down);
        }
    }

    @ParameterizedTest
    @MethodSource("drivers")
    void badPointersAreErrorsNotCrashes(java.util.function.Supplier<Driver> binding) {
        Driver d = binding.get();
        long a = d.malloc(16);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment host = arena.allocate(64);
            var overrun = assertThrows(DriverException.class, () -> d.copyHostToDevice(a, host, 17));
            assertTrue(overrun.getMessage().contains("copyHostToDevice"), overrun.getMessage());
            assertThrows(DriverException.class, () -> d.copyDeviceToHost(host, a + 8, 16));
            assertThrows(DriverException.class, () -> d.memset(a, 0, 17));
        } finally {
            d.free(a);
        }
        var twice = assertThrows(DriverException.class, () -> d.free(a));
        assertTrue(twice.getMessage().contains("free"), twice.getMessage());
    }

    @ParameterizedTest
    @MethodSource("drivers")
    void eventsMeasureTime(java.util.function.Supplier<Driver> binding) {
        Driver d = binding.get();
        long start = d.createEvent();
        long end = d.createEvent();
        d.recordEvent(start, 0);
        d.recordEvent(end, 0);
        d.synchronize(0);
        assertTrue(d.elapsedMillis(start, end) >= 0);
        d.destroyEvent(start);
        d.destroyEvent(end);
        assertThrows(DriverException.class, () -> d.elapsedMillis(start, end));
    }

    /** Work on one stream after a wait on another's event sees what that stream wrote before the record; a destroyed event is refused. */
    @ParameterizedTest
    @MethodSource("drivers")
    void aStreamWaitsForAnotherStreamsEvent(java.util.function.Supplier<Driver> binding) {
        Driver d = binding.get();
        long writer = d.createStream();
        long reader = d.createStream();
        long written = d.createEvent();
        long a = d.malloc(1 << 20);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment host = arena.allocate(1 << 20);
            d.memsetAsync(a, 7, 1 << 20, writer);
            d.recordEvent(written, writer);
            d.waitEvent(reader, written);
            d.copyDeviceToHostAsync(host, a, 1 << 20, reader);
            d.synchronize(reader);
            for (long i = 0; i < (1 << 20); i += 4093) {
                assertEquals(7, host.get(java.lang.foreign.ValueLayout.JAVA_BYTE, i), "byte " + i);
            }
        } finally {
            d.synchronize(writer);
            d.free(a);
            d.destroyEvent(written);
            d.destroyStream(writer);
            d.destroyStream(reader);
        }
        var gone = assertThrows(DriverException.class, () -> d.waitEvent(0, written));
        assertTrue(gone.getMessage().contains("waitEvent"), gone.getMessage());
    }

    @ParameterizedTest
    @MethodSource("drivers")
    void propertiesDescribeTheDevice(java.util.function.Supplier<Driver> binding) {
        Driver d = binding.get();
        DeviceProperties p = d.properties();
        assertTrue(p.multiprocessors() > 0 && p.sharedMemoryPerBlock() > 0 && p.computeMajor() >= 7, p.toString());
    }

    static Stream<Arguments> gemmCases() {
        return drivers().flatMap(d -> Stream.of(DType.F32, DType.F16, DType.BF16)
                .flatMap(t -> Stream.of(Arguments.of(d.get()[0], t, false, false), Arguments.of(d.get()[0], t, true, true),
                        Arguments.of(d.get()[0], t, true, false))));
    }

    /** Row-major C[b] = A[b] B[b] computed as the column-major C^T = B^T A^T, against a double reference. */
    @ParameterizedTest
    @MethodSource("gemmCases")
    void stridedBatchedGemmMatchesDoubleReference(java.util.function.Supplier<Driver> binding, DType type, boolean transA,
                                                  boolean transB) {
        Driver d = binding.get();
        TestData data = new TestData();
        int batch = 3;
        int m = 37;
        int n = 29;
        int k = 59;
        // Column-major operands as stored: A is m x k (k x m if transposed), B is k x n (n x k if transposed).
        int lda = transA ? k : m;
        int ldb = transB ? n : k;
        Tensor a = data.tensor(type, 1, batch, (long) m * k);
        Tensor b = data.tensor(type, 1, batch, (long) k * n);
        Tensor c = data.tensor(DType.F32, 1, batch, (long) m * n);
        float alpha = 0.75f;
        float beta = -0.5f;
        double[] expected = new double[batch * m * n];
        for (int p = 0; p < batch; p++) {
            for (int j = 0; j < n; j++) {
                for (int i = 0; i < m; i++) {
                    double s = 0;
                    for (int l = 0; l < k; l++) {
                        double av = a.get(p, transA ? l + (long) i * lda : i + (long) l * lda);
                        double bv = b.get(p, transB ? j + (long) l * ldb : l + (long) j * ldb);
                        s += av * bv;
                    }
                    expected[p * m * n + i + j * m] = alpha * s + beta * c.get(p, i + (long) j * m);
                }
            }
        }
        try (DeviceTensor da = DeviceTensor.of(d, a); DeviceTensor db = DeviceTensor.of(d, b); DeviceTensor dc = DeviceTensor.of(d, c)) {
            d.gemm(new Gemm(transA, transB, m, n, k, alpha, da.pointer(), lda, (long) m * k, db.pointer(), ldb, (long) k * n,
                    beta, dc.pointer(), m, (long) m * n, batch, type, DType.F32), 0);
            Compare.Result r = Compare.compare(dc.toHost().toDoubleArray(), expected, Compare.tolerance(DType.F32));
            assertTrue(r.passes(Compare.tolerance(DType.F32)), () -> d.name() + " gemm " + type + " " + r + " " + data);
        }
    }

    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"F16", "BF16"})
    void freshAllocationsArePoisonedWithNaN(DType type) {
        Driver d = EmuDriver.instance();
        try (DeviceTensor t = DeviceTensor.allocate(d, type, 13)) {
            for (double v : t.toHost().toDoubleArray()) {
                assertTrue(Double.isNaN(v), "unwritten emulator memory reads as NaN in " + type);
            }
        }
        try (DeviceTensor t = DeviceTensor.allocate(d, DType.F32, 5); DeviceTensor u = DeviceTensor.allocate(d, DType.F64, 5)) {
            assertTrue(Double.isNaN(t.toHost().getFlat(4)) && Double.isNaN(u.toHost().getFlat(0)));
        }
    }

    /** Arguments that do not match the kernel's parameter list are refused by the binding before anything runs. */
    @ParameterizedTest
    @MethodSource("drivers")
    void launchArgumentsAreCheckedAgainstTheKernel(java.util.function.Supplier<Driver> binding) {
        Driver d = binding.get();
        long rowSum = d.function(d.loadModule("reduce"), "row_sum_f32");
        try (DeviceTensor x = DeviceTensor.allocate(d, DType.F32, 4); DeviceTensor out = DeviceTensor.allocate(d, DType.F32, 1)) {
            KernelArgs tooFew = new KernelArgs().pointer(x.pointer()).pointer(out.pointer()).i32(1);
            var few = assertThrows(DriverException.class, () -> d.launch(rowSum, Dim3.of(1), Dim3.of(32), 0, 0, tooFew));
            assertEquals(0, few.status(), "refused by the binding, not the driver: " + few.getMessage());
            assertTrue(few.getMessage().contains("row_sum_f32"), few.getMessage());
            KernelArgs wrong = new KernelArgs().pointer(x.pointer()).pointer(out.pointer()).i64(1).i32(4);
            var size = assertThrows(DriverException.class, () -> d.launch(rowSum, Dim3.of(1), Dim3.of(32), 0, 0, wrong));
            assertTrue(size.getMessage().contains("parameter 2"), size.getMessage());
        }
    }

    /** A module is loaded once per driver: every backend over the driver shares it. */
    @ParameterizedTest
    @MethodSource("drivers")
    void modulesAreLoadedOncePerDriver(java.util.function.Supplier<Driver> binding) {
        Driver d = binding.get();
        long first = d.loadModule("reduce");
        new GpuBackend(d);
        java.util.OptionalInt loaded = GpuTargets.standIn().map(s -> java.util.OptionalInt.of(s.moduleCount()))
                .orElse(java.util.OptionalInt.empty());
        for (int i = 0; i < 5; i++) {
            new GpuBackend(d);
            assertEquals(first, d.loadModule("reduce"));
        }
        GpuTargets.standIn().ifPresent(s -> assertEquals(loaded.getAsInt(), s.moduleCount(),
                "five more backends loaded no module on the driver"));
    }

    @ParameterizedTest
    @MethodSource("drivers")
    void occupancyIsReportedPerKernel(java.util.function.Supplier<Driver> binding) {
        Driver d = binding.get();
        long fn = d.function(d.loadModule("selftest"), "selftest_reverse_f32");
        int small = d.maxActiveBlocksPerMultiprocessor(fn, 128, 0);
        assertTrue(small >= 1 && small <= 32, "blocks of 128 threads per multiprocessor: " + small);
        if (!d.name().equals("emu")) {  // the emulator's sm_90 model caps co-residency by its thread budget (264 blocks in all)
            // The binding opts the kernel in first: without that, a driver counts such a launch as 0 blocks.
            assertEquals(1, d.maxActiveBlocksPerMultiprocessor(fn, 128, 200 * 1024), "one block of 200 KB fits a multiprocessor");
        }
    }

    /**
     * A virtual thread may run each driver call on another OS thread (carrier), and the driver's
     * current context belongs to the OS thread. Here the carrier's context is taken away behind the
     * binding's back between two calls, as a carrier change would leave it: the binding must make
     * its context current again. Then ops run on many virtual threads at once.
     */
    @ParameterizedTest
    @MethodSource("drivers")
    void virtualThreadsMayRunOnAnyCarrier(java.util.function.Supplier<Driver> binding) throws Exception {
        Driver d = binding.get();
        java.util.Optional<java.lang.invoke.MethodHandle> clearContext = d.name().equals("emu") ? java.util.Optional.empty()
                : java.util.Optional.of(java.lang.foreign.Linker.nativeLinker().downcallHandle(
                        CudaLibrary.lookup("test").find("cuCtxSetCurrent").orElseThrow(),
                        java.lang.foreign.FunctionDescriptor.of(java.lang.foreign.ValueLayout.JAVA_INT, java.lang.foreign.ValueLayout.ADDRESS)));
        java.util.concurrent.atomic.AtomicReference<Throwable> failure = new java.util.concurrent.atomic.AtomicReference<>();
        Thread one = Thread.ofVirtual().start(() -> {
            try {
                long p = d.malloc(64);
                if (clearContext.isPresent()) {
                    assertEquals(0, (int) clearContext.get().invoke(MemorySegment.NULL), "cuCtxSetCurrent(NULL)");
                }
                d.memset(p, 7, 64);
                d.free(p);
            } catch (Throwable t) {
                failure.set(t);
            }
        });
        one.join();
        if (failure.get() != null) {
            throw new AssertionError("a call after the carrier lost its context: " + failure.get(), failure.get());
        }
        Tensor x = Tensor.of(DType.F32, new double[]{1, 2, 3, 4, 5, 6}, 2, 3);
        try (var pool = java.util.concurrent.Executors.newVirtualThreadPerTaskExecutor()) {
            java.util.List<java.util.concurrent.Future<double[]>> sums = new java.util.ArrayList<>();
            for (int i = 0; i < 32; i++) {
                sums.add(pool.submit(() -> {
                    double[] result = null;
                    for (int round = 0; round < 5; round++) {
                        try (DeviceTensor dx = DeviceTensor.of(d, x); DeviceTensor out = DeviceTensor.allocate(d, DType.F32, 2)) {
                            Thread.sleep(1);  // a chance to move to another carrier between calls
                            new RowSumKernel(d).sum(dx, out, 0);
                            result = out.toHost().toDoubleArray();
                        }
                    }
                    return result;
                }));
            }
            for (var f : sums) {
                assertArrayEquals(new double[]{6, 15}, f.get());
            }
        }
    }

    /** Host copies of more than 2 GiB in one call (JCuda's ByteBuffers stop at 2 GiB; the bindings pass raw addresses). */
    @ParameterizedTest
    @MethodSource("drivers")
    void copiesLargerThanTwoGiB(java.util.function.Supplier<Driver> binding) {
        Driver d = binding.get();
        long bytes = (1L << 31) + 4096;
        long dev = d.malloc(bytes);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment host = arena.allocate(bytes, 64);
            long[] probes = {0, 4096, (1L << 31) - 8, 1L << 31, bytes - 8};
            for (int i = 0; i < probes.length; i++) {
                host.set(ValueLayout.JAVA_LONG, probes[i], 0x5eed0000L + i);
            }
            d.copyHostToDevice(dev, host, bytes);
            host.fill((byte) 0);
            d.copyDeviceToHost(host, dev, bytes);
            for (int i = 0; i < probes.length; i++) {
                assertEquals(0x5eed0000L + i, host.get(ValueLayout.JAVA_LONG, probes[i]), "the word at byte " + probes[i]);
            }
        } finally {
            d.free(dev);
        }
    }

    /**
     * A launch with more than 48 KB of dynamic shared memory works: the binding opts the kernel in
     * (cuFuncSetAttribute). 100 KB, or the device's opt-in maximum where that is less (a T4's 64 KB).
     */
    @ParameterizedTest
    @MethodSource("drivers")
    @DeviceDependent
    void launchesAbove48KbOfSharedMemoryAreOptedIn(java.util.function.Supplier<Driver> binding) {
        Driver d = binding.get();
        long reverse = d.function(d.loadModule("selftest"), "selftest_reverse_f32");
        int n = 256;
        Tensor x = new TestData().tensor(DType.F32, 1, n);
        try (DeviceTensor in = DeviceTensor.of(d, x); DeviceTensor out = DeviceTensor.allocate(d, DType.F32, n)) {
            int shared = Math.min(100 * 1024, d.properties().sharedMemoryPerBlockOptin());
            assertTrue(shared > 48 * 1024, "the opt-in maximum of " + d.properties());
            d.launch(reverse, Dim3.of(1), Dim3.of(n), shared, 0, new KernelArgs().pointer(in.pointer()).pointer(out.pointer()));
            assertEquals(x.getFlat(n - 1), out.toHost().getFlat(0));
            assertEquals(x.getFlat(0), out.toHost().getFlat(n - 1));
        }
    }
}
