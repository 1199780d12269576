package dev.seqkernels.cli;

import dev.seqkernels.Backend;
import dev.seqkernels.Backends;
import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.golden.GoldenCase;
import dev.seqkernels.gpu.KernelReport;
import dev.seqkernels.gpu.emu.EmuDriver;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.stream.Stream;

/**
 * The {@code seqk} command line: {@code info}, {@code golden}, {@code parity}, {@code bench} (and the
 * launcher's {@code report}, {@code dist}, {@code test}, whose {@code --help} is answered here). Exit code
 * 0 on success and for {@code --help}/{@code --version}, 1 on a failed check, 2 on usage errors (one line).
 */
public final class Main {
    private Main() {
    }

    public static void main(String[] args) {
        System.exit(run(args, System.out, System.err));
    }

    /** Each command's usage lines (printed indented by two), in the order the overview lists them. */
    private static final Map<String, String> USAGE = usageByCommand();

    private static Map<String, String> usageByCommand() {
        Map<String, String> u = new LinkedHashMap<>();
        u.put("info", """
                  info [--kernels]                       backends present and why the others are not, the
                                                         emulator, the kernels built; --kernels: each
                                                         kernel's registers, shared memory, stack, spills,
                                                         its main loop's PTX instructions per mma and
                                                         (attention, on emu) ldmatrix wavefronts""");
        u.put("golden", """
                  golden [--backend B] [--dtype D] [FILE|DIR ...]
                                                         run golden cases (default: tools/golden/cases)
                                                         forward and backward; exit 1 if any FAILs;
                                                         dtype default: F64 on cpu, F32 on GPU backends;
                                                         F16/BF16: the 2x rule against cpu-same-precision""");
        u.put("parity", """
                  parity [--backend B] [--json] [--seed N]
                                                         every op forward and backward, every dtype, vs the
                                                         CPU reference in double; exit 1 if any FAILs""");
        u.put("bench", dev.seqkernels.bench.BenchCommand.USAGE);
        u.put("jmh", """
                  jmh [JMH OPTIONS ...]                  (launcher) the JMH benchmarks (bench/target/benchmarks.jar)
                                                         with the JDK the launcher found; -h: JMH's options""");
        u.put("report", """
                  report [--backend B] [--suite S] [--filter REGEX] [--out DIR]
                                                         (launcher) on a GPU host: parity, the PyTorch
                                                         peers and our timings, as REPORT.md in DIR""");
        u.put("dist", """
                  dist                                   (launcher) build dist/seqkernels.tar.xz: the jar,
                                                         its libraries, a JRE and the launchers""");
        u.put("test", """
                  test [MAVEN ARGS ...]                  (launcher) the whole test suite: a summary here,
                                                         Maven's whole output in java/target/test.log""");
        return u;
    }

    static int run(String[] args, PrintStream out, PrintStream err) {
        if (args.length == 0) {
            usage(err);
            return 2;
        }
        String command = args[0];
        List<String> rest = List.of(args).subList(1, args.length);
        switch (command) {
            case "help", "--help", "-h" -> {
                usage(out);
                return 0;
            }
            case "version", "--version" -> {
                out.println("seqkernels " + version());
                return 0;
            }
            default -> {
            }
        }
        if (!USAGE.containsKey(command)) {
            err.println("seqk: unknown command '" + command + "' (seqk --help lists the commands)");
            return 2;
        }
        if (rest.contains("--help") || rest.contains("-h")) {
            out.println("usage: seqk");
            out.print(USAGE.get(command).indent(2));
            return 0;
        }
        try {
            return switch (command) {
                case "info" -> info(rest, out);
                case "golden" -> golden(rest, out);
                case "parity" -> parity(rest, out, err);
                case "bench" -> dev.seqkernels.bench.BenchCommand.run(rest, out, err);
                default -> {
                    err.println("seqk: '" + command + "' runs from the launcher: ./seqk " + command);
                    yield 2;
                }
            };
        } catch (SeqkException | IllegalArgumentException e) {
            err.println("seqk: " + command + ": " + e.getMessage());
            return 2;
        } catch (IOException e) {
            err.println("seqk: " + command + ": " + e);
            return 2;
        }
    }

    private static void usage(PrintStream out) {
        out.println("usage: seqk <command> [options]      (seqk <command> --help: that command alone; seqk --version)");
        USAGE.values().forEach(u -> out.print(u.indent(2)));
    }

