package dev.seqkernels.gpu;

import dev.seqkernels.DType;
import dev.seqkernels.Rounding;
import dev.seqkernels.TestData;
import dev.seqkernels.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The tensor-core, cp.async and grid-sync wrappers of cuda/arch/ (cuda/selftest.cu) through the
 * binding under test: mma fragments gathered by the documented lane layouts must give the plain
 * matrix product, ldmatrix must build the same fragments from shared memory, grid sync must order
 * blocks, and a cooperative grid larger than what fits is refused. On the emulator this checks its
 * model of the hardware; on a real GPU, the first thing to run, it settles the fragment layouts.
 */
@PerBinding
class PrimitivesSelfTest {
    private final Driver driver = GpuTargets.driver();
    private final long module = driver.loadModule("selftest");
    private final TestData data = new TestData();

    /** 16-bit bit patterns of random values, and the values they hold. */
    private record Operand(short[] bits, double[] values) {
    }

    private Operand operand(boolean bf16, int n) {
        short[] bits = new short[n];
        double[] values = new double[n];
        for (int i = 0; i < n; i++) {
            double v = data.uniform(-2, 2);
            bits[i] = bf16 ? Rounding.doubleToBf16(v) : Rounding.doubleToHalf(v);
            values[i] = bf16 ? Rounding.bf16ToDouble(bits[i]) : Rounding.halfToDouble(bits[i]);
        }
        return new Operand(bits, values);
    }

    private long upload(Arena arena, short[] bits) {
        MemorySegment host = arena.allocate(2L * bits.length, 16);
        MemorySegment.copy(bits, 0, host, ValueLayout.JAVA_SHORT, 0, bits.length);
        long d = driver.malloc(host.byteSize());
        driver.copyHostToDevice(d, host, host.byteSize());
        return d;
    }

    private void checkMma(String kernel, boolean bf16) {
        Operand a = operand(bf16, 16 * 16);
        Operand b = operand(bf16, 16 * 8);
        Tensor c = data.tensor(DType.F32, 1, 16, 8);
        try (Arena arena = Arena.ofConfined(); DeviceTensor dc = DeviceTensor.of(driver, c);
             DeviceTensor dd = DeviceTensor.allocate(driver, DType.F32, 16, 8)) {
            long da = upload(arena, a.bits());
            long db = upload(arena, b.bits());
            try {
                driver.launch(driver.function(module, kernel), Dim3.of(1), Dim3.of(32), 0, 0,
                        new KernelArgs().pointer(da).pointer(db).pointer(dc.pointer()).pointer(dd.pointer()));
            } finally {
                driver.free(da);
                driver.free(db);
            }
            Tensor d = dd.toHost();
            for (int i = 0; i < 16; i++) {
                for (int j = 0; j < 8; j++) {
                    double expected = c.get(i, j);
                    for (int k = 0; k < 16; k++) {
                        expected += a.values()[i * 16 + k] * b.values()[k * 8 + j];
                    }
                    assertEquals(expected, d.get(i, j), 1e-5 * (1 + Math.abs(expected)), kernel + " D[" + i + "][" + j + "] " + data);
                }
            }
        }
    }

    @ParameterizedTest
    @ValueSource(booleans = {false, true})
    void mmaFragmentLayoutGivesThePlainProduct(boolean bf16) {
        checkMma(bf16 ? "selftest_mma_bf16" : "selftest_mma_f16", bf16);
    }

