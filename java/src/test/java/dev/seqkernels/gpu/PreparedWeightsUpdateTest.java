package dev.seqkernels.gpu;

import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.Tensor;
import dev.seqkernels.TestData;
import dev.seqkernels.ops.Lstm;
import dev.seqkernels.ops.MhaGradients;
import dev.seqkernels.ops.MhaResult;
import dev.seqkernels.ops.MultiHeadAttention;
import dev.seqkernels.ops.PreparedWeights;
import dev.seqkernels.ops.RecurrentGradients;
import dev.seqkernels.ops.RecurrentOp;
import dev.seqkernels.ops.RecurrentResult;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.util.LinkedHashMap;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * An optimizer's step through prepared weights: new values written in place, from host tensors or
 * from device memory (a framework's strided buffer, converted on the device into each copy, the
 * 16-bit projection copy of a 16-bit recurrent op included), allocate nothing on the device and give
 * exactly the results of plain calls with the new values; bad values are refused before anything
 * is written.
 */
@PerBinding
class PreparedWeightsUpdateTest {
    private final Driver driver = GpuTargets.driver();

    private static void sameValues(String what, Tensor want, Tensor got) {
        assertArrayEquals(want.toDoubleArray(), got.toDoubleArray(), what);
    }

    /** A framework's parameter on the device laid out transposed (2-D: strides [1, rows]); 1-D contiguous. */
    private DeviceTensor framework(DeviceScope scope, Tensor host) {
        if (host.rank() == 1) {
            return scope.upload(host);
        }
        try (Tensor transposed = host.permute(1, 0).contiguous()) {
            DeviceTensor memory = scope.upload(transposed);
            return DeviceTensor.wrap(driver, memory.pointer(), host.dtype(), host.shape(), new long[]{1, host.size(0)});
        }
    }

    /** Writes {@code values} into {@code prepared}, from the host or the device; returns the device memory the update itself allocated. */
    private long update(PreparedWeights prepared, Map<String, Tensor> values, boolean fromDevice) {
        if (!fromDevice) {
            long before = driver.memoryInUse();
            prepared.update(values);
            return driver.memoryInUse() - before;
        }
        long stream = driver.createStream();
        try (DeviceScope scope = new DeviceScope(driver)) {
            Map<String, DeviceTensor> onDevice = new LinkedHashMap<>();
            values.forEach((name, t) -> onDevice.put(name, framework(scope, t)));
            long before = driver.memoryInUse();
            onDevice.forEach((name, t) -> prepared.update(name, t, stream));
            driver.synchronize(stream);
            return driver.memoryInUse() - before;
        } finally {
            driver.destroyStream(stream);
        }
    }

    /** F32 and BF16 (whose W_ih, W_hh and W_hr have 16-bit copies too), from the host and from the device. */
    @ParameterizedTest
    @CsvSource({"F32, false", "F32, true", "BF16, false", "BF16, true"})
    void aRecurrentStepThroughPreparedWeights(DType dtype, boolean fromDevice) {
        TestData data = new TestData();
        RecurrentOp lstm = Lstm.builder().inputSize(5).hiddenSize(8).numLayers(2).bidirectional(true).backend(GpuTargets.backend()).build();
        Map<String, long[]> shapes = lstm.config().parameterShapes();
        Map<String, Tensor> before = data.params(dtype, 0.3, shapes);
        Map<String, Tensor> after = data.params(dtype, 0.3, shapes);
        Tensor x = data.tensor(dtype, 1, 6, 3, 5);
        Tensor dOut = data.tensor(dtype, 1, 6, 3, 16);
        try (PreparedWeights prepared = lstm.prepare(before)) {
            assertEquals(0, update(prepared, after, fromDevice), "an update allocates nothing on the device");
            try (RecurrentResult plain = lstm.forward(after, x, null, null, null);
                 RecurrentGradients plainGrad = lstm.backward(after, plain, dOut, null, null);
                 RecurrentResult got = lstm.forward(prepared, x, null, null, null);
                 RecurrentGradients grad = lstm.backward(prepared, got, dOut, null, null)) {
                sameValues(dtype + " output", plain.output(), got.output());
                sameValues(dtype + " dx", plainGrad.dx(), grad.dx());
                for (String name : shapes.keySet()) {
                    sameValues(dtype + " d" + name, plainGrad.params().get(name), grad.params().get(name));
                }
            }
        }
    }

