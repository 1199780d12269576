package dev.seqkernels;

import dev.seqkernels.ops.Attention;
import dev.seqkernels.ops.AttentionResult;
import dev.seqkernels.ops.CausalAlignment;
import dev.seqkernels.ops.Lstm;
import dev.seqkernels.ops.RecurrentGradients;
import dev.seqkernels.ops.RecurrentResult;
import dev.seqkernels.gpu.DeviceAttention;
import dev.seqkernels.gpu.DeviceAttentionGradients;
import dev.seqkernels.gpu.DeviceAttentionResult;
import dev.seqkernels.gpu.DeviceTensor;
import dev.seqkernels.gpu.GpuBackend;
import dev.seqkernels.gpu.emu.EmuDriver;
import org.junit.jupiter.api.Test;

import java.lang.foreign.MemorySegment;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/** The README's example, compiled and run, so it cannot drift from the API. */
class ReadmeExampleTest {
    @Test
    void readmeExampleRuns() {
        TestData data = new TestData();
        Lstm lstm = Lstm.builder().inputSize(8).hiddenSize(16).numLayers(2).bidirectional(true).build();
        Map<String, Tensor> weights = data.params(DType.F32, 0.3, lstm.config().parameterShapes());
        Tensor callers = data.tensor(DType.F32, 1, 10, 3, 8);
        MemorySegment segment = callers.segment(); // stands for the caller's buffer
        Tensor dOutput = data.tensor(DType.F32, 1, 10, 3, 32);
        try (callers; dOutput; Tensor x = Tensor.wrap(segment, DType.F32, 10, 3, 8);
             RecurrentResult y = lstm.forward(weights, x, null, null, new int[]{10, 7, 1});
             RecurrentGradients g = lstm.backward(weights, y, dOutput, null, null)) {
            assertArrayEquals(new long[]{10, 3, 32}, y.output().shape());
            assertArrayEquals(new long[]{4, 3, 16}, y.hn().shape());
            assertArrayEquals(new long[]{4, 3, 16}, y.cn().shape());
            assertArrayEquals(new long[]{64, 8}, g.params().get("weight_ih_l0").shape());
            assertArrayEquals(new long[]{10, 3, 8}, g.dx().shape());
        } finally {
            weights.values().forEach(Tensor::close);
        }
        Attention sdpa = Attention.builder().causal(CausalAlignment.BOTTOM_RIGHT).build();
        try (Tensor q = data.tensor(DType.F32, 1, 2, 4, 5, 8); Tensor k = data.tensor(DType.F32, 1, 2, 2, 100, 8);
             Tensor v = data.tensor(DType.F32, 1, 2, 2, 100, 6);
             AttentionResult a = sdpa.forward(Attention.inputs(q, k, v).keyLengths(new int[]{100, 37}))) {
            assertArrayEquals(new long[]{2, 4, 5, 6}, a.out().shape());
            assertEquals(DType.F32, a.lse().dtype());
        }
    }

    /** The README's device-resident example, on the emulator (a GPU binding runs it the same way). */
    @Test
    void readmeDeviceExampleRuns() {
        assumeTrue(EmuDriver.libraryPresent(), "the emulator library is not built");
        TestData data = new TestData();
        GpuBackend gpu = (GpuBackend) Backends.byName("emu");
        long b = 2, h = 2, l = 24, dim = 16;
        long[] strides = {l * h * dim, dim, h * dim, 1};   // a [B, L, H, D] buffer seen as [B, H, L, D]
        long[] pointers = new long[4];
        for (int i = 0; i < 4; i++) {
            try (Tensor host = data.tensor(DType.BF16, 1, b, l, h, dim)) {
                pointers[i] = gpu.driver().malloc(host.numel() * 2);
                gpu.driver().copyHostToDevice(pointers[i], host.segment(), host.numel() * 2);
            }
        }
        long cuStream = gpu.driver().createStream();
        try {
            Attention op = Attention.builder().causal(CausalAlignment.TOP_LEFT).backend(gpu).build();
            DeviceAttention sdpa = DeviceAttention.of(op);
            DeviceTensor q = DeviceTensor.wrap(gpu.driver(), pointers[0], DType.BF16, new long[]{b, h, l, dim}, strides);
            DeviceTensor k = DeviceTensor.wrap(gpu.driver(), pointers[1], DType.BF16, new long[]{b, h, l, dim}, strides);
            DeviceTensor v = DeviceTensor.wrap(gpu.driver(), pointers[2], DType.BF16, new long[]{b, h, l, dim}, strides);
            DeviceTensor dOut = DeviceTensor.wrap(gpu.driver(), pointers[3], DType.BF16, new long[]{b, h, l, dim}, strides);
            try (DeviceAttentionResult r = sdpa.forward(DeviceAttention.inputs(q, k, v).stream(cuStream));
                 DeviceAttentionGradients g = sdpa.backward(r, dOut, cuStream)) {
                gpu.driver().synchronize(cuStream);
                assertArrayEquals(new long[]{b, h, l, dim}, r.out().shape());
                assertArrayEquals(strides, g.dq().strides());
            }
        } finally {
            gpu.driver().destroyStream(cuStream);
            for (long p : pointers) {
                gpu.driver().free(p);
            }
        }
    }
}
