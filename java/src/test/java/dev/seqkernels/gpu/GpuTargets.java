package dev.seqkernels.gpu;

import dev.seqkernels.Backends;
import dev.seqkernels.gpu.emu.EmuDriver;
import dev.seqkernels.gpu.panama.PanamaDriver;
import org.junit.jupiter.api.Assertions;
import org.junit.jupiter.api.Assumptions;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Optional;

/**
 * The binding the GPU tests ({@link PerBinding}) run through: {@value #PROPERTY} = emu
 * (default), panama or jcuda. Maven runs them once on emu and once each on panama and jcuda over
 * the stand-in driver (LD_LIBRARY_PATH = target/standin); on a GPU host, {@code bin/seqk-test
 * -Dseqkernels.test.binding=panama} runs them on the real driver. A binding named here that does
 * not load fails the tests with its reason (it was asked for), except that a stand-in run skips,
 * visibly, when the build could not make the stand-in (no cuda.h) or the kernels (no nvcc).
 */
public final class GpuTargets {
    public static final String PROPERTY = "seqkernels.test.binding";
    /** Set by Maven for the stand-in runs: the directory the stand-in was built into. */
    public static final String STANDIN_PROPERTY = "seqkernels.test.standin";

    private GpuTargets() {
    }

    public static String binding() {
        return System.getProperty(PROPERTY, "emu");
    }

    /** The driver under test. */
    public static Driver driver() {
        String binding = binding();
        skipIfTheStandInWasNotBuilt();
        try {
            return switch (binding) {
                case "emu" -> EmuDriver.instance();
                case "panama" -> PanamaDriver.instance();
                case "jcuda" -> DriverProvider.load("jcuda", Backends.JCUDA_ARTIFACT);
                default -> throw new IllegalArgumentException(PROPERTY + " must be emu, panama or jcuda, not " + binding);
            };
        } catch (DriverException e) {
            return Assertions.fail("the binding under test (" + PROPERTY + "=" + binding + ") is not available: " + e.getMessage());
        }
    }

    /** The backend name the op tests build their ops with. */
    public static String backend() {
        driver();
        return binding();
    }

    /** A fresh backend over the driver under test (for tests that pin a kernel choice). */
    public static GpuBackend newBackend() {
        return new GpuBackend(driver());
    }

    /** The shared backend of the binding under test, as {@code Backends.byName} gives it. */
    public static GpuBackend sharedBackend() {
        driver();
        return (GpuBackend) Backends.byName(binding());
    }

    /** Whether a libcuda.so.1 loads here: an NVIDIA driver wherever the loader finds it, or the stand-in. */
    public static boolean libcudaLoads() {
        try {
            CudaLibrary.lookup("probe");
            return true;
        } catch (DriverException absent) {
            return false;
        }
    }

    /**
     * Skips the calling test, visibly, on a device whose kernel choice never picks a 16-bit or TF32
     * tensor-core kernel (before sm_80: no mma.sync of those shapes), naming what it tests.
     */
    public static void assumeTensorCores(String what) {
        DeviceProperties p = driver().properties();
        Assumptions.assumeTrue(p.computeMajor() >= 8, () -> "skipped: " + what + " runs on tensor-core kernels (sm_80+), which"
                + " the kernel choice never picks on this device (" + p.name() + ", sm_" + p.computeMajor() + p.computeMinor() + ")");
    }

    /** Whether the driver under test is a real GPU (not the emulator, not the stand-in). */
    public static boolean realGpu() {
        return !driver().properties().simulated();
    }

    /** The stand-in driver, when the binding under test runs over it. */
    public static Optional<StandIn> standIn() {
        return driver().standIn();
    }

    private static void skipIfTheStandInWasNotBuilt() {
        String dir = System.getProperty(STANDIN_PROPERTY);
        if (dir == null) {
            return;
        }
        Path note = Path.of(dir, "NOT-BUILT.txt");
        if (Files.exists(note)) {
            String why;
            try {
                why = Files.readString(note).strip();
            } catch (IOException e) {
                why = e.toString();
            }
            Assumptions.abort("skipped: the stand-in driver was not built: " + why);
        }
        KernelReport report = KernelReport.load();
        Assumptions.assumeTrue(report.built(), () -> "skipped: the stand-in runs the fatbins, and " + report.note());
    }
}
