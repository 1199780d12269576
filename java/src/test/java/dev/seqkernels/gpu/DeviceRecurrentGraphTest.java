package dev.seqkernels.gpu;

import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.Tensor;
import dev.seqkernels.TestData;
import dev.seqkernels.ops.Gru;
import dev.seqkernels.ops.Lstm;
import dev.seqkernels.ops.PreparedWeights;
import dev.seqkernels.ops.RecurrentGradients;
import dev.seqkernels.ops.RecurrentOp;
import dev.seqkernels.ops.RecurrentResult;
import dev.seqkernels.ops.Rnn;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * DeviceRecurrentGraph, the recurrent forward captured once as one CUDA graph: a repeated call is one
 * graph launch on the caller's stream and nothing else, and gives the host path's values for the
 * values its buffers hold then (new inputs, weights updated in place); a call that differs captures
 * anew and frees the old graph; a training result differentiates as a plain one; through the
 * stand-in driver, which refuses an allocation during a capture, every binding captures without one.
 */
@PerBinding
class DeviceRecurrentGraphTest {
    private final Driver driver = GpuTargets.driver();
    private final FrameworkMemory memory = new FrameworkMemory(driver);
    private final List<String> calls = new java.util.concurrent.CopyOnWriteArrayList<>();
    private volatile boolean recording;
    private final Driver recorded = RecordingDriver.around(driver, (method, args) -> {
        if (recording) {
            Long stream = RecordingDriver.streamOf(method, args);
            calls.add(stream == null ? method : method + "@" + stream);
        }
    });

    private static void sameValues(String what, Tensor want, DeviceTensor got) {
        assertArrayEquals(want.shape(), got.shape(), what + " shape");
        try (Tensor host = got.toHost()) {
            assertArrayEquals(want.toDoubleArray(), host.toDoubleArray(), what + " differs from the host path");
        }
    }

    /** Writes {@code host}'s values into {@code swapped} (a {@link FrameworkMemory#swapped} tensor) at its address. */
    private void overwrite(DeviceTensor swapped, Tensor host) {
        try (Tensor stored = host.permute(1, 0, 2).contiguous()) {
            driver.copyHostToDevice(swapped.pointer(), stored.segment(), stored.numel() * stored.dtype().byteSize());
        }
    }

    private RecurrentOp op(String cell, int hidden, int layers, boolean bidirectional, boolean batchFirst) {
        GpuBackend backend = new GpuBackend(recorded);
        return switch (cell) {
            case "LSTM" -> Lstm.builder().inputSize(5).hiddenSize(hidden).numLayers(layers).bidirectional(bidirectional)
                    .batchFirst(batchFirst).backend(backend).build();
            case "LSTM-projection" -> Lstm.builder().inputSize(5).hiddenSize(hidden).projSize(hidden / 2).numLayers(layers)
                    .bidirectional(bidirectional).batchFirst(batchFirst).backend(backend).build();
            case "GRU-reset-first" -> Gru.builder().inputSize(5).hiddenSize(hidden).linearBeforeReset(false).numLayers(layers)
                    .bidirectional(bidirectional).batchFirst(batchFirst).backend(backend).build();
            case "GRU" -> Gru.builder().inputSize(5).hiddenSize(hidden).numLayers(layers).bidirectional(bidirectional)
                    .batchFirst(batchFirst).backend(backend).build();
            default -> Rnn.builder().inputSize(5).hiddenSize(hidden).numLayers(layers).bidirectional(bidirectional)
                    .batchFirst(batchFirst).backend(backend).build();
        };
    }

