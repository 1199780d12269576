package dev.seqkernels.bench;

import dev.seqkernels.DType;
import dev.seqkernels.Tensor;
import dev.seqkernels.ops.Attention;
import dev.seqkernels.ops.AttentionResult;
import dev.seqkernels.ops.Lstm;
import dev.seqkernels.ops.RecurrentResult;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.Warmup;

import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;

/**
 * What the double CPU reference costs at small realistic shapes: it is the oracle of every test,
 * so its speed bounds how many random cases a test run can afford. One idea per benchmark.
 *
 * <p>lstmForward: T=32, B=4, I=H=64. Per step and batch entry the gates are 4H x (I+H) multiply-adds:
 * 2 * 32 * 4 * 256 * 128 = 8.4 MFLOP per call. sdpaForward: B=1, H=4, L=128, D=64, no mask:
 * 4 * B*H*L*L*D = 16.8 MFLOP per call (q k^T and p v). Divide by the measured time for FLOP/s.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Fork(value = 1, jvmArgsAppend = "--enable-native-access=ALL-UNNAMED")
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
public class CpuReferenceBench {
    private Lstm lstm;
    private Map<String, Tensor> lstmParams;
    private Tensor lstmX;
    private Attention sdpa;
    private Tensor q;
    private Tensor k;
    private Tensor v;

    @Setup
    public void setup() {
        SplittableRandom random = new SplittableRandom(1);
        lstm = Lstm.builder().inputSize(64).hiddenSize(64).backend("cpu").build();
        lstmParams = new java.util.LinkedHashMap<>();
        lstm.config().parameterShapes().forEach((name, shape) -> lstmParams.put(name, random(random, shape)));
        lstmX = random(random, 32, 4, 64);
        sdpa = Attention.builder().backend("cpu").build();
        q = random(random, 1, 4, 128, 64);
        k = random(random, 1, 4, 128, 64);
        v = random(random, 1, 4, 128, 64);
    }

    private static Tensor random(SplittableRandom random, long... shape) {
        double[] values = new double[(int) Tensor.numel(shape)];
        for (int i = 0; i < values.length; i++) {
            values[i] = random.nextDouble(-0.5, 0.5);
        }
        return Tensor.of(DType.F32, values, shape);
    }

    @Benchmark
    public Tensor lstmForward() {
        try (RecurrentResult r = lstm.forward(lstmParams, lstmX)) {
            return r.hn();
        }
    }

    @Benchmark
    public Tensor sdpaForward() {
        try (AttentionResult r = sdpa.forward(Attention.inputs(q, k, v))) {
            return r.lse();
        }
    }
}
