package dev.seqkernels.gpu;

import dev.seqkernels.Backends;
import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.Tensor;
import dev.seqkernels.TestData;
import dev.seqkernels.ops.CausalAlignment;
import dev.seqkernels.ops.Mask;
import dev.seqkernels.ops.MhaGradients;
import dev.seqkernels.ops.MhaResult;
import dev.seqkernels.ops.MultiHeadAttention;
import dev.seqkernels.ops.PreparedWeights;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * DeviceMultiHeadAttention: a framework's allocations (strided) and stream, passed as raw handles,
 * give exactly the host path's output and every gradient (inputs and parameters) for
 * self-attention (one projection GEMM) and cross-attention with kdim/vdim, GQA, bias or not, both
 * layouts, masks; every launch is on the caller's stream and nothing inside the calls waits or
 * frees; bad arguments are refused before anything is queued.
 */
@PerBinding
@DeviceDependent
class DeviceMultiHeadAttentionTest {
    private final Driver driver = GpuTargets.driver();
    private final FrameworkMemory memory = new FrameworkMemory(driver);

    private static void sameValues(String what, Tensor want, DeviceTensor got) {
        assertArrayEquals(want.shape(), got.shape(), what + " shape");
        try (Tensor host = got.toHost()) {
            assertArrayEquals(want.toDoubleArray(), host.toDoubleArray(), what + " differs from the host path");
        }
    }

    /** dtype, self-attention, batch first, kv heads (GQA below 4; self-attention with GQA packs parts of unequal size), bias, masks. */
    @ParameterizedTest
    @CsvSource({"F32, true, false, 4, true, false", "F32, false, true, 2, true, true", "BF16, true, true, 4, false, true",
            "F16, false, false, 4, true, false", "F32, true, true, 2, true, true"})
    void aFrameworksAllocationAndStreamGiveTheHostPathsResults(DType dtype, boolean self, boolean batchFirst, int kvHeads,
                                                               boolean bias, boolean masks) {
        TestData data = new TestData();
        MultiHeadAttention mha = MultiHeadAttention.builder().embedDim(16).numHeads(4).numKvHeads(kvHeads).kdim(self ? 16 : 10)
                .vdim(self ? 16 : 12).bias(bias).batchFirst(batchFirst).causal(self ? CausalAlignment.TOP_LEFT : CausalAlignment.NONE)
                .backend(GpuTargets.sharedBackend()).build();
        int batch = 2;
        int lq = 5;
        int lk = self ? 5 : 7;
        Map<String, Tensor> w = data.params(dtype, 0.3, mha.parameterShapes());
        Tensor query = batchFirst ? data.tensor(dtype, 1, batch, lq, 16) : data.tensor(dtype, 1, lq, batch, 16);
        Tensor key = self ? query : batchFirst ? data.tensor(dtype, 1, batch, lk, 10) : data.tensor(dtype, 1, lk, batch, 10);
        Tensor value = self ? query : batchFirst ? data.tensor(dtype, 1, batch, lk, 12) : data.tensor(dtype, 1, lk, batch, 12);
        Tensor dOut = batchFirst ? data.tensor(dtype, 1, batch, lq, 16) : data.tensor(dtype, 1, lq, batch, 16);
        Tensor padding = Tensor.allocate(DType.BOOL, batch, lk);
        padding.set(1, 1, lk - 1);
        Tensor attn = data.tensor(DType.F32, 1, lq, lk);
        MultiHeadAttention.Inputs hostInputs = MultiHeadAttention.inputs(query, key, value);
        if (masks) {
            hostInputs.keyPaddingMask(Mask.blocked(padding)).attnMask(Mask.additive(attn));
        }
        long stream = driver.createStream();
        try (PreparedWeights weights = mha.prepare(w); MhaResult want = mha.forward(weights, hostInputs);
             MhaGradients wantGrad = mha.backward(weights, want, dOut, null)) {
            long before = driver.memoryInUse();
            DeviceTensor q = memory.swapped(driver, query);
            DeviceTensor k = self ? q : memory.swapped(driver, key);
            DeviceTensor v = self ? q : memory.swapped(driver, value);
            DeviceTensor dy = memory.swapped(driver, dOut);
            DeviceMultiHeadAttention.Call call = DeviceMultiHeadAttention.inputs(weights, q, k, v).stream(stream);
            if (masks) {
                call.keyPaddingMask(Mask.blocked(padding)).attnMask(Mask.additive(attn));
            }
            DeviceMultiHeadAttention dmha = DeviceMultiHeadAttention.of(mha);
            long allocated = driver.memoryInUse();
            List<DeviceTensor> results = new ArrayList<>();
            try (DeviceMhaResult got = dmha.forward(call); DeviceMhaGradients grad = dmha.backward(got, weights, dy, stream)) {
                driver.synchronize(stream);
                assertTrue(got.differentiable());
                sameValues("out", want.out(), got.out());
                sameValues("dQuery", wantGrad.dQuery(), grad.dQuery());
                sameValues("dKey", wantGrad.dKey(), grad.dKey());
                sameValues("dValue", wantGrad.dValue(), grad.dValue());
                assertEquals(wantGrad.params().keySet().stream().toList(), grad.params().keySet().stream().toList());
                for (String name : wantGrad.params().keySet()) {
                    sameValues("d" + name, wantGrad.params().get(name), grad.params().get(name));
                }
                results.add(got.out());
                results.addAll(grad.params().values());
            }
            assertEquals(allocated, driver.memoryInUse(), "closing the result and gradients freed everything the calls allocated");
            results.forEach(t -> assertTrue(t.isClosed(), t.toString()));
            memory.free();
            assertEquals(before, driver.memoryInUse());
        } finally {
            driver.destroyStream(stream);
            memory.free();
            padding.close();
            attn.close();
        }
    }