    /**
     * Packed in-projection (self-attention: q, k and v rows are views of one copy) and separate q, k,
     * v weights; F32, and BF16, whose 16-bit interior reads the 16-bit copies (and their views) that
     * an update rewrites (separate weights from the host only in F32: the 16-bit copies are written
     * the same way for both layouts).
     */
    @ParameterizedTest
    @CsvSource({"F32, true, false", "F32, true, true", "F32, false, false", "F32, false, true", "BF16, true, false", "BF16, true, true",
            "BF16, false, true"})
    void aMultiHeadAttentionStepThroughPreparedWeights(DType dt, boolean self, boolean fromDevice) {
        TestData data = new TestData();
        MultiHeadAttention mha = MultiHeadAttention.builder().embedDim(16).numHeads(4).kdim(self ? 16 : 10).vdim(self ? 16 : 12)
                .backend(GpuTargets.backend()).build();
        Map<String, Tensor> before = data.params(dt, 0.3, mha.parameterShapes());
        Map<String, Tensor> after = data.params(dt, 0.3, mha.parameterShapes());
        Tensor query = data.tensor(dt, 1, 5, 2, 16);
        Tensor key = self ? query : data.tensor(dt, 1, 7, 2, 10);
        Tensor value = self ? query : data.tensor(dt, 1, 7, 2, 12);
        Tensor dOut = data.tensor(dt, 1, 5, 2, 16);
        try (PreparedWeights prepared = mha.prepare(before)) {
            assertEquals(0, update(prepared, after, fromDevice), "an update allocates nothing on the device");
            try (MhaResult plain = mha.forward(after, MultiHeadAttention.inputs(query, key, value));
                 MhaGradients plainGrad = mha.backward(after, plain, dOut, null);
                 MhaResult got = mha.forward(prepared, MultiHeadAttention.inputs(query, key, value));
                 MhaGradients grad = mha.backward(prepared, got, dOut, null)) {
                sameValues("out", plain.out(), got.out());
                for (String name : mha.parameterShapes().keySet()) {
                    sameValues("d" + name, plainGrad.params().get(name), grad.params().get(name));
                }
            }
        }
    }

