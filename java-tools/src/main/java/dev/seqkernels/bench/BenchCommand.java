package dev.seqkernels.bench;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import dev.seqkernels.Backend;
import dev.seqkernels.Backends;
import dev.seqkernels.SeqkException;
import dev.seqkernels.gpu.Driver;
import dev.seqkernels.gpu.GpuBackend;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.LocalDate;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.regex.Pattern;

/**
 * {@code seqk bench}: times a suite on a GPU binding (or the emulator, for a smoke run of the
 * harness), prints each row as it is measured, and writes JSON, markdown and charts on request.
 * With {@code --load} it times nothing and reports a saved run; {@code --compare} adds the peers'
 * rows side by side; {@code --list} prints the suite's cases as JSON for the peer script.
 */
public final class BenchCommand {
    public static final String USAGE = """
              bench [--backend panama|jcuda|emu] [--suite smoke|rnn|attn|all] [--filter REGEX]
                    [--json FILE] [--markdown FILE] [--charts DIR] [--compare PEERS.json]
                    [--load REPORT.json] [--list]
                                                     time a suite with device events against the
                                                     roofline floor; --compare: side by side with
                                                     bench/peers/torch_bench.py's rows; --list: the
                                                     suite's cases as JSON (the peer script's input)""";

    private BenchCommand() {
    }

    public static int run(List<String> args, PrintStream out, PrintStream err) throws IOException {
        String backendName = null;
        String suite = "all";
        Pattern filter = null;
        Path json = null;
        Path markdown = null;
        Path charts = null;
        Path compare = null;
        Path load = null;
        boolean list = false;
        for (int i = 0; i < args.size(); i++) {
            String a = args.get(i);
            switch (a) {
                case "--backend" -> backendName = value(args, ++i, a);
                case "--suite" -> suite = value(args, ++i, a);
                case "--filter" -> filter = Pattern.compile(value(args, ++i, a));
                case "--json" -> json = Path.of(value(args, ++i, a));
                case "--markdown" -> markdown = Path.of(value(args, ++i, a));
                case "--charts" -> charts = Path.of(value(args, ++i, a));
                case "--compare" -> compare = Path.of(value(args, ++i, a));
                case "--load" -> load = Path.of(value(args, ++i, a));
                case "--list" -> list = true;
                default -> throw new IllegalArgumentException("unknown option " + a);
            }
        }
        List<BenchCase> cases = select(BenchSuite.cases(suite), filter);
        if (list) {
            out.println(new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT)
                    .writeValueAsString(Map.of("suite", suite, "cases", cases)));
            return 0;
        }
        Optional<BenchReport> peers = compare == null ? Optional.empty() : Optional.of(BenchReport.read(compare));
        BenchReport report;
        int failed = 0;
        if (load != null) {
            report = BenchReport.read(load);
            BenchReport.printTable(report.rows(), out);
        } else {
            if (cases.isEmpty()) {
                throw new IllegalArgumentException("no case of suite '" + suite + "' matches the filter");
            }
            Driver driver = driver(backendName);
            out.println("bench: suite " + suite + " (" + cases.size() + " cases) on " + driver.name() + ", "
                    + driver.properties().name() + "; measuring peaks ...");
            Bench bench = new Bench(driver, Bench.Options.forDriver(driver), Bench.Peaks.measure(driver));
            out.printf(java.util.Locale.ROOT, "peaks: bandwidth %.4g GB/s; GEMM %s (%s)%n", bench.peaks().bytesPerSecond() / 1e9,
                    BenchReport.gemmText(bench.peaks()), bench.peaks().method());
            List<BenchRow> rows = new ArrayList<>();
            BenchReport.printHeader(out);
            String command = "seqk bench " + String.join(" ", args);
            for (BenchCase c : cases) {
                BenchRow row = bench.run(c);
                rows.add(row);
                failed += row.note().startsWith("failed") ? 1 : 0;
                BenchReport.printRow(row, out);
                report = new BenchReport(driver.properties().name(), driver.name(), LocalDate.now().toString(), command,
                        bench.peaks(), rows);
                if (json != null) {
                    report.write(json);  // after every row: a run cut short keeps what it measured
                }
            }
            report = new BenchReport(driver.properties().name(), driver.name(), LocalDate.now().toString(), command,
                    bench.peaks(), rows);
        }
        if (json != null) {
            report.write(json);
            out.println("bench: wrote " + json);
        }
        if (peers.isPresent()) {
            out.println();
            BenchReport.printComparison(BenchReport.compare(report.rows(), peers.get().rows()), out);
        }
        if (markdown != null) {
            Files.writeString(markdown, report.markdown(peers));
            out.println("bench: wrote " + markdown);
        }
        if (charts != null) {
            List<Path> files = BenchCharts.write(report, peers, charts);
            out.println("bench: wrote " + files.size() + " chart files to " + charts);
        }
        if (failed > 0) {
            err.println("bench: " + failed + " case(s) failed; see their notes");
            return 1;
        }
        return 0;
    }

    static List<BenchCase> select(List<BenchCase> cases, Pattern filter) {
        return filter == null ? cases : cases.stream().filter(c -> filter.matcher(c.key()).find()).toList();
    }

    /** The named binding, or the first GPU binding present; never the emulator unless asked for. */
    static Driver driver(String name) {
        if (name != null) {
            if (name.equals("cpu") || name.equals(Backends.CPU_SAME_PRECISION)) {
                throw new IllegalArgumentException("seqk bench times device work: use panama, jcuda or emu (the CPU "
                        + "reference has its JMH benchmark in bench/)");
            }
            return gpu(Backends.byName(name));
        }
        List<String> why = new ArrayList<>();
        for (String n : List.of("panama", "jcuda")) {
            try {
                return gpu(Backends.byName(n));
            } catch (SeqkException.BackendUnavailable e) {
                why.add(e.getMessage());
            }
        }
        throw new SeqkException.BackendUnavailable("seqk bench needs a GPU binding, and none is available ("
                + String.join("; ", why) + "); --backend emu runs the harness on the emulator");
    }

    private static Driver gpu(Backend b) {
        if (b instanceof GpuBackend g) {
            return g.driver();
        }
        throw new IllegalArgumentException("backend " + b.name() + " has no device to time");
    }

    private static String value(List<String> args, int i, String option) {
        if (i >= args.size()) {
            throw new IllegalArgumentException(option + " needs a value");
        }
        return args.get(i);
    }
}
