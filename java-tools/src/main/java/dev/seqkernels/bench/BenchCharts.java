package dev.seqkernels.bench;

import dev.seqkernels.DType;
import org.knowm.xchart.BitmapEncoder;
import org.knowm.xchart.VectorGraphicsEncoder;
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYChartBuilder;
import org.knowm.xchart.XYSeries;
import org.knowm.xchart.style.markers.SeriesMarkers;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.TreeMap;
import java.util.function.Function;
import java.util.function.Predicate;
import java.util.stream.Collectors;

/**
 * Charts of a benchmark report, each as PNG and SVG: attention throughput against sequence length
 * (ours and the fastest peer), recurrent time per step against batch, and a roofline (achieved
 * TFLOP/s against arithmetic intensity, under the measured ceilings). Rendering needs AWT's
 * headless libraries and a font; where they are missing the error says so.
 */
public final class BenchCharts {
    private BenchCharts() {
    }

    /** Writes the charts the rows allow into {@code dir}; returns the files written. */
    public static List<Path> write(BenchReport ours, Optional<BenchReport> peers, Path dir) throws IOException {
        System.setProperty("java.awt.headless", "true");
        Files.createDirectories(dir);
        List<Path> files = new ArrayList<>();
        List<BenchRow> peerRows = peers.map(BenchReport::rows).orElse(List.of());
        for (DType dt : DType.values()) {
            for (String pass : List.of("fwd", "fwd+bwd")) {
                Predicate<BenchRow> sdpa = r -> r.op().equals("sdpa") && r.dtype().equals(dt.name()) && r.pass().equals(pass);
                XYChart a = chart("sdpa " + dt + " " + pass + ": throughput vs sequence length (B*L = const)",
                        "sequence length L", "TFLOP/s");
                a.getStyler().setXAxisLogarithmic(true);
                addGrouped(a, ours.rows(), sdpa, r -> "ours D=" + r.shape().get("D") + causalText(r), r -> r.shape().get("L"),
                        BenchRow::tflops);
                addGrouped(a, fastest(peerRows), sdpa, r -> "peer D=" + r.shape().get("D") + causalText(r),
                        r -> r.shape().get("L"), BenchRow::tflops);
                save(a, dir, "sdpa-" + dt.name().toLowerCase() + "-" + pass.replace('+', '-'), files);

                Predicate<BenchRow> lstm = r -> r.op().equals("lstm") && r.dtype().equals(dt.name()) && r.pass().equals(pass)
                        && r.shape().get("T") == 100;
                XYChart l = chart("lstm T=100 " + dt + " " + pass + ": time per step vs batch", "batch B", "microseconds per step");
                l.getStyler().setXAxisLogarithmic(true);
                l.getStyler().setYAxisLogarithmic(true);
                Function<BenchRow, Double> perStep = r -> r.medianMs() * 1e3 / r.shape().get("T");
                addGrouped(l, ours.rows(), lstm, r -> "ours H=" + r.shape().get("H"), r -> r.shape().get("B"), perStep);
                addGrouped(l, fastest(peerRows), lstm, r -> "peer H=" + r.shape().get("H"), r -> r.shape().get("B"), perStep);
                save(l, dir, "lstm-" + dt.name().toLowerCase() + "-" + pass.replace('+', '-'), files);
            }
        }
        if (ours.peaks() != null) {
            save(roofline(ours), dir, "roofline", files);
        }
        return files;
    }

    private static XYChart roofline(BenchReport ours) {
        XYChart c = chart("roofline: " + ours.device(), "arithmetic intensity (flop/byte)", "TFLOP/s");
        c.getStyler().setXAxisLogarithmic(true);
        c.getStyler().setYAxisLogarithmic(true);
        double bw = ours.peaks().bytesPerSecond();
        List<Double> ai = List.of(0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0);
        for (Map.Entry<DType, Double> e : ours.peaks().gemmFlopsPerSecond().entrySet()) {
            List<Double> y = ai.stream().map(x -> Math.min(e.getValue(), bw * x) / 1e12).toList();
            XYSeries s = c.addSeries("ceiling " + e.getKey(), ai, y);
            s.setMarker(SeriesMarkers.NONE);
        }
        Map<String, List<BenchRow>> byOp = ours.rows().stream().filter(BenchRow::timed)
                .collect(Collectors.groupingBy(r -> r.op() + " " + r.dtype(), TreeMap::new, Collectors.toList()));
        byOp.forEach((name, rows) -> {
            XYSeries s = c.addSeries(name, rows.stream().map(r -> r.flops() / r.bytes()).toList(),
                    rows.stream().map(BenchRow::tflops).toList());
            s.setXYSeriesRenderStyle(XYSeries.XYSeriesRenderStyle.Scatter);
        });
        return c;
    }

    private static String causalText(BenchRow r) {
        return r.shape().getOrDefault("causal", 0) == 1 ? " causal" : "";
    }

    /** Per key, the peer row with the least time. */
    private static List<BenchRow> fastest(List<BenchRow> peers) {
        Map<String, BenchRow> best = new TreeMap<>();
        for (BenchRow p : peers) {
            if (p.timed()) {
                best.merge(p.key(), p, (a, b) -> a.medianMs() <= b.medianMs() ? a : b);
            }
        }
        return new ArrayList<>(best.values());
    }

    private static void addGrouped(XYChart c, List<BenchRow> rows, Predicate<BenchRow> which, Function<BenchRow, String> series,
                                   Function<BenchRow, Integer> x, Function<BenchRow, Double> y) {
        Map<String, List<BenchRow>> groups = rows.stream().filter(BenchRow::timed).filter(which)
                .collect(Collectors.groupingBy(series, TreeMap::new, Collectors.toList()));
        groups.forEach((name, rs) -> {
            rs.sort(Comparator.comparing(x));
            c.addSeries(name, rs.stream().map(r -> (double) x.apply(r)).toList(), rs.stream().map(y).toList());
        });
    }

    private static XYChart chart(String title, String xTitle, String yTitle) {
        XYChart c = new XYChartBuilder().width(960).height(600).title(title).xAxisTitle(xTitle).yAxisTitle(yTitle).build();
        c.getStyler().setLegendPosition(org.knowm.xchart.style.Styler.LegendPosition.OutsideE);
        return c;
    }

    private static void save(XYChart c, Path dir, String name, List<Path> files) throws IOException {
        if (c.getSeriesMap().isEmpty()) {
            return;
        }
        Path png = dir.resolve(name + ".png");
        Path svg = dir.resolve(name + ".svg");
        try {
            BitmapEncoder.saveBitmap(c, png.toString(), BitmapEncoder.BitmapFormat.PNG);
            VectorGraphicsEncoder.saveVectorGraphic(c, svg.toString(), VectorGraphicsEncoder.VectorGraphicsFormat.SVG);
        } catch (UnsatisfiedLinkError | InternalError | NoClassDefFoundError e) {
            throw new IOException("cannot render charts here (AWT's headless libraries or a font are missing: " + e
                    + "); render them on another machine with: seqk bench --load REPORT.json [--compare PEERS.json] --charts DIR", e);
        }
        files.add(png);
        files.add(svg);
    }
}
