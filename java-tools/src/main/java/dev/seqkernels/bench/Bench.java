package dev.seqkernels.bench;

import dev.seqkernels.DType;
import dev.seqkernels.Tensor;
import dev.seqkernels.gpu.CapturingDriver;
import dev.seqkernels.gpu.DeviceRecurrent;
import dev.seqkernels.gpu.DeviceRecurrentGraph;
import dev.seqkernels.gpu.DeviceTensor;
import dev.seqkernels.gpu.Driver;
import dev.seqkernels.gpu.Gemm;
import dev.seqkernels.gpu.GpuBackend;
import dev.seqkernels.ops.Attention;
import dev.seqkernels.ops.AttentionGradients;
import dev.seqkernels.ops.AttentionResult;
import dev.seqkernels.ops.CausalAlignment;
import dev.seqkernels.ops.Gru;
import dev.seqkernels.ops.Lstm;
import dev.seqkernels.ops.MhaGradients;
import dev.seqkernels.ops.MhaResult;
import dev.seqkernels.ops.MultiHeadAttention;
import dev.seqkernels.ops.PreparedWeights;
import dev.seqkernels.ops.RecurrentGradients;
import dev.seqkernels.ops.RecurrentOp;
import dev.seqkernels.ops.RecurrentResult;

import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The GPU timing harness behind {@code seqk bench}. Per case: the op runs once through a
 * {@link CapturingDriver} (inputs uploaded, outputs downloaded, device work recorded), then the
 * recorded device work is replayed between two device events: warm-up replays first, then
 * repetitions by {@link Options}' policy, each after a memset of a
 * buffer larger than L2 so that no repetition starts with the previous one's data in cache. The
 * median and the 10th and 90th percentiles are reported, beside the floor from the peaks measured
 * once per run ({@link Peaks}).
 *
 * <p>What a time includes: every kernel and GEMM the op launches, and any gap while the host issues
 * them (launches go through the binding as in a real call, so launch cost shows at small shapes).
 * What it excludes: the op's host-to-device and device-to-host copies (counted in the row's note).
 *
 * <p>The {@code infer-graph} pass is timed without the recording: the inference forward on device
 * tensors through a {@link DeviceRecurrentGraph} captured once, so a repetition is one call of the
 * cache, one graph launch (the host's check of the call included, as a framework pays it).
 */
public final class Bench {
    /**
     * Repetition policy: at least {@code fewestReps}; at least {@code minReps} unless they would
     * take over {@code longMillis} (a case of seconds per repetition gets the few, so a whole
     * suite fits a bounded run); then more, up to {@code maxReps}, while under {@code budgetMillis}.
     * {@link #forDriver} picks the GPU default, or the small one for a simulated device (the emulator, the stand-in driver).
     */
    public record Options(int warmup, int fewestReps, int minReps, int maxReps, double budgetMillis, double longMillis,
                          long flushBytes) {
        public static Options forDriver(Driver d) {
            return d.properties().simulated() ? new Options(1, 2, 2, 3, 0, 0, 0) : new Options(3, 3, 10, 200, 300, 2000, 256L << 20);
        }

        boolean wantsMore(int reps, double totalMillis) {
            return reps < fewestReps || (reps < minReps && totalMillis < longMillis) || (reps < maxReps && totalMillis < budgetMillis);
        }
    }

    private final Driver driver;
    private final Options options;
    private final Peaks peaks;

    public Bench(Driver driver, Options options, Peaks peaks) {
        this.driver = driver;
        this.options = options;
        this.peaks = peaks;
    }

    public Peaks peaks() {
        return peaks;
    }

    /** The case timed, or a row saying why not (skipped by the suite, or failed with the error). */
    public BenchRow run(BenchCase c) {
        String impl = "seqkernels-" + driver.name();
        if (c.skip() != null) {
            return new BenchRow(c.key(), c.op(), c.shape(), c.dtype().name(), c.pass(), impl, 0, 0, 0, 0, c.flops(),
                    c.bytes(), floorMillis(c), bound(c), "skipped: " + c.skip());
        }
        if (c.pass().equals(BenchSuite.GRAPH_PASS)) {
            return graphRow(c, impl);
        }
        try (CapturingDriver capture = new CapturingDriver(driver)) {
            GpuBackend backend = new GpuBackend(capture);
            workload(c, backend);
            capture.stop();
            double[] times = time(() -> capture.replay(0));
            String note = capture.launches() + " launches; host copies excluded: " + capture.hostCopyBytes() + " bytes"
                    + perStep(c, percentile(times, 0.5), capture);
            return new BenchRow(c.key(), c.op(), c.shape(), c.dtype().name(), c.pass(), impl, percentile(times, 0.5),
                    percentile(times, 0.1), percentile(times, 0.9), times.length, c.flops(), c.bytes(), floorMillis(c),
                    bound(c), note);
        } catch (RuntimeException e) {
            return new BenchRow(c.key(), c.op(), c.shape(), c.dtype().name(), c.pass(), impl, 0, 0, 0, 0, c.flops(),
                    c.bytes(), floorMillis(c), bound(c), "failed: " + e.getClass().getSimpleName() + ": " + e.getMessage());
        }
    }

    /** An {@code infer-graph} case: the whole inference forward as one graph, timed per launch. */
    private BenchRow graphRow(BenchCase c, String impl) {
        try (GraphedForward g = new GraphedForward(c, driver)) {
            double[] times = time(g::launch);
            double median = percentile(times, 0.5);
            String note = g.oneCall() + " (the whole forward captured once by DeviceRecurrentGraph); host copies excluded"
                    + String.format(java.util.Locale.ROOT, "; per step (%s): %.4f ms, %.4g MB at the floor", c.pass(),
                    median / c.get("T"), c.bytes() / c.get("T") / 1e6);
            return new BenchRow(c.key(), c.op(), c.shape(), c.dtype().name(), c.pass(), impl, median, percentile(times, 0.1),
                    percentile(times, 0.9), times.length, c.flops(), c.bytes(), floorMillis(c), bound(c), note);
        } catch (RuntimeException e) {
            return new BenchRow(c.key(), c.op(), c.shape(), c.dtype().name(), c.pass(), impl, 0, 0, 0, 0, c.flops(),
                    c.bytes(), floorMillis(c), bound(c), "failed: " + e.getClass().getSimpleName() + ": " + e.getMessage());
        }
    }

    /**
     * A recurrent case's inference forward on device tensors (stream 0) through a graph cache,
     * captured by the constructor, over a driver that counts the calls that issue device work.
     */
    private static final class GraphedForward implements AutoCloseable {
        /** Driver calls that put work (or an event) on a stream, besides launchGraph. */
        private static final java.util.Set<String> WORK = java.util.Set.of("launch", "launchCooperative", "gemm", "memsetAsync",
                "copyHostToDeviceAsync", "copyDeviceToHostAsync", "copyDeviceToDeviceAsync", "recordEvent", "waitEvent");
        private final Driver driver;
        private final java.util.concurrent.atomic.AtomicInteger graphLaunches = new java.util.concurrent.atomic.AtomicInteger();
        private final java.util.concurrent.atomic.AtomicInteger otherWork = new java.util.concurrent.atomic.AtomicInteger();
        private final Map<String, Tensor> params = new LinkedHashMap<>();
        private PreparedWeights weights;
        private DeviceTensor x;
        private DeviceRecurrentGraph graph;
        private DeviceRecurrent.Call call;

        GraphedForward(BenchCase c, Driver real) {
            driver = (Driver) java.lang.reflect.Proxy.newProxyInstance(Driver.class.getClassLoader(), new Class<?>[]{Driver.class},
                    (proxy, method, args) -> {
                        if (method.getName().equals("launchGraph")) {
                            graphLaunches.incrementAndGet();
                        } else if (WORK.contains(method.getName())) {
                            otherWork.incrementAndGet();
                        }
                        try {
                            return method.invoke(real, args);
                        } catch (java.lang.reflect.InvocationTargetException e) {
                            throw e.getCause();
                        }
                    });
            GpuBackend backend = new GpuBackend(driver);
            try {
                RecurrentOp op = recurrentOp(c, backend);
                long seed = randomParams(c, op, params);
                weights = op.prepare(params);
                try (Tensor host = random(c.dtype(), seed, 1, c.get("T"), c.get("B"), c.get("I"))) {
                    x = DeviceTensor.of(driver, host);
                }
                graph = DeviceRecurrent.of(op).graph();
                call = DeviceRecurrent.inputs(weights, x).inference();
                graph.forward(call);
                driver.synchronize(0);
            } catch (RuntimeException e) {
                close();
                throw e;
            }
        }

        void launch() {
            graph.forward(call);
        }

        /** What one more call issues, counted: "N graph launch(es) and M other device call(s) per call". */
        String oneCall() {
            graphLaunches.set(0);
            otherWork.set(0);
            launch();
            driver.synchronize(0);
            return graphLaunches.get() + " graph launch(es) and " + otherWork.get() + " other device call(s) per call";
        }

        @Override
        public void close() {
            driver.synchronize(0);
            for (AutoCloseable r : new AutoCloseable[]{graph, x, weights}) {
                if (r != null) {
                    try {
                        r.close();
                    } catch (Exception e) {
                        throw new IllegalStateException(e);
                    }
                }
            }
            params.values().forEach(Tensor::close);
        }
    }

    /**
     * For a recurrent case, what one step costs: the median over T (of the case's pass: with
     * backward, a forward and a backward step), the floor's bytes over T (what any implementation
     * must move per step, {@link BenchSuite}; docs/ARCHITECTURE.md's cost model gives what ours
     * moves), and the forward step loop's shape (the kernels and
     * GEMMs captured per step graph, and the graph launches: one per step of each layer and
     * direction, so their count over T is the directions times the layers that ran the loop; the
     * persistent kernel captures none; backward issues its steps directly), and the cooperative
     * launches: one per layer and direction of each persistent forward and persistent backward that
     * ran. Empty for other ops.
     */
    static String perStep(BenchCase c, double medianMs, CapturingDriver capture) {
        if (!c.op().equals("lstm") && !c.op().equals("gru")) {
            return "";
        }
        int steps = c.get("T");
        int graphs = capture.graphLaunches() / Math.max(1, steps);
        return String.format(java.util.Locale.ROOT,
                "; per step (%s): %.4f ms, %.4g MB at the floor, forward %d graph launch(es) of %d node(s), %d cooperative launch(es)",
                c.pass(), medianMs / steps, c.bytes() / steps / 1e6, graphs, graphs == 0 ? 0 : capture.graphNodes() / graphs,
                capture.cooperativeLaunches());
    }

    double floorMillis(BenchCase c) {
        return Math.max(c.flops() / peaks.flopsPerSecond(c.dtype()), c.bytes() / peaks.bytesPerSecond()) * 1e3;
    }

    String bound(BenchCase c) {
        return c.flops() / peaks.flopsPerSecond(c.dtype()) >= c.bytes() / peaks.bytesPerSecond() ? "flops" : "bytes";
    }

    /** Times {@code once} (device work issued on stream 0) by the repetition policy, each repetition after the L2 flush. */
    private double[] time(Runnable once) {
        long start = driver.createEvent();
        long end = driver.createEvent();
        long flush = options.flushBytes() > 0 ? driver.malloc(options.flushBytes()) : 0;
        try {
            for (int i = 0; i < options.warmup(); i++) {
                once.run();
            }
            driver.synchronize(0);
            List<Double> times = new ArrayList<>();
            double total = 0;
            while (options.wantsMore(times.size(), total)) {
                if (flush != 0) {
                    driver.memsetAsync(flush, times.size() & 0xff, options.flushBytes(), 0);
                }
                driver.recordEvent(start, 0);
                once.run();
                driver.recordEvent(end, 0);
                driver.synchronize(0);
                double ms = driver.elapsedMillis(start, end);
                times.add(ms);
                total += ms;
            }
            return times.stream().mapToDouble(Double::doubleValue).toArray();
        } finally {
            if (flush != 0) {
                driver.free(flush);
            }
            driver.destroyEvent(start);
            driver.destroyEvent(end);
        }
    }

    static double percentile(double[] values, double q) {
        double[] s = values.clone();
        Arrays.sort(s);
        double pos = q * (s.length - 1);
        int lo = (int) Math.floor(pos);
        int hi = Math.min(s.length - 1, lo + 1);
        return s[lo] + (pos - lo) * (s[hi] - s[lo]);
    }

    /** Runs the case's op once on {@code backend}: forward (inference for infer), and backward for fwd+bwd. */
    static void workload(BenchCase c, GpuBackend backend) {
        switch (c.op()) {
            case "lstm", "gru" -> recurrent(c, backend);
            case "sdpa" -> attention(c, backend, c.get("B"), c.get("H"), c.get("H"), c.get("L"), c.get("L"), c.get("D"),
                    c.get("causal") == 1);
            case "decode" -> attention(c, backend, c.get("B"), c.get("H"), c.get("Hkv"), c.get("Lq"), c.get("Lk"), c.get("D"),
                    false);
            case "mha" -> multiHead(c, backend);
            default -> throw new IllegalArgumentException("no workload for op " + c.op());
        }
    }

    private static void recurrent(BenchCase c, GpuBackend backend) {
        int t = c.get("T");
        int b = c.get("B");
        int in = c.get("I");
        RecurrentOp op = recurrentOp(c, backend);
        Map<String, Tensor> params = new LinkedHashMap<>();
        long seed = randomParams(c, op, params);
        try (Tensor x = random(c.dtype(), seed++, 1, t, b, in);
             RecurrentResult y = c.pass().equals("infer") ? op.forwardInference(params, x, null, null, null) : op.forward(params, x)) {
            if (c.backward()) {
                try (Tensor dy = random(c.dtype(), seed, 1, y.output().shape());
                     RecurrentGradients g = op.backward(params, y, dy, null, null)) {
                    g.dx();
                }
            }
        } finally {
            params.values().forEach(Tensor::close);
        }
    }

    private static RecurrentOp recurrentOp(BenchCase c, GpuBackend backend) {
        return c.op().equals("lstm")
                ? Lstm.builder().inputSize(c.get("I")).hiddenSize(c.get("H")).backend(backend).build()
                : Gru.builder().inputSize(c.get("I")).hiddenSize(c.get("H")).backend(backend).build();
    }

    /** Fills {@code params} with the op's parameters (uniform in +-1/sqrt(H)); returns the next seed. */
    private static long randomParams(BenchCase c, RecurrentOp op, Map<String, Tensor> params) {
        long seed = 1;
        for (Map.Entry<String, long[]> p : op.config().parameterShapes().entrySet()) {
            params.put(p.getKey(), random(c.dtype(), seed++, 1 / Math.sqrt(c.get("H")), p.getValue()));
        }
        return seed;
    }

    private static void attention(BenchCase c, GpuBackend backend, int b, int heads, int kvHeads, int lq, int lk, int d,
                                  boolean causal) {
        Attention op = Attention.builder().causal(causal ? CausalAlignment.TOP_LEFT : CausalAlignment.NONE).backend(backend).build();
        try (Tensor q = random(c.dtype(), 1, 1, b, heads, lq, d); Tensor k = random(c.dtype(), 2, 1, b, kvHeads, lk, d);
             Tensor v = random(c.dtype(), 3, 1, b, kvHeads, lk, d);
             AttentionResult r = op.forward(Attention.inputs(q, k, v))) {
            if (c.backward()) {
                try (Tensor dout = random(c.dtype(), 4, 1, r.out().shape()); AttentionGradients g = op.backward(r, dout)) {
                    g.dq();
                }
            }
        }
    }

    /** Self-attention, batch first, without the attention weights: PyTorch's nn.MultiheadAttention(x, x, x, need_weights=False). */
    private static void multiHead(BenchCase c, GpuBackend backend) {
        int e = c.get("E");
        MultiHeadAttention op = MultiHeadAttention.builder().embedDim(e).numHeads(c.get("H")).batchFirst(true).needWeights(false)
                .causal(c.get("causal") == 1 ? CausalAlignment.TOP_LEFT : CausalAlignment.NONE).backend(backend).build();
        Map<String, Tensor> params = new LinkedHashMap<>();
        long seed = 1;
        for (Map.Entry<String, long[]> p : op.parameterShapes().entrySet()) {
            params.put(p.getKey(), random(c.dtype(), seed++, 1 / Math.sqrt(e), p.getValue()));
        }
        try (Tensor x = random(c.dtype(), seed++, 1, c.get("B"), c.get("L"), e);
             MhaResult r = op.forward(params, MultiHeadAttention.inputs(x, x, x))) {
            if (c.backward()) {
                try (Tensor dy = random(c.dtype(), seed, 1, r.out().shape()); MhaGradients g = op.backward(params, r, dy, null)) {
                    g.dQuery();
                }
            }
        } finally {
            params.values().forEach(Tensor::close);
        }
    }

    /**
     * Uniform values in [-scale, scale) from a xorshift stream, written straight into an F32 segment
     * (benchmark tensors reach 10^8 elements, beyond what a double[] staging array allows), then
     * rounded to the dtype.
     */
    static Tensor random(DType dt, long seed, double scale, long... shape) {
        Tensor f32 = Tensor.allocate(DType.F32, shape);
        long s = 0x9E3779B97F4A7C15L * (seed + 1);
        long n = f32.numel();
        for (long i = 0; i < n; i++) {
            s ^= s << 13;
            s ^= s >>> 7;
            s ^= s << 17;
            double u = (s >>> 11) * 0x1.0p-53;
            f32.segment().setAtIndex(ValueLayout.JAVA_FLOAT, i, (float) ((2 * u - 1) * scale));
        }
        if (dt == DType.F32) {
            return f32;
        }
        try (f32) {
            return f32.to(dt);
        }
    }

    /** Device peaks measured once per run: copy bandwidth and GEMM throughput per input dtype. */
    public record Peaks(String device, double bytesPerSecond, Map<DType, Double> gemmFlopsPerSecond, String method) {
        public double flopsPerSecond(DType dt) {
            Double f = gemmFlopsPerSecond.get(dt);
            if (f == null) {
                throw new IllegalArgumentException("no GEMM peak measured for " + dt);
            }
            return f;
        }

        /**
         * A device-to-device copy (read + write counted) for bandwidth; a square GEMM per input dtype
         * (16-bit with 16-bit output, F32 with F32) for flops. Sizes: 1 GiB and 8192^3 on a GPU, small
         * on a simulated device (whose "peaks" only make the harness's arithmetic checkable).
         */
        public static Peaks measure(Driver d) {
            boolean emu = d.properties().simulated();
            long copyBytes = emu ? 1L << 22 : 1L << 30;
            int reps = emu ? 3 : 10;
            long a = d.malloc(copyBytes);
            long b = d.malloc(copyBytes);
            long start = d.createEvent();
            long end = d.createEvent();
            try {
                d.memset(a, 0x3c, copyBytes);
                double copyMs = median(d, start, end, reps, () -> d.copyDeviceToDeviceAsync(b, a, copyBytes, 0));
                Map<DType, Double> gemm = new LinkedHashMap<>();
                int n = emu ? 64 : 8192;
                for (DType dt : List.of(DType.F32, DType.F16, DType.BF16)) {
                    long bytes = (long) n * n * dt.byteSize();
                    long ga = d.malloc(bytes);
                    long gb = d.malloc(bytes);
                    long gc = d.malloc(bytes);
                    try {
                        d.memset(ga, 0x3c, bytes);
                        d.memset(gb, 0x3c, bytes);
                        Gemm g = new Gemm(false, false, n, n, n, 1f, ga, n, 0, gb, n, 0, 0f, gc, n, 0, 1, dt, dt);
                        d.gemm(g, 0);
                        double ms = median(d, start, end, reps, () -> d.gemm(g, 0));
                        gemm.put(dt, 2.0 * n * n * n / (ms * 1e-3));
                    } finally {
                        d.free(ga);
                        d.free(gb);
                        d.free(gc);
                    }
                }
                String method = "copy " + (copyBytes >> 20) + " MiB device to device; GEMM " + n + "^3 per dtype; median of " + reps;
                return new Peaks(d.properties().name(), 2.0 * copyBytes / (copyMs * 1e-3), gemm, method);
            } finally {
                d.free(a);
                d.free(b);
                d.destroyEvent(start);
                d.destroyEvent(end);
            }
        }

        private static double median(Driver d, long start, long end, int reps, Runnable work) {
            double[] t = new double[reps];
            for (int i = 0; i < reps; i++) {
                d.recordEvent(start, 0);
                work.run();
                d.recordEvent(end, 0);
                d.synchronize(0);
                t[i] = d.elapsedMillis(start, end);
            }
            return Math.max(percentile(t, 0.5), 1e-6);
        }
    }
}