    private static int info(List<String> args, PrintStream out) {
        boolean kernels = false;
        for (String a : args) {
            if (!a.equals("--kernels")) {
                throw new IllegalArgumentException("unknown option " + a);
            }
            kernels = true;
        }
        String forced = System.getProperty(Backends.PROPERTY);
        out.println("seqkernels " + version() + " on java " + System.getProperty("java.version") + " ("
                + System.getProperty("java.vm.name") + ")");
        out.println("auto selects: " + Backends.byName("auto").name() + "  (" + Backends.PROPERTY + " = "
                + (forced == null ? "unset: auto" : forced) + ")");
        out.println("backends:");
        Backends.availability().forEach((name, why) -> out.printf(Locale.ROOT, "  %-18s %s%n", name, why));
        out.printf(Locale.ROOT, "emulator: %s%n", EmuDriver.libraryPresent()
                ? "SIMT emulator library present (" + EmuDriver.instance().kernelNames().size() + " kernels)"
                : "not built (tools/build-emulator.sh needs g++)");
        KernelReport report = KernelReport.load();
        if (!report.built()) {
            out.println("kernels: " + report.note());
            return 0;
        }
        long spilling = report.kernels().stream().filter(KernelReport.Entry::spills).count();
        int maxRegs = report.kernels().stream().mapToInt(KernelReport.Entry::registers).max().orElse(0);
        out.printf(Locale.ROOT, "kernels: %d built for %s; sm_90: max %d registers, %d spilling%s%n",
                report.kernels().size(), String.join(" ", report.architectures()), maxRegs, spilling,
                kernels ? "" : "  (seqk info --kernels: each kernel)");
        if (kernels) {
            out.println("  " + report.note());
            for (KernelReport.Entry e : report.kernels()) {
                String wavefronts = e.mainLoopMma() == 0 ? null : ldmatrixWavefronts(e.kernel());
                out.printf(Locale.ROOT, "  %-10s %-36s regs %3d  smem %6d  stack %4d  spill %d/%d%s%n", e.family(), e.kernel(),
                        e.registers(), e.sharedBytes(), e.stackBytes(), e.spillStoreBytes(), e.spillLoadBytes(),
                        e.mainLoopMma() == 0 ? "" : String.format(Locale.ROOT, "  main loop: %d mma, %.1f PTX/mma%s",
                                e.mainLoopMma(), e.ptxPerMma(), wavefronts == null ? "" : "; " + wavefronts));
            }
        }
        return 0;
    }

