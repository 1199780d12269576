package dev.seqkernels.bench;

import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;

/**
 * A benchmark run as data: where it ran, the measured peaks and the rows. The same JSON shape is
 * written by {@code seqk bench --json} and by {@code bench/peers/torch_bench.py} (which leaves
 * {@code peaks} null and sets each row's {@code impl}, e.g. {@code torch-cudnn}, {@code torch-sdpa-flash}).
 */
public record BenchReport(String device, String binding, String date, String command, Bench.Peaks peaks,
                          List<BenchRow> rows) {
    private static final ObjectMapper JSON = new ObjectMapper()
            .enable(SerializationFeature.INDENT_OUTPUT)
            .disable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES);

    public String toJson() {
        try {
            return JSON.writeValueAsString(this);
        } catch (IOException e) {
            throw new IllegalStateException("cannot write the report as JSON", e);
        }
    }

    public void write(Path file) throws IOException {
        Files.writeString(file, toJson());
    }

    /** Reads our report or a peer's; a missing field or a row without key and time is an error naming the file. */
    public static BenchReport read(Path file) throws IOException {
        JsonNode root;
        try {
            root = JSON.readTree(file.toFile());
        } catch (IOException e) {
            throw new IOException("cannot read benchmark JSON " + file + ": " + e.getMessage(), e);
        }
        if (root == null || !root.path("rows").isArray()) {
            throw new IllegalArgumentException(file + " is not a benchmark report: it has no \"rows\" array");
        }
        BenchReport r = JSON.treeToValue(root, BenchReport.class);
        for (BenchRow row : r.rows()) {
            if (row.key() == null || row.impl() == null) {
                throw new IllegalArgumentException(file + ": a row has no key or impl: " + row);
            }
        }
        return r;
    }

    /** The column heads of {@link #printRow}. */
    public static void printHeader(PrintStream out) {
        out.printf(Locale.ROOT, "%-52s %-5s %10s %19s %9s %9s %10s %6s  %s%n", "case", "bound", "median ms", "p10..p90 ms",
                "TFLOP/s", "GB/s", "floor ms", "floor%", "note");
    }

    /** One row: the time, its spread, throughput and the floor beside it. */
    public static void printRow(BenchRow r, PrintStream out) {
        if (!r.timed()) {
            out.printf(Locale.ROOT, "%-52s %-5s %10s %19s %9s %9s %10.4g %6s  %s%n", r.key(), r.bound(), "-", "-", "-", "-",
                    r.floorMs(), "-", r.note());
            return;
        }
        out.printf(Locale.ROOT, "%-52s %-5s %10.4f %8.4f..%-9.4f %9.4g %9.4g %10.4g %5.1f%%  %s%n", r.key(), r.bound(),
                r.medianMs(), r.p10Ms(), r.p90Ms(), r.tflops(), r.gbPerSecond(), r.floorMs(), 100 * r.efficiency(), r.note());
    }

    public static void printTable(List<BenchRow> rows, PrintStream out) {
        printHeader(out);
        rows.forEach(r -> printRow(r, out));
    }

    /** A case side by side: our time, the fastest peer's, and peer / ours (above 1: we are faster). */
    public record Comparison(String key, BenchRow ours, BenchRow bestPeer) {
        public double speedup() {
            return bestPeer.medianMs() / ours.medianMs();
        }
    }

    /** Our timed rows joined with the peers' fastest timed row of the same key. */
    public static List<Comparison> compare(List<BenchRow> ours, List<BenchRow> peers) {
        Map<String, BenchRow> best = new LinkedHashMap<>();
        for (BenchRow p : peers) {
            if (p.timed()) {
                best.merge(p.key(), p, (a, b) -> a.medianMs() <= b.medianMs() ? a : b);
            }
        }
        List<Comparison> out = new ArrayList<>();
        for (BenchRow o : ours) {
            BenchRow p = best.get(o.key());
            if (o.timed() && p != null) {
                out.add(new Comparison(o.key(), o, p));
            }
        }
        return out;
    }

    public static void printComparison(List<Comparison> comparisons, PrintStream out) {
        out.printf(Locale.ROOT, "%-52s %10s %10s  %-22s %8s%n", "case", "ours ms", "peer ms", "fastest peer", "peer/ours");
        for (Comparison c : comparisons) {
            out.printf(Locale.ROOT, "%-52s %10.4f %10.4f  %-22s %7.2fx%n", c.key(), c.ours().medianMs(), c.bestPeer().medianMs(),
                    c.bestPeer().impl(), c.speedup());
        }
        if (comparisons.isEmpty()) {
            out.println("(no case was timed by both sides)");
        }
    }

    /** The report as markdown: peaks, every row, and the comparison when peers are given. */
    public String markdown(Optional<BenchReport> peers) {
        StringBuilder s = new StringBuilder();
        s.append("## ").append(date).append(", ").append(device).append(" (").append(binding).append(")\n\n");
        s.append("Command: `").append(command).append("`\n\n");
        if (peaks != null) {
            s.append(String.format(Locale.ROOT, "Peaks (%s): bandwidth %.0f GB/s; GEMM %s%n%n", peaks.method(),
                    peaks.bytesPerSecond() / 1e9, gemmText(peaks)));
        }
        s.append("| case | median ms | p10..p90 ms | TFLOP/s | GB/s | floor ms (bound) | floor/median | note |\n");
        s.append("|---|---:|---:|---:|---:|---:|---:|---|\n");
        for (BenchRow r : rows) {
            if (r.timed()) {
                s.append(String.format(Locale.ROOT, "| %s | %.4f | %.4f..%.4f | %.4g | %.4g | %.4g (%s) | %.1f%% | %s |%n",
                        r.key(), r.medianMs(), r.p10Ms(), r.p90Ms(), r.tflops(), r.gbPerSecond(), r.floorMs(), r.bound(),
                        100 * r.efficiency(), r.note()));
            } else {
                s.append(String.format(Locale.ROOT, "| %s | - | - | - | - | %.4f (%s) | - | %s |%n", r.key(), r.floorMs(),
                        r.bound(), r.note()));
            }
        }
        peers.ifPresent(p -> {
            s.append("\nAgainst ").append(p.binding()).append(" on ").append(p.device()).append(":\n\n");
            s.append("| case | ours ms | fastest peer | peer ms | peer/ours |\n|---|---:|---|---:|---:|\n");
            for (Comparison c : compare(rows, p.rows())) {
                s.append(String.format(Locale.ROOT, "| %s | %.4f | %s | %.4f | %.2fx |%n", c.key(), c.ours().medianMs(),
                        c.bestPeer().impl(), c.bestPeer().medianMs(), c.speedup()));
            }
        });
        return s.toString();
    }

    static String gemmText(Bench.Peaks p) {
        StringBuilder s = new StringBuilder();
        p.gemmFlopsPerSecond().entrySet().stream().sorted(Map.Entry.comparingByKey(Comparator.comparing(Enum::name)))
                .forEach(e -> s.append(String.format(Locale.ROOT, "%s %.4g TFLOP/s, ", e.getKey(), e.getValue() / 1e12)));
        return s.length() > 2 ? s.substring(0, s.length() - 2) : "";
    }
}
