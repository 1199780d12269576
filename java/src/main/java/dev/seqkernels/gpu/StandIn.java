package dev.seqkernels.gpu;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;
import java.util.Optional;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * seqkernels' stand-in CUDA driver (native/standin, built for the tests): a libcuda.so.1 and
 * libcublas over the SIMT emulator that the panama and jcuda bindings run against on machines
 * without a GPU. It is recognized by an export a real driver lacks, and offers what a real driver
 * cannot: why a call was refused ({@link #diagnostic()}), the misuses it saw ({@link #takeMisuse()}),
 * and a configurable device ({@link #configure}).
 */
public final class StandIn {
    private static final Linker LINKER = Linker.nativeLinker();
    private final MethodHandle identity;
    private final MethodHandle diagnostic;
    private final MethodHandle takeMisuse;
    private final MethodHandle moduleCount;
    private final MethodHandle configure;

    private StandIn(SymbolLookup lib) {
        identity = bind(lib, "seqk_standin_identity", FunctionDescriptor.of(ADDRESS));
        diagnostic = bind(lib, "seqk_standin_diagnostic", FunctionDescriptor.of(ADDRESS));
        takeMisuse = bind(lib, "seqk_standin_take_misuse", FunctionDescriptor.of(ADDRESS));
        moduleCount = bind(lib, "seqk_standin_module_count", FunctionDescriptor.of(JAVA_INT));
        configure = bind(lib, "seqk_standin_configure", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG));
    }

    private static MethodHandle bind(SymbolLookup lib, String name, FunctionDescriptor fd) {
        return LINKER.downcallHandle(lib.find(name).orElseThrow(
                () -> new DriverException("the stand-in driver lacks " + name + " (stale build?)")), fd);
    }

    /** The stand-in, when {@code cuda} is it. */
    public static Optional<StandIn> of(SymbolLookup cuda) {
        return cuda.find("seqk_standin_identity").isPresent() ? Optional.of(new StandIn(cuda)) : Optional.empty();
    }

    /** The stand-in, when the driver library this process loads ({@link CudaLibrary}) is it. */
    public static Optional<StandIn> loaded() {
        try {
            return of(CudaLibrary.lookup("stand-in"));
        } catch (DriverException noDriver) {
            return Optional.empty();
        }
    }

    private static String string(MemorySegment s) {
        return s.reinterpret(Long.MAX_VALUE).getString(0);
    }

    public String identity() {
        try {
            return string((MemorySegment) identity.invokeExact());
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    /** Why the calling thread's last driver call was refused, beyond its CUresult. */
    public String diagnostic() {
        try {
            return string((MemorySegment) diagnostic.invokeExact());
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    /**
     * The misuses recorded since the last take, one per line (empty: none): destroyed or foreign
     * handles and pointers, kernel arguments outside device memory, entry points it does not implement.
     */
    public String takeMisuse() {
        try {
            return string((MemorySegment) takeMisuse.invokeExact());
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    /** Modules loaded and not unloaded. */
    public int moduleCount() {
        try {
            return (int) moduleCount.invokeExact();
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    /**
     * Changes the simulated device: {@code multiprocessors} (the SM count it reports, 4 by default),
     * {@code cooperative_multiprocessors} (SMs a cooperative launch may use, as under MPS; 0 = all)
     * or {@code race_checks} (1: the emulator checks launches for races; 0: only its other checks,
     * as SEQK_STANDIN_CHECKS=memory starts it).
     */
    public void configure(String key, long value) {
        try (Arena arena = Arena.ofConfined()) {
            if ((int) configure.invokeExact(arena.allocateFrom(key), value) != 0) {
                throw new IllegalArgumentException("stand-in setting " + key + " = " + value + " is not accepted");
            }
        } catch (RuntimeException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }
}