    /**
     * The ldmatrix wavefronts per 8x8 matrix (1.00: free of bank conflicts) of one of the attention's
     * tensor-core kernels (the forward's, the split-KV decoding one, or the backward's dq and dk/dv),
     * measured on the emulator by one forward (and, for the backward's, one backward) that selects it
     * (B = H = 1; 64 query rows: one block and two dk/dv query tiles or more, 128 keys: several key
     * tiles; decoding: 16 query rows, 1024 keys, which the split plan splits; the general 16-bit
     * instances are selected by an explicit all-zero mask) and counted for that kernel's launches
     * alone (the emulator runs a launch before it returns); null for a kernel that is not one of
     * them or without the emulator.
     */
    private static String ldmatrixWavefronts(String kernel) {
        java.util.regex.Matcher m = java.util.regex.Pattern
                .compile("attn_(fwd_tc|fwd_tf32x|fwd_decode_tc|bwd_dq_tc|bwd_dkdv_tc)(64|128|256)(_nobias)?_(f16|bf16|f32)")
                .matcher(kernel);
        if (!m.matches() || !EmuDriver.libraryPresent()) {
            return null;
        }
        DType dtype = DType.valueOf(m.group(4).toUpperCase(Locale.ROOT));
        int d = Integer.parseInt(m.group(2));
        boolean decode = m.group(1).equals("fwd_decode_tc");
        boolean general = !m.group(1).equals("fwd_tf32x") && !decode && m.group(3) == null;
        boolean backward = m.group(1).startsWith("bwd");
        int rows = decode ? 16 : 64;
        int keys = decode ? 1024 : 128;
        double[] values = new double[keys * d];
        for (int i = 0; i < values.length; i++) {
            values[i] = ((i * 37) % 101 - 50) / 64.0;
        }
        EmuDriver emu = EmuDriver.instance();
        Map<Long, String> names = new java.util.HashMap<>();
        long[] counts = new long[2];  // the kernel's matrices and wavefronts
        dev.seqkernels.gpu.Driver counting = (dev.seqkernels.gpu.Driver) java.lang.reflect.Proxy.newProxyInstance(
                dev.seqkernels.gpu.Driver.class.getClassLoader(), new Class<?>[]{dev.seqkernels.gpu.Driver.class},
                (proxy, method, args) -> {
                    Object result;
                    try {
                        result = method.invoke(emu, args);
                    } catch (java.lang.reflect.InvocationTargetException e) {
                        throw e.getCause();
                    }
                    if (method.getName().equals("function")) {
                        names.put((Long) result, (String) args[1]);
                    } else if (method.getName().equals("launch")) {
                        EmuDriver.LdmatrixCounts c = emu.takeLdmatrixCounts();
                        if (kernel.equals(names.get((Long) args[0]))) {
                            counts[0] += c.matrices();
                            counts[1] += c.wavefronts();
                        }
                    }
                    return result;
                });
        try (dev.seqkernels.Tensor q = dev.seqkernels.Tensor.of(dtype, java.util.Arrays.copyOf(values, rows * d), 1, 1, rows, d);
             dev.seqkernels.Tensor kv = dev.seqkernels.Tensor.of(dtype, values, 1, 1, keys, d);
             dev.seqkernels.Tensor zeros = dev.seqkernels.Tensor.of(DType.F32, new double[rows * keys], rows, keys)) {
            dev.seqkernels.ops.Attention.Inputs in = dev.seqkernels.ops.Attention.inputs(q, kv, kv);
            if (general) {
                in.mask(dev.seqkernels.ops.Mask.additive(zeros));
            }
            dev.seqkernels.ops.Attention op = dev.seqkernels.ops.Attention.builder().allowTf32(dtype == DType.F32)
                    .backend(new dev.seqkernels.gpu.GpuBackend(counting)).build();
            emu.takeLdmatrixCounts();
            try (dev.seqkernels.ops.AttentionResult r = op.forward(in)) {
                if (backward) {
                    op.backward(r, q).close();  // dOut: any values of out's shape (D = Dv)
                }
            }
        }
        return counts[0] == 0 ? "no ldmatrix (emu)"
                : String.format(Locale.ROOT, "ldmatrix %.2f wavefronts/matrix (emu)", (double) counts[1] / counts[0]);
    }

    /** The jar's Implementation-Version on the class path, its module version on the module path. */
    private static String version() {
        String v = Main.class.getPackage().getImplementationVersion();
        if (v == null && Main.class.getModule().getDescriptor() != null) {
            v = Main.class.getModule().getDescriptor().rawVersion().orElse(null);
        }
        return v == null ? "(development build)" : v;
    }

    private static int golden(List<String> args, PrintStream out) throws IOException {
        Backend backend = Backends.fromProperty();
        DType dtype = null;
        List<Path> inputs = new ArrayList<>();
        for (int i = 0; i < args.size(); i++) {
            String a = args.get(i);
            switch (a) {
                case "--backend" -> backend = Backends.byName(value(args, ++i, a));
                case "--dtype" -> dtype = parseDType(value(args, ++i, a));
                default -> {
                    if (a.startsWith("--")) {
                        throw new IllegalArgumentException("unknown option " + a);
                    }
                    inputs.add(Path.of(a));
                }
            }
        }
        if (inputs.isEmpty()) {
            inputs.add(projectRoot().resolve("tools/golden/cases"));
        }
        if (dtype == null) {
            dtype = backend.supportsF64() ? DType.F64 : DType.F32;  // GPU paths store F32, F16, BF16
        } else if (dtype == DType.F64 && !backend.supportsF64()) {
            throw new IllegalArgumentException("--dtype F64 runs on the cpu backends only; the " + backend.name()
                    + " backend stores F32, F16 or BF16");
        }
        List<Path> files = new ArrayList<>();
        for (Path p : inputs) {
            if (Files.isDirectory(p)) {
                try (Stream<Path> s = Files.list(p)) {
                    s.filter(f -> f.toString().endsWith(".safetensors")).sorted().forEach(files::add);
                }
            } else if (Files.isRegularFile(p)) {
                files.add(p);
            } else {
                throw new IllegalArgumentException("no such file or directory: " + p);
            }
        }
        if (files.isEmpty()) {
            throw new IllegalArgumentException("no .safetensors golden files in " + inputs);
        }
        boolean twoTimes = dtype == DType.F16 || dtype == DType.BF16;
        out.printf(Locale.ROOT, "golden: %d cases, backend %s, dtype %s%s%n", files.size(), backend.name(), dtype, twoTimes
                ? "; judged by the 2x rule against " + Backends.CPU_SAME_PRECISION + " (used: the share of its allowance, at most 1)"
                : "");
        out.printf(Locale.ROOT, "%-4s  %-9s  %-10s  %-10s  %-10s  %s%s%n", "", "op", "max|err|", "relL2 out", "relL2 grad",
                twoTimes ? "used     " : "", "case");
        int failed = 0;
        for (Path f : files) {
            GoldenCase.Outcome o = GoldenCase.run(f, backend, dtype);
            failed += o.pass() ? 0 : 1;
            out.printf(Locale.ROOT, "%-4s  %-9s  %-10.3e  %-10.3e  %-10.3e  %s%s%s%n", o.pass() ? "PASS" : "FAIL", o.op(),
                    o.maxAbs(), o.outRelL2(), o.gradRelL2(), twoTimes ? String.format(Locale.ROOT, "%-7.2f  ", o.used()) : "",
                    f.getFileName(), o.pass() ? "" : "  -- " + o.reason());
        }
        out.printf(Locale.ROOT, "%d passed, %d failed%n", files.size() - failed, failed);
        return failed == 0 ? 0 : 1;
    }

