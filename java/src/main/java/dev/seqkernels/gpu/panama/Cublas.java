package dev.seqkernels.gpu.panama;

import dev.seqkernels.DType;
import dev.seqkernels.gpu.CudaLibrary;
import dev.seqkernels.gpu.DriverException;
import dev.seqkernels.gpu.Gemm;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * cuBLAS through FFM for the panama binding: one handle, strided-batched GemmEx with fp32 compute
 * (no TF32). The library is looked for, in order: {@code -D}{@value #PROPERTY}; the directory of a
 * driver library named by {@code -Dseqkernels.cuda.path}; LD_LIBRARY_PATH; the CUDA library
 * directories ($CUDA_HOME/lib64, /usr/local/cuda); the NVIDIA wheels of Python
 * environments ($VIRTUAL_ENV, $CONDA_PREFIX, that of each python3 on PATH, ~/.local, /usr/local,
 * /usr: {@code
 * lib/python3.X/site-packages/nvidia/cu13/lib} as PyTorch's CUDA 13 wheels lay it out, and {@code
 * nvidia/cublas/lib} as the CUDA 12 ones do); then {@code libcublas.so.13} and {@code .so.12} by
 * name. A candidate that exists but does not load (a missing libcublasLt, say) is noted with its
 * reason and the search goes on; when nothing loads, the error lists every place and reason.
 */
final class Cublas {
    static final String PROPERTY = "seqkernels.cublas.path";
    private static final Linker LINKER = Linker.nativeLinker();
    private static final int CUDA_R_32F = 0;
    private static final int CUDA_R_16F = 2;
    private static final int CUDA_R_16BF = 14;
    private static final int CUBLAS_COMPUTE_32F = 68;
    /** cublasComputeType_t CUBLAS_COMPUTE_32F_FAST_TF32: F32 operands rounded to TF32, fp32 accumulation (Gemm.tf32). */
    private static final int CUBLAS_COMPUTE_32F_FAST_TF32 = 77;
    private static final int CUBLAS_GEMM_DEFAULT = -1;
    private static final List<String> SONAMES = List.of("libcublas.so.13", "libcublas.so.12");

    private final MethodHandle setStream;
    private final MethodHandle gemm;
    private final MethodHandle statusString;
    private final MemorySegment handle;
    private final String source;

    private Cublas(SymbolLookup lib, String source) {
        this.source = source;
        MethodHandle create = LINKER.downcallHandle(find(lib, "cublasCreate_v2"), FunctionDescriptor.of(JAVA_INT, ADDRESS));
        setStream = LINKER.downcallHandle(find(lib, "cublasSetStream_v2"), FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
        statusString = LINKER.downcallHandle(find(lib, "cublasGetStatusString"), FunctionDescriptor.of(ADDRESS, JAVA_INT));
        gemm = LINKER.downcallHandle(find(lib, "cublasGemmStridedBatchedEx"), FunctionDescriptor.of(JAVA_INT, ADDRESS,
                JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_LONG,
                JAVA_INT, JAVA_INT, JAVA_LONG, ADDRESS, JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_INT));
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment h = arena.allocate(ADDRESS);
            status((int) create.invokeExact(h), "cublasCreate_v2");
            handle = h.get(ADDRESS, 0);
        } catch (RuntimeException e) {
            throw e;
        } catch (Throwable t) {
            throw new DriverException("panama cublasCreate_v2: " + t);
        }
    }

    private static MemorySegment find(SymbolLookup lib, String s) {
        return lib.find(s).orElseThrow(() -> new DriverException("the library lacks " + s));
    }

    /** Where the loaded library came from. */
    String source() {
        return source;
    }

    static Cublas load() {
        return load(candidates(System.getenv(), System.getProperty(PROPERTY), System.getProperty("user.home")), SONAMES);
    }

    /** The first candidate file, then soname, that loads and has the entry points; otherwise one error listing each try. */
    static Cublas load(List<Path> candidates, List<String> sonames) {
        List<String> tried = new ArrayList<>();
        for (Path candidate : candidates) {
            if (!Files.isRegularFile(candidate)) {
                continue;
            }
            try {
                return new Cublas(SymbolLookup.libraryLookup(candidate, Arena.global()), candidate.toString());
            } catch (IllegalArgumentException | DriverException e) {
                tried.add(candidate + " (" + firstLine(e.getMessage()) + ")");
            }
        }
        for (String soname : sonames) {
            try {
                return new Cublas(SymbolLookup.libraryLookup(soname, Arena.global()), soname);
            } catch (IllegalArgumentException | DriverException e) {
                tried.add(soname + " (" + firstLine(e.getMessage()) + ")");
            }
        }
        List<Path> dirs = candidates.stream().map(Path::getParent).distinct().toList();
        throw new DriverException("panama: cuBLAS (libcublas.so.13 or .so.12) could not be loaded; tried " + tried
                + " after looking in " + dirs + "; point -D" + PROPERTY + " at the library");
    }