    @Test
    void tf32MmaFragmentLayoutGivesThePlainProductOfRoundedOperands() {
        Tensor a = data.tensor(DType.F32, 2, 16, 8);
        Tensor b = data.tensor(DType.F32, 2, 8, 8);
        Tensor c = data.tensor(DType.F32, 1, 16, 8);
        try (DeviceTensor da = DeviceTensor.of(driver, a); DeviceTensor db = DeviceTensor.of(driver, b); DeviceTensor dc = DeviceTensor.of(driver, c);
             DeviceTensor dd = DeviceTensor.allocate(driver, DType.F32, 16, 8)) {
            driver.launch(driver.function(module, "selftest_mma_tf32"), Dim3.of(1), Dim3.of(32), 0, 0,
                    new KernelArgs().pointer(da.pointer()).pointer(db.pointer()).pointer(dc.pointer()).pointer(dd.pointer()));
            Tensor d = dd.toHost();
            double worstRounding = 0;
            for (int i = 0; i < 16; i++) {
                for (int j = 0; j < 8; j++) {
                    double expected = c.get(i, j);
                    double unrounded = c.get(i, j);
                    for (int k = 0; k < 8; k++) {
                        expected += dev.seqkernels.Rounding.toTf32(a.get(i, k)) * dev.seqkernels.Rounding.toTf32(b.get(k, j));
                        unrounded += a.get(i, k) * b.get(k, j);
                    }
                    assertEquals(expected, d.get(i, j), 1e-5 * (1 + Math.abs(expected)), "D[" + i + "][" + j + "] " + data);
                    worstRounding = Math.max(worstRounding, Math.abs(unrounded - expected));
                }
            }
            assertTrue(worstRounding > 1e-5, "the operands were really rounded to tf32 (else the check above proves nothing)");
        }
    }

    @Test
    void cpAsyncThenLdmatrixBuildTheSameFragments() {
        checkMma("selftest_cp_async_ldmatrix_mma_f16", false);
    }

    /**
     * ldmatrix.x4.trans: register j of lane l holds rows 2(l % 4) and 2(l % 4) + 1 of column l / 4
     * of matrix j (the transpose's row l / 4), matrix j being M's rows 8(j % 2).. at columns
     * 8(j / 2)..: what mma's B fragments of two 8-column blocks need.
     */
    /** cp.async with a source size of 0 writes zeros (the tensor-core forward's rows past the tensor); with 16 it copies. */
    @Test
    void cpAsyncCopiesOrWritesZeros() {
        Tensor in = data.tensor(DType.F32, 1, 128);
        try (DeviceTensor din = DeviceTensor.of(driver, in); DeviceTensor dout = DeviceTensor.allocate(driver, DType.F32, 128)) {
            driver.launch(driver.function(module, "selftest_cp_async_or_zeros"), Dim3.of(1), Dim3.of(32), 128 * 4, 0,
                    new KernelArgs().pointer(din.pointer()).pointer(dout.pointer()));
            Tensor got = dout.toHost();
            for (int i = 0; i < 128; i++) {
                assertEquals(i / 4 % 2 == 0 ? in.getFlat(i) : 0.0, got.getFlat(i), "element " + i);
            }
        }
    }

    @Test
    void ldmatrixX4TransGivesTheTransposedFragments() {
        short[] m = new short[256];
        for (int i = 0; i < 256; i++) {
            m[i] = (short) (i * 7 + 3);
        }
        try (Arena arena = Arena.ofConfined(); DeviceTensor out = DeviceTensor.allocate(driver, DType.I32, 128)) {
            long dm = upload(arena, m);
            try {
                driver.launch(driver.function(module, "selftest_ldmatrix_x4_trans"), Dim3.of(1), Dim3.of(32), 0, 0,
                        new KernelArgs().pointer(dm).pointer(out.pointer()));
            } finally {
                driver.free(dm);
            }
            Tensor got = out.toHost();
            for (int lane = 0; lane < 32; lane++) {
                for (int j = 0; j < 4; j++) {
                    int col = 8 * (j / 2) + lane / 4;
                    int row = 8 * (j % 2) + 2 * (lane % 4);
                    int want = (m[row * 16 + col] & 0xffff) | (m[(row + 1) * 16 + col] & 0xffff) << 16;
                    assertEquals(want, (int) got.getFlat(lane * 4 + j), "lane " + lane + " register " + j);
                }
            }
        }
    }

    /** 37 blocks of 64 threads, or as many as fit at once where fewer do (the emulated T4 on two cores: 2 x 16): more than 8. */
    private int cooperativeBlocksOf64(long fn) {
        int blocks = Math.min(37, driver.maxActiveBlocksPerMultiprocessor(fn, 64, 0) * driver.properties().multiprocessors());
        assertTrue(blocks > 8, "a grid of " + blocks + " blocks");
        return blocks;
    }