    static int parity(List<String> args, PrintStream out, PrintStream err) {
        Backend backend = Backends.fromProperty();
        boolean json = false;
        long seed = System.nanoTime();
        for (int i = 0; i < args.size(); i++) {
            switch (args.get(i)) {
                case "--backend" -> backend = Backends.byName(value(args, ++i, "--backend"));
                case "--json" -> json = true;
                case "--seed" -> seed = parseSeed(value(args, ++i, "--seed"));
                default -> throw new IllegalArgumentException("unknown option " + args.get(i));
            }
        }
        return parity(new Parity(backend), seed, json, out, err);
    }

    static int parity(Parity parity, long seed, boolean json, PrintStream out, PrintStream err) {
        int total = parity.caseCount();
        boolean terminal = System.console() != null && !json;
        List<Parity.Row> rows = parity.run(seed, done -> {
            if (terminal) {
                int width = 30;
                int filled = done * width / total;
                err.printf(Locale.ROOT, "\r[%s%s] %d/%d", "#".repeat(filled), " ".repeat(width - filled), done, total);
                if (done == total) {
                    err.println();
                }
            }
        });
        long failed = rows.stream().filter(r -> !r.ok()).count();
        if (json) {
            try {
                out.println(new com.fasterxml.jackson.databind.ObjectMapper().writerWithDefaultPrettyPrinter()
                        .writeValueAsString(java.util.Map.of("seed", seed, "rows", rows)));
            } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
                throw new IllegalStateException(e);
            }
        } else {
            out.printf(Locale.ROOT, "parity: seed %d (repeat with --seed %d)%n", seed, seed);
            out.printf(Locale.ROOT, "%-5s %-4s %-5s %-7s %-10s %-10s %-9s %-4s  %s%n", "op", "pass", "dtype", "backend",
                    "max|err|", "relL2", "judge", "", "shape");
            for (Parity.Row r : rows) {
                out.printf(Locale.ROOT, "%-5s %-4s %-5s %-7s %-10.3e %-10.3e %-9s %-4s  %s%s%n", r.op(), r.pass(), r.dtype(),
                        r.backend(), r.maxAbs(), r.relL2(), r.judge(), r.ok() ? "PASS" : "FAIL", r.shape(),
                        r.ok() ? "" : "  -- " + r.detail());
            }
            out.printf(Locale.ROOT, "%d passed, %d failed%n", rows.size() - failed, failed);
        }
        return failed == 0 ? 0 : 1;
    }

    private static String value(List<String> args, int i, String option) {
        if (i >= args.size()) {
            throw new IllegalArgumentException(option + " needs a value");
        }
        return args.get(i);
    }

    private static long parseSeed(String s) {
        try {
            return Long.parseLong(s);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("--seed needs an integer, got '" + s + "'");
        }
    }

    private static DType parseDType(String s) {
        try {
            DType d = DType.valueOf(s.toUpperCase(Locale.ROOT));
            if (d.isFloatingPoint()) {
                return d;
            }
        } catch (IllegalArgumentException ignored) {
            // reported below with the accepted values
        }
        throw new IllegalArgumentException("--dtype must be one of F64, F32, F16, BF16; got " + s);
    }

    /** The checkout the launcher runs from ({@code seqkernels.root}), else the working directory. */
    static Path projectRoot() {
        return Path.of(System.getProperty("seqkernels.root", "."));
    }
}
