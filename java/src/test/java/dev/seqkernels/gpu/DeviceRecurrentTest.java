package dev.seqkernels.gpu;

import dev.seqkernels.Backends;
import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.Tensor;
import dev.seqkernels.TestData;
import dev.seqkernels.ops.CellType;
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

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * DeviceRecurrent, the device-resident entry point of the recurrent ops: a framework's allocations
 * (strided) and stream, passed as raw handles, give exactly the host path's output, hn and cn
 * through the per-step loop (a CUDA graph), the persistent kernel and v1's cells, every cell, both
 * layouts, bidirectional and stacked, with lengths and initial states; every launch is on the
 * caller's stream or on the call's own stream joined to it by events, and nothing inside the call
 * waits or frees; bad arguments are refused before anything is queued.
 */
@PerBinding
class DeviceRecurrentTest {
    private final Driver driver = GpuTargets.driver();
    private final FrameworkMemory memory = new FrameworkMemory(driver);

    private static void sameValues(String what, Tensor want, DeviceTensor got) {
        assertArrayEquals(want.shape(), got.shape(), what + " shape");
        try (Tensor host = got.toHost()) {
            assertArrayEquals(want.toDoubleArray(), host.toDoubleArray(), what + " differs from the host path");
        }
    }

    private static RecurrentOp op(String cell, int hidden, int layers, boolean bidirectional, boolean batchFirst, Backendish b) {
        return switch (cell) {
            case "LSTM" -> Lstm.builder().inputSize(5).hiddenSize(hidden).numLayers(layers).bidirectional(bidirectional)
                    .batchFirst(batchFirst).backend(b.get()).build();
            case "GRU" -> Gru.builder().inputSize(5).hiddenSize(hidden).numLayers(layers).bidirectional(bidirectional)
                    .batchFirst(batchFirst).backend(b.get()).build();
            default -> Rnn.builder().inputSize(5).hiddenSize(hidden).numLayers(layers).bidirectional(bidirectional)
                    .batchFirst(batchFirst).backend(b.get()).build();
        };
    }

    private interface Backendish {
        dev.seqkernels.Backend get();
    }

