package dev.seqkernels.gpu;

import dev.seqkernels.Backends;
import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.Tensor;
import dev.seqkernels.TestData;
import dev.seqkernels.ops.Attention;
import dev.seqkernels.ops.AttentionGradients;
import dev.seqkernels.ops.AttentionResult;
import dev.seqkernels.ops.CausalAlignment;
import dev.seqkernels.ops.Mask;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * DeviceAttention, the device-resident entry point: a framework's own allocation and stream, passed
 * as raw handles (plain driver calls make them here), give exactly the host path's out, lse and
 * gradients, through every forward kernel (v1, tensor-core, split-KV), with strided inputs, masks and
 * lengths, a caller's output buffer, and inference mode; everything the calls allocate is freed when
 * their results close.
 */
@PerBinding
class DeviceAttentionTest {
    private final Driver driver = GpuTargets.driver();
    private final List<Long> rawAllocations = new ArrayList<>();

    /** A framework's allocation: raw device memory filled from a host tensor by plain driver calls, wrapped without a copy. */
    private DeviceTensor framework(Tensor host) {
        long bytes = host.numel() * host.dtype().byteSize();
        long pointer = driver.malloc(bytes);
        rawAllocations.add(pointer);
        driver.copyHostToDevice(pointer, host.segment(), bytes);
        return DeviceTensor.wrap(driver, pointer, host.dtype(), host.shape(), host.strides());
    }

    private void freeRaw() {
        rawAllocations.forEach(driver::free);
        rawAllocations.clear();
    }

    private static void sameBits(String what, Tensor want, DeviceTensor got) {
        assertArrayEquals(want.shape(), got.shape(), what + " shape");
        try (Tensor host = got.isContiguous() ? got.toHost() : null) {
            double[] w = want.toDoubleArray();
            double[] g = host != null ? host.toDoubleArray() : null;
            assertTrue(g != null, what + " is strided: compare through a contiguous copy");
            for (int i = 0; i < w.length; i++) {
                if (Double.doubleToLongBits(w[i]) != Double.doubleToLongBits(g[i])) {
                    assertEquals(w[i], g[i], what + " element " + i + " differs from the host path");
                }
            }
        }
    }

    /** dtype, q_len, kv_len, head_dim: v1 (F32), the tensor-core kernels (F16, BF16) and split-KV (q_len 1, kv_len 1100). */
    @ParameterizedTest
    @CsvSource({"F32, 9, 20, 16", "F16, 9, 70, 16", "BF16, 33, 40, 72", "BF16, 1, 1100, 16"})
    void aFrameworksAllocationAndStreamGiveTheHostPathsResults(DType dtype, int qLen, int kvLen, int headDim) {
        TestData data = new TestData();
        Attention op = Attention.builder().causal(CausalAlignment.BOTTOM_RIGHT).backend(GpuTargets.sharedBackend()).build();
        Tensor q = data.tensor(dtype, 1, 2, 4, qLen, headDim);
        Tensor k = data.tensor(dtype, 1, 2, 2, kvLen, headDim);
        Tensor v = data.tensor(dtype, 1, 2, 2, kvLen, 8);
        Tensor blocked = Tensor.allocate(DType.BOOL, qLen, kvLen);
        blocked.set(1, 0, 1);
        int[] keyLengths = {kvLen, kvLen - 3};
        int[] queryLengths = {qLen, Math.max(1, qLen - 2)};
        Tensor seed = data.tensor(dtype, 1, 2, 4, qLen, 8);
        long before = driver.memoryInUse();
        long stream = driver.createStream();
        try (AttentionResult want = op.forward(Attention.inputs(q, k, v).mask(Mask.blocked(blocked)).keyLengths(keyLengths)
                .queryLengths(queryLengths));
             AttentionGradients wantGrad = op.backward(want, seed)) {
            DeviceAttention sdpa = DeviceAttention.of(op);
            try (DeviceAttentionResult got = sdpa.forward(DeviceAttention.inputs(framework(q), framework(k), framework(v))
                    .mask(Mask.blocked(blocked)).keyLengths(keyLengths).queryLengths(queryLengths).stream(stream));
                 DeviceAttentionGradients grad = sdpa.backward(got, framework(seed), stream)) {
                driver.synchronize(stream);
                assertTrue(got.differentiable());
                sameBits(dtype + " out", want.out(), got.out());
                sameBits(dtype + " lse", want.lse(), got.lse());
                sameBits(dtype + " dq", wantGrad.dq(), grad.dq());
                sameBits(dtype + " dk", wantGrad.dk(), grad.dk());
                sameBits(dtype + " dv", wantGrad.dv(), grad.dv());
                assertEquals(dtype, grad.dq().dtype());
            }
        } finally {
            driver.destroyStream(stream);
            freeRaw();
            blocked.close();
        }
        assertEquals(before, driver.memoryInUse(), "everything the calls allocated was freed with their results");
    }

