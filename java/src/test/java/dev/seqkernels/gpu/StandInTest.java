package dev.seqkernels.gpu;

import dev.seqkernels.Backends;
import dev.seqkernels.DType;
import dev.seqkernels.TestData;
import dev.seqkernels.Tensor;
import dev.seqkernels.ops.Lstm;
import dev.seqkernels.ops.RecurrentOp;
import dev.seqkernels.ops.RecurrentResult;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.util.LinkedHashMap;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The bindings over the stand-in driver: recognized as a stand-in (never picked by auto, named by
 * Backends.availability), its diagnostics in the bindings' errors, and the persistent kernel's fall
 * back when a cooperative grid does not fit. The tools' side (seqk info, benchmark cases) is
 * StandInToolsTest in seqkernels-tools.
 */
@PerBinding
class StandInTest {
    private StandIn standIn;

    @BeforeEach
    void overTheStandIn() {
        standIn = GpuTargets.standIn().orElse(null);
        assumeTrue(standIn != null, () -> "skipped: the " + GpuTargets.binding() + " binding does not run over the stand-in driver");
    }

    @Test
    void theStandInIsNeverTakenForAGpu() {
        assertTrue(GpuTargets.driver().properties().simulated(), "the device is simulated");
        assertTrue(GpuTargets.driver().properties().name().contains("stand-in"), GpuTargets.driver().properties().name());
        assertEquals("cpu", Backends.byName("auto").name(), "auto never takes a binding over the stand-in");
        assertTrue(Backends.availability().get(GpuTargets.binding()).contains("stand-in driver"), Backends.availability()::toString);
    }

    @Test
    void bindingErrorsCarryTheStandInsDiagnostic() {
        Driver d = GpuTargets.driver();
        long fn = d.function(d.loadModule("selftest"), "selftest_reverse_f32");
        var e = assertThrows(DriverException.class, () -> d.launch(fn, Dim3.of(1), Dim3.of(2048), 0, 0,
                new KernelArgs().pointer(0).pointer(0)));
        assertEquals(1, e.status(), e.getMessage());
        assertTrue(e.getMessage().contains("CUDA_ERROR_INVALID_VALUE") && e.getMessage().contains("stand-in: ")
                && e.getMessage().contains("block (2048,1,1) exceeds"), e.getMessage());
    }

    /**
     * Under MPS a cooperative launch may get fewer SMs than the device reports, so a persistent grid
     * that fits by the occupancy query is refused with COOPERATIVE_LAUNCH_TOO_LARGE: the forward
     * then runs the per-step loop instead (many launches, not one), with the same results.
     */
    @Test
    void thePersistentKernelFallsBackWhenItsGridDoesNotFit() {
        TestData data = new TestData();
        int batch = 2;
        // H = 176 over 4 SMs: 44 units, 126,720 bytes of shared memory per block at B = 2, so one block per SM.
        RecurrentOp cpu = Lstm.builder().inputSize(5).hiddenSize(176).backend("cpu").build();
        assertTrue(RecurrentGpu.persistentPlan(cpu.config(), batch, DType.F32, GpuTargets.driver().properties(), RecurrentGpu.StepChoice.AUTO)
                != null, "the rule picks the persistent kernel here");
        Map<String, Tensor> p = data.params(DType.F32, 0.2, cpu.config().parameterShapes());
        Map<String, Tensor> p64 = new LinkedHashMap<>();
        p.forEach((n, t) -> p64.put(n, t.to(DType.F64)));
        Tensor x = data.tensor(DType.F32, 1, 6, batch, 5);
        int sms = GpuTargets.driver().properties().multiprocessors();
        int[] launches = new int[2];
        for (int run = 0; run < 2; run++) {
            standIn.configure("cooperative_multiprocessors", run == 0 ? 0 : sms - 1);
            try (CapturingDriver counting = new CapturingDriver(GpuTargets.driver())) {
                RecurrentOp gpu = Lstm.builder().inputSize(5).hiddenSize(176).backend(new GpuBackend(counting)).build();
                try (RecurrentResult got = gpu.forward(p, x); RecurrentResult want = cpu.forward(p64, x.to(DType.F64))) {
                    RecurrentGpuTest.check("lstm H=176, cooperative SMs " + (run == 0 ? "all" : sms - 1) + " " + data,
                            got.output(), want.output(), DType.F32);
                    launches[run] = counting.launches();
                }
            } finally {
                standIn.configure("cooperative_multiprocessors", 0);
            }
        }
        assertTrue(launches[1] >= launches[0] + 4, "the per-step loop ran instead: " + launches[0] + " launches with every SM, "
                + launches[1] + " with one short");
    }