    /**
     * cell, dtype, hidden, layers, bidirectional, batch first, batch, initial states: the per-step
     * graph with the vectorized cells (an F32 RNN at batch 17, above the persistent kernel's) and
     * with the 16-bit state of F16/BF16 ops, and the persistent kernel (small batches: an F32 LSTM
     * and GRU, and an F16 LSTM at batch 2 on its 16-bit instance, sm_80+).
     */
    @ParameterizedTest
    @CsvSource({"LSTM, F32, 8, 2, true, false, 3, true", "LSTM, BF16, 6, 1, false, true, 20, false",
            "GRU, F16, 8, 2, false, false, 18, true", "GRU, F32, 6, 1, true, true, 4, false",
            "RNN, F32, 8, 2, true, false, 17, true", "LSTM, F16, 8, 1, false, false, 2, false"})
    void aFrameworksAllocationAndStreamGiveTheHostPathsResults(String cell, DType dtype, int hidden, int layers, boolean bidirectional,
                                                               boolean batchFirst, int batch, boolean initialStates) {
        TestData data = new TestData();
        RecurrentOp op = op(cell, hidden, layers, bidirectional, batchFirst, GpuTargets::sharedBackend);
        int steps = 7;
        int slots = layers * (bidirectional ? 2 : 1);
        Map<String, Tensor> w = data.params(dtype, 0.3, op.config().parameterShapes());
        Tensor x = batchFirst ? data.tensor(dtype, 1, batch, steps, 5) : data.tensor(dtype, 1, steps, batch, 5);
        Tensor h0 = initialStates ? data.tensor(dtype, 0.5, slots, batch, hidden) : null;
        Tensor c0 = initialStates && cell.equals("LSTM") ? data.tensor(dtype, 0.5, slots, batch, hidden) : null;
        int[] lengths = new int[batch];
        for (int i = 0; i < batch; i++) {
            lengths[i] = i == 1 ? 0 : steps - (i % steps);
        }
        int width = (bidirectional ? 2 : 1) * hidden;
        Tensor dOut = batchFirst ? data.tensor(dtype, 1, batch, steps, width) : data.tensor(dtype, 1, steps, batch, width);
        Tensor dHn = initialStates ? data.tensor(dtype, 1, slots, batch, hidden) : null;
        Tensor dCn = initialStates && cell.equals("LSTM") ? data.tensor(dtype, 1, slots, batch, hidden) : null;
        long stream = driver.createStream();
        try (PreparedWeights weights = op.prepare(w); RecurrentResult want = op.forward(weights, x, h0, c0, lengths);
             RecurrentGradients wantGrad = op.backward(weights, want, dOut, dHn, dCn)) {
            long before = driver.memoryInUse();
            DeviceRecurrent rnn = DeviceRecurrent.of(op);
            DeviceRecurrent.Call call = DeviceRecurrent.inputs(weights, memory.swapped(driver, x)).lengths(lengths).stream(stream);
            if (h0 != null) {
                call.h0(memory.swapped(driver, h0));
            }
            if (c0 != null) {
                call.c0(memory.swapped(driver, c0));
            }
            DeviceTensor dOutOnDevice = memory.swapped(driver, dOut);
            DeviceTensor dHnOnDevice = dHn == null ? null : memory.swapped(driver, dHn);
            DeviceTensor dCnOnDevice = dCn == null ? null : memory.swapped(driver, dCn);
            long allocated = driver.memoryInUse();
            List<DeviceTensor> results = new ArrayList<>();
            try (DeviceRecurrentResult got = rnn.forward(call);
                 DeviceRecurrentGradients grad = rnn.backward(got, weights, dOutOnDevice, dHnOnDevice, dCnOnDevice, stream)) {
                driver.synchronize(stream);
                results.addAll(List.of(got.output(), got.hn(), grad.dx(), grad.dh0()));
                results.addAll(grad.params().values());
                sameValues(cell + " dx", wantGrad.dx(), grad.dx());
                sameValues(cell + " dh0", wantGrad.dh0(), grad.dh0());
                if (wantGrad.dc0() != null) {
                    sameValues(cell + " dc0", wantGrad.dc0(), grad.dc0());
                } else {
                    assertNull(grad.dc0());
                }
                assertEquals(wantGrad.params().keySet().stream().toList(), grad.params().keySet().stream().toList());
                for (String name : wantGrad.params().keySet()) {
                    sameValues(cell + " d" + name, wantGrad.params().get(name), grad.params().get(name));
                }
                assertTrue(got.differentiable());
                assertEquals(dtype, got.output().dtype());
                sameValues(cell + " output", want.output(), got.output());
                sameValues(cell + " hn", want.hn(), got.hn());
                if (want.cn() != null) {
                    sameValues(cell + " cn", want.cn(), got.cn());
                } else {
                    assertNull(got.cn());
                }
            }
            assertEquals(allocated, driver.memoryInUse(), "closing the result freed everything the call allocated");
            for (DeviceTensor t : results) {
                assertTrue(t.isClosed(), "a result's tensor says it is closed once its memory is freed: " + t);
            }
            memory.free();
            assertEquals(before, driver.memoryInUse());
        } finally {
            driver.destroyStream(stream);
            memory.free();
        }
    }