    /**
     * cell, dtype, hidden, layers, bidirectional, batch first, batch: the persistent kernel (an F32
     * LSTM at batch 3, an F16 LSTM at batch 2 on its 16-bit instance where the device has tensor
     * cores), the per-step loop with the fused step (a BF16 GRU at batch 20, an F32 RNN at 17) and
     * with a cell and a commit (a BF16 LSTM with projection, whose W_hr GEMM runs each step; an F32
     * GRU with the reset gate first, whose second GEMM and kernel do).
     * Three calls: the first captures; the second, with new values in x, h0 and c0 at the same
     * addresses and the weights updated in place, is one graph launch; the third, with other
     * lengths, captures anew and closes the first graph's results.
     */
    @ParameterizedTest
    @CsvSource({"LSTM, F32, 8, 2, true, false, 3", "LSTM, F16, 8, 1, false, false, 2", "GRU, BF16, 6, 2, true, true, 20",
            "RNN, F32, 8, 1, false, false, 17", "LSTM-projection, BF16, 8, 2, true, true, 20",
            "GRU-reset-first, F32, 6, 1, false, false, 18"})
    void aRepeatedCallIsOneGraphLaunchOfTheBuffersNewValues(String cell, DType dtype, int hidden, int layers, boolean bidirectional,
                                                            boolean batchFirst, int batch) {
        TestData data = new TestData();
        RecurrentOp op = op(cell, hidden, layers, bidirectional, batchFirst);
        int steps = 6;
        int slots = layers * (bidirectional ? 2 : 1);
        boolean lstm = cell.startsWith("LSTM");
        int state = op.config().stateSize();
        long[] xShape = batchFirst ? new long[]{batch, steps, 5} : new long[]{steps, batch, 5};
        Map<String, Tensor> w = data.params(dtype, 0.3, op.config().parameterShapes());
        Map<String, Tensor> w2 = data.params(dtype, 0.3, op.config().parameterShapes());
        Tensor[] x = {data.tensor(dtype, 1, xShape), data.tensor(dtype, 1, xShape)};
        Tensor[] h0 = {data.tensor(dtype, 0.5, slots, batch, state), data.tensor(dtype, 0.5, slots, batch, state)};
        Tensor[] c0 = lstm ? new Tensor[]{data.tensor(dtype, 0.5, slots, batch, hidden), data.tensor(dtype, 0.5, slots, batch, hidden)}
                : new Tensor[2];
        int[] lengths = new int[batch];
        int[] otherLengths = new int[batch];
        for (int i = 0; i < batch; i++) {
            lengths[i] = steps - (i % steps);
            otherLengths[i] = i == 0 ? 1 : steps;
        }
        long stream = driver.createStream();
        try (PreparedWeights weights = op.prepare(w); DeviceRecurrentGraph graph = DeviceRecurrent.of(op).graph()) {
            DeviceTensor xDev = memory.swapped(recorded, x[0]);
            DeviceTensor h0Dev = memory.swapped(recorded, h0[0]);
            DeviceTensor c0Dev = lstm ? memory.swapped(recorded, c0[0]) : null;
            DeviceRecurrent.Call call = DeviceRecurrent.inputs(weights, xDev).h0(h0Dev).c0(c0Dev).lengths(lengths).stream(stream).inference();
            DeviceRecurrentResult first = graph.forward(call);
            driver.synchronize(stream);
            try (RecurrentResult want = op.forwardInference(weights, x[0], h0[0], c0[0], lengths)) {
                sameValues(cell + " first output", want.output(), first.output());
                sameValues(cell + " first hn", want.hn(), first.hn());
            }
            assertEquals(1, graph.captures());

            overwrite(xDev, x[1]);
            overwrite(h0Dev, h0[1]);
            if (lstm) {
                overwrite(c0Dev, c0[1]);
            }
            weights.update(w2);
            calls.clear();
            recording = true;
            DeviceRecurrentResult second = graph.forward(call);
            recording = false;
            assertEquals(List.of("launchGraph@" + stream), calls, "a repeated call is one graph launch on the caller's stream");
            assertSame(first, second, "the graph's result");
            driver.synchronize(stream);
            try (RecurrentResult want = op.forwardInference(weights, x[1], h0[1], c0[1], lengths)) {
                sameValues(cell + " repeated output", want.output(), second.output());
                sameValues(cell + " repeated hn", want.hn(), second.hn());
                if (lstm) {
                    sameValues(cell + " repeated cn", want.cn(), second.cn());
                }
            }
            assertEquals(1, graph.captures());

            DeviceRecurrentResult third = graph.forward(call.lengths(otherLengths));
            assertEquals(2, graph.captures(), "other lengths capture anew");
            assertTrue(first.hn().isClosed(), "the old graph's results are freed with it");
            driver.synchronize(stream);
            try (RecurrentResult want = op.forwardInference(weights, x[1], h0[1], c0[1], otherLengths)) {
                sameValues(cell + " recaptured output", want.output(), third.output());
                sameValues(cell + " recaptured hn", want.hn(), third.hn());
            }
        } finally {
            recording = false;
            driver.destroyStream(stream);
            memory.free();
        }
    }

