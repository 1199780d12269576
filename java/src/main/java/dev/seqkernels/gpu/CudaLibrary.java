package dev.seqkernels.gpu;

import java.lang.foreign.Arena;
import java.lang.foreign.SymbolLookup;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * The CUDA driver library as both GPU bindings load it: the file named by
 * {@code -D}{@value #PATH_PROPERTY}, else {@code libcuda.so.1} from the dynamic loader's path (the
 * installed NVIDIA driver, or a directory on LD_LIBRARY_PATH). The tests point it at seqkernels'
 * stand-in (native/standin), which {@link StandIn} recognizes; {@code auto} never takes a binding
 * whose driver is the stand-in.
 */
public final class CudaLibrary {
    public static final String PATH_PROPERTY = "seqkernels.cuda.path";
    private static SymbolLookup lookup;
    private static String unavailable;

    private CudaLibrary() {
    }

    /** The file {@value #PATH_PROPERTY} names, or null for the loader's libcuda.so.1. */
    public static Path explicitPath() {
        String p = System.getProperty(PATH_PROPERTY);
        return p == null || p.isBlank() ? null : Path.of(p).toAbsolutePath();
    }

    /** The driver library, loaded once; throws {@link DriverException} with one sentence when it cannot be. */
    public static synchronized SymbolLookup lookup(String binding) {
        if (lookup != null) {
            return lookup;
        }
        if (unavailable == null) {
            Path explicit = explicitPath();
            try {
                if (explicit != null) {
                    if (!Files.isRegularFile(explicit)) {
                        throw new IllegalArgumentException("no such file");
                    }
                    lookup = SymbolLookup.libraryLookup(explicit, Arena.global());
                } else {
                    lookup = SymbolLookup.libraryLookup("libcuda.so.1", Arena.global());
                }
                return lookup;
            } catch (IllegalArgumentException e) {
                unavailable = explicit != null
                        ? "the driver library " + explicit + " (-D" + PATH_PROPERTY + ") could not be loaded: " + e.getMessage()
                        : "libcuda.so.1 (the NVIDIA driver) is not on this machine; use the cpu or emu backend";
            }
        }
        throw new DriverException(binding + ": " + unavailable);
    }

    /**
     * For JCuda, whose natives link against libcuda.so.1 by name: loads the library named by
     * {@value #PATH_PROPERTY} first, so the dynamic loader binds JCuda to that very file.
     */
    public static void preloadForJni() {
        Path explicit = explicitPath();
        if (explicit != null) {
            System.load(explicit.toString());
        }
    }

    /**
     * For JCublas, whose natives link against libcublas.so.12 by name: when {@value #PATH_PROPERTY}
     * names a driver library and {@code soname} lies beside it (the stand-in's cuBLAS), loads that one.
     */
    public static void preloadBeside(String soname) {
        Path explicit = explicitPath();
        if (explicit != null && explicit.getParent() != null && Files.isRegularFile(explicit.getParent().resolve(soname))) {
            System.load(explicit.getParent().resolve(soname).toString());
        }
    }
}