    /** 37 blocks, or as many as fit at once where fewer do (the emulated T4 on two cores: 2 x 16). */
    @Test
    @DeviceDependent
    void gridSyncOrdersAllBlocks() {
        long fn = driver.function(module, "selftest_grid_sync");
        int blocks = cooperativeBlocksOf64(fn);
        try (DeviceTensor scratch = DeviceTensor.allocate(driver, DType.F32, blocks);
             DeviceTensor out = DeviceTensor.allocate(driver, DType.F32, blocks)) {
            driver.launchCooperative(fn, Dim3.of(blocks), Dim3.of(64), 0, 0,
                    new KernelArgs().pointer(scratch.pointer()).pointer(out.pointer()));
            Tensor o = out.toHost();
            Tensor s = scratch.toHost();
            for (int b = 0; b < blocks; b++) {
                assertEquals((b + 1) % blocks + 1, o.getFlat(b), "block " + b);
                assertEquals(-(b + 1), s.getFlat(b), "block " + b + " after the second grid sync");
            }
        }
    }

    /**
     * The persistent kernels' step barrier (cuda/arch/flag.cuh: red.release.gpu and ld.acquire.gpu on a
     * counter) orders every block's writes before every block's reads, as the grid sync does: the
     * same exchange, twice, on one counter zeroed before each launch.
     */
    @Test
    @DeviceDependent
    void aFlagBarrierOrdersAllBlocks() {
        long fn = driver.function(module, "selftest_flag_barrier");
        int blocks = cooperativeBlocksOf64(fn);
        try (DeviceTensor scratch = DeviceTensor.allocate(driver, DType.F32, blocks);
             DeviceTensor out = DeviceTensor.allocate(driver, DType.F32, blocks);
             DeviceTensor arrivals = DeviceTensor.allocate(driver, DType.I32, 1)) {
            for (int launch = 0; launch < 2; launch++) {
                driver.memsetAsync(arrivals.pointer(), 0, 4, 0);
                driver.launchCooperative(fn, Dim3.of(blocks), Dim3.of(64), 0, 0,
                        new KernelArgs().pointer(scratch.pointer()).pointer(out.pointer()).pointer(arrivals.pointer()).i32(0).i32(1));
                Tensor o = out.toHost();
                Tensor s = scratch.toHost();
                for (int b = 0; b < blocks; b++) {
                    assertEquals((b + 1) % blocks + 1, o.getFlat(b), "launch " + launch + " block " + b);
                    assertEquals(-(b + 1), s.getFlat(b), "launch " + launch + " block " + b + " after the second round");
                }
                assertEquals(2 * blocks, arrivals.toHost().getFlat(0), "two arrivals per block");
            }
        }
    }

    /** One block more than fits at once (the driver's occupancy x multiprocessors) is COOPERATIVE_LAUNCH_TOO_LARGE. */
    @Test
    void aCooperativeGridLargerThanTheDeviceIsRefused() {
        long fn = driver.function(module, "selftest_grid_sync");
        int blocks = driver.maxActiveBlocksPerMultiprocessor(fn, 32, 0) * driver.properties().multiprocessors() + 1;
        try (DeviceTensor a = DeviceTensor.allocate(driver, DType.F32, blocks); DeviceTensor b = DeviceTensor.allocate(driver, DType.F32, blocks)) {
            var e = assertThrows(DriverException.class, () -> driver.launchCooperative(fn, Dim3.of(blocks), Dim3.of(32), 0, 0,
                    new KernelArgs().pointer(a.pointer()).pointer(b.pointer())));
            assertEquals(DriverException.COOPERATIVE_LAUNCH_TOO_LARGE, e.status(), e.getMessage());
        }
    }

