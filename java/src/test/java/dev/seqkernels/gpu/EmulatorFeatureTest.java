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
 * One self-test kernel (cuda/selftest.cu) per emulated feature, checked against plain
 * expectations, and kernels with deliberate bugs that the emulator's checking must report with
 * the kernel, block and thread.
 */
class EmulatorFeatureTest {
    private final EmuDriver emu = EmuDriver.instance();
    private final long module = emu.loadModule("selftest");
    private final TestData data = new TestData();

    private long fn(String name) {
        return emu.function(module, name);
    }

    @Test
    void barriersAndDynamicSharedMemory() {
        int n = 97;
        int blocks = 3;
        Tensor in = data.tensor(DType.F32, 1, blocks * n);
        try (DeviceTensor dIn = DeviceTensor.of(emu, in); DeviceTensor dOut = DeviceTensor.allocate(emu, DType.F32, blocks * n)) {
            emu.launch(fn("selftest_reverse_f32"), Dim3.of(blocks), Dim3.of(n), n * 4, 0,
                    new KernelArgs().pointer(dIn.pointer()).pointer(dOut.pointer()));
            Tensor out = dOut.toHost();
            for (int b = 0; b < blocks; b++) {
                for (int t = 0; t < n; t++) {
                    assertEquals(in.getFlat(b * n + n - 1 - t), out.getFlat(b * n + t), "block " + b + " thread " + t);
                }
            }
        }
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
    void staticSharedMemoryAndShuffleReduction() {
        int threads = 160;
        int blocks = 5;
        Tensor in = data.tensor(DType.F32, 1, blocks * threads);
        try (DeviceTensor dIn = DeviceTensor.of(emu, in); DeviceTensor dOut = DeviceTensor.allocate(emu, DType.F32, blocks)) {
            emu.launch(fn("selftest_block_sum_f32"), Dim3.of(blocks), Dim3.of(threads), 0, 0,
                    new KernelArgs().pointer(dIn.pointer()).pointer(dOut.pointer()));
            Tensor out = dOut.toHost();
            for (int b = 0; b < blocks; b++) {
                double expected = 0;
                for (int t = 0; t < threads; t++) {
                    expected += in.getFlat(b * threads + t);
                }
                assertEquals(expected, out.getFlat(b), 1e-5, "block " + b + " " + data);
            }
        }
    }

    @Test
    void shufflesAndVotesFollowCudaSemantics() {
        double[] values = new double[32];
        for (int i = 0; i < 32; i++) {
            values[i] = data.nextInt(0, 100);
        }
        try (DeviceTensor dIn = DeviceTensor.of(emu, Tensor.of(DType.I64, values, 32).to(DType.F32));
             DeviceTensor ints = DeviceTensor.allocate(emu, DType.F32, 32);
             DeviceTensor dOut = DeviceTensor.allocate(emu, DType.F32, 32 * 8)) {
            // The kernel reads int32: store the values' int bits.
            Tensor bits = Tensor.allocate(DType.F32, 32);
            for (int i = 0; i < 32; i++) {
                bits.setFlat(i, Float.intBitsToFloat((int) values[i]));
            }
            ints.copyFrom(bits);
            emu.launch(fn("selftest_warp_ops_i32"), Dim3.of(1), Dim3.of(32), 0, 0,
                    new KernelArgs().pointer(ints.pointer()).pointer(dOut.pointer()));
            Tensor out = dOut.toHost();
            int ballot = 0;
            boolean any = false;
            for (int l = 0; l < 32; l++) {
                ballot |= ((int) values[l] & 1) << l;
                any |= values[l] > 90;
            }
            for (int l = 0; l < 32; l++) {
                int[] got = new int[8];
                for (int k = 0; k < 8; k++) {
                    got[k] = Float.floatToRawIntBits((float) out.getFlat(l * 8 + k));
                }
                String at = "lane " + l + " " + data;
                assertEquals((int) values[31 - l], got[0], "shfl " + at);
                assertEquals((int) values[l ^ 5], got[1], "shfl_xor " + at);
                assertEquals((int) values[l + 3 < 32 ? l + 3 : l], got[2], "shfl_down " + at);
                assertEquals((int) values[l >= 2 ? l - 2 : l], got[3], "shfl_up " + at);
                assertEquals(ballot, got[4], "ballot " + at);
                assertEquals(any ? 1 : 0, got[5], "any " + at);
                assertEquals(1, got[6], "all " + at);
                assertEquals(l < 16 ? (int) values[l ^ 1] : -1, got[7], "16-lane shfl_xor " + at);
            }
        }
    }

    @Test
    void atomicsCountEveryThread() {
        try (DeviceTensor counter = DeviceTensor.allocate(emu, DType.F32, 1)) {
            emu.memset(counter.pointer(), 0, 4);
            emu.launch(fn("selftest_atomic_count"), Dim3.of(7, 2), Dim3.of(33, 3), 0, 0, new KernelArgs().pointer(counter.pointer()));
            Tensor c = counter.toHost();
            assertEquals(7 * 2 * 33 * 3, Float.floatToRawIntBits((float) c.getFlat(0)));
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
            assertTrue(arity.getMessage().contains("takes 1 arguments, 2 were passed"), arity.getMessage());
            var unknown = assertThrows(DriverException.class, () -> emu.function(module, "no_such_kernel"));
            assertTrue(unknown.getMessage().contains("no_such_kernel"), unknown.getMessage());
        }
    }

    @Test
    void theEmulatorKeepsWorkingAfterAReportedError() {
        aBarrierSomeThreadsNeverReachIsReported();
        barriersAndDynamicSharedMemory();
    }
}