    private static String firstLine(String s) {
        String m = String.valueOf(s);
        int nl = m.indexOf('\n');
        return nl < 0 ? m : m.substring(0, nl);
    }

    /** Candidate files in search order, for the given environment, property and home directory. */
    static List<Path> candidates(Map<String, String> env, String property, String home) {
        Set<Path> files = new LinkedHashSet<>();
        if (property != null && !property.isBlank()) {
            files.add(Path.of(property));
        }
        List<String> dirs = new ArrayList<>();
        Path driver = CudaLibrary.explicitPath();
        if (driver != null && driver.getParent() != null) {
            dirs.add(driver.getParent().toString());  // beside an explicitly named driver library (the stand-in's cuBLAS)
        }
        if (env.get("LD_LIBRARY_PATH") != null) {  // first, as the dynamic loader takes it
            dirs.addAll(List.of(env.get("LD_LIBRARY_PATH").split(":")));
        }
        if (env.get("CUDA_HOME") != null) {
            dirs.add(env.get("CUDA_HOME") + "/lib64");
        }
        dirs.addAll(List.of("/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/lib/x86_64-linux-gnu"));
        List<String> pythonRoots = new ArrayList<>();
        for (String var : List.of("VIRTUAL_ENV", "CONDA_PREFIX")) {
            if (env.get(var) != null && !env.get(var).isBlank()) {
                pythonRoots.add(env.get(var));
            }
        }
        if (env.get("PATH") != null) {  // the environment of each python3 on PATH (a virtualenv's bin/python3 is a link)
            for (String dir : env.get("PATH").split(":")) {
                Path bin = Path.of(dir.isEmpty() ? "." : dir);
                if (Files.exists(bin.resolve("python3")) && bin.toAbsolutePath().getParent() != null) {
                    pythonRoots.add(bin.toAbsolutePath().getParent().toString());
                }
            }
        }
        if (home != null) {
            pythonRoots.add(home + "/.local");
        }
        pythonRoots.addAll(List.of("/usr/local", "/usr"));
        for (String root : pythonRoots) {
            Path lib = Path.of(root, "lib");
            if (!Files.isDirectory(lib)) {
                continue;
            }
            try (DirectoryStream<Path> pythons = Files.newDirectoryStream(lib, "python3*")) {
                for (Path py : pythons) {
                    for (String site : List.of("site-packages", "dist-packages")) {
                        for (String wheel : List.of("nvidia/cu13/lib", "nvidia/cublas/lib", "nvidia/cu12/lib")) {
                            dirs.add(py.resolve(site).resolve(wheel).toString());
                        }
                    }
                }
            } catch (IOException unreadable) {
                // a directory we may not list holds no wheels we could load either
            }
        }
        for (String d : dirs) {
            if (!d.isEmpty()) {
                for (String soname : SONAMES) {
                    files.add(Path.of(d, soname));
                }
            }
        }
        return List.copyOf(files);
    }

    private void status(int rc, String what) {
        if (rc != 0) {
            String text;
            try {
                text = PanamaDriver.cString((MemorySegment) statusString.invokeExact(rc));
            } catch (Throwable t) {
                text = "status " + rc;
            }
            throw new DriverException("panama " + what + ": " + text + " (cublasStatus_t " + rc + ")", rc);
        }
    }

    private static int type(DType t) {
        return switch (t) {
            case F32 -> CUDA_R_32F;
            case F16 -> CUDA_R_16F;
            case BF16 -> CUDA_R_16BF;
            default -> throw new DriverException("panama gemm: unsupported dtype " + t);
        };
    }

    /** {@code makeCurrent} runs once this handle's lock is held, just before cuBLAS launches on the calling OS thread. */
    synchronized void gemm(Gemm g, MemorySegment stream, Runnable makeCurrent) {
        try (Arena arena = Arena.ofConfined()) {
            makeCurrent.run();
            status((int) setStream.invokeExact(handle, stream), "cublasSetStream_v2");
            MemorySegment alpha = arena.allocateFrom(JAVA_FLOAT, g.alpha());
            MemorySegment beta = arena.allocateFrom(JAVA_FLOAT, g.beta());
            int rc = (int) gemm.invokeExact(handle, g.transA() ? 1 : 0, g.transB() ? 1 : 0, g.m(), g.n(), g.k(), alpha,
                    g.a(), type(g.inputType()), g.lda(), g.strideA(), g.b(), type(g.inputType()), g.ldb(), g.strideB(), beta,
                    g.c(), type(g.outputType()), g.ldc(), g.strideC(), g.batch(), g.tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F,
                    CUBLAS_GEMM_DEFAULT);
            status(rc, "cublasGemmStridedBatchedEx m=" + g.m() + " n=" + g.n() + " k=" + g.k() + " batch=" + g.batch());
        } catch (RuntimeException e) {
            throw e;
        } catch (Throwable t) {
            throw new DriverException("panama cublasGemmStridedBatchedEx: " + t);
        }
    }
}