    /**
     * A training forward through the graph, repeated with new x values, differentiates as the host
     * path does; its output goes into the caller's buffer on every launch; closing the result frees
     * nothing; a closed cache refuses a call.
     */
    @Test
    void aRepeatedTrainingForwardDifferentiatesAndWritesTheCallersBuffer() {
        TestData data = new TestData();
        RecurrentOp op = op("LSTM", 8, 2, true, false);
        DType dtype = DType.F32;
        int steps = 5;
        int batch = 18;
        Map<String, Tensor> w = data.params(dtype, 0.3, op.config().parameterShapes());
        Tensor[] x = {data.tensor(dtype, 1, steps, batch, 5), data.tensor(dtype, 1, steps, batch, 5)};
        Tensor dOut = data.tensor(dtype, 1, steps, batch, 16);
        long stream = driver.createStream();
        DeviceRecurrentGraph graph = DeviceRecurrent.of(op).graph();
        try (PreparedWeights weights = op.prepare(w)) {
            DeviceTensor xDev = memory.swapped(recorded, x[0]);
            DeviceTensor out = memory.contiguous(recorded, data.tensor(dtype, 1, steps, batch, 16));
            DeviceTensor dOutDev = memory.swapped(recorded, dOut);
            DeviceRecurrent rnn = DeviceRecurrent.of(op);
            DeviceRecurrent.Call call = DeviceRecurrent.inputs(weights, xDev).into(out).stream(stream);
            graph.forward(call).close();
            driver.synchronize(stream);
            long inUse = driver.memoryInUse();
            overwrite(xDev, x[1]);
            DeviceRecurrentResult got = graph.forward(call);
            assertEquals(inUse, driver.memoryInUse(), "a repeated call allocates nothing");
            assertSame(out, got.output());
            try (RecurrentResult want = op.forward(weights, x[1], null, null, null);
                 RecurrentGradients wantGrad = op.backward(weights, want, dOut, null, null);
                 DeviceRecurrentGradients grad = rnn.backward(got, weights, dOutDev, null, null, stream)) {
                driver.synchronize(stream);
                sameValues("output in the caller's buffer", want.output(), out);
                sameValues("dx", wantGrad.dx(), grad.dx());
                for (var e : wantGrad.params().entrySet()) {
                    sameValues(e.getKey(), e.getValue(), grad.params().get(e.getKey()));
                }
            }
            graph.close();
            assertFalse(out.isClosed(), "the caller's buffer stays the caller's");
            var closed = assertThrows(SeqkException.TensorClosed.class, () -> graph.forward(call));
            assertTrue(closed.getMessage().contains("graph cache was closed"), closed.getMessage());
        } finally {
            graph.close();
            driver.destroyStream(stream);
            memory.free();
        }
    }

    /**
     * A stateful caller: the second call takes the first's hn and cn as h0 and c0 (the old graph's
     * memory, which the new run reads before the old graph is freed), on another stream after the
     * first call's stream was destroyed; and a tensor of a result closed by the caller makes the
     * repeated call fail instead of writing freed memory.
     */
    @Test
    void theOldResultsFeedTheNextCallOnAnotherStreamAndAClosedResultTensorIsRefused() {
        TestData data = new TestData();
        RecurrentOp op = op("LSTM", 8, 1, false, false);
        DType dtype = DType.F32;
        Map<String, Tensor> w = data.params(dtype, 0.3, op.config().parameterShapes());
        Tensor x = data.tensor(dtype, 1, 4, 3, 5);
        long first = driver.createStream();
        long second = 0;
        try (PreparedWeights weights = op.prepare(w); DeviceRecurrentGraph graph = DeviceRecurrent.of(op).graph()) {
            DeviceTensor xDev = memory.swapped(recorded, x);
            DeviceRecurrentResult r1 = graph.forward(DeviceRecurrent.inputs(weights, xDev).stream(first).inference());
            driver.synchronize(first);
            driver.destroyStream(first);
            first = 0;
            second = driver.createStream();
            try (Tensor hn = r1.hn().toHost(); Tensor cn = r1.cn().toHost()) {
                DeviceRecurrentResult r2 = graph.forward(DeviceRecurrent.inputs(weights, xDev).h0(r1.hn()).c0(r1.cn()).stream(second)
                        .inference());
                assertEquals(2, graph.captures());
                assertTrue(r1.hn().isClosed(), "the old graph is freed once the new call's stream is idle");
                driver.synchronize(second);
                try (RecurrentResult want = op.forwardInference(weights, x, hn, cn, null)) {
                    sameValues("output from the old graph's state", want.output(), r2.output());
                    sameValues("hn from the old graph's state", want.hn(), r2.hn());
                }
            }
            DeviceRecurrent.Call plain = DeviceRecurrent.inputs(weights, xDev).stream(second).inference();
            graph.forward(plain).hn().close();
            var refused = assertThrows(SeqkException.TensorClosed.class, () -> graph.forward(plain));
            assertTrue(refused.getMessage().contains("a tensor of this graph's result was closed"), refused.getMessage());
            driver.synchronize(second);
        } finally {
            if (first != 0) {
                driver.destroyStream(first);
            }
            if (second != 0) {
                driver.destroyStream(second);
            }
            memory.free();
        }
    }
}