    /**
     * The output written into a caller's buffer (contiguous, x's dtype and layout; here the memory x
     * itself came in, which the call has read before it writes), the host path's values; the buffer
     * stays the caller's when the result closes; a buffer of another shape, dtype or layout is refused.
     */
    @ParameterizedTest
    @CsvSource({"F32, false", "F32, true", "BF16, true", "F16, false"})
    void aCallersOutputBuffer(DType dtype, boolean batchFirst) {
        TestData data = new TestData();
        RecurrentOp op = Gru.builder().inputSize(8).hiddenSize(4).bidirectional(true).batchFirst(batchFirst)
                .backend(GpuTargets.sharedBackend()).build();
        Map<String, Tensor> w = data.params(dtype, 0.3, op.config().parameterShapes());
        Tensor x = batchFirst ? data.tensor(dtype, 1, 3, 5, 8) : data.tensor(dtype, 1, 5, 3, 8);
        try (PreparedWeights weights = op.prepare(w); RecurrentResult want = op.forward(weights, x, null, null, null);
             DeviceTensor buffer = DeviceTensor.of(driver, x)) {
            DeviceRecurrent rnn = DeviceRecurrent.of(op);
            try (DeviceRecurrentResult got = rnn.forward(DeviceRecurrent.inputs(weights, buffer).into(buffer))) {
                driver.synchronize(0);
                assertTrue(got.output() == buffer, "the output is the caller's buffer");
                sameValues("output into the caller's buffer", want.output(), buffer);
            }
            assertFalse(buffer.isClosed(), "the caller's buffer stays the caller's");
            DeviceTensor separate = DeviceTensor.of(driver, x);
            try (DeviceRecurrentResult got = rnn.forward(DeviceRecurrent.inputs(weights, buffer).into(separate))) {
                driver.synchronize(0);
                separate.close();
                try (DeviceRecurrentGradients grad = rnn.backward(got, weights, null, null, null, 0)) {
                    driver.synchronize(0);
                    assertEquals(dtype, grad.dx().dtype(), "backward needs only the result's own state, not the caller's buffer");
                }
            }
            try (DeviceTensor wrongShape = DeviceTensor.allocate(driver, dtype, 2, 2, 8);
                 DeviceTensor wrongType = DeviceTensor.allocate(driver, dtype == DType.F32 ? DType.F16 : DType.F32, x.shape())) {
                for (DeviceTensor bad : List.of(wrongShape, wrongType, DeviceTensor.wrap(driver, buffer.pointer(), dtype,
                        new long[]{x.size(0), x.size(1), 8}, new long[]{8, 8L * x.size(0), 1}))) {
                    var e = assertThrows(SeqkException.ShapeMismatch.class, () -> rnn.forward(DeviceRecurrent.inputs(weights, buffer).into(bad)));
                    assertTrue(e.getMessage().contains("'out'"), e.getMessage());
                }
            }
        }
    }

    /**
     * A 16-bit op with a 16-bit state changes layout in one pass in its own type: batch-first x
     * into the time-major steps and the output back, with no f32 copy rounded back (gather4_bf16
     * ran; neither gather4_to_f32_bf16 nor cast_f32_to_bf16 did), the host path's values.
     */
    @Test
    void sixteenBitLayoutChangesAreOneGatherInTheirOwnType() {
        TestData data = new TestData();
        List<String> resolved = new java.util.concurrent.CopyOnWriteArrayList<>();
        Driver recorded = RecordingDriver.recordingFunctions(driver, resolved);
        RecurrentOp op = Gru.builder().inputSize(8).hiddenSize(4).batchFirst(true).backend(new GpuBackend(recorded)).build();
        RecurrentOp host = Gru.builder().inputSize(8).hiddenSize(4).batchFirst(true).backend(GpuTargets.sharedBackend()).build();
        Map<String, Tensor> w = data.params(DType.BF16, 0.3, op.config().parameterShapes());
        Tensor x = data.tensor(DType.BF16, 1, 3, 5, 8);
        try (PreparedWeights weights = op.prepare(w); RecurrentResult want = host.forward(w, x, null, null, null);
             DeviceTensor input = DeviceTensor.of(recorded, x)) {
            resolved.clear();
            try (DeviceRecurrentResult got = DeviceRecurrent.of(op).forward(DeviceRecurrent.inputs(weights, input))) {
                driver.synchronize(0);
                assertTrue(resolved.contains("gather4_bf16"), resolved.toString());
                assertFalse(resolved.contains("gather4_to_f32_bf16") || resolved.contains("cast_f32_to_bf16"), resolved.toString());
                sameValues("output", want.output(), got.output());
            }
            try (DeviceTensor elsewhere = DeviceTensor.of(driver, x)) {
                var e = assertThrows(SeqkException.InvalidConfig.class,
                        () -> DeviceRecurrent.of(op).forward(DeviceRecurrent.inputs(weights, elsewhere)));
                assertTrue(e.getMessage().contains("another " + driver.name() + " driver object"), e.getMessage());
            }
        }
    }

