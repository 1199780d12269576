package dev.seqkernels.gpu.panama;

import dev.seqkernels.gpu.DriverException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Where the panama binding looks for cuBLAS, and what it says when a candidate is there but does not load. */
class CublasSearchTest {

    private static Path lib(Path root, String relative) throws IOException {
        Path file = root.resolve(relative);
        Files.createDirectories(file.getParent());
        Files.writeString(file, "not a shared library");
        return file;
    }

    /**
     * PyTorch's CUDA 13 wheels (nvidia/cu13/lib) and CUDA 12 wheels (nvidia/cublas/lib), in
     * virtualenvs and conda too, and in the environment of a python3 on PATH that is not activated.
     */
    @Test
    void pythonWheelsInVirtualenvsAndCondaAreSearched(@TempDir Path tmp) throws IOException {
        Path venv13 = lib(tmp, "venv/lib/python3.12/site-packages/nvidia/cu13/lib/libcublas.so.13");
        Path conda12 = lib(tmp, "conda/lib/python3.11/site-packages/nvidia/cublas/lib/libcublas.so.12");
        Path user13 = lib(tmp, "home/.local/lib/python3.13/site-packages/nvidia/cu13/lib/libcublas.so.13");
        Path cudaHome = lib(tmp, "cuda/lib64/libcublas.so.13");
        Path onPath = lib(tmp, "opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib/libcublas.so.13");
        lib(tmp, "opt/torch/.venv/bin/python3");
        Path explicit = tmp.resolve("mine/libcublas.so.13");
        List<Path> candidates = Cublas.candidates(Map.of("VIRTUAL_ENV", tmp.resolve("venv").toString(), "CONDA_PREFIX",
                tmp.resolve("conda").toString(), "CUDA_HOME", tmp.resolve("cuda").toString(), "PATH",
                "/nonexistent:" + tmp.resolve("opt/torch/.venv/bin")), explicit.toString(),
                tmp.resolve("home").toString());
        assertTrue(candidates.get(0).equals(explicit), "the property comes first: " + candidates);
        for (Path p : List.of(venv13, conda12, user13, cudaHome, onPath)) {
            assertTrue(candidates.contains(p), p + " is not among " + candidates);
        }
        assertTrue(candidates.indexOf(cudaHome) < candidates.indexOf(venv13), "CUDA's own directories before Python wheels");
    }

    /** A candidate that exists but does not load joins the list of what was tried, with its reason: no stray exception. */
    @Test
    void aCandidateThatDoesNotLoadIsReportedAndTheSearchGoesOn(@TempDir Path tmp) throws IOException {
        Path broken = lib(tmp, "venv/lib/python3.12/site-packages/nvidia/cu13/lib/libcublas.so.13");
        var e = assertThrows(DriverException.class, () -> Cublas.load(List.of(broken, tmp.resolve("absent/libcublas.so.12")),
                List.of("libseqk-no-such-cublas.so.13")));
        String m = e.getMessage();
        assertTrue(m.contains(broken.toString()) && m.contains("libseqk-no-such-cublas.so.13") && m.contains("-Dseqkernels.cublas.path"), m);
        assertTrue(!m.contains("\n"), "one sentence: " + m);
    }
}