    /**
     * Self-attention whose output goes into the caller's buffer, here the very memory query came in
     * (read before the output is written): the host path's values; the buffer stays the caller's, and
     * backward needs only the result's own state (the buffer closed first); a wrong buffer is refused.
     */
    @ParameterizedTest
    @CsvSource({"F32, false", "BF16, true"})
    void aCallersOutputBuffer(DType dtype, boolean batchFirst) {
        TestData data = new TestData();
        MultiHeadAttention mha = MultiHeadAttention.builder().embedDim(16).numHeads(4).batchFirst(batchFirst)
                .backend(GpuTargets.sharedBackend()).build();
        Map<String, Tensor> w = data.params(dtype, 0.3, mha.parameterShapes());
        Tensor x = batchFirst ? data.tensor(dtype, 1, 2, 5, 16) : data.tensor(dtype, 1, 5, 2, 16);
        try (PreparedWeights weights = mha.prepare(w); MhaResult want = mha.forward(weights, MultiHeadAttention.inputs(x, x, x))) {
            DeviceMultiHeadAttention dmha = DeviceMultiHeadAttention.of(mha);
            DeviceTensor buffer = DeviceTensor.of(driver, x);
            try (DeviceMhaResult got = dmha.forward(DeviceMultiHeadAttention.inputs(weights, buffer, buffer, buffer).into(buffer))) {
                driver.synchronize(0);
                assertTrue(got.out() == buffer, "the output is the caller's buffer");
                sameValues("out into the caller's buffer", want.out(), buffer);
                DeviceTensor dy = DeviceTensor.of(driver, x);
                buffer.close();
                try (DeviceMhaGradients grad = dmha.backward(got, weights, dy, 0)) {
                    driver.synchronize(0);
                    assertEquals(dtype, grad.dQuery().dtype());
                } finally {
                    dy.close();
                }
            }
            try (DeviceTensor q = DeviceTensor.of(driver, x); DeviceTensor wrong = DeviceTensor.allocate(driver, dtype, 2, 2, 16)) {
                long[] qs = q.shape();
                DeviceTensor transposed = DeviceTensor.wrap(driver, q.pointer(), dtype, qs, new long[]{16, 16 * qs[0], 1});
                for (DeviceTensor bad : List.of(wrong, transposed)) {
                    var e = assertThrows(SeqkException.ShapeMismatch.class, () -> dmha.forward(DeviceMultiHeadAttention.inputs(weights, q, q, q)
                            .into(bad)));
                    assertTrue(e.getMessage().contains("'out'"), e.getMessage());
                }
            }
        }
    }