    /** A cell on device tensors, through its one-step sequence op: the cell's host results exactly. */
    @Test
    void aCellStepThroughItsSequenceOp() {
        TestData data = new TestData();
        dev.seqkernels.ops.RecurrentCell cell = Lstm.builder().inputSize(5).hiddenSize(8).backend(GpuTargets.sharedBackend()).buildCell();
        Map<String, Tensor> cellParams = data.params(DType.F32, 0.3, cell.parameterShapes());
        Tensor x = data.tensor(DType.F32, 1, 3, 5);
        Tensor h = data.tensor(DType.F32, 0.5, 3, 8);
        Tensor c = data.tensor(DType.F32, 0.5, 3, 8);
        Map<String, Tensor> sequenceParams = new java.util.LinkedHashMap<>();
        cellParams.forEach((name, t) -> sequenceParams.put(name + "_l0", t));
        RecurrentOp step = cell.sequenceOp();
        try (dev.seqkernels.ops.RecurrentCell.Result want = cell.forward(cellParams, x, h, c);
             PreparedWeights weights = step.prepare(sequenceParams);
             DeviceTensor dx = DeviceTensor.of(driver, x.unsqueeze(0)); DeviceTensor dh = DeviceTensor.of(driver, h.unsqueeze(0));
             DeviceTensor dc = DeviceTensor.of(driver, c.unsqueeze(0));
             DeviceRecurrentResult got = DeviceRecurrent.of(step).forward(DeviceRecurrent.inputs(weights, dx).h0(dh).c0(dc))) {
            driver.synchronize(0);
            try (Tensor hn = got.hn().toHost(); Tensor cn = got.cn().toHost()) {
                assertArrayEquals(want.h().toDoubleArray(), hn.select(0, 0).toDoubleArray(), "h'");
                assertArrayEquals(want.c().toDoubleArray(), cn.select(0, 0).toDoubleArray(), "c'");
            }
        }
    }


    /** One recorded driver call: its name, its stream (or null) and its event (or null). */
    private record Call(String method, Long stream, Long event) {
        boolean work() {
            return stream != null && !method.equals("recordEvent") && !method.equals("waitEvent");
        }
    }