    /**
     * q, k and v as head-strided views of [batch, len, heads, dim] buffers (a framework's usual
     * layout), out into a caller's [batch, q_len, heads, value_dim] buffer seen as
     * [batch, heads, q_len, value_dim]: the host path's values; dq comes back with q's strides.
     */
    @Test
    void stridedInputsAndACallersOutputBuffer() {
        TestData data = new TestData();
        DType dt = DType.F16;
        Attention op = Attention.builder().backend(GpuTargets.sharedBackend()).build();
        Tensor qBlh = data.tensor(dt, 1, 2, 24, 4, 32);
        Tensor kBlh = data.tensor(dt, 1, 2, 30, 4, 32);
        Tensor vBlh = data.tensor(dt, 1, 2, 30, 4, 16);
        Tensor seed = data.tensor(dt, 1, 2, 4, 24, 16);
        long before = driver.memoryInUse();
        try (AttentionResult want = op.forward(Attention.inputs(qBlh.permute(0, 2, 1, 3), kBlh.permute(0, 2, 1, 3),
                vBlh.permute(0, 2, 1, 3)));
             AttentionGradients wantGrad = op.backward(want, seed);
             DeviceTensor outBlh = DeviceTensor.allocate(driver, dt, 2, 24, 4, 16)) {
            DeviceAttention sdpa = DeviceAttention.of(op);
            DeviceTensor outView = outBlh.permute(0, 2, 1, 3);
            try (DeviceAttentionResult got = sdpa.forward(DeviceAttention.inputs(framework(qBlh).permute(0, 2, 1, 3),
                    framework(kBlh).permute(0, 2, 1, 3), framework(vBlh).permute(0, 2, 1, 3)).into(outView));
                 DeviceAttentionGradients grad = sdpa.backward(got, framework(seed), 0)) {
                driver.synchronize(0);
                assertSame(outView, got.out(), "out is the caller's buffer");
                try (Tensor outHost = outBlh.toHost()) {
                    sameBits("out", want.out(), DeviceTensor.of(driver, outHost.permute(0, 2, 1, 3)));
                }
                assertArrayEquals(framework(qBlh).permute(0, 2, 1, 3).strides(), grad.dq().strides(), "dq has q's strides");
                DeviceTensor dqBlh = grad.dq().permute(0, 2, 1, 3);
                assertTrue(dqBlh.isContiguous());
                try (Tensor dq = dqBlh.toHost()) {
                    sameBits("dq", wantGrad.dq(), DeviceTensor.of(driver, dq.permute(0, 2, 1, 3)));
                }
            }
        } finally {
            freeRaw();
        }
        assertTrue(driver.memoryInUse() >= before);
    }

    /** The stream argument of each Driver call that takes one, by position. */
    private static final java.util.Map<String, Integer> STREAM_ARGUMENT = java.util.Map.of("launch", 4, "launchCooperative", 4,
            "memsetAsync", 3, "copyHostToDeviceAsync", 3, "copyDeviceToHostAsync", 3, "copyDeviceToDeviceAsync", 3,
            "recordEvent", 1, "gemm", 1, "launchGraph", 1);
    /** Driver calls that wait for the device (or free memory, which may): none may happen inside a device-resident call. */
    private static final java.util.Set<String> WAITING = java.util.Set.of("copyHostToDevice", "copyDeviceToHost",
            "copyDeviceToDevice", "memset", "synchronize", "free", "freeHost", "destroyStream", "destroyEvent", "destroyGraph");

