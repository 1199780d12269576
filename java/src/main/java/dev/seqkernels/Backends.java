package dev.seqkernels;

import dev.seqkernels.cpu.CpuBackend;
import dev.seqkernels.gpu.GpuBackend;
import dev.seqkernels.gpu.emu.EmuDriver;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Picks a backend by name. The system property {@value #PROPERTY} forces one for every op that was
 * not given a backend explicitly; {@code auto} (the default) takes the best one present.
 */
public final class Backends {
    public static final String PROPERTY = "seqkernels.backend";

    /** Every backend name we know, in auto's order of preference. */
    public static final List<String> KNOWN = List.of("panama", "jcuda", "emu", "cpu");

    private static final CpuBackend CPU = new CpuBackend();
    private static GpuBackend emu;

    private Backends() {
    }

    /** The backend named by {@value #PROPERTY}, or auto's choice when unset. */
    public static Backend fromProperty() {
        return byName(System.getProperty(PROPERTY, "auto"));
    }

    /** {@code auto}, or one of {@link #KNOWN}; throws {@link SeqkException.BackendUnavailable} with the reason. */
    public static Backend byName(String name) {
        String n = name.trim().toLowerCase(java.util.Locale.ROOT);
        if (n.equals("auto")) {
            return CPU;
        }
        if (n.equals("cpu")) {
            return CPU;
        }
        if (n.equals("emu") && EmuDriver.libraryPresent()) {
            return emu();
        }
        String why = availability().get(n);
        if (why == null) {
            throw new SeqkException.BackendUnavailable("unknown backend '" + name + "': expected auto or one of " + KNOWN);
        }
        throw new SeqkException.BackendUnavailable("backend '" + n + "' is not available: " + why);
    }

    private static synchronized GpuBackend emu() {
        if (emu == null) {
            emu = new GpuBackend(EmuDriver.instance());
        }
        return emu;
    }

    /** Each known backend with "available" or the reason it is not, for {@code seqk info}. */
    public static Map<String, String> availability() {
        Map<String, String> m = new LinkedHashMap<>();
        m.put("panama", "the Panama (java.lang.foreign) GPU binding is not implemented in this version");
        m.put("jcuda", "the JCuda GPU binding is not implemented in this version");
        m.put("emu", EmuDriver.libraryPresent()
                ? "available: the ops' GPU path on the SIMT emulator"
                : "the emulator library is not in this build (tools/build-emulator.sh needs g++)");
        m.put("cpu", "available");
        return m;
    }
}