    /** Every copy, GEMM and launch of a forward with masks and its backward goes on the caller's stream; nothing waits or frees. */
    @ParameterizedTest
    @CsvSource({"true", "false"})
    void everyLaunchGoesOnTheCallersStreamAndNothingWaits(boolean self) {
        TestData data = new TestData();
        List<String> calls = new java.util.concurrent.CopyOnWriteArrayList<>();
        boolean[] recording = {false};
        Driver recorded = RecordingDriver.around(driver, (method, args) -> {
                    if (recording[0]) {
                        Integer at = RecordingDriver.STREAM_ARGUMENT.get(method);
                        calls.add(method + (at == null ? "" : " on " + args[at]));
                    }
            });
        MultiHeadAttention mha = MultiHeadAttention.builder().embedDim(16).numHeads(4).kdim(self ? 16 : 10).vdim(self ? 16 : 12)
                .backend(new GpuBackend(recorded)).build();
        Map<String, Tensor> w = data.params(DType.F16, 0.3, mha.parameterShapes());
        Tensor padding = Tensor.allocate(DType.BOOL, 2, self ? 5 : 7);
        long stream = driver.createStream();
        try (PreparedWeights weights = mha.prepare(w)) {
            DeviceTensor q = memory.swapped(recorded, data.tensor(DType.F16, 1, 5, 2, 16));
            DeviceTensor k = self ? q : memory.swapped(recorded, data.tensor(DType.F16, 1, 7, 2, 10));
            DeviceTensor v = self ? q : memory.swapped(recorded, data.tensor(DType.F16, 1, 7, 2, 12));
            DeviceTensor dy = memory.swapped(recorded, data.tensor(DType.F16, 1, 5, 2, 16));
            DeviceMultiHeadAttention dmha = DeviceMultiHeadAttention.of(mha);
            recording[0] = true;
            try (DeviceMhaResult got = dmha.forward(DeviceMultiHeadAttention.inputs(weights, q, k, v).keyPaddingMask(Mask.blocked(padding))
                    .stream(stream));
                 DeviceMhaGradients grad = dmha.backward(got, weights, dy, stream)) {
                recording[0] = false;
                assertTrue(calls.stream().anyMatch(c -> c.startsWith("gemm on")), "the calls ran GEMMs: " + calls);
                assertTrue(calls.stream().anyMatch(c -> c.startsWith("copyHostToDeviceAsync on")), "the mask went up: " + calls);
                for (String c : calls) {
                    assertFalse(RecordingDriver.WAITING.contains(c), "a device-resident call made a waiting driver call: " + c + " in " + calls);
                    assertTrue(!c.contains(" on ") || c.endsWith(" on " + stream), "not on the caller's stream " + stream + ": " + c);
                }
                assertEquals(DType.F16, grad.dQuery().dtype());
                driver.synchronize(stream);
            }
        } finally {
            recording[0] = false;
            driver.destroyStream(stream);
            memory.free();
            padding.close();
        }
    }

