package example.embedding;

import dev.seqkernels.Backends;
import dev.seqkernels.DType;
import dev.seqkernels.Tensor;
import dev.seqkernels.gpu.DeviceAttention;
import dev.seqkernels.gpu.DeviceAttentionResult;
import dev.seqkernels.gpu.DeviceRecurrent;
import dev.seqkernels.gpu.DeviceRecurrentResult;
import dev.seqkernels.gpu.DeviceTensor;
import dev.seqkernels.gpu.Driver;
import dev.seqkernels.gpu.GpuBackend;
import dev.seqkernels.ops.Attention;
import dev.seqkernels.ops.CausalAlignment;
import dev.seqkernels.ops.Lstm;
import dev.seqkernels.ops.PreparedWeights;

import java.util.HashMap;
import java.util.Map;

/**
 * What a Java ML framework does with seqkernels, depending on the core artifact alone (the README's
 * "Embedding" example; built and tested with the project): an LSTM whose weights are uploaded once
 * and causal attention, both on the framework's own device memory and stream.
 */
public final class EmbeddingExample {
    /** The LSTM's output [time, batch, hidden] and attention's [batch, heads, query length, dim], row-major. */
    public record Outputs(float[] lstm, float[] attention) {
    }

    private EmbeddingExample() {
    }

    public static void main(String[] args) {
        Outputs o = run(args.length > 0 ? args[0] : "emu");
        System.out.println("seqkernels from " + Backends.class.getModule());
        System.out.printf("lstm: %d values, attention: %d values%n", o.lstm().length, o.attention().length);
    }

    /** Runs both on a GPU backend: "panama" or "jcuda" on a GPU, "emu" (the SIMT emulator) anywhere. */
    public static Outputs run(String backend) {
        GpuBackend gpu = (GpuBackend) Backends.byName(backend);
        return new Outputs(lstm(gpu), attention(gpu));
    }

    /**
     * Weights prepared once (device copies in the op's compute dtype), then an LSTM forward on the
     * framework's own device memory and stream: x uploaded, the forward queued and its output
     * downloaded on that stream; nothing waits until the end.
     */
    static float[] lstm(GpuBackend gpu) {
        Driver driver = gpu.driver();
        Lstm lstm = Lstm.builder().inputSize(8).hiddenSize(16).backend(gpu).build();
        Map<String, Tensor> params = new HashMap<>();
        lstm.config().parameterShapes().forEach((name, shape) -> params.put(name, Tensor.of(values(shape, name.hashCode()), shape)));
        long[] xShape = {5, 2, 8}; // time, batch, features
        long[] outShape = {5, 2, 16};
        long xBytes = Tensor.byteSize(DType.F32, xShape);
        long outBytes = Tensor.byteSize(DType.F32, outShape);
        long stream = driver.createStream();
        long x = driver.malloc(xBytes);
        try (PreparedWeights weights = lstm.prepare(params);
             Tensor xHost = Tensor.of(values(xShape, 1), xShape); Tensor out = Tensor.allocate(DType.F32, outShape)) {
            params.values().forEach(Tensor::close); // the op needs only the prepared copies from here on
            driver.copyHostToDeviceAsync(x, xHost.segment(), xBytes, stream);
            DeviceTensor dx = DeviceTensor.wrap(driver, x, DType.F32, xShape, Tensor.contiguousStrides(xShape));
            try (DeviceRecurrentResult y = DeviceRecurrent.of(lstm).forward(DeviceRecurrent.inputs(weights, dx).stream(stream).inference())) {
                driver.copyDeviceToHostAsync(out.segment(), y.output().pointer(), outBytes, stream);
                driver.synchronize(stream); // before the result (and the host buffers) are closed
            }
            return out.toFloatArray();
        } finally {
            driver.free(x);
            driver.destroyStream(stream);
        }
    }

    /**
     * The framework's own allocations and stream, passed as raw handles: inputs uploaded, attention
     * computed and its output downloaded, all queued on that stream; nothing waits until the end.
     */
    static float[] attention(GpuBackend gpu) {
        Driver driver = gpu.driver();
        DeviceAttention sdpa = DeviceAttention.of(Attention.builder().causal(CausalAlignment.BOTTOM_RIGHT).backend(gpu).build());
        long[] qShape = {1, 2, 4, 8}; // batch, heads, query length, head dim: 4 new tokens ...
        long[] kvShape = {1, 2, 6, 8}; // ... attending to 6 keys (bottom-right causal: the last query sees them all)
        long qBytes = Tensor.byteSize(DType.F32, qShape);
        long kvBytes = Tensor.byteSize(DType.F32, kvShape);
        long stream = driver.createStream();
        long q = driver.malloc(qBytes);
        long k = driver.malloc(kvBytes);
        long v = driver.malloc(kvBytes);
        try (Tensor qHost = Tensor.of(values(qShape, 2), qShape); Tensor kHost = Tensor.of(values(kvShape, 3), kvShape);
             Tensor vHost = Tensor.of(values(kvShape, 4), kvShape); Tensor out = Tensor.allocate(DType.F32, qShape)) {
            driver.copyHostToDeviceAsync(q, qHost.segment(), qBytes, stream);
            driver.copyHostToDeviceAsync(k, kHost.segment(), kvBytes, stream);
            driver.copyHostToDeviceAsync(v, vHost.segment(), kvBytes, stream);
            DeviceTensor dq = DeviceTensor.wrap(driver, q, DType.F32, qShape, Tensor.contiguousStrides(qShape));
            DeviceTensor dk = DeviceTensor.wrap(driver, k, DType.F32, kvShape, Tensor.contiguousStrides(kvShape));
            DeviceTensor dv = DeviceTensor.wrap(driver, v, DType.F32, kvShape, Tensor.contiguousStrides(kvShape));
            try (DeviceAttentionResult r = sdpa.forward(DeviceAttention.inputs(dq, dk, dv).stream(stream).inference())) {
                driver.copyDeviceToHostAsync(out.segment(), r.out().pointer(), qBytes, stream);
                driver.synchronize(stream); // before the result (and the host buffers) are closed
            }
            return out.toFloatArray();
        } finally {
            driver.free(q);
            driver.free(k);
            driver.free(v);
            driver.destroyStream(stream);
        }
    }

    /** Deterministic values in [-0.5, 0.5) for a tensor of this shape. */
    static float[] values(long[] shape, long seed) {
        float[] a = new float[Math.toIntExact(Tensor.numel(shape))];
        long s = seed * 0x9E3779B97F4A7C15L + 1;
        for (int i = 0; i < a.length; i++) {
            s = s * 6364136223846793005L + 1442695040888963407L;
            a[i] = (float) ((s >>> 40) / (double) (1L << 24) - 0.5);
        }
        return a;
    }
}