    /**
     * Every copy, memset, GEMM and launch of a forward and its backward is issued on the caller's
     * stream or on another stream whose first work comes after a wait for an event last recorded on
     * the caller's stream, and after whose last work an event is recorded there that the caller's
     * stream then waits for; nothing inside the calls waits or frees. Cells: an LSTM (per-step graph
     * at batch 20 in F16; the persistent kernel at batch 2, its 16-bit instance on sm_80+), a GRU
     * whose reset gate comes first (its extra GEMMs forward and backward), an LSTM with projection.
     */
    @ParameterizedTest
    @CsvSource({"lstm, 20", "lstm, 2", "gru-reset-first, 20", "lstm-projection, 20"})
    void everyLaunchIsOrderedOnTheCallersStreamAndNothingWaits(String cell, int batch) {
        TestData data = new TestData();
        List<Call> calls = new java.util.concurrent.CopyOnWriteArrayList<>();
        boolean[] recording = {false};
        Driver recorded = RecordingDriver.around(driver, (method, args) -> {
                    if (recording[0]) {
                        Integer at = RecordingDriver.STREAM_ARGUMENT.get(method);
                        Long event = switch (method) {
                            case "recordEvent" -> (Long) args[0];
                            case "waitEvent" -> (Long) args[1];
                            default -> null;
                        };
                        calls.add(new Call(method, at == null ? null : (Long) args[at], event));
                    }
            });
        GpuBackend backend = new GpuBackend(recorded);
        RecurrentOp op = switch (cell) {
            case "gru-reset-first" -> Gru.builder().inputSize(5).hiddenSize(8).numLayers(2).linearBeforeReset(false).backend(backend).build();
            case "lstm-projection" -> Lstm.builder().inputSize(5).hiddenSize(8).projSize(4).numLayers(2).backend(backend).build();
            default -> Lstm.builder().inputSize(5).hiddenSize(8).numLayers(2).backend(backend).build();
        };
        DType dtype = DType.F16;
        Map<String, Tensor> w = data.params(dtype, 0.3, op.config().parameterShapes());
        long stream = driver.createStream();
        try (PreparedWeights weights = op.prepare(w)) {
            DeviceTensor x = memory.swapped(recorded, data.tensor(dtype, 1, 6, batch, 5));
            DeviceTensor dOut = memory.swapped(recorded, data.tensor(dtype, 1, 6, batch, op.config().outputSize()));
            DeviceRecurrent rnn = DeviceRecurrent.of(op);
            recording[0] = true;
            try (DeviceRecurrentResult got = rnn.forward(DeviceRecurrent.inputs(weights, x).stream(stream));
                 DeviceRecurrentGradients grad = rnn.backward(got, weights, dOut, null, null, stream)) {
                recording[0] = false;
                assertEquals(dtype, grad.dx().dtype());
                assertTrue(calls.stream().anyMatch(c -> c.method().startsWith("launch")), "the calls launched kernels: " + calls);
                for (Call c : calls) {
                    assertFalse(RecordingDriver.WAITING.contains(c.method()), "a device-resident call made a waiting driver call: " + c + " in " + calls);
                }
                java.util.Set<Long> others = new java.util.TreeSet<>();
                calls.stream().filter(Call::work).map(Call::stream).filter(s -> s != stream).forEach(others::add);
                assertEquals(batch > 16 || !cell.equals("lstm"), !others.isEmpty(), "the per-step graph runs on a stream of its own: " + calls);
                for (long own : others) {
                    assertOrderedAgainst(calls, own, stream);
                }
                driver.synchronize(stream);
            }
        } finally {
            recording[0] = false;
            driver.destroyStream(stream);
            memory.free();
        }
    }

    /**
     * Each run of work on {@code own} (calls between joins) starts after a wait on {@code own} for an
     * event whose latest record before the wait was on {@code caller}, and ends with a record on
     * {@code own} of an event the caller's stream waits for afterwards, with no work on {@code own} in between.
     */
    private static void assertOrderedAgainst(List<Call> calls, long own, long caller) {
        int i = 0;
        while (i < calls.size()) {
            Call c = calls.get(i);
            if (!(c.work() && c.stream() == own)) {
                i++;
                continue;
            }
            int first = i;
            int waitAt = -1;
            for (int j = first - 1; j >= 0 && waitAt < 0; j--) {
                Call before = calls.get(j);
                assertFalse(before.work() && before.stream() == own, "work on " + own + " at call " + j + " and " + first + " with no wait between: " + calls);
                if (before.method().equals("waitEvent") && before.stream() == own) {
                    waitAt = j;
                }
            }
            assertTrue(waitAt >= 0, "work on stream " + own + " at call " + first + " without a wait before it: " + calls);
            long waited = calls.get(waitAt).event();
            int recordAt = -1;
            for (int j = waitAt - 1; j >= 0 && recordAt < 0; j--) {
                if (calls.get(j).method().equals("recordEvent") && calls.get(j).event() == waited) {
                    recordAt = j;
                }
            }
            assertTrue(recordAt >= 0 && calls.get(recordAt).stream() == caller,
                    "stream " + own + " waits for event " + waited + ", not last recorded on the caller's stream: " + calls);
            int last = first;
            while (last + 1 < calls.size() && !(calls.get(last + 1).method().equals("recordEvent") && calls.get(last + 1).stream() == own)) {
                last++;
            }
            assertTrue(last + 1 < calls.size(), "no event recorded on " + own + " after its work: " + calls);
            long done = calls.get(last + 1).event();
            for (int j = first; j <= last; j++) {
                Call between = calls.get(j);
                assertTrue(!between.work() || between.stream() == own || between.stream() == caller,
                        "work on another stream inside the run on " + own + ": " + between);
            }
            int joinAt = -1;
            for (int j = last + 2; j < calls.size() && joinAt < 0; j++) {
                Call after = calls.get(j);
                if (after.method().equals("waitEvent") && after.event() == done) {
                    joinAt = j;
                }
                assertFalse(after.work() && after.stream() == caller && joinAt < 0,
                        "work on the caller's stream before it waits for " + own + "'s event " + done + ": " + calls);
            }
            assertTrue(joinAt > 0 && calls.get(joinAt).stream() == caller,
                    "the caller's stream does not wait for the event recorded after the work on " + own + ": " + calls);
            i = last + 2;
        }
    }

