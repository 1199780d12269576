package dev.seqkernels.gpu;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * The build's sm_90 kernel report (tools/build-kernels.sh, from ptxas -v and the PTX's .maxntid),
 * read from the class path: one line per kernel and the architectures the fatbins hold SASS or PTX
 * for, or a note that the kernels were not built (no nvcc at build time).
 */
public record KernelReport(boolean built, String note, List<String> architectures, List<Entry> kernels) {
    public static final String RESOURCE = "/dev/seqkernels/kernels/kernel-report.txt";

    /**
     * One kernel on sm_90. {@code maxThreadsPerBlock} is its {@code __launch_bounds__} limit (1,024
     * when it declares none): a GPU refuses a larger block as "too many resources requested".
     * {@code mma} counts its {@code mma.sync} instructions in the PTX; {@code mainLoopMma} and
     * {@code mainLoopInstructions} those of its main loop and all its PTX instructions (the loop
     * holding the most mma.sync, every path; tools/ptx-main-loop.awk), 0 without one.
     */
    public record Entry(String family, String kernel, int registers, int sharedBytes, int stackBytes,
                        int spillStoreBytes, int spillLoadBytes, int maxThreadsPerBlock, int mma, int mainLoopMma,
                        int mainLoopInstructions) {
        public boolean spills() {
            return spillStoreBytes > 0 || spillLoadBytes > 0;
        }

        /**
         * PTX instructions per mma.sync in the main loop (the issue cost of one tensor-core product
         * there; FlashAttention-2's forward spends about 3-3.5 SASS instructions per HMMA), or NaN
         * for a kernel with no mma in a loop.
         */
        public double ptxPerMma() {
            return mainLoopMma == 0 ? Double.NaN : (double) mainLoopInstructions / mainLoopMma;
        }

        /** Registers a block of {@code threads} takes on sm_90: per warp, in units of 256. */
        public int registersPerBlock(int threads) {
            int perWarp = (registers * 32 + 255) / 256 * 256;
            return (threads + 31) / 32 * perWarp;
        }

        /**
         * Blocks of {@code threads} with {@code dynamicShared} bytes that fit on one sm_90
         * multiprocessor at once: by threads (2,048), registers (65,536), shared memory (228 KB,
         * with 1 KB reserved per block) and the 32-block limit; 0 above the kernel's launch bounds;
         * what cuOccupancyMaxActiveBlocks... answers there.
         */
        public int blocksPerMultiprocessor(int threads, int dynamicShared) {
            if (threads <= 0 || threads > Math.min(SM90_THREADS_PER_BLOCK, maxThreadsPerBlock)) {
                return 0;
            }
            int byThreads = SM90_THREADS_PER_SM / ((threads + 31) / 32 * 32);
            int regs = registersPerBlock(threads);
            int byRegisters = regs == 0 ? SM90_BLOCKS_PER_SM : (regs > SM90_REGISTERS ? 0 : SM90_REGISTERS / regs);
            int byShared = SM90_SHARED_PER_SM / (sharedBytes + dynamicShared + SM90_RESERVED_SHARED);
            return Math.min(SM90_BLOCKS_PER_SM, Math.min(byThreads, Math.min(byRegisters, byShared)));
        }
    }

    public static final int SM90_THREADS_PER_BLOCK = 1024;
    public static final int SM90_THREADS_PER_SM = 2048;
    public static final int SM90_REGISTERS = 65536;
    public static final int SM90_BLOCKS_PER_SM = 32;
    public static final int SM90_SHARED_PER_SM = 233472;
    public static final int SM90_SHARED_PER_BLOCK_OPTIN = 232448;
    public static final int SM90_RESERVED_SHARED = 1024;

    /** The kernel's entry, or null when it is not in the report (or the kernels were not built). */
    public Entry entry(String kernel) {
        for (Entry e : kernels) {
            if (e.kernel().equals(kernel)) {
                return e;
            }
        }
        return null;
    }

    private static KernelReport loaded;

    /** The report of this build, read once. */
    public static synchronized KernelReport load() {
        if (loaded == null) {
            loaded = read();
        }
        return loaded;
    }

    private static KernelReport read() {
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
                if (f.length == 7 || f.length == 8 || f.length == 11) {
                    // 7: a report from before launch bounds were read (none declared); 8: before the main-loop counts
                    entries.add(new Entry(f[0], f[1], Integer.parseInt(f[2]), Integer.parseInt(f[3]), Integer.parseInt(f[4]),
                            Integer.parseInt(f[5]), Integer.parseInt(f[6]),
                            f.length >= 8 ? Integer.parseInt(f[7]) : SM90_THREADS_PER_BLOCK,
                            f.length == 11 ? Integer.parseInt(f[8]) : 0, f.length == 11 ? Integer.parseInt(f[9]) : 0,
                            f.length == 11 ? Integer.parseInt(f[10]) : 0));
                }
            }
            return new KernelReport(true, note, architectures, List.copyOf(entries));
        } catch (IOException e) {
            return new KernelReport(false, "kernels not built: the kernel report is unreadable: " + e.getMessage(), List.of(),
                    List.of());
        }
    }
}
