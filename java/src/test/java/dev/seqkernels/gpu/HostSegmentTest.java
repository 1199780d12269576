package dev.seqkernels.gpu;

import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.Tensor;
import dev.seqkernels.TestData;
import dev.seqkernels.ops.Lstm;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Host memory that is closed, read-only or on the heap is refused by every binding before native code sees it. */
@PerBinding
class HostSegmentTest {
    private final Driver driver = GpuTargets.driver();

    private static void mentions(Throwable e, String part) {
        assertTrue(e.getMessage().contains(part), () -> "message '" + e.getMessage() + "' should mention '" + part + "'");
    }

    @Test
    void aCopyIntoReadOnlyMemoryIsRefused() {
        try (DeviceTensor d = DeviceTensor.allocate(driver, DType.F32, 4); Arena arena = Arena.ofConfined()) {
            MemorySegment readOnly = arena.allocate(16).asReadOnly();
            mentions(assertThrows(DriverException.class, () -> driver.copyDeviceToHost(readOnly, d.pointer(), 16)), "read-only");
            driver.copyHostToDevice(d.pointer(), readOnly, 16);
        }
    }

    @Test
    void aSegmentOfAClosedArenaIsRefused() throws InterruptedException {
        try (DeviceTensor d = DeviceTensor.allocate(driver, DType.F32, 4)) {
            Arena arena = Arena.ofShared();
            MemorySegment gone = arena.allocate(16);
            arena.close();
            mentions(assertThrows(DriverException.class, () -> driver.copyHostToDevice(d.pointer(), gone, 16)), "closed");
            mentions(assertThrows(DriverException.class, () -> driver.copyDeviceToHost(gone, d.pointer(), 16)), "closed");
            try (Arena confined = Arena.ofConfined()) {
                MemorySegment mine = confined.allocate(16);
                Throwable[] other = new Throwable[1];
                Thread t = Thread.ofPlatform().start(() -> other[0] = assertThrows(DriverException.class,
                        () -> driver.copyHostToDevice(d.pointer(), mine, 16)));
                t.join();
                mentions(other[0], "confined to another thread");
            }
            MemorySegment heap = MemorySegment.ofArray(new float[4]);
            mentions(assertThrows(DriverException.class, () -> driver.copyHostToDevice(d.pointer(), heap, 16)), "Java heap");
        }
    }

    @Test
    void anOpOnAWrapOfAClosedArenaIsAClosedTensor() {
        Lstm op = Lstm.builder().inputSize(3).hiddenSize(4).backend(GpuTargets.backend()).build();
        Map<String, Tensor> p = new TestData().params(DType.F32, 0.5, op.config().parameterShapes());
        Arena arena = Arena.ofShared();
        Tensor x = Tensor.wrap(arena.allocate(5 * 2 * 3 * 4), DType.F32, 5, 2, 3);
        arena.close();
        mentions(assertThrows(SeqkException.TensorClosed.class, () -> op.forward(p, x)), "'x'");
    }
}