    @Test
    void badValuesAreRefusedBeforeAnythingIsWritten() {
        TestData data = new TestData();
        Lstm lstm = Lstm.builder().inputSize(5).hiddenSize(8).backend(GpuTargets.backend()).build();
        Map<String, long[]> shapes = lstm.config().parameterShapes();
        Map<String, Tensor> w = data.params(DType.F32, 0.3, shapes);
        Tensor x = data.tensor(DType.F32, 1, 4, 2, 5);
        Tensor fresh = data.tensor(DType.F32, 0.3, shapes.get("weight_hh_l0"));
        try (PreparedWeights prepared = lstm.prepare(w); RecurrentResult want = lstm.forward(w, x, null, null, null);
             DeviceScope scope = new DeviceScope(driver)) {
            Map<String, Tensor> mixed = new LinkedHashMap<>();
            mixed.put("weight_hh_l0", fresh);
            mixed.put("weight_ih_l0", data.tensor(DType.F32, 0.3, 3, 5));
            var shape = assertThrows(SeqkException.ShapeMismatch.class, () -> prepared.update(mixed));
            assertTrue(shape.getMessage().contains("'weight_ih_l0' have shape [3, 5], expected [32, 5]"), shape.getMessage());
            try (RecurrentResult got = lstm.forward(prepared, x, null, null, null)) {
                sameValues("nothing written by a refused update", want.output(), got.output());
            }
            var unknown = assertThrows(SeqkException.InvalidConfig.class, () -> prepared.update(Map.of("weight_hh_l9", fresh)));
            assertTrue(unknown.getMessage().contains("'weight_hh_l9' is not a parameter of the op"), unknown.getMessage());
            var dtype = assertThrows(SeqkException.DTypeMismatch.class,
                    () -> prepared.update(Map.of("weight_hh_l0", data.tensor(DType.BF16, 0.3, 32, 8))));
            assertTrue(dtype.getMessage().contains("expected F32 (the dtype the weights were prepared from)"), dtype.getMessage());
            DeviceTensor onDevice = scope.upload(fresh);
            var wrongDevice = assertThrows(SeqkException.DTypeMismatch.class, () -> prepared.update("weight_hh_l0",
                    DeviceTensor.wrap(driver, onDevice.pointer(), DType.F16, new long[]{32, 8}, new long[]{8, 1}), 0));
            assertTrue(wrongDevice.getMessage().contains("have dtype F16"), wrongDevice.getMessage());
            Tensor closed = data.tensor(DType.F32, 0.3, 32, 8);
            closed.close();
            assertThrows(SeqkException.TensorClosed.class, () -> prepared.update(Map.of("weight_hh_l0", closed)));
            DeviceTensor closedOnDevice = scope.upload(fresh);
            closedOnDevice.close();
            assertThrows(SeqkException.TensorClosed.class, () -> prepared.update("weight_hh_l0", closedOnDevice, 0));
            assertThrows(SeqkException.ShapeMismatch.class, () -> prepared.update(null));
            assertThrows(SeqkException.ShapeMismatch.class, () -> prepared.update("weight_hh_l0", null, 0));
            prepared.close();
            var gone = assertThrows(SeqkException.TensorClosed.class, () -> prepared.update(Map.of("weight_hh_l0", fresh)));
            assertTrue(gone.getMessage().contains("prepared weights are closed"), gone.getMessage());
        }
    }

    /** On cpu the prepared weights are the host tensors given to prepare: an update copies into them; device values are refused. */
    @Test
    void onCpuAnUpdateWritesTheHostTensors() {
        TestData data = new TestData();
        Lstm lstm = Lstm.builder().inputSize(5).hiddenSize(8).backend("cpu").build();
        Map<String, Tensor> w = data.params(DType.F32, 0.3, lstm.config().parameterShapes());
        Map<String, Tensor> after = data.params(DType.F32, 0.3, lstm.config().parameterShapes());
        Tensor x = data.tensor(DType.F32, 1, 4, 2, 5);
        try (PreparedWeights prepared = lstm.prepare(w); DeviceScope scope = new DeviceScope(driver)) {
            prepared.update(after);
            sameValues("the prepare-time tensor now holds the new values", after.get("weight_hh_l0"), w.get("weight_hh_l0"));
            try (RecurrentResult plain = lstm.forward(after, x, null, null, null);
                 RecurrentResult got = lstm.forward(prepared, x, null, null, null)) {
                sameValues("cpu output", plain.output(), got.output());
            }
            var device = assertThrows(SeqkException.InvalidConfig.class,
                    () -> prepared.update("weight_hh_l0", scope.upload(after.get("weight_hh_l0")), 0));
            assertTrue(device.getMessage().contains("update them with host values"), device.getMessage());
        }
        // A read-only prepare-time tensor (a mapped file's, say) is refused before anything is written.
        Map<String, Tensor> mapped = new java.util.LinkedHashMap<>(data.params(DType.F32, 0.3, lstm.config().parameterShapes()));
        Tensor hh = mapped.get("weight_hh_l0");
        mapped.put("weight_hh_l0", Tensor.wrap(hh.segment().asReadOnly(), DType.F32, hh.shape()));
        double[] ihBefore = mapped.get("weight_ih_l0").toDoubleArray();
        try (PreparedWeights prepared = lstm.prepare(mapped)) {
            var readOnly = assertThrows(SeqkException.Unsupported.class, () -> prepared.update(after));
            assertTrue(readOnly.getMessage().contains("'weight_hh_l0' is read-only"), readOnly.getMessage());
            assertArrayEquals(ihBefore, mapped.get("weight_ih_l0").toDoubleArray(), "nothing written by a refused update");
        }
    }
}
