package dev.seqkernels.gpu;

import java.io.IOException;
import java.io.InputStream;

/**
 * The fatbins the build put in the jar (tools/build-kernels.sh), by family name: what the GPU
 * bindings hand to cuModuleLoadData, read straight from the class path (no temp files).
 */
public final class KernelImages {
    private KernelImages() {
    }

    /** The fatbin of cuda/&lt;family&gt;.cu; throws "kernels not built" when the build had no nvcc. */
    public static byte[] read(String family) {
        String resource = "/dev/seqkernels/kernels/" + family + ".fatbin";
        try (InputStream in = KernelImages.class.getResourceAsStream(resource)) {
            if (in == null) {
                KernelReport report = KernelReport.load();
                throw new DriverException("kernels not built: no " + family + ".fatbin in this build ("
                        + (report.built() ? "no cuda/" + family + ".cu was compiled" : report.note()) + ")");
            }
            return in.readAllBytes();
        } catch (IOException e) {
            throw new DriverException("kernels: could not read " + resource + ": " + e.getMessage());
        }
    }
}