    /**
     * Backward rebuilds h_prev from the outputs the forward saved, so a training forward never hands
     * its saved output to the caller: overwriting the result's output before backward (a framework's
     * in-place op) leaves the gradients the host path's. Time-major in the op's dtype, where the
     * output could otherwise have been the saved buffer itself; a bidirectional LSTM with lengths
     * (one of them 0) and h0, so both directions' first steps and the h0 rows are read.
     */
    @Test
    void overwritingTheOutputBeforeBackwardChangesNoGradient() {
        TestData data = new TestData();
        RecurrentOp op = Lstm.builder().inputSize(5).hiddenSize(8).bidirectional(true).backend(GpuTargets.sharedBackend()).build();
        Map<String, Tensor> w = data.params(DType.F32, 0.3, op.config().parameterShapes());
        Tensor x = data.tensor(DType.F32, 1, 4, 3, 5);
        Tensor h0 = data.tensor(DType.F32, 0.5, 2, 3, 8);
        Tensor dOut = data.tensor(DType.F32, 1, 4, 3, 16);
        int[] lengths = {4, 0, 3};
        try (PreparedWeights weights = op.prepare(w); RecurrentResult want = op.forward(weights, x, h0, null, lengths);
             RecurrentGradients wantGrad = op.backward(weights, want, dOut, null, null)) {
            DeviceRecurrent rnn = DeviceRecurrent.of(op);
            try (DeviceRecurrentResult got = rnn.forward(DeviceRecurrent.inputs(weights, memory.swapped(driver, x))
                    .h0(memory.swapped(driver, h0)).lengths(lengths));
                 DeviceRecurrentGradients grad = overwrittenThenBackward(rnn, got, weights, memory.swapped(driver, dOut))) {
                driver.synchronize(0);
                sameValues("dx", wantGrad.dx(), grad.dx());
                sameValues("dh0", wantGrad.dh0(), grad.dh0());
                for (String name : wantGrad.params().keySet()) {
                    sameValues("d" + name, wantGrad.params().get(name), grad.params().get(name));
                }
            }
        } finally {
            memory.free();
        }
    }

    private DeviceRecurrentGradients overwrittenThenBackward(DeviceRecurrent rnn, DeviceRecurrentResult got, PreparedWeights weights,
                                                             DeviceTensor dOut) {
        driver.memsetAsync(got.output().pointer(), 0x7f, got.output().byteSize(), 0);
        return rnn.backward(got, weights, dOut, null, null, 0);
    }

