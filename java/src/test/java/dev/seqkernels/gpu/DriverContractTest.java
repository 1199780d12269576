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
 * The Driver seam's contract, parameterized over bindings: emu always; panama and jcuda where an
 * NVIDIA driver is present, skipped with the binding's reason elsewhere.
 */
class DriverContractTest {
    static Stream<Arguments> drivers() {
        return Stream.of(Arguments.of(Named.of("emu", (java.util.function.Supplier<Driver>) EmuDriver::instance)),
                Arguments.of(Named.of("panama", (java.util.function.Supplier<Driver>) DriverContractTest::panama)),
                Arguments.of(Named.of("jcuda", (java.util.function.Supplier<Driver>) DriverContractTest::jcuda)));
    }

    private static Driver jcuda() {
        try {
            return dev.seqkernels.gpu.jcuda.JCudaDriver.instance();
        } catch (DriverException e) {
            org.junit.jupiter.api.Assumptions.abort("skipped: " + e.getMessage());
            throw e;
        }
    }

    private static Driver panama() {
        try {
            return dev.seqkernels.gpu.panama.PanamaDriver.instance();
        } catch (DriverException e) {
            org.junit.jupiter.api.Assumptions.abort("skipped: " + e.getMessage());
            throw e;
        }
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
        assertTrue(twice.getMessage().contains("not the start of a device allocation"), twice.getMessage());
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
}
