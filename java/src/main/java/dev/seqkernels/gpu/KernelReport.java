package dev.seqkernels.gpu;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * The build's sm_90 kernel report (tools/build-kernels.sh, from ptxas -v), read from the class
 * path: one line per kernel and the architectures the fatbins hold SASS or PTX for, or a note
 * that the kernels were not built (no nvcc at build time).
 */
public record KernelReport(boolean built, String note, List<String> architectures, List<Entry> kernels) {
    public static final String RESOURCE = "/dev/seqkernels/kernels/kernel-report.txt";

    public record Entry(String family, String kernel, int registers, int sharedBytes, int stackBytes,
                        int spillStoreBytes, int spillLoadBytes) {
        public boolean spills() {
            return spillStoreBytes > 0 || spillLoadBytes > 0;
        }
    }

    public static KernelReport load() {
        try (InputStream in = KernelReport.class.getResourceAsStream(RESOURCE)) {
            if (in == null) {
                return new KernelReport(false, "kernels not built: this build has no kernel report", List.of(), List.of());
            }
            List<Entry> entries = new ArrayList<>();
            List<String> architectures = List.of();
            String note = null;
            BufferedReader r = new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8));
            for (String line; (line = r.readLine()) != null; ) {
                if (line.startsWith("# kernels not built")) {
                    return new KernelReport(false, line.substring(2), List.of(), List.of());
                }
                if (line.startsWith("# architectures:")) {
                    architectures = List.of(line.substring("# architectures:".length()).trim().split("\\s+"));
                    continue;
                }
                if (line.startsWith("#")) {
                    note = note == null ? line.substring(2) : note;
                    continue;
                }
                String[] f = line.trim().split("\\s+");
                if (f.length == 7) {
                    entries.add(new Entry(f[0], f[1], Integer.parseInt(f[2]), Integer.parseInt(f[3]), Integer.parseInt(f[4]),
                            Integer.parseInt(f[5]), Integer.parseInt(f[6])));
                }
            }
            return new KernelReport(true, note, architectures, List.copyOf(entries));
        } catch (IOException e) {
            return new KernelReport(false, "kernels not built: the kernel report is unreadable: " + e.getMessage(), List.of(),
                    List.of());
        }
    }
}