    /** An inference forward on device tensors: the training forward's values (its cells wrote no trace), and no backward. */
    @Test
    void inferenceKeepsNothingForBackward() {
        TestData data = new TestData();
        RecurrentOp op = Gru.builder().inputSize(5).hiddenSize(8).backend(GpuTargets.sharedBackend()).build();
        Map<String, Tensor> w = data.params(DType.F32, 0.3, op.config().parameterShapes());
        Tensor x = data.tensor(DType.F32, 1, 4, 3, 5);
        int[] lengths = {4, 2, 3};
        try (PreparedWeights weights = op.prepare(w); RecurrentResult want = op.forward(weights, x, null, null, lengths);
             DeviceRecurrentResult r = DeviceRecurrent.of(op).forward(DeviceRecurrent.inputs(weights,
                     memory.swapped(driver, x)).lengths(lengths).inference())) {
            driver.synchronize(0);
            assertFalse(r.differentiable());
            assertNull(r.cn());
            sameValues("inference output", want.output(), r.output());
            sameValues("inference hn", want.hn(), r.hn());
            var e = assertThrows(SeqkException.InvalidConfig.class, () -> DeviceRecurrent.of(op).backward(r, weights, null, null, null, 0));
            assertTrue(e.getMessage().contains("inference"), e.getMessage());
        } finally {
            memory.free();
        }
    }