    @Test
    void badDeviceInputsAreClearErrors() {
        TestData data = new TestData();
        MultiHeadAttention mha = MultiHeadAttention.builder().embedDim(16).numHeads(4).backend(GpuTargets.sharedBackend()).build();
        MultiHeadAttention withWeights = MultiHeadAttention.builder().embedDim(16).numHeads(4).needWeights(true)
                .backend(GpuTargets.sharedBackend()).build();
        MultiHeadAttention onCpu = MultiHeadAttention.builder().embedDim(16).numHeads(4).backend(Backends.byName("cpu")).build();
        assertThrows(SeqkException.InvalidConfig.class, () -> DeviceMultiHeadAttention.of(onCpu));
        var needWeights = assertThrows(SeqkException.InvalidConfig.class, () -> DeviceMultiHeadAttention.of(withWeights));
        assertTrue(needWeights.getMessage().contains("needWeights"), needWeights.getMessage());
        DeviceMultiHeadAttention dmha = DeviceMultiHeadAttention.of(mha);
        Map<String, Tensor> w = data.params(DType.F32, 0.3, mha.parameterShapes());
        long before = driver.memoryInUse();
        try (PreparedWeights weights = mha.prepare(w)) {
            DeviceTensor x = memory.swapped(driver, data.tensor(DType.F32, 1, 5, 2, 16));
            var missing = assertThrows(SeqkException.ShapeMismatch.class, () -> dmha.forward(DeviceMultiHeadAttention.inputs(weights, x, null, x)));
            assertTrue(missing.getMessage().contains("'key'"), missing.getMessage());
            var shape = assertThrows(SeqkException.ShapeMismatch.class, () -> dmha.forward(DeviceMultiHeadAttention.inputs(weights, x,
                    memory.swapped(driver, data.tensor(DType.F32, 1, 5, 2, 12)), x)));
            assertTrue(shape.getMessage().contains("'key'"), shape.getMessage());
            var dtype = assertThrows(SeqkException.DTypeMismatch.class, () -> dmha.forward(DeviceMultiHeadAttention.inputs(weights,
                    DeviceTensor.wrap(driver, x.pointer(), DType.F16, x.shape(), x.strides()),
                    DeviceTensor.wrap(driver, x.pointer(), DType.F16, x.shape(), x.strides()),
                    DeviceTensor.wrap(driver, x.pointer(), DType.F16, x.shape(), x.strides()))));
            assertTrue(dtype.getMessage().contains("prepared from F32"), dtype.getMessage());
            var mask = assertThrows(SeqkException.ShapeMismatch.class, () -> dmha.forward(DeviceMultiHeadAttention.inputs(weights, x, x, x)
                    .keyPaddingMask(Mask.blocked(Tensor.allocate(DType.BOOL, 2, 4)))));
            assertTrue(mask.getMessage().contains("keyPaddingMask"), mask.getMessage());
            try (DeviceMhaResult r = dmha.forward(DeviceMultiHeadAttention.inputs(weights, x, x, x).inference())) {
                driver.synchronize(0);
                assertFalse(r.differentiable());
                var e = assertThrows(SeqkException.InvalidConfig.class, () -> dmha.backward(r, weights, x, 0));
                assertTrue(e.getMessage().contains("inference"), e.getMessage());
            }
            try (DeviceMhaResult r = dmha.forward(DeviceMultiHeadAttention.inputs(weights, x, x, x))) {
                driver.synchronize(0);
                var dOut = assertThrows(SeqkException.ShapeMismatch.class, () -> dmha.backward(r, weights,
                        memory.swapped(driver, data.tensor(DType.F32, 1, 4, 2, 16)), 0));
                assertTrue(dOut.getMessage().contains("'dOut'"), dOut.getMessage());
            }
            try (DeviceMhaResult r = dmha.forward(DeviceMultiHeadAttention.inputs(weights, x, x, x))) {
                driver.synchronize(0);
                MultiHeadAttention other = MultiHeadAttention.builder().embedDim(16).numHeads(4).numKvHeads(2)
                        .backend(GpuTargets.sharedBackend()).build();
                try (PreparedWeights otherWeights = other.prepare(data.params(DType.F32, 0.3, other.parameterShapes()))) {
                    var config = assertThrows(SeqkException.InvalidConfig.class,
                            () -> DeviceMultiHeadAttention.of(other).backward(r, otherWeights, x, 0));
                    assertTrue(config.getMessage().contains("another configuration"), config.getMessage());
                }
                try (PreparedWeights again = mha.prepare(w)) {
                    var notTheSame = assertThrows(SeqkException.InvalidConfig.class, () -> dmha.backward(r, again, x, 0));
                    assertTrue(notTheSame.getMessage().contains("prepared weights its forward used"), notTheSame.getMessage());
                }
            }
            List<String> calls = new java.util.concurrent.CopyOnWriteArrayList<>();
            boolean[] recording = {false};
            Driver recorded = RecordingDriver.around(driver, (method, args) -> {
                        if (recording[0]) {
                            calls.add(method);
                        }
                });
            MultiHeadAttention wide = MultiHeadAttention.builder().embedDim(512).numHeads(1).backend(new GpuBackend(recorded)).build();
            try (PreparedWeights wideWeights = wide.prepare(data.params(DType.F32, 0.01, wide.parameterShapes()))) {
                DeviceTensor wx = memory.swapped(recorded, data.tensor(DType.F32, 1, 3, 1, 512));
                recording[0] = true;
                var headDim = assertThrows(SeqkException.class, () -> DeviceMultiHeadAttention.of(wide)
                        .forward(DeviceMultiHeadAttention.inputs(wideWeights, wx, wx, wx)));
                recording[0] = false;
                assertTrue(headDim.getMessage().contains("512"), headDim.getMessage());
                assertTrue(calls.stream().noneMatch(c -> c.equals("malloc") || c.startsWith("launch") || c.equals("gemm")
                        || c.equals("synchronize")), "refused before anything was allocated, queued or waited for: " + calls);
            }
            weights.close();
            assertThrows(SeqkException.TensorClosed.class, () -> dmha.forward(DeviceMultiHeadAttention.inputs(weights, x, x, x)));
        } finally {
            memory.free();
        }
        assertEquals(before, driver.memoryInUse(), "refused calls allocated nothing");
    }
}