    /**
     * SEQK_STANDIN_CHECKS=memory (the core's stand-in runs: the default run race-checked the same
     * launches) starts the stand-in without the emulator's race checks, and "race_checks" switches
     * them. On, a missing barrier fails the launch; off, the same launch runs, and a write past an
     * allocation or past the block's shared memory still fails one.
     */
    @Test
    void raceChecksFollowTheSetting() {
        Driver d = GpuTargets.driver();
        long module = d.loadModule("selftest");
        long racy = d.function(module, "selftest_reverse_no_barrier_f32");
        long pastEnd = d.function(module, "selftest_write_past_end");
        int n = 64;
        int startedWith = "memory".equals(System.getenv("SEQK_STANDIN_CHECKS")) ? 0 : 1;
        try (DeviceTensor in = DeviceTensor.allocate(d, DType.F32, n); DeviceTensor out = DeviceTensor.allocate(d, DType.F32, n)) {
            KernelArgs args = new KernelArgs().pointer(in.pointer()).pointer(out.pointer());
            Runnable launchRacy = () -> d.launch(racy, Dim3.of(1), Dim3.of(n), n * 4, 0, args);
            if (startedWith == 1) {  // as SEQK_STANDIN_CHECKS left it at cuInit
                assertThrows(DriverException.class, launchRacy::run);
            } else {
                launchRacy.run();
            }
            standIn.configure("race_checks", 1);
            var race = assertThrows(DriverException.class, launchRacy::run);
            assertTrue(race.getMessage().contains("race on dynamic shared memory"), race.getMessage());
            standIn.configure("race_checks", 0);
            launchRacy.run();
            var past = assertThrows(DriverException.class, () -> d.launch(pastEnd, Dim3.of(2), Dim3.of(32), 0, 0,
                    new KernelArgs().pointer(out.pointer()).i32(n).i32(1).i32(3)));
            assertTrue(past.getMessage().contains("outside every device allocation"), past.getMessage());
            var overflow = assertThrows(DriverException.class, () -> d.launch(d.function(module, "selftest_shared_overflow"),
                    Dim3.of(1), Dim3.of(16), 16 * 4, 0, new KernelArgs().pointer(out.pointer())));
            assertTrue(overflow.getMessage().contains("thread (3,0,0)") && overflow.getMessage().contains("dynamic shared memory (64 bytes)"),
                    overflow.getMessage());
        } finally {
            standIn.configure("race_checks", startedWith);
        }
        assertThrows(IllegalArgumentException.class, () -> standIn.configure("race_checks", 2));
    }

    /** Malformed images are refused with CUDA_ERROR_INVALID_IMAGE, never a crash of the JVM (nothing may cross the C ABI). */
    @Test
    void malformedImagesAreRefusedNotCrashes() {
        java.lang.foreign.SymbolLookup cuda = CudaLibrary.lookup("test");
        var load = java.lang.foreign.Linker.nativeLinker().downcallHandle(cuda.find("cuModuleLoadData").orElseThrow(),
                java.lang.foreign.FunctionDescriptor.of(java.lang.foreign.ValueLayout.JAVA_INT, java.lang.foreign.ValueLayout.ADDRESS,
                        java.lang.foreign.ValueLayout.ADDRESS));
        GpuTargets.driver().properties();  // the binding makes its context current on this thread
        String entry = ".version 8.0\n.target sm_90\n.address_size 64\n.visible .entry k(\n  .param %s\n)\n{\n ret;\n}\n";
        java.util.List<byte[]> images = new java.util.ArrayList<>();
        for (String param : java.util.List.of(".align 8 .b8 k_param_0[]", ".align x .b8 k_param_0[8]", ".u64", ".align 8 .b8 k_param_0[99999999999]")) {
            images.add((String.format(entry, param) + "\0").getBytes(java.nio.charset.StandardCharsets.US_ASCII));
        }
        java.nio.ByteBuffer fatbin = java.nio.ByteBuffer.allocate(16 + 64 + 16).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        fatbin.putInt(0xBA55ED50).putShort((short) 1).putShort((short) 16).putLong(80);
        fatbin.putShort((short) 1).putShort((short) 0x101).putInt(64).putLong(-16L);  // a payload size near 2^64
        images.add(fatbin.array());
        try (java.lang.foreign.Arena arena = java.lang.foreign.Arena.ofConfined()) {
            for (byte[] image : images) {
                java.lang.foreign.MemorySegment data = arena.allocate(image.length + 16L, 16);
                java.lang.foreign.MemorySegment.copy(image, 0, data, java.lang.foreign.ValueLayout.JAVA_BYTE, 0, image.length);
                int rc = (int) load.invokeExact(arena.allocate(java.lang.foreign.ValueLayout.ADDRESS), data);
                assertEquals(200, rc, "CUDA_ERROR_INVALID_IMAGE for " + new String(image, java.nio.charset.StandardCharsets.US_ASCII)
                        .replace('\0', ' ').strip() + "; stand-in: " + standIn.diagnostic());
            }
        } catch (Throwable t) {
            throw t instanceof AssertionError e ? e : new AssertionError(t);
        }
    }
}
