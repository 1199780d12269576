package dev.seqkernels;

import dev.seqkernels.cpu.CpuBackend;
import dev.seqkernels.gpu.DeviceProperties;
import dev.seqkernels.gpu.DriverException;
import dev.seqkernels.gpu.DriverProvider;
import dev.seqkernels.gpu.GpuBackend;
import dev.seqkernels.gpu.emu.EmuDriver;
import dev.seqkernels.gpu.panama.PanamaDriver;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Picks a backend by name. The system property {@value #PROPERTY} forces one for every op that was
 * not given a backend explicitly. {@code auto} (the default) takes panama, then jcuda, then cpu:
 * the first that loads on a real GPU. The emulator is never chosen implicitly (it is for checking,
 * and slow). jcuda is in its own artifact (seqkernels-jcuda), found through {@link DriverProvider}.
 */
public final class Backends {
    public static final String PROPERTY = "seqkernels.backend";

    /**
     * The CPU reference's same-precision mode, by name: it rounds where the kernels round, the
     * plain implementation of FlashAttention's 2x rule (docs/CONVENTIONS.md).
     */
    public static final String CPU_SAME_PRECISION = CpuBackend.SAME_PRECISION;

    /**
     * Every backend name we know. auto tries panama, then jcuda, then takes cpu; it never takes emu
     * or cpu-same-precision.
     */
    public static final List<String> KNOWN = List.of("panama", "jcuda", "emu", "cpu", CpuBackend.SAME_PRECISION);

    private static final CpuBackend CPU = new CpuBackend();
    private static final CpuBackend SAME_PRECISION = CpuBackend.samePrecision();
    private static GpuBackend emu;

    private Backends() {
    }

    /** The backend named by {@value #PROPERTY}, or auto's choice when unset. */
    public static Backend fromProperty() {
        return byName(System.getProperty(PROPERTY, "auto"));
    }

    /** {@code auto}, or one of {@link #KNOWN}; throws {@link SeqkException.BackendUnavailable} with the reason. */
    public static Backend byName(String name) {
        if (name == null) {
            throw new SeqkException.BackendUnavailable("backend name is null; known: auto, " + String.join(", ", KNOWN));
        }
        String n = name.trim().toLowerCase(java.util.Locale.ROOT);
        if (n.equals("auto")) {
            return auto();
        }
        if (n.equals("cpu")) {
            return CPU;
        }
        if (n.equals(CpuBackend.SAME_PRECISION)) {
            return SAME_PRECISION;
        }
        if (n.equals("emu") && EmuDriver.libraryPresent()) {
            return emu();
        }
        if (n.equals("panama")) {
            return panama();
        }
        if (n.equals("jcuda")) {
            return jcuda();
        }
        String why = availability().get(n);
        if (why == null) {
            throw new SeqkException.BackendUnavailable("unknown backend '" + name + "': expected auto or one of " + KNOWN);
        }
        throw new SeqkException.BackendUnavailable("backend '" + n + "' is not available: " + why);
    }

    private static GpuBackend panama;
    private static Backend auto;

    /**
     * auto's order: panama, then jcuda, then cpu; the first that loads on a real GPU, remembered.
     * A binding over seqkernels' stand-in driver (a test fixture on the emulator) is never taken.
     */
    private static synchronized Backend auto() {
        if (auto == null) {
            auto = CPU;
            for (String binding : List.of("panama", "jcuda")) {
                try {
                    GpuBackend gpu = (GpuBackend) byName(binding);
                    if (!gpu.driver().properties().simulated()) {
                        auto = gpu;
                        break;
                    }
                } catch (SeqkException.BackendUnavailable notHere) {
                    // the reason is what `seqk info` shows for this binding
                }
            }
        }
        return auto;
    }

    /** The panama binding's backend, or BackendUnavailable with the binding's one-sentence reason. */
    private static synchronized GpuBackend panama() {
        if (panama == null) {
            try {
                panama = new GpuBackend(PanamaDriver.instance());
            } catch (DriverException e) {
                throw new SeqkException.BackendUnavailable("backend 'panama' is not available: " + e.getMessage());
            }
        }
        return panama;
    }

    private static GpuBackend jcuda;
    /** The artifact that carries the jcuda binding (and JCuda itself). */
    public static final String JCUDA_ARTIFACT = "dev.seqkernels:seqkernels-jcuda";

    /** The jcuda binding's backend, or BackendUnavailable with the binding's one-sentence reason. */
    private static synchronized GpuBackend jcuda() {
        if (jcuda == null) {
            try {
                jcuda = new GpuBackend(DriverProvider.load("jcuda", JCUDA_ARTIFACT));
            } catch (DriverException e) {
                throw new SeqkException.BackendUnavailable("backend 'jcuda' is not available: " + e.getMessage());
            }
        }
        return jcuda;
    }

    private static synchronized GpuBackend emu() {
        if (emu == null) {
            emu = new GpuBackend(EmuDriver.instance());
        }
        return emu;
    }

    private static String bindingState(String binding) {
        try {
            DeviceProperties p = ((GpuBackend) byName(binding)).driver().properties();
            return p.simulated()
                    ? "available over the stand-in driver (" + p.name() + "): a test fixture, not a GPU; auto does not take it"
                    : "available (" + p.name() + ")";
        } catch (SeqkException e) {
            return e.getMessage().replace("backend '" + binding + "' is not available: ", "");
        }
    }

    private static String emuState() {
        if (!EmuDriver.libraryPresent()) {
            return "the emulator library is not in this build (tools/build-emulator.sh needs g++)";
        }
        try {
            return "available: the ops' GPU path on the SIMT emulator (" + EmuDriver.reportedDevice().name() + ")";
        } catch (DriverException e) {
            return e.getMessage();
        }
    }

    /** Each known backend with "available" or the reason it is not, for {@code seqk info}. */
    public static Map<String, String> availability() {
        Map<String, String> m = new LinkedHashMap<>();
        m.put("panama", bindingState("panama"));
        m.put("jcuda", bindingState("jcuda"));
        m.put("emu", emuState());
        m.put("cpu", "available");
        m.put(CpuBackend.SAME_PRECISION, "available: the CPU reference rounding where the GPU kernels round (16-bit or TF32 operands,"
                + " fp32 statistics), the plain implementation that FlashAttention's 2x rule measures against");
        return m;
    }
}
