package dev.seqkernels.gpu;

import dev.seqkernels.DType;
import dev.seqkernels.TestData;
import dev.seqkernels.Tensor;
import dev.seqkernels.gpu.emu.EmuDriver;
import dev.seqkernels.ops.CellType;
import dev.seqkernels.ops.Gru;
import dev.seqkernels.ops.Lstm;
import dev.seqkernels.ops.RecurrentConfig;
import dev.seqkernels.ops.RecurrentOp;
import dev.seqkernels.ops.RecurrentResult;
import dev.seqkernels.ops.Rnn;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import java.util.Map;
import java.util.function.Function;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A recurrent forward in inference mode runs every step kernel with null trace buffers (the cells
 * skip what only backward reads) and allocates no trace: on every kernel the selection rules pick,
 * its outputs are bit for bit the training forward's, and (on the emulator, which measures peak
 * device memory) it takes exactly the trace's bytes less.
 */
@PerBinding
class RecurrentInferenceTest {
    private static final int T = 5;

    /** One forward kernel of each kind, with a configuration and batch the rules send there. */
    enum Path {
        V1_LSTM(true, DType.F32, 3, b -> Lstm.builder().inputSize(3).hiddenSize(8).numLayers(2).bidirectional(true).backend(b).build()),
        V1_LSTM_PROJECTION(true, DType.F32, 3, b -> Lstm.builder().inputSize(3).hiddenSize(6).projSize(4).peepholes(true).backend(b).build()),
        V1_GRU(true, DType.F32, 3, b -> Gru.builder().inputSize(3).hiddenSize(8).backend(b).build()),
        V1_RNN(true, DType.F32, 3, b -> Rnn.builder().inputSize(3).hiddenSize(5).backend(b).build()),
        GRU_RESET_FIRST(false, DType.F32, 17, b -> Gru.builder().inputSize(3).hiddenSize(8).linearBeforeReset(false).bidirectional(true)
                .backend(b).build()),
        FUSED_LSTM(false, DType.F32, 17, b -> Lstm.builder().inputSize(3).hiddenSize(8).numLayers(2).bidirectional(true).backend(b).build()),
        FUSED_GRU(false, DType.F32, 17, b -> Gru.builder().inputSize(3).hiddenSize(8).backend(b).build()),
        FUSED_RNN_BF16(false, DType.BF16, 17, b -> Rnn.builder().inputSize(3).hiddenSize(8).backend(b).build()),
        FUSED_LSTM_F16(false, DType.F16, 17, b -> Lstm.builder().inputSize(3).hiddenSize(8).peepholes(true).backend(b).build()),
        VEC4_LSTM_PROJECTION(false, DType.F32, 17, b -> Lstm.builder().inputSize(3).hiddenSize(8).projSize(4).backend(b).build()),
        PERSISTENT_LSTM(false, DType.F32, 3, b -> Lstm.builder().inputSize(3).hiddenSize(8).bidirectional(true).backend(b).build()),
        PERSISTENT_GRU(false, DType.F32, 3, b -> Gru.builder().inputSize(3).hiddenSize(8).backend(b).build()),
        PERSISTENT_GRU_RESET_FIRST(false, DType.F32, 3, b -> Gru.builder().inputSize(3).hiddenSize(8).linearBeforeReset(false)
                .bidirectional(true).backend(b).build()),
        PERSISTENT_RNN(false, DType.F32, 3, b -> Rnn.builder().inputSize(3).hiddenSize(5).numLayers(2).backend(b).build()),
        PERSISTENT16_LSTM(false, DType.BF16, 3, b -> Lstm.builder().inputSize(3).hiddenSize(8).peepholes(true).bidirectional(true)
                .backend(b).build()),
        PERSISTENT16_GRU_RESET_FIRST(false, DType.F16, 3, b -> Gru.builder().inputSize(3).hiddenSize(16).linearBeforeReset(false)
                .numLayers(2).backend(b).build());

        final boolean v1;
        final DType dtype;
        final int batch;
        final Function<dev.seqkernels.Backend, RecurrentOp> make;

        Path(boolean v1, DType dtype, int batch, Function<dev.seqkernels.Backend, RecurrentOp> make) {
            this.v1 = v1;
            this.dtype = dtype;
            this.batch = batch;
            this.make = make;
        }

        RecurrentOp op() {
            GpuBackend backend = GpuTargets.newBackend();
            if (v1) {
                backend.recurrentPath().stepChoice(RecurrentGpu.StepChoice.V1);
            }
            RecurrentOp op = make.apply(backend);
            RecurrentConfig c = op.config();
            var choice = v1 ? RecurrentGpu.StepChoice.V1 : RecurrentGpu.StepChoice.AUTO;
            boolean persistent = RecurrentGpu.persistentPlan(c, batch, dtype, GpuTargets.driver().properties(), choice) != null;
            String cell = RecurrentGpu.stepCellKernel(c.cell(), c.hiddenSize(), c.projSize(), c.linearBeforeReset(), choice);
            boolean rulePicksIt = switch (this) {
                case PERSISTENT_LSTM, PERSISTENT_GRU, PERSISTENT_GRU_RESET_FIRST, PERSISTENT_RNN, PERSISTENT16_LSTM,
                     PERSISTENT16_GRU_RESET_FIRST -> persistent;
                case FUSED_LSTM, FUSED_GRU, FUSED_RNN_BF16, FUSED_LSTM_F16 -> !persistent && cell.endsWith("_step_fused");
                case VEC4_LSTM_PROJECTION -> !persistent && cell.endsWith("_vec4");
                default -> !persistent && cell.endsWith("_step_fwd");
            };
            assertTrue(rulePicksIt, this + ": the rules pick " + (persistent ? "the persistent kernel" : cell));
            return op;
        }

