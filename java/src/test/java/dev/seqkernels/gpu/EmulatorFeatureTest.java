package dev.seqkernels.gpu;

import dev.seqkernels.DType;
import dev.seqkernels.TestData;
import dev.seqkernels.Tensor;
import dev.seqkernels.gpu.emu.EmuDriver;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Kernels with deliberate bugs (cuda/selftest.cu) that the emulator's checking must report with
 * the kernel, block and thread, where hardware would read stale data, corrupt memory or hang. The
 * self-tests of the features themselves run through every binding in {@link PrimitivesSelfTest}.
 */
class EmulatorFeatureTest {
    private final EmuDriver emu = EmuDriver.instance();
    private final long module = emu.loadModule("selftest");
    private final TestData data = new TestData();

    private long fn(String name) {
        return emu.function(module, name);
    }

    @Test
    void aMissingBarrierShowsUpAsPoisonedReads() {
        int n = 64;
        try (DeviceTensor dIn = DeviceTensor.of(emu, data.tensor(DType.F32, 1, n));
             DeviceTensor dOut = DeviceTensor.allocate(emu, DType.F32, n)) {
            emu.launch(fn("selftest_reverse_no_barrier_f32"), Dim3.of(1), Dim3.of(n), n * 4, 0,
                    new KernelArgs().pointer(dIn.pointer()).pointer(dOut.pointer()));
            Tensor out = dOut.toHost();
            assertTrue(Double.isNaN(out.getFlat(0)), "thread 0 read slot 63 before thread 63 wrote it: NaN poison expected");
        }
    }

    @Test
    void aBarrierSomeThreadsNeverReachIsReported() {
        try (DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 32)) {
            var e = assertThrows(DriverException.class, () -> emu.launch(fn("selftest_divergent_barrier"), Dim3.of(1),
                    Dim3.of(32), 0, 0, new KernelArgs().pointer(out.pointer())));
            assertTrue(e.getMessage().contains("selftest_divergent_barrier")
                    && e.getMessage().contains("__syncthreads reached by 16 of 32 threads; 16 exited"), e.getMessage());
        }
    }

    @Test
    void anOutOfBoundsWriteIsReportedWithBlockAndThread() {
        int n = 100;
        try (DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, n)) {
            var e = assertThrows(DriverException.class, () -> emu.launch(fn("selftest_write_past_end"), Dim3.of(4),
                    Dim3.of(32), 0, 0, new KernelArgs().pointer(out.pointer()).i32(n).i32(2).i32(5)));
            assertTrue(e.getMessage().contains("kernel selftest_write_past_end block (2,0,0) thread (5,0,0)")
                    && e.getMessage().contains("past the end of device allocation") && e.getMessage().contains("(400 bytes)"),
                    e.getMessage());
        }
    }

    @Test
    void aSharedMemoryOverflowIsReportedWithTheThread() {
        try (DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 16)) {
            var e = assertThrows(DriverException.class, () -> emu.launch(fn("selftest_shared_overflow"), Dim3.of(1),
                    Dim3.of(16), 16 * 4, 0, new KernelArgs().pointer(out.pointer())));
            assertTrue(e.getMessage().contains("thread (3,0,0)") && e.getMessage().contains("dynamic shared memory (64 bytes)"),
                    e.getMessage());
        }
    }

    @Test
    void aShuffleNamingExitedLanesIsReported() {
        try (DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 32)) {
            var e = assertThrows(DriverException.class, () -> emu.launch(fn("selftest_shuffle_with_exited_lanes"), Dim3.of(1),
                    Dim3.of(32), 0, 0, new KernelArgs().pointer(out.pointer())));
            assertTrue(e.getMessage().contains("exited without reaching it"), e.getMessage());
        }
    }

    @Test
    void launchShapesAndArgumentsAreValidated() {
        try (DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 32)) {
            long f = fn("selftest_atomic_count");
            var tooMany = assertThrows(DriverException.class, () -> emu.launch(f, Dim3.of(1), Dim3.of(1025), 0, 0,
                    new KernelArgs().pointer(out.pointer())));
            assertTrue(tooMany.getMessage().contains("exceeds the limits"), tooMany.getMessage());
            var smem = assertThrows(DriverException.class, () -> emu.launch(f, Dim3.of(1), Dim3.of(32), 300_000, 0,
                    new KernelArgs().pointer(out.pointer())));
            assertTrue(smem.getMessage().contains("sm_90 limit"), smem.getMessage());
            var arity = assertThrows(DriverException.class, () -> emu.launch(f, Dim3.of(1), Dim3.of(32), 0, 0,
                    new KernelArgs().pointer(out.pointer()).i32(3)));
            assertTrue(arity.getMessage().contains("takes 1 parameters, 2 were passed"), arity.getMessage());
            var unknown = assertThrows(DriverException.class, () -> emu.function(module, "no_such_kernel"));
            assertTrue(unknown.getMessage().contains("no_such_kernel"), unknown.getMessage());
        }
    }

    @Test
    void theEmulatorKeepsWorkingAfterAReportedError() {
        aBarrierSomeThreadsNeverReachIsReported();
        int n = 33;
        Tensor in = data.tensor(DType.F32, 1, n);
        try (DeviceTensor dIn = DeviceTensor.of(emu, in); DeviceTensor dOut = DeviceTensor.allocate(emu, DType.F32, n)) {
            emu.launch(fn("selftest_reverse_f32"), Dim3.of(1), Dim3.of(n), n * 4, 0,
                    new KernelArgs().pointer(dIn.pointer()).pointer(dOut.pointer()));
            assertEquals(in.getFlat(n - 1), dOut.toHost().getFlat(0), "a launch after the reported error runs normally");
        }
    }

    @Test
    void readingBeforeTheCpAsyncWaitSeesPoison() {
        try (DeviceTensor in = DeviceTensor.of(emu, data.tensor(DType.F32, 1, 128));
             DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 32)) {
            emu.launch(emu.function(module, "selftest_cp_async_missing_wait"), Dim3.of(1), Dim3.of(32), 128 * 4, 0,
                    new KernelArgs().pointer(in.pointer()).pointer(out.pointer()));
            for (double v : out.toHost().toDoubleArray()) {
                assertTrue(Double.isNaN(v), "a read before cp.async's wait must not see the copied data");
            }
        }
    }

    @Test
    void aGridSyncSomeBlocksNeverReachIsReported() {
        try (DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 4)) {
            var e = assertThrows(DriverException.class, () -> emu.launchCooperative(
                    emu.function(module, "selftest_grid_sync_divergent"), Dim3.of(4), Dim3.of(32), 0, 0,
                    new KernelArgs().pointer(out.pointer())));
            assertTrue(e.getMessage().contains("grid sync reached by 3 of 4 blocks"), e.getMessage());
        }
    }

    @Test
    void gridSyncOutsideACooperativeLaunchIsAnError() {
        try (DeviceTensor a = DeviceTensor.allocate(emu, DType.F32, 2); DeviceTensor b = DeviceTensor.allocate(emu, DType.F32, 2)) {
            var e = assertThrows(DriverException.class, () -> emu.launch(emu.function(module, "selftest_grid_sync"),
                    Dim3.of(2), Dim3.of(32), 0, 0, new KernelArgs().pointer(a.pointer()).pointer(b.pointer())));
            assertTrue(e.getMessage().contains("grid sync outside a cooperative launch"), e.getMessage());
        }
    }
}
