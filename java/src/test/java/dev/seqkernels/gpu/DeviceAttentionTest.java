package dev.seqkernels.gpu;

import dev.seqkernels.Backends;
import dev.seqkernels.Compare;
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
import org.junit.jupiter.params.provider.EnumSource;
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
@DeviceDependent
class DeviceAttentionTest {
    private final Driver driver = GpuTargets.driver();
    private final FrameworkMemory memory = new FrameworkMemory(driver);

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
            try (DeviceAttentionResult got = sdpa.forward(DeviceAttention.inputs(memory.contiguous(driver, q), memory.contiguous(driver, k), memory.contiguous(driver, v))
                    .mask(Mask.blocked(blocked)).keyLengths(keyLengths).queryLengths(queryLengths).stream(stream));
                 DeviceAttentionGradients grad = sdpa.backward(got, memory.contiguous(driver, seed), stream)) {
                driver.synchronize(stream);
                assertTrue(got.differentiable());
                sameValues(dtype + " out", want.out(), got.out());
                sameValues(dtype + " lse", want.lse(), got.lse());
                sameValues(dtype + " dq", wantGrad.dq(), grad.dq());
                sameValues(dtype + " dk", wantGrad.dk(), grad.dk());
                sameValues(dtype + " dv", wantGrad.dv(), grad.dv());
                assertEquals(dtype, grad.dq().dtype());
            }
        } finally {
            driver.destroyStream(stream);
            memory.free();
            blocked.close();
        }
        assertEquals(before, driver.memoryInUse(), "everything the calls allocated was freed with their results");
    }

    /** A contiguous host copy of the first columns of a [1, heads, rows, width] tensor's rows. */
    private static Tensor firstColumns(Tensor wide, int columns) {
        long[] shape = wide.shape();
        Tensor narrow = Tensor.allocate(wide.dtype(), 1, shape[1], shape[2], columns);
        for (int h = 0; h < shape[1]; h++) {
            for (int i = 0; i < shape[2]; i++) {
                for (int e = 0; e < columns; e++) {
                    narrow.set(wide.get(0, h, i, e), 0, h, i, e);
                }
            }
        }
        return narrow;
    }

    /** A device tensor's values in row-major order, through a contiguous device copy when it is strided. */
    private double[] values(DeviceTensor t) {
        try (Tensor packed = Tensor.allocate(t.dtype(), t.shape());
             Tensor spanHost = Tensor.allocate(t.dtype(), DeviceTensor.spanOf(t.shape(), t.strides()))) {
            driver.copyDeviceToHost(spanHost.segment(), t.pointer(), spanHost.numel() * t.dtype().byteSize());
            packed.copyFrom(Tensor.wrap(spanHost.segment(), t.dtype(), t.shape(), t.strides(), 0));
            return packed.toDoubleArray();
        }
    }

    private void sameValues(String what, Tensor want, DeviceTensor got) {
        assertArrayEquals(want.shape(), got.shape(), what + " shape");
        assertArrayEquals(want.toDoubleArray(), values(got), what + " differs from the host path");
    }

    /**
     * q, k, v and dOut as head-strided views of [batch, len, heads, dim] buffers (a framework's
     * usual layout), out into a caller's [batch, q_len, heads, value_dim] buffer seen as
     * [batch, heads, q_len, value_dim]: the host path's values, and gradients with their input's strides.
     */
    @Test
    void stridedInputsAndACallersOutputBuffer() {
        TestData data = new TestData();
        DType dt = DType.F16;
        Attention op = Attention.builder().backend(GpuTargets.sharedBackend()).build();
        Tensor qBlh = data.tensor(dt, 1, 2, 24, 4, 32);
        Tensor kBlh = data.tensor(dt, 1, 2, 30, 4, 32);
        Tensor vBlh = data.tensor(dt, 1, 2, 30, 4, 16);
        Tensor seedBlh = data.tensor(dt, 1, 2, 24, 4, 16);
        long before = driver.memoryInUse();
        try (AttentionResult want = op.forward(Attention.inputs(qBlh.permute(0, 2, 1, 3), kBlh.permute(0, 2, 1, 3),
                vBlh.permute(0, 2, 1, 3)));
             AttentionGradients wantGrad = op.backward(want, seedBlh.permute(0, 2, 1, 3));
             DeviceTensor outBlh = DeviceTensor.allocate(driver, dt, 2, 24, 4, 16)) {
            DeviceAttention sdpa = DeviceAttention.of(op);
            DeviceTensor outView = outBlh.permute(0, 2, 1, 3);
            DeviceTensor q = memory.contiguous(driver, qBlh).permute(0, 2, 1, 3);
            try (DeviceAttentionResult got = sdpa.forward(DeviceAttention.inputs(q, memory.contiguous(driver, kBlh).permute(0, 2, 1, 3),
                    memory.contiguous(driver, vBlh).permute(0, 2, 1, 3)).into(outView));
                 DeviceAttentionGradients grad = sdpa.backward(got, memory.contiguous(driver, seedBlh).permute(0, 2, 1, 3), 0)) {
                driver.synchronize(0);
                assertSame(outView, got.out(), "out is the caller's buffer");
                sameValues("out", want.out(), outView);
                assertArrayEquals(q.strides(), grad.dq().strides(), "dq has q's strides");
                sameValues("dq", wantGrad.dq(), grad.dq());
                sameValues("dk", wantGrad.dk(), grad.dk());
                sameValues("dv", wantGrad.dv(), grad.dv());
            }
        } finally {
            memory.free();
        }
        assertEquals(before, driver.memoryInUse(), "the calls' memory was freed with their results");
    }

    /**
     * The tensor-core forward stages out in shared memory and writes whole rows: 16-byte stores
     * into a caller's buffer whose rows are 16-byte aligned (rows of 24 elements, 48 bytes, seen
     * through a view of their first 16; at 256 columns rows of 152 seen as 144), element stores
     * into one whose rows are not (17 elements, 34 bytes; 145). Both equal the host path's out to
     * the bit, and the columns past the view keep the caller's values (a 16-byte store never
     * reaches past Dv).
     */
    @ParameterizedTest
    @CsvSource({"24, 16", "17, 16", "152, 144", "145, 144"})
    void aCallersOutputRowsWiderThanDvKeepTheirOtherColumns(int width, int dv) {
        GpuTargets.assumeTensorCores("the tensor-core forward's staged output");
        TestData data = new TestData();
        DType dt = DType.BF16;
        int d = dv > 128 ? 136 : 16;
        Attention op = Attention.builder().causal(CausalAlignment.TOP_LEFT).backend(GpuTargets.sharedBackend()).build();
        Tensor q = data.tensor(dt, 1, 1, 2, 70, d);
        Tensor k = data.tensor(dt, 1, 1, 2, 50, d);
        Tensor v = data.tensor(dt, 1, 1, 2, 50, dv);
        double[] sevens = new double[2 * 70 * width];
        java.util.Arrays.fill(sevens, 7.0);
        try (AttentionResult want = op.forward(Attention.inputs(q, k, v)); Tensor filled = Tensor.of(dt, sevens, 1, 2, 70, width)) {
            DeviceTensor buffer = memory.contiguous(driver, filled);
            DeviceTensor outView = buffer.narrow(3, 0, dv);
            try (DeviceAttentionResult got = DeviceAttention.of(op).forward(DeviceAttention.inputs(memory.contiguous(driver, q),
                    memory.contiguous(driver, k), memory.contiguous(driver, v)).into(outView))) {
                driver.synchronize(0);
                sameValues("out", want.out(), outView);
                double[] all = values(buffer);
                for (int row = 0; row < 2 * 70; row++) {
                    for (int e = dv; e < width; e++) {
                        assertEquals(7.0, all[row * width + e], "row " + row + ", column " + e + " past the view");
                    }
                }
            }
        } finally {
            memory.free();
        }
    }

    /**
     * k and v expanded over query heads (stride 0, as a framework's repeat_kv makes them): the
     * forward takes them; backward refuses before it queues anything (their gradients would need
     * an element per head), and so does a forward into an out buffer with overlapping strides, and
     * a backward from a result rebuilt around a tensor that is not the forward's out.
     */
    @Test
    void zeroOrOverlappingStridesAreRefusedWhereEachPositionNeedsItsOwnElement() {
        TestData data = new TestData();
        Attention op = Attention.builder().backend(GpuTargets.sharedBackend()).build();
        DeviceAttention sdpa = DeviceAttention.of(op);
        try {
            DeviceTensor q = memory.contiguous(driver, data.tensor(DType.F32, 1, 1, 2, 6, 8));
            DeviceTensor k1 = memory.contiguous(driver, data.tensor(DType.F32, 1, 1, 1, 6, 8));
            DeviceTensor v1 = memory.contiguous(driver, data.tensor(DType.F32, 1, 1, 1, 6, 8));
            DeviceTensor k = DeviceTensor.wrap(driver, k1.pointer(), DType.F32, new long[]{1, 2, 6, 8}, new long[]{48, 0, 8, 1});
            DeviceTensor v = DeviceTensor.wrap(driver, v1.pointer(), DType.F32, new long[]{1, 2, 6, 8}, new long[]{48, 0, 8, 1});
            DeviceTensor seed = memory.contiguous(driver, data.tensor(DType.F32, 1, 1, 2, 6, 8));
            long before = driver.memoryInUse();
            try (DeviceAttentionResult r = sdpa.forward(DeviceAttention.inputs(q, k, v))) {
                var e = assertThrows(SeqkException.ShapeMismatch.class, () -> sdpa.backward(r, seed, 0));
                assertTrue(e.getMessage().contains("'k'") || e.getMessage().contains(" k has"), e.getMessage());
            }
            assertEquals(before, driver.memoryInUse());
            DeviceTensor overlapping = DeviceTensor.wrap(driver, seed.pointer(), DType.F32, new long[]{1, 2, 6, 8}, new long[]{0, 8, 8, 1});
            var out = assertThrows(SeqkException.ShapeMismatch.class, () -> sdpa.forward(DeviceAttention.inputs(q, k, v).into(overlapping)));
            assertTrue(out.getMessage().contains("'out'"), out.getMessage());
            try (DeviceTensor buffer = DeviceTensor.allocate(driver, DType.F32, 1, 2, 6, 8)) {
                DeviceAttentionResult r = sdpa.forward(DeviceAttention.inputs(q, q, q).into(buffer));
                r.close();
                assertThrows(SeqkException.TensorClosed.class, () -> sdpa.backward(r, seed, 0), "a closed result");
            }
            // A result rebuilt around a tensor that is not the forward's out: refused, not read past its end.
            try (DeviceAttentionResult r = sdpa.forward(DeviceAttention.inputs(q, q, q));
                 DeviceTensor shorter = DeviceTensor.allocate(driver, DType.F32, 1, 2, 5, 8);
                 DeviceTensor shorterSeed = DeviceTensor.allocate(driver, DType.F32, 1, 2, 5, 8)) {
                DeviceAttentionResult rebuilt = new DeviceAttentionResult(shorter, r.lse(), r.saved());
                var e = assertThrows(SeqkException.ShapeMismatch.class, () -> sdpa.backward(rebuilt, shorterSeed, 0));
                assertTrue(e.getMessage().contains("forward.out is F32[1, 2, 5, 8]"), e.getMessage());
            }
        } finally {
            memory.free();
        }
    }


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
        Driver recorded = RecordingDriver.around(driver, (method, args) -> {
                    if (recording[0]) {
                        Integer at = RecordingDriver.STREAM_ARGUMENT.get(method);
                        calls.add(method + (at == null ? "" : " on " + args[at]));
                    }
            });
        DType dt = DType.F16;
        Attention op = Attention.builder().causal(CausalAlignment.TOP_LEFT).backend(new GpuBackend(recorded)).build();
        long stream = driver.createStream();
        List<DeviceTensor> inputs = new ArrayList<>();
        for (long[] shape : new long[][]{{1, 2, 12, 16}, {1, 2, 12, 16}, {1, 2, 12, 8}, {1, 2, 12, 8}}) {
            Tensor host = data.tensor(dt, 1, shape);
            DeviceTensor raw = memory.contiguous(driver, host);
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
                assertFalse(RecordingDriver.WAITING.contains(c), "a device-resident call made a waiting driver call: " + c + " in " + calls);
                assertTrue(!c.contains(" on ") || c.endsWith(" on " + stream), "not on the caller's stream " + stream + ": " + c);
            }
            driver.synchronize(stream);
        } finally {
            recording[0] = false;
            driver.destroyStream(stream);
            memory.free();
            blocked.close();
        }
    }

    /**
     * The device backward gathers dout (strided: a transposed view) once, into the dtype its kernels
     * read: the 16-bit type itself for the tensor-core pair (no f32 copy rounded back), f32 for v1's
     * (an F32 op, or 16 bits on a device without mma.sync); each result matches the host path's.
     */
    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"BF16", "F16", "F32"})
    void dOutIsGatheredOnceInTheTypeTheBackwardReads(DType dt) {
        String sfx = RecurrentGpu.suffix(dt);
        boolean tensorCores = !AttentionGpu.backwardKernel(dt, 16, 16, driver.properties().computeMajor(),
                AttentionGpu.KernelChoice.AUTO, false).equals("attn_bwd");
        String gathered = (tensorCores ? "gather4_" : "gather4_to_f32_") + sfx;
        String notGathered = tensorCores ? "gather4_to_f32_" + sfx : dt == DType.F32 ? null : "gather4_" + sfx;
        TestData data = new TestData();
        List<String> resolved = new java.util.concurrent.CopyOnWriteArrayList<>();
        Driver recorded = RecordingDriver.recordingFunctions(driver, resolved);
        Attention op = Attention.builder().backend(new GpuBackend(recorded)).build();
        Attention host = Attention.builder().backend(GpuTargets.sharedBackend()).build();
        try (Tensor q = data.tensor(dt, 1, 1, 2, 12, 16); Tensor k = data.tensor(dt, 1, 1, 2, 12, 16);
             Tensor v = data.tensor(dt, 1, 1, 2, 12, 16); Tensor dOutHost = data.tensor(dt, 1, 1, 2, 12, 16)) {
            DeviceTensor dOutRows = memory.contiguous(driver, dOutHost);
            // The same values through a view with the last two dimensions' strides swapped in memory.
            Tensor swapped = Tensor.allocate(dt, 1, 2, 16, 12);
            for (int h = 0; h < 2; h++) {
                for (int i = 0; i < 12; i++) {
                    for (int e = 0; e < 16; e++) {
                        swapped.set(dOutHost.get(0, h, i, e), 0, h, e, i);
                    }
                }
            }
            DeviceTensor swappedRaw = memory.contiguous(driver, swapped);
            swapped.close();
            DeviceTensor dOutView = DeviceTensor.wrap(recorded, swappedRaw.pointer(), dt, dOutRows.shape(), new long[]{2 * 16 * 12, 16 * 12, 1, 12});
            DeviceAttention sdpa = DeviceAttention.of(op);
            try (DeviceAttentionResult got = sdpa.forward(DeviceAttention.inputs(memory.contiguous(recorded, q), memory.contiguous(recorded, k),
                    memory.contiguous(recorded, v)));
                 AttentionResult want = host.forward(Attention.inputs(q, k, v));
                 AttentionGradients wantGrad = host.backward(want, dOutHost)) {
                resolved.clear();
                try (DeviceAttentionGradients grad = sdpa.backward(got, dOutView, 0)) {
                    driver.synchronize(0);
                    assertTrue(resolved.contains(gathered), dt + ": " + resolved);
                    assertTrue(notGathered == null || !resolved.contains(notGathered), dt + ": " + resolved);
                    assertArrayEquals(wantGrad.dq().toDoubleArray(), values(grad.dq()), dt + " dq");
                    assertArrayEquals(wantGrad.dk().toDoubleArray(), values(grad.dk()), dt + " dk");
                    assertArrayEquals(wantGrad.dv().toDoubleArray(), values(grad.dv()), dt + " dv");
                }
            }
        } finally {
            memory.free();
        }
    }

    /**
     * The backward's instances are picked per kernel: q a column view of [.., 17]-wide rows (34
     * bytes: not 16-byte rows) with k, v and dOut contiguous takes dq's no-bias instance (it streams
     * k and v) and dk/dv's general one (it streams q and dout); the host path (every tensor
     * contiguous) takes both no-bias ones. The gradients agree to the bit: the instances differ
     * only in their loads and in running the zero columns past D, which add exact zeros.
     */
    @Test
    void theBackwardsInstancesArePickedPerKernelAndAgreeToTheBit() {
        GpuTargets.assumeTensorCores("the tensor-core backward's instances");
        DType dt = DType.BF16;
        String sfx = RecurrentGpu.suffix(dt);
        TestData data = new TestData();
        List<String> resolved = new java.util.concurrent.CopyOnWriteArrayList<>();
        Driver recorded = RecordingDriver.recordingFunctions(driver, resolved);
        Attention op = Attention.builder().causal(CausalAlignment.BOTTOM_RIGHT).backend(new GpuBackend(recorded)).build();
        Attention host = Attention.builder().causal(CausalAlignment.BOTTOM_RIGHT).backend(GpuTargets.sharedBackend()).build();
        try (Tensor qWide = data.tensor(dt, 1, 1, 2, 40, 17); Tensor k = data.tensor(dt, 1, 1, 2, 70, 16);
             Tensor v = data.tensor(dt, 1, 1, 2, 70, 16); Tensor dOut = data.tensor(dt, 1, 1, 2, 40, 16)) {
            Tensor q = firstColumns(qWide, 16);
            DeviceTensor qView = memory.contiguous(recorded, qWide).narrow(3, 0, 16);
            DeviceAttention sdpa = DeviceAttention.of(op);
            try (DeviceAttentionResult got = sdpa.forward(DeviceAttention.inputs(qView, memory.contiguous(recorded, k),
                    memory.contiguous(recorded, v)));
                 AttentionResult want = host.forward(Attention.inputs(q, k, v)); AttentionGradients wantGrad = host.backward(want, dOut)) {
                resolved.clear();
                try (DeviceAttentionGradients grad = sdpa.backward(got, memory.contiguous(recorded, dOut), 0)) {
                    driver.synchronize(0);
                    assertTrue(resolved.contains("attn_bwd_dq_tc64_nobias_" + sfx) && resolved.contains("attn_bwd_dkdv_tc64_" + sfx)
                            && !resolved.contains("attn_bwd_dkdv_tc64_nobias_" + sfx), resolved.toString());
                    assertArrayEquals(wantGrad.dq().toDoubleArray(), values(grad.dq()), "dq");
                    assertArrayEquals(wantGrad.dk().toDoubleArray(), values(grad.dk()), "dk");
                    assertArrayEquals(wantGrad.dv().toDoubleArray(), values(grad.dv()), "dv");
                }
            } finally {
                q.close();
            }
        } finally {
            memory.free();
        }
    }

    /**
     * Above 128 columns the tiled forward keeps q in shared memory, loaded by the rule k and v are:
     * q a column view of [.., 137]-wide rows (274 bytes: not 16-byte rows) with k and v contiguous
     * takes attn_fwd_tc256's general instance (element loads), the host path (every tensor
     * contiguous) its no-bias one. Both match the reference within the dtype's tolerance (not to
     * the bit: the two instances walk the keys in tiles of 16 and 32).
     */
    @Test
    void aQueryOutOfSixteenByteRowsTakesTheGeneralForwardAt256() {
        GpuTargets.assumeTensorCores("the 256-column tensor-core forward's instances");
        DType dt = DType.BF16;
        String sfx = RecurrentGpu.suffix(dt);
        TestData data = new TestData();
        List<String> resolved = new java.util.concurrent.CopyOnWriteArrayList<>();
        Driver recorded = RecordingDriver.recordingFunctions(driver, resolved);
        Attention op = Attention.builder().causal(CausalAlignment.BOTTOM_RIGHT).backend(new GpuBackend(recorded)).build();
        List<String> hostResolved = new java.util.concurrent.CopyOnWriteArrayList<>();
        Attention host = Attention.builder().causal(CausalAlignment.BOTTOM_RIGHT).backend(new GpuBackend(RecordingDriver.recordingFunctions(driver, hostResolved)))
                .build();
        Attention exact = Attention.builder().causal(CausalAlignment.BOTTOM_RIGHT).backend("cpu").build();
        try (Tensor qWide = data.tensor(dt, 1, 1, 2, 40, 137); Tensor k = data.tensor(dt, 1, 1, 2, 70, 136);
             Tensor v = data.tensor(dt, 1, 1, 2, 70, 136); Tensor q = firstColumns(qWide, 136)) {
            DeviceTensor qView = memory.contiguous(recorded, qWide).narrow(3, 0, 136);
            try (DeviceAttentionResult got = DeviceAttention.of(op).forward(DeviceAttention.inputs(qView, memory.contiguous(recorded, k),
                    memory.contiguous(recorded, v)));
                 AttentionResult byHost = host.forward(Attention.inputs(q, k, v));
                 AttentionResult want = exact.forward(Attention.inputs(q.to(DType.F64), k.to(DType.F64), v.to(DType.F64)))) {
                driver.synchronize(0);
                assertTrue(resolved.contains("attn_fwd_tc256_" + sfx) && !resolved.contains("attn_fwd_tc256_nobias_" + sfx),
                        resolved.toString());
                assertTrue(hostResolved.contains("attn_fwd_tc256_nobias_" + sfx), hostResolved.toString());
                Compare.Tolerance tol = Compare.tolerance(dt);
                Compare.Result device = Compare.compare(values(got.out()), want.out().toDoubleArray(), tol);
                assertTrue(device.passes(tol), () -> "device path: " + device);
                Compare.Result hostPath = Compare.compare(byHost.out().toDoubleArray(), want.out().toDoubleArray(), tol);
                assertTrue(hostPath.passes(tol), () -> "host path: " + hostPath);
            }
        } finally {
            memory.free();
        }
    }

    @Test
    void inferenceKeepsNothingForBackward() {
        TestData data = new TestData();
        Attention op = Attention.builder().backend(GpuTargets.sharedBackend()).build();
        DeviceAttention sdpa = DeviceAttention.of(op);
        try (DeviceAttentionResult r = sdpa.forward(DeviceAttention.inputs(memory.contiguous(driver, data.tensor(DType.F32, 1, 1, 1, 5, 8)),
                memory.contiguous(driver, data.tensor(DType.F32, 1, 1, 1, 6, 8)), memory.contiguous(driver, data.tensor(DType.F32, 1, 1, 1, 6, 8))).inference())) {
            assertFalse(r.differentiable());
            var e = assertThrows(SeqkException.InvalidConfig.class, () -> sdpa.backward(r, r.out(), 0));
            assertTrue(e.getMessage().contains("inference"), e.getMessage());
        } finally {
            memory.free();
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
            DeviceTensor q = memory.contiguous(driver, data.tensor(DType.F32, 1, 1, 2, 5, 8));
            DeviceTensor k = memory.contiguous(driver, data.tensor(DType.F32, 1, 1, 1, 6, 8));
            DeviceTensor v = memory.contiguous(driver, data.tensor(DType.F32, 1, 1, 1, 6, 4));
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
            assertThrows(SeqkException.ShapeMismatch.class,
                    () -> DeviceTensor.wrap(driver, q.pointer(), DType.F32, new long[]{1, 1, -3, 8}, new long[]{24, 24, 8, 1}));
            DeviceTensor huge = DeviceTensor.wrap(driver, q.pointer(), DType.F32, new long[]{1, 2, (1L << 32) + 5, 8},
                    new long[]{0, 0, 0, 1});
            var tooLong = assertThrows(SeqkException.ShapeMismatch.class, () -> sdpa.forward(DeviceAttention.inputs(huge, k, v)));
            assertTrue(tooLong.getMessage().contains("'q'"), tooLong.getMessage());
            DeviceTensor closed = DeviceTensor.allocate(driver, DType.F32, 1, 1, 6, 8);
            closed.close();
            assertThrows(SeqkException.TensorClosed.class, () -> sdpa.forward(DeviceAttention.inputs(q, closed, v)));
        } finally {
            memory.free();
        }
    }
}
