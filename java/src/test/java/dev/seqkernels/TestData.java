package dev.seqkernels;

import java.util.LinkedHashMap;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * Fresh random inputs for tests. Each instance draws a new seed (printed in every failure message
 * through {@link #toString()}) unless {@code seqkernels.test.seed} fixes it to reproduce a failure.
 */
public final class TestData {
    private final long seed;
    private final SplittableRandom random;

    public TestData() {
        String fixed = System.getProperty("seqkernels.test.seed");
        this.seed = fixed != null ? Long.parseLong(fixed) : System.nanoTime() ^ Thread.currentThread().threadId();
        this.random = new SplittableRandom(seed);
    }

    public double uniform(double lo, double hi) {
        return lo + (hi - lo) * random.nextDouble();
    }

    public int nextInt(int lo, int hiInclusive) {
        return random.nextInt(lo, hiInclusive + 1);
    }

    public boolean nextBoolean(double pTrue) {
        return random.nextDouble() < pTrue;
    }

    /** Uniform in [-scale, scale], never all zeros. */
    public Tensor tensor(DType dtype, double scale, long... shape) {
        double[] v = new double[(int) Tensor.numel(shape)];
        for (int i = 0; i < v.length; i++) {
            v[i] = uniform(-scale, scale);
        }
        return Tensor.of(dtype, v, shape);
    }

    public Map<String, Tensor> params(DType dtype, double scale, Map<String, long[]> shapes) {
        Map<String, Tensor> m = new LinkedHashMap<>();
        shapes.forEach((name, shape) -> m.put(name, tensor(dtype, scale, shape)));
        return m;
    }

    @Override
    public String toString() {
        return "seed " + seed + " (rerun with -Dseqkernels.test.seed=" + seed + ")";
    }
}