    @Test
    void barriersAndDynamicSharedMemory() {
        int n = 97;
        int blocks = 3;
        Tensor in = data.tensor(DType.F32, 1, blocks * n);
        try (DeviceTensor dIn = DeviceTensor.of(driver, in); DeviceTensor dOut = DeviceTensor.allocate(driver, DType.F32, blocks * n)) {
            driver.launch(driver.function(module, "selftest_reverse_f32"), Dim3.of(blocks), Dim3.of(n), n * 4, 0,
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
    void staticSharedMemoryAndShuffleReduction() {
        int threads = 160;
        int blocks = 5;
        Tensor in = data.tensor(DType.F32, 1, blocks * threads);
        try (DeviceTensor dIn = DeviceTensor.of(driver, in); DeviceTensor dOut = DeviceTensor.allocate(driver, DType.F32, blocks)) {
            driver.launch(driver.function(module, "selftest_block_sum_f32"), Dim3.of(blocks), Dim3.of(threads), 0, 0,
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
        try (DeviceTensor dIn = DeviceTensor.of(driver, Tensor.of(DType.I64, values, 32).to(DType.F32));
             DeviceTensor ints = DeviceTensor.allocate(driver, DType.F32, 32);
             DeviceTensor dOut = DeviceTensor.allocate(driver, DType.F32, 32 * 8)) {
            // The kernel reads int32: store the values' int bits.
            Tensor bits = Tensor.allocate(DType.F32, 32);
            for (int i = 0; i < 32; i++) {
                bits.setFlat(i, Float.intBitsToFloat((int) values[i]));
            }
            ints.copyFrom(bits);
            driver.launch(driver.function(module, "selftest_warp_ops_i32"), Dim3.of(1), Dim3.of(32), 0, 0,
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
        try (DeviceTensor counter = DeviceTensor.allocate(driver, DType.F32, 1)) {
            driver.memset(counter.pointer(), 0, 4);
            driver.launch(driver.function(module, "selftest_atomic_count"), Dim3.of(7, 2), Dim3.of(33, 3), 0, 0, new KernelArgs().pointer(counter.pointer()));
            Tensor c = counter.toHost();
            assertEquals(7 * 2 * 33 * 3, Float.floatToRawIntBits((float) c.getFlat(0)));
        }
    }

    /**
     * A block needing more registers than a multiprocessor has is refused before it runs: the
     * tensor-core attention kernel (about 248 registers) with 1,024 threads. (The emulator reads the
     * registers from the kernel report; a driver from the cubin.)
     */
    @Test
    void aLaunchNeedingTooManyRegistersIsRefused() {
        KernelReport report = KernelReport.load();
        org.junit.jupiter.api.Assumptions.assumeTrue(report.built(), () -> "skipped: " + report.note());
        long kernel = driver.function(driver.loadModule("attention"), "attn_fwd_tc64_f16");
        KernelArgs args = new KernelArgs();
        for (int i = 0; i < 9; i++) {
            args.pointer(0);
        }
        args.struct(new long[33]).i32(0);
        var e = assertThrows(DriverException.class, () -> driver.launch(kernel, Dim3.of(1), Dim3.of(1024), 0, 0, args));
        assertEquals(DriverException.LAUNCH_OUT_OF_RESOURCES, e.status(), e.getMessage());
    }

    /** A block above a kernel's __launch_bounds__ is refused as a GPU refuses it; at the bound it runs, and occupancy is 0 beyond it. */
    @Test
    void aBlockAboveTheKernelsLaunchBoundsIsRefused() {
        KernelReport report = KernelReport.load();
        org.junit.jupiter.api.Assumptions.assumeTrue(report.built(), () -> "skipped: " + report.note());
        assertEquals(64, report.entry("selftest_launch_bounds_64").maxThreadsPerBlock(), "the kernel report reads .maxntid");
        long kernel = driver.function(module, "selftest_launch_bounds_64");
        try (DeviceTensor out = DeviceTensor.allocate(driver, DType.F32, 128)) {
            var e = assertThrows(DriverException.class, () -> driver.launch(kernel, Dim3.of(1), Dim3.of(128), 0, 0,
                    new KernelArgs().pointer(out.pointer())));
            assertEquals(DriverException.LAUNCH_OUT_OF_RESOURCES, e.status(), e.getMessage());
            driver.launch(kernel, Dim3.of(2), Dim3.of(64), 0, 0, new KernelArgs().pointer(out.pointer()));
            driver.synchronize(0);
            Tensor o = out.toHost();
            for (int i = 0; i < 128; i++) {
                assertEquals(1.0, o.getFlat(i), "out[" + i + "]");
            }
        }
        assertEquals(0, driver.maxActiveBlocksPerMultiprocessor(kernel, 128, 0));
        assertTrue(driver.maxActiveBlocksPerMultiprocessor(kernel, 64, 0) > 0);
    }
}