        /**
         * The bytes the training forward keeps for backward and inference does not allocate
         * (RecurrentGpu.SlotTrace per (layer, direction): raw, LSTM's c_new, GRU's h W_hn^T + b_hn;
         * no copy of a state), less the one raw buffer GRU's reset-first form reads r and z from.
         */
        long traceBytes(RecurrentConfig c) {
            long rows = (long) T * batch;
            int h = c.hiddenSize();
            long raw = rows * c.cell().gates() * h * 4L;
            long slot = raw;
            slot += c.cell() == CellType.LSTM ? rows * h * 4L : 0;
            slot += c.cell() == CellType.GRU && c.linearBeforeReset() ? rows * h * 4L : 0;
            boolean gruSplit = c.cell() == CellType.GRU && !c.linearBeforeReset();
            return slot * c.numLayers() * c.numDirections() - (gruSplit ? raw : 0);
        }
    }

    private record Run(RecurrentOp op, Map<String, Tensor> params, Tensor x, Tensor h0, Tensor c0, int[] lengths) {
        static Run of(Path path) {
            TestData data = new TestData();
            RecurrentOp op = path.op();
            RecurrentConfig c = op.config();
            int slots = c.numLayers() * c.numDirections();
            int[] lengths = new int[path.batch];
            for (int b = 0; b < lengths.length; b++) {
                lengths[b] = T - b % 3;  // ragged: entries past their length keep their state
            }
            return new Run(op, data.params(path.dtype, 0.4, c.parameterShapes()), data.tensor(path.dtype, 1, T, path.batch, 3),
                    data.tensor(path.dtype, 0.5, slots, path.batch, c.stateSize()),
                    c.cell() == CellType.LSTM ? data.tensor(path.dtype, 0.5, slots, path.batch, c.hiddenSize()) : null, lengths);
        }

        RecurrentResult forward(boolean training) {
            return training ? op.forward(params, x, h0, c0, lengths) : op.forwardInference(params, x, h0, c0, lengths);
        }
    }

    @ParameterizedTest
    @EnumSource(Path.class)
    void inferenceGivesTheTrainingForwardsOutputsBitForBit(Path path) {
        Run run = Run.of(path);
        Driver driver = GpuTargets.driver();
        long before = driver.memoryInUse();
        try (RecurrentResult train = run.forward(true); RecurrentResult infer = run.forward(false)) {
            assertArrayEquals(train.output().toDoubleArray(), infer.output().toDoubleArray(), path + " output");
            assertArrayEquals(train.hn().toDoubleArray(), infer.hn().toDoubleArray(), path + " hn");
            if (train.cn() != null) {
                assertArrayEquals(train.cn().toDoubleArray(), infer.cn().toDoubleArray(), path + " cn");
            }
        }
        assertEquals(before, driver.memoryInUse(), path + ": device memory back where it was");
    }

    /**
     * The persistent paths ran the persistent kernel (one cooperative launch, no per-step graph),
     * not the step loop the runtime falls back to when the grid does not fit; a fused path runs the
     * step graph.
     */
    @org.junit.jupiter.api.Test
    void thePersistentPathsRanThePersistentKernel() {
        for (Path path : new Path[]{Path.PERSISTENT_LSTM, Path.PERSISTENT_GRU, Path.PERSISTENT16_LSTM, Path.FUSED_LSTM}) {
            Run run = Run.of(path);
            try (CapturingDriver counting = new CapturingDriver(GpuTargets.driver())) {
                RecurrentOp op = path.make.apply(new GpuBackend(counting));
                try (RecurrentResult r = op.forwardInference(run.params(), run.x(), run.h0(), run.c0(), run.lengths())) {
                    assertEquals(path != Path.FUSED_LSTM, counting.graphLaunches() == 0, path + ": " + counting.graphLaunches()
                            + " step-graph launches");
                }
            }
        }
    }

    @ParameterizedTest
    @EnumSource(Path.class)
    void inferenceAllocatesNoTrace(Path path) {
        org.junit.jupiter.api.Assumptions.assumeTrue(GpuTargets.binding().equals("emu"),
                "skipped: peak device memory is measured by the emulator, and this run is on " + GpuTargets.binding());
        EmuDriver emu = EmuDriver.instance();
        Run run = Run.of(path);
        long[] peaks = new long[2];
        for (int n = 0; n < 2; n++) {
            emu.takePeakMemory();
            try (RecurrentResult r = run.forward(n == 0)) {
                peaks[n] = emu.takePeakMemory();
            }
        }
        long trace = path.traceBytes(run.op().config());
        assertEquals(trace, peaks[0] - peaks[1], path + ": inference's peak " + peaks[1] + " bytes, training's " + peaks[0]
                + ": the difference should be the trace's bytes");
    }
}
