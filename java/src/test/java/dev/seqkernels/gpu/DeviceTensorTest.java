package dev.seqkernels.gpu;

import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.TestData;
import dev.seqkernels.Tensor;
import org.junit.jupiter.api.Test;

import java.util.concurrent.atomic.AtomicReference;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

@PerBinding
class DeviceTensorTest {
    private final Driver driver = GpuTargets.driver();

    /**
     * While the driver copies a host tensor up, another thread's close of it is refused: jcuda
     * hands JCuda a raw address the JDK cannot keep alive, so the upload must hold the tensor.
     * The driver is wrapped so the close is tried exactly inside the copy.
     */
    @Test
    void aHostTensorCannotBeClosedWhileItIsCopiedUp() throws Exception {
        TestData data = new TestData();
        Tensor host = data.tensor(DType.F32, 1, 4, 6);
        AtomicReference<Throwable> closeDuringCopy = new AtomicReference<>();
        Driver watched = RecordingDriver.around(driver, (method, args) -> {
                    if (method.equals("copyHostToDevice")) {
                        Thread closer = Thread.ofPlatform().start(() -> {
                            try {
                                host.close();
                            } catch (Throwable t) {
                                closeDuringCopy.set(t);
                            }
                        });
                        closer.join();
                    }
            });
        try (DeviceTensor t = DeviceTensor.allocate(watched, DType.F32, 4, 6)) {
            t.copyFrom(host);
            assertTrue(closeDuringCopy.get() instanceof SeqkException, "the close during the copy was refused: " + closeDuringCopy.get());
            assertTrue(closeDuringCopy.get().getMessage().contains("cannot be closed while another thread uses it"),
                    closeDuringCopy.get().getMessage());
            assertArrayEquals(host.toDoubleArray(), t.toHost().toDoubleArray());
        }
        host.close();
        assertTrue(host.isClosed(), "after the copy the tensor closes");
    }

    @Test
    void viewsShareMemoryAndLifetime() {
        TestData data = new TestData();
        Tensor host = data.tensor(DType.F32, 1, 4, 6);
        long before = driver.memoryInUse();
        DeviceTensor t = DeviceTensor.of(driver, host);
        DeviceTensor row = t.select(0, 2);
        assertEquals(t.pointer() + 2 * 6 * 4, row.pointer());
        assertArrayEquals(host.select(0, 2).toDoubleArray(), row.toHost().toDoubleArray());
        DeviceTensor rows = t.narrow(0, 1, 2);
        assertArrayEquals(new long[]{2, 6}, rows.shape());
        assertEquals(host.get(1, 0), rows.toHost().get(0, 0));
        DeviceTensor transposed = t.permute(1, 0);
        assertArrayEquals(new long[]{1, 6}, transposed.strides());
        var strided = assertThrows(SeqkException.Unsupported.class, transposed::toHost);
        assertTrue(strided.getMessage().contains("strided device views"), strided.getMessage());
        row.close();
        assertTrue(t.isClosed(), "closing a view closes the tensor it shares memory with");
        assertThrows(SeqkException.TensorClosed.class, t::pointer);
        assertEquals(before, driver.memoryInUse(), "the owner's memory was freed exactly once");
        t.close();
    }

    @Test
    void aLeakedTensorIsFreedByTheSafetyNet() throws InterruptedException {
        long before = driver.memoryInUse();
        leak();
        long deadline = System.nanoTime() + 20_000_000_000L;
        while (driver.memoryInUse() != before && System.nanoTime() < deadline) {
            System.gc();
            Thread.sleep(20);
        }
        assertEquals(before, driver.memoryInUse(), "the Cleaner freed the unreachable, unclosed tensor");
    }

    private void leak() {
        DeviceTensor t = DeviceTensor.allocate(driver, DType.F32, 1000);
        DeviceTensor view = t.narrow(0, 10, 5);
        assertTrue(view.pointer() > t.pointer());
    }

    @Test
    void aTensorIsNotFreedWhileAViewIsReachable() {
        long before = driver.memoryInUse();
        DeviceTensor view = viewOfDroppedOwner();
        for (int i = 0; i < 3; i++) {
            System.gc();
        }
        assertTrue(driver.memoryInUse() > before, "a reachable view keeps the memory alive");
        view.toHost();
        view.close();
        assertEquals(before, driver.memoryInUse());
    }

    private DeviceTensor viewOfDroppedOwner() {
        return DeviceTensor.of(driver, Tensor.of(DType.F32, new double[8], 8)).narrow(0, 2, 3);
    }

    @Test
    void wrappedPointersAreNeverFreed() {
        long p = driver.malloc(64);
        try {
            DeviceTensor w = DeviceTensor.wrap(driver, p, DType.F32, new long[]{4, 4}, new long[]{4, 1});
            w.copyFrom(Tensor.of(DType.F32, new double[16], 4, 4));
            w.close();
            assertThrows(SeqkException.TensorClosed.class, w::pointer);
        } finally {
            driver.free(p);
        }
    }

    @Test
    void shapeAndDTypeMismatchesAreRejected() {
        try (DeviceTensor t = DeviceTensor.allocate(driver, DType.F16, 3)) {
            assertThrows(SeqkException.ShapeMismatch.class, () -> t.copyFrom(Tensor.allocate(DType.F32, 3)));
            assertThrows(SeqkException.ShapeMismatch.class, () -> t.copyTo(Tensor.allocate(DType.F16, 4)));
            assertThrows(SeqkException.ShapeMismatch.class, () -> t.narrow(0, 2, 2));
        }
    }

    @Test
    void fatbinsLoadFromTheJarByFamily() {
        KernelReport report = KernelReport.load();
        if (report.built()) {
            byte[] image = KernelImages.read("lstm_cell");
            assertTrue(image.length > 1000, "a fatbin of " + image.length + " bytes");
        }
        var e = assertThrows(DriverException.class, () -> KernelImages.read("no_such_family"));
        assertTrue(e.getMessage().startsWith("kernels not built"), e.getMessage());
    }
}