    @Test
    void badDeviceInputsAreClearErrors() {
        TestData data = new TestData();
        RecurrentOp lstm = Lstm.builder().inputSize(5).hiddenSize(8).backend(GpuTargets.sharedBackend()).build();
        RecurrentOp gru = Gru.builder().inputSize(5).hiddenSize(8).backend(GpuTargets.sharedBackend()).build();
        RecurrentOp onCpu = Lstm.builder().inputSize(5).hiddenSize(8).backend(Backends.byName("cpu")).build();
        assertThrows(SeqkException.InvalidConfig.class, () -> DeviceRecurrent.of(onCpu));
        DeviceRecurrent rnn = DeviceRecurrent.of(lstm);
        Map<String, Tensor> w = data.params(DType.F32, 0.3, lstm.config().parameterShapes());
        Map<String, Tensor> gw = data.params(DType.F32, 0.3, gru.config().parameterShapes());
        long before = driver.memoryInUse();
        try (PreparedWeights weights = lstm.prepare(w); PreparedWeights gruWeights = gru.prepare(gw)) {
            DeviceTensor x = memory.swapped(driver, data.tensor(DType.F32, 1, 4, 3, 5));
            var missing = assertThrows(SeqkException.ShapeMismatch.class, () -> rnn.forward(DeviceRecurrent.inputs(weights, null)));
            assertTrue(missing.getMessage().contains("'x'"), missing.getMessage());
            var noWeights = assertThrows(SeqkException.ShapeMismatch.class, () -> rnn.forward(DeviceRecurrent.inputs(null, x)));
            assertTrue(noWeights.getMessage().contains("'weights'"), noWeights.getMessage());
            var foreignWeights = assertThrows(SeqkException.InvalidConfig.class, () -> rnn.forward(DeviceRecurrent.inputs(gruWeights, x)));
            assertTrue(foreignWeights.getMessage().contains("other parameters"), foreignWeights.getMessage());
            var shape = assertThrows(SeqkException.ShapeMismatch.class, () -> rnn.forward(DeviceRecurrent.inputs(weights,
                    memory.swapped(driver, data.tensor(DType.F32, 1, 4, 3, 6)))));
            assertTrue(shape.getMessage().contains("'x'"), shape.getMessage());
            var dtype = assertThrows(SeqkException.DTypeMismatch.class, () -> rnn.forward(DeviceRecurrent.inputs(weights,
                    memory.swapped(driver, data.tensor(DType.BF16, 1, 4, 3, 5)))));
            assertTrue(dtype.getMessage().contains("prepared from F32"), dtype.getMessage());
            var h0 = assertThrows(SeqkException.ShapeMismatch.class, () -> rnn.forward(DeviceRecurrent.inputs(weights, x)
                    .h0(memory.swapped(driver, data.tensor(DType.F32, 1, 1, 2, 8)))));
            assertTrue(h0.getMessage().contains("'h0'"), h0.getMessage());
            var c0 = assertThrows(SeqkException.ShapeMismatch.class, () -> DeviceRecurrent.of(gru).forward(DeviceRecurrent.inputs(gruWeights, x)
                    .c0(memory.swapped(driver, data.tensor(DType.F32, 1, 1, 3, 8)))));
            assertTrue(c0.getMessage().contains("only for LSTM"), c0.getMessage());
            var lengths = assertThrows(SeqkException.ShapeMismatch.class, () -> rnn.forward(DeviceRecurrent.inputs(weights, x)
                    .lengths(new int[]{4, 5, 1})));
            assertTrue(lengths.getMessage().contains("lengths[1] = 5"), lengths.getMessage());
            var empty = assertThrows(SeqkException.ShapeMismatch.class, () -> rnn.forward(DeviceRecurrent.inputs(weights,
                    DeviceTensor.wrap(driver, x.pointer(), DType.F32, new long[]{4, 0, 5}, new long[]{5, 5, 1}))));
            assertTrue(empty.getMessage().contains("empty batch"), empty.getMessage());
            DeviceTensor closed = DeviceTensor.allocate(driver, DType.F32, 4, 3, 5);
            closed.close();
            assertThrows(SeqkException.TensorClosed.class, () -> rnn.forward(DeviceRecurrent.inputs(weights, closed)));
            try (DeviceRecurrentResult r = rnn.forward(DeviceRecurrent.inputs(weights, x))) {
                var dOut = assertThrows(SeqkException.ShapeMismatch.class, () -> rnn.backward(r, weights, x, null, null, 0));
                assertTrue(dOut.getMessage().contains("'dOutput'"), dOut.getMessage());
                var dCn = assertThrows(SeqkException.ShapeMismatch.class, () -> rnn.backward(r, weights, null, null, x, 0));
                assertTrue(dCn.getMessage().contains("'dCn'"), dCn.getMessage());
                var otherWeights = assertThrows(SeqkException.InvalidConfig.class, () -> rnn.backward(r, gruWeights, null, null, null, 0));
                assertTrue(otherWeights.getMessage().contains("other parameters"), otherWeights.getMessage());
                RecurrentOp deeper = Lstm.builder().inputSize(5).hiddenSize(8).numLayers(2).backend(GpuTargets.sharedBackend()).build();
                try (PreparedWeights deeperWeights = deeper.prepare(data.params(DType.F32, 0.3, deeper.config().parameterShapes()))) {
                    var otherOp = assertThrows(SeqkException.InvalidConfig.class,
                            () -> DeviceRecurrent.of(deeper).backward(r, deeperWeights, null, null, null, 0));
                    assertTrue(otherOp.getMessage().contains("another configuration"), otherOp.getMessage());
                }
                driver.synchronize(0);
            }
            weights.close();
            assertThrows(SeqkException.TensorClosed.class, () -> rnn.forward(DeviceRecurrent.inputs(weights, x)));
        } finally {
            memory.free();
        }
        assertEquals(before, driver.memoryInUse(), "refused calls allocated nothing");
        try (RecurrentResult r = lstm.forward(w, data.tensor(DType.F32, 1, 4, 3, 5))) {
            RecurrentOp deeper = Lstm.builder().inputSize(5).hiddenSize(8).numLayers(2).backend(GpuTargets.sharedBackend()).build();
            var otherOp = assertThrows(SeqkException.InvalidConfig.class, () -> deeper.backward(
                    data.params(DType.F32, 0.3, deeper.config().parameterShapes()), r, null, null, null));
            assertTrue(otherOp.getMessage().contains("another configuration"), otherOp.getMessage());
            Driver another = RecordingDriver.around(driver, (method, args) -> {
            });
            RecurrentOp elsewhere = Lstm.builder().inputSize(5).hiddenSize(8).backend(new GpuBackend(another)).build();
            var otherDriver = assertThrows(SeqkException.InvalidConfig.class, () -> elsewhere.backward(w, r, null, null, null));
            assertTrue(otherDriver.getMessage().contains("was made on"), otherDriver.getMessage());
        }
        assertEquals(CellType.LSTM, lstm.config().cell());
    }
}
