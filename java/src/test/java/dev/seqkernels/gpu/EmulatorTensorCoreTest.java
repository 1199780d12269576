package dev.seqkernels.gpu;

import dev.seqkernels.DType;
import dev.seqkernels.Rounding;
import dev.seqkernels.TestData;
import dev.seqkernels.Tensor;
import dev.seqkernels.gpu.emu.EmuDriver;
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
 * The tensor-core, cp.async and grid-sync wrappers of cuda/arch/ on the emulator: mma fragments
 * gathered by the documented lane layouts must give the plain matrix product, ldmatrix must build
 * the same fragments from shared memory, and grid sync must order blocks.
 */
class EmulatorTensorCoreTest {
    private final EmuDriver emu = EmuDriver.instance();
    private final long module = emu.loadModule("selftest");
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
        long d = emu.malloc(host.byteSize());
        emu.copyHostToDevice(d, host, host.byteSize());
        return d;
    }

    private void checkMma(String kernel, boolean bf16) {
        Operand a = operand(bf16, 16 * 16);
        Operand b = operand(bf16, 16 * 8);
        Tensor c = data.tensor(DType.F32, 1, 16, 8);
        try (Arena arena = Arena.ofConfined(); DeviceTensor dc = DeviceTensor.of(emu, c);
             DeviceTensor dd = DeviceTensor.allocate(emu, DType.F32, 16, 8)) {
            long da = upload(arena, a.bits());
            long db = upload(arena, b.bits());
            try {
                emu.launch(emu.function(module, kernel), Dim3.of(1), Dim3.of(32), 0, 0,
                        new KernelArgs().pointer(da).pointer(db).pointer(dc.pointer()).pointer(dd.pointer()));
            } finally {
                emu.free(da);
                emu.free(db);
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

    /** tf32 keeps 10 mantissa bits, rounding to nearest with ties away from zero. */
    static double tf32(double v) {
        int bits = Float.floatToRawIntBits((float) v);
        return Float.intBitsToFloat((bits + 0x1000) & 0xffffe000);
    }

    @Test
    void tf32MmaFragmentLayoutGivesThePlainProductOfRoundedOperands() {
        Tensor a = data.tensor(DType.F32, 2, 16, 8);
        Tensor b = data.tensor(DType.F32, 2, 8, 8);
        Tensor c = data.tensor(DType.F32, 1, 16, 8);
        try (DeviceTensor da = DeviceTensor.of(emu, a); DeviceTensor db = DeviceTensor.of(emu, b); DeviceTensor dc = DeviceTensor.of(emu, c);
             DeviceTensor dd = DeviceTensor.allocate(emu, DType.F32, 16, 8)) {
            emu.launch(emu.function(module, "selftest_mma_tf32"), Dim3.of(1), Dim3.of(32), 0, 0,
                    new KernelArgs().pointer(da.pointer()).pointer(db.pointer()).pointer(dc.pointer()).pointer(dd.pointer()));
            Tensor d = dd.toHost();
            double worstRounding = 0;
            for (int i = 0; i < 16; i++) {
                for (int j = 0; j < 8; j++) {
                    double expected = c.get(i, j);
                    double unrounded = c.get(i, j);
                    for (int k = 0; k < 8; k++) {
                        expected += tf32(a.get(i, k)) * tf32(b.get(k, j));
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
    void gridSyncOrdersAllBlocks() {
        int blocks = 37;
        try (DeviceTensor scratch = DeviceTensor.allocate(emu, DType.F32, blocks);
             DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, blocks)) {
            emu.launchCooperative(emu.function(module, "selftest_grid_sync"), Dim3.of(blocks), Dim3.of(64), 0, 0,
                    new KernelArgs().pointer(scratch.pointer()).pointer(out.pointer()));
            Tensor o = out.toHost();
            for (int b = 0; b < blocks; b++) {
                assertEquals((b + 1) % blocks + 1, o.getFlat(b), "block " + b);
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

    @Test
    void tooManyCooperativeBlocksIsAnError() {
        try (DeviceTensor a = DeviceTensor.allocate(emu, DType.F32, 1000); DeviceTensor b = DeviceTensor.allocate(emu, DType.F32, 1000)) {
            var e = assertThrows(DriverException.class, () -> emu.launchCooperative(emu.function(module, "selftest_grid_sync"),
                    Dim3.of(1000), Dim3.of(32), 0, 0, new KernelArgs().pointer(a.pointer()).pointer(b.pointer())));
            assertTrue(e.getMessage().contains("co-resident blocks"), e.getMessage());
        }
    }
}
