package dev.seqkernels.bench;

import java.util.Map;

/**
 * One timed case, as {@code seqk bench --json} writes it and {@code bench/peers/torch_bench.py}
 * writes its own: the same key and fields, {@code impl} saying whose code ran. Times are in
 * milliseconds of device time; {@code floorMs} is max(flops / peak, bytes / bandwidth) with this
 * run's measured peaks ({@code bound}: which term it was), 0 when unknown (a peer row).
 */
public record BenchRow(String key, String op, Map<String, Integer> shape, String dtype, String pass, String impl,
                       double medianMs, double p10Ms, double p90Ms, int reps, double flops, double bytes,
                       double floorMs, String bound, String note) {

    /** Fraction of the floor reached: floor / median (1.0 = at the roofline). */
    public double efficiency() {
        return floorMs > 0 && medianMs > 0 ? floorMs / medianMs : Double.NaN;
    }

    public double tflops() {
        return medianMs > 0 ? flops / (medianMs * 1e9) : Double.NaN;
    }

    public double gbPerSecond() {
        return medianMs > 0 ? bytes / (medianMs * 1e6) : Double.NaN;
    }

    public boolean timed() {
        return medianMs > 0;
    }
}