    /**
     * Every copy, memset and launch of a forward with a mask and lengths and of its backward goes on
     * the caller's stream, and nothing inside the calls waits for the device or frees memory: the
     * driver is wrapped to record each call's stream while the two calls run. (A capture would show
     * the same, but the calls allocate, which a global-mode capture refuses: see ARCHITECTURE.)
     */
    @Test
    void everyLaunchGoesOnTheCallersStreamAndNothingWaits() {
        TestData data = new TestData();
        List<String> calls = new java.util.concurrent.CopyOnWriteArrayList<>();
        boolean[] recording = {false};
        Driver recorded = (Driver) java.lang.reflect.Proxy.newProxyInstance(Driver.class.getClassLoader(), new Class<?>[]{Driver.class},
                (proxy, method, args) -> {
                    if (recording[0]) {
                        Integer at = STREAM_ARGUMENT.get(method.getName());
                        calls.add(method.getName() + (at == null ? "" : " on " + args[at]));
                    }
                    try {
                        return method.invoke(driver, args);
                    } catch (java.lang.reflect.InvocationTargetException e) {
                        throw e.getCause();
                    }
                });
        DType dt = DType.F16;
        Attention op = Attention.builder().causal(CausalAlignment.TOP_LEFT).backend(new GpuBackend(recorded)).build();
        long stream = driver.createStream();
        List<DeviceTensor> inputs = new ArrayList<>();
        for (long[] shape : new long[][]{{1, 2, 12, 16}, {1, 2, 12, 16}, {1, 2, 12, 8}, {1, 2, 12, 8}}) {
            Tensor host = data.tensor(dt, 1, shape);
            DeviceTensor raw = framework(host);
            inputs.add(DeviceTensor.wrap(recorded, raw.pointer(), dt, raw.shape(), raw.strides()));
        }
        Tensor blocked = Tensor.allocate(DType.BOOL, 12, 12);
        blocked.set(1, 3, 0);
        DeviceAttention sdpa = DeviceAttention.of(op);
        recording[0] = true;
        try (DeviceAttentionResult got = sdpa.forward(DeviceAttention.inputs(inputs.get(0), inputs.get(1), inputs.get(2))
                .mask(Mask.blocked(blocked)).keyLengths(new int[]{10}).queryLengths(new int[]{11}).stream(stream));
             DeviceAttentionGradients grad = sdpa.backward(got, inputs.get(3), stream)) {
            recording[0] = false;
            assertTrue(calls.stream().anyMatch(c -> c.startsWith("launch on")), "the calls launched kernels: " + calls);
            assertTrue(calls.stream().anyMatch(c -> c.startsWith("copyHostToDeviceAsync on")), "the mask went up: " + calls);
            for (String c : calls) {
                assertFalse(WAITING.contains(c), "a device-resident call made a waiting driver call: " + c + " in " + calls);
                assertTrue(!c.contains(" on ") || c.endsWith(" on " + stream), "not on the caller's stream " + stream + ": " + c);
            }
            driver.synchronize(stream);
        } finally {
            recording[0] = false;
            driver.destroyStream(stream);
            freeRaw();
            blocked.close();
        }
    }

    @Test
    void inferenceKeepsNothingForBackward() {
        TestData data = new TestData();
        Attention op = Attention.builder().backend(GpuTargets.sharedBackend()).build();
        DeviceAttention sdpa = DeviceAttention.of(op);
        try (DeviceAttentionResult r = sdpa.forward(DeviceAttention.inputs(framework(data.tensor(DType.F32, 1, 1, 1, 5, 8)),
                framework(data.tensor(DType.F32, 1, 1, 1, 6, 8)), framework(data.tensor(DType.F32, 1, 1, 1, 6, 8))).inference())) {
            assertFalse(r.differentiable());
            var e = assertThrows(SeqkException.InvalidConfig.class, () -> sdpa.backward(r, r.out(), 0));
            assertTrue(e.getMessage().contains("inference"), e.getMessage());
        } finally {
            freeRaw();
        }
    }

    @Test
    void badDeviceInputsAreClearErrors() {
        TestData data = new TestData();
        Attention onGpu = Attention.builder().backend(GpuTargets.sharedBackend()).build();
        Attention onCpu = Attention.builder().backend(Backends.byName("cpu")).build();
        assertThrows(SeqkException.InvalidConfig.class, () -> DeviceAttention.of(onCpu));
        DeviceAttention sdpa = DeviceAttention.of(onGpu);
        try {
            DeviceTensor q = framework(data.tensor(DType.F32, 1, 1, 2, 5, 8));
            DeviceTensor k = framework(data.tensor(DType.F32, 1, 1, 1, 6, 8));
            DeviceTensor v = framework(data.tensor(DType.F32, 1, 1, 1, 6, 4));
            var shape = assertThrows(SeqkException.ShapeMismatch.class, () -> sdpa.forward(DeviceAttention.inputs(q, v, v)));
            assertTrue(shape.getMessage().contains("'k'"), shape.getMessage());
            try (DeviceTensor wrongOut = DeviceTensor.allocate(driver, DType.F32, 1, 2, 5, 8)) {
                var out = assertThrows(SeqkException.ShapeMismatch.class, () -> sdpa.forward(DeviceAttention.inputs(q, k, v).into(wrongOut)));
                assertTrue(out.getMessage().contains("'out'"), out.getMessage());
            }
            var missing = assertThrows(SeqkException.ShapeMismatch.class, () -> sdpa.forward(DeviceAttention.inputs(null, k, v)));
            assertTrue(missing.getMessage().contains("'q'"), missing.getMessage());
            var f64 = assertThrows(SeqkException.class, () -> sdpa.forward(DeviceAttention.inputs(
                    DeviceTensor.wrap(driver, q.pointer(), DType.F64, q.shape(), q.strides()),
                    DeviceTensor.wrap(driver, k.pointer(), DType.F64, k.shape(), k.strides()),
                    DeviceTensor.wrap(driver, v.pointer(), DType.F64, v.shape(), v.strides()))));
            assertTrue(f64.getMessage().contains("F64"), f64.getMessage());
            DeviceTensor closed = DeviceTensor.allocate(driver, DType.F32, 1, 1, 6, 8);
            closed.close();
            assertThrows(SeqkException.TensorClosed.class, () -> sdpa.forward(DeviceAttention.inputs(q, closed, v)));
        } finally {
            freeRaw();
        }
    }
}
