package dev.seqkernels.gpu;

import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.Tensor;
import dev.seqkernels.ops.Activation;
import dev.seqkernels.ops.CellType;
import dev.seqkernels.ops.RecurrentConfig;
import dev.seqkernels.ops.RecurrentGradients;
import dev.seqkernels.ops.RecurrentResult;

import java.util.List;
import java.util.Map;

/**
 * The GPU path of the recurrent ops, written once against {@link Driver}: per layer and direction,
 * one GEMM projects every step's input (x W_ih^T); per step, one GEMM projects the state
 * (h W_hh^T; GRU without linear-before-reset adds (r*h) W_hn^T, an LSTM with projection adds
 * m W_hr^T) and cuda/recurrent's cell kernels do the gate math and move the new state into the
 * output: a fused step kernel, or a cell and a commit ({@link #stepCellKernel}), the step loop
 * captured once as a CUDA graph. Lengths mask steps inside the kernels. The v1 path ({@link StepChoice#V1}), like the
 * CPU reference, rounds only at its boundary: inputs and parameters are widened to F32 once,
 * everything inside (states, layer outputs, GEMMs) is F32, and the results are rounded once to the
 * input's dtype.
 *
 * <p>Tensor-core step path ({@link #stateType}): an F16/BF16 op keeps its state in 16 bits, as
 * cuDNN and PyTorch do: every forward GEMM multiplies 16-bit operands on tensor cores with fp32
 * accumulation (x or the layer below's output by W_ih, h_{t-1} by W_hh, m by W_hr, GRU's r*h by
 * W_hn), the cells keep the gate math, c and the saved pre-activations in fp32, and h is rounded
 * once per step to the storage type (the step's output and the next step's GEMM input). Judged by
 * DESIGN's 2x rule against {@code cpu-same-precision}, which rounds at the same points. Backward
 * likewise: its GEMMs (the per-step dh = dA W_hh, GRU's d(r*h) and the projection's dm, and over all
 * steps the weight gradients and dx) multiply 16-bit operands (the gate gradients dA rounded once
 * by the cell kernels that write them, the saved 16-bit layer inputs and the h_prev rebuilt from the
 * saved 16-bit outputs, the 16-bit weights) into fp32; the
 * carried dh and dc, the GEMM results and the bias and peephole sums stay fp32.
 *
 * <p>Persistent forward ({@link #persistentPlan}): an LSTM without projection, a GRU (either reset
 * form) or an Elman RNN, batch &lt;= 16, whose W_hh slices fit in shared memory with one block per
 * multiprocessor, runs each (layer, direction) as one cooperative launch of {@link #persistentKernel}
 * (W_hh stays on chip for every step; no per-step GEMM or launch) instead of the per-step loop: the
 * F32 instance for an F32 state, the 16-bit one (W_hh and h in the storage type, the projection on
 * tensor cores by mma.sync, fp32 accumulation, h rounded once a step as the step loop rounds it) for
 * an F16/BF16 state on sm_80+ with H % 8 == 0. It saves the same trace, so backward reads the same.
 *
 * <p>Persistent backward ({@link #persistentBackwardPlan}): the same bounds with its own
 * shared-memory fit runs each (layer, direction)'s backward through time as one cooperative launch
 * of {@link #persistentBackwardKernel} (W_hh's columns of a block's units on chip, dh and dc carried
 * on chip, the cells' backward and the dh product per step) instead of the per-step loop's four
 * launches a step (six for the reset-first GRU); the weight gradients stay GEMMs over all steps
 * after it. Like the persistent forward, its products are its own and stay fp32 under allowTf32.
 */
final class RecurrentGpu {
    private static final int THREADS = 256;
    /** Largest batch the persistent kernel takes: above it the per-step GEMM is efficient on its own. */
    static final int PERSISTENT_MAX_BATCH = 16;

    /** AUTO: the selection rule in the class comment; V1: always the per-step loop (tests compare the two). */
    enum StepChoice { AUTO, V1 }

    /** One block per multiprocessor owning {@code unitsPerBlock} hidden units; {@code sharedBytes} of dynamic shared memory. */
    record PersistentPlan(int blocks, int unitsPerBlock, int sharedBytes) {
    }

    private volatile StepChoice stepChoice = StepChoice.AUTO;

    void stepChoice(StepChoice choice) {
        stepChoice = choice;
    }

    StepChoice stepChoice() {
        return stepChoice;
    }

    /**
     * The forward's state type: the type of h (the state, hnew, the layer outputs, the h_prev backward rebuilds
     * and the layer inputs backward reads) and of every forward GEMM operand (x, W_ih, W_hh, W_hr,
     * GRU's r*h); the GEMMs accumulate and write gx and gh in fp32 (the LSTM projection writes h in
     * this type, rounded once). The storage type for F16/BF16 ops: tensor cores, h rounded once per
     * step. F32 for F32 ops, and for V1, whose interior is all F32.
     */
    static DType stateType(DType storage, StepChoice choice) {
        boolean sixteenBit = storage == DType.F16 || storage == DType.BF16;
        return sixteenBit && choice == StepChoice.AUTO ? storage : DType.F32;
    }

    /**
     * The per-step cell kernel. When H is a multiple of 4 (and a GRU has linear_before_reset), the
     * vectorized cells (4 units per thread, one 16- or 8-byte access per row and quad): without a
     * projection the fused step {@code <cell>_step_fused} (the cell also does step_commit's work and
     * advances the step, so a step is the GEMM and this kernel), with one (an LSTM's m goes through
     * the W_hr GEMM first) {@code lstm_step_fwd_vec4} followed by the commit ({@link #commitAdvances}).
     * Otherwise v1's {@code <cell>_step_fwd} (with the commit kernel); V1 pins v1. The
     * kernel's name is this plus the {@link #stateType}'s suffix ({@code _f32}, {@code _f16},
     * {@code _bf16}).
     */
    static String stepCellKernel(CellType cell, int hidden, int projSize, boolean linearBeforeReset, StepChoice choice) {
        String name = cell.name().toLowerCase(java.util.Locale.ROOT);
        boolean vectorizable = hidden % 4 == 0 && (cell != CellType.GRU || linearBeforeReset);
        if (!vectorizable || choice != StepChoice.AUTO) {
            return name + "_step_fwd";
        }
        return projSize == 0 ? name + "_step_fused" : name + "_step_fwd_vec4";
    }

    /**
     * Whether the commit of a step whose cell does not commit also ends the step: {@code
     * step_commit_advance} (its last block advances the step, as the fused step's does), one node
     * instead of v1's {@code step_commit} and {@code step_advance}, which V1 keeps.
     */
    static boolean commitAdvances(StepChoice choice) {
        return choice == StepChoice.AUTO;
    }

    /**
     * The persistent kernel's plan, or null when the rule does not pick it: an LSTM without
     * projection, a GRU (either reset form) or an Elman RNN, batch &lt;= 16, and its shared memory
     * ({@link #persistentSharedBytes}) within the per-block opt-in, with U = ceil(H /
     * multiprocessors) units per block. An F32 {@link #stateType} takes the F32 instance; a 16-bit
     * one (an F16/BF16 op under AUTO) the 16-bit instance (W_hh and h in 16 bits, mma.sync), which
     * also needs tensor cores (sm_80+) and H % 8 == 0 (h moves in 16-byte chunks). On an H100
     * (232,448 bytes, 132 multiprocessors) at B = 16: F32 up to H = 1092 (LSTM), 1242 (GRU), 1859
     * (Elman RNN); 16 bits up to 1552 (LSTM: its c on chip), 1568 (GRU) and 2208.
     */
    static PersistentPlan persistentPlan(RecurrentConfig c, int batch, DType storage, DeviceProperties props, StepChoice choice) {
        int units = persistentUnits(c, batch, storage, props, choice);
        if (units == 0) {
            return null;
        }
        return planIfFits(c.hiddenSize(), units, persistentSharedBytes(c.cell().gates(), units, c.hiddenSize(), batch,
                stateType(storage, choice)), props);
    }

    /**
     * The persistent backward's plan, or null when the rule does not pick it: the forward's rule
     * ({@link #persistentPlan}: batch &lt;= 16, no projection, tensor cores and H % 8 == 0 for a
     * 16-bit state, U = ceil(H / multiprocessors)) with the backward's shared memory ({@link
     * #persistentBackwardSharedBytes}) within the per-block opt-in. The backward stages a step's
     * gate gradients [B, G H] where the forward stages h [B, H], so it fits to a smaller H where G
     * &gt; 1: on an H100 at B = 16, F32 up to H = 660 (LSTM), 835 (GRU, either form), 1848 (Elman
     * RNN); 16 bits up to 1104 (LSTM), 1352 (GRU; 1344 with the reset gate first, whose two
     * segments of W_hh rows are each rounded up to 32 columns), 2784 (Elman RNN).
     */
    static PersistentPlan persistentBackwardPlan(RecurrentConfig c, int batch, DType storage, DeviceProperties props,
                                                 StepChoice choice) {
        int units = persistentUnits(c, batch, storage, props, choice);
        if (units == 0) {
            return null;
        }
        boolean resetFirst = c.cell() == CellType.GRU && !c.linearBeforeReset();
        return planIfFits(c.hiddenSize(), units, persistentBackwardSharedBytes(c.cell().gates(), units, c.hiddenSize(), batch,
                stateType(storage, choice), resetFirst), props);
    }

    /** The units per block both persistent rules share, or 0 where a bound other than shared memory rules them out. */
    private static int persistentUnits(RecurrentConfig c, int batch, DType storage, DeviceProperties props, StepChoice choice) {
        boolean projected = c.cell() == CellType.LSTM && c.projSize() > 0;
        if (choice != StepChoice.AUTO || projected || batch > PERSISTENT_MAX_BATCH) {
            return 0;
        }
        int h = c.hiddenSize();
        if (stateType(storage, choice) != DType.F32 && (props.computeMajor() < 8 || h % 8 != 0)) {
            return 0;
        }
        int sms = Math.max(1, props.multiprocessors());
        return (h + sms - 1) / sms;
    }

    private static PersistentPlan planIfFits(int hidden, int units, long bytes, DeviceProperties props) {
        return bytes > props.sharedMemoryPerBlockOptin() ? null : new PersistentPlan((hidden + units - 1) / units, units, (int) bytes);
    }

    /**
     * The persistent kernel's dynamic shared memory (cuda/recurrent/persistent.cuh), G gates, U
     * units per block, hidden H, batch B. F32: 4 x (G U H weights + B H staged state + G U B
     * projections + G U B prefetched gx + c). 16 bits: 2 x (M + 16) x S for the weights and the
     * staged state (M = G U rounded up to 16 rows, S = H rounded up to 16 plus 8 columns of padding,
     * the batch padded to the mma's 16), then 4 x (warps x M x 16 partial sums + G U B projections +
     * G U B prefetched gx + c). c is the LSTM's cell state, B U floats kept on chip for the whole
     * sequence (G = 4 only: GRU and the Elman RNN have none).
     */
    static long persistentSharedBytes(int gates, int units, int hidden, int batch, DType state) {
        long rows = (long) gates * units;
        long cellState = gates == CellType.LSTM.gates() ? (long) batch * units : 0;
        if (state == DType.F32) {
            return 4L * (rows * hidden + (long) batch * hidden + 2 * rows * batch + cellState);
        }
        long padded = (rows + 15) / 16 * 16;
        long stride = ((long) hidden + 15) / 16 * 16 + 8;
        return 2L * (padded + 16) * stride + 4L * ((long) (THREADS / 32) * padded * 16 + 2 * rows * batch + cellState);
    }

    /**
     * The persistent backward's dynamic shared memory (cuda/recurrent/persistent_bwd.cuh), G gates,
     * U units per block, hidden H, batch B, K = G H. F32: 4 x (U K transposed weights + B K staged
     * gate gradients + 4 B U pair values). 16 bits: 2 x ((U + B) x S + 8) for the weights, the staged
     * gradients and a zero chunk (S = K rounded up to 32 plus 8 columns of padding; with {@code
     * resetFirst}, 2H and H each rounded up to 32, plus 8), then 4 x (warps x 16 x NU partial sums + 4
     * B U pair values), NU = U rounded up to 8. The pair values are the projection, dh, dc and the
     * GRU's direct term.
     */
    static long persistentBackwardSharedBytes(int gates, int units, int hidden, int batch, DType state, boolean resetFirst) {
        long k = (long) gates * hidden;
        long pairValues = 4L * batch * units;
        if (state == DType.F32) {
            return 4L * ((units + batch) * k + pairValues);
        }
        long split = resetFirst ? 2L * hidden : k;
        long stride = (split + 31) / 32 * 32 + (k - split + 31) / 32 * 32 + 8;
        long columns = (units + 7L) / 8 * 8;
        return 2L * ((units + batch) * stride + 8) + 4L * ((long) (THREADS / 32) * 16 * columns + pairValues);
    }

    /**
     * The persistent backward of a cell (plus the {@link #stateType}'s suffix): {@code
     * lstm_persistent_bwd}, {@code gru_persistent_bwd} (linear_before_reset), {@code
     * gru_reset_first_persistent_bwd} (two products and two rounds of the step barrier a step) or
     * {@code rnn_persistent_bwd}.
     */
    static String persistentBackwardKernel(RecurrentConfig c) {
        return switch (c.cell()) {
            case LSTM -> "lstm_persistent_bwd";
            case GRU -> c.linearBeforeReset() ? "gru_persistent_bwd" : "gru_reset_first_persistent_bwd";
            case RNN -> "rnn_persistent_bwd";
        };
    }

    /**
     * The persistent kernel of a cell (plus the {@link #stateType}'s suffix): {@code lstm_persistent_fwd},
     * {@code gru_persistent_fwd} (linear_before_reset), {@code gru_reset_first_persistent_fwd} (the
     * reset gate first: two rounds of the step barrier a step, as n needs r*h of every unit) or
     * {@code rnn_persistent_fwd}.
     */
    static String persistentKernel(RecurrentConfig c) {
        return switch (c.cell()) {
            case LSTM -> "lstm_persistent_fwd";
            case GRU -> c.linearBeforeReset() ? "gru_persistent_fwd" : "gru_reset_first_persistent_fwd";
            case RNN -> "rnn_persistent_fwd";
        };
    }

    /**
     * Whether the plan's grid fits on the device at once, as a cooperative launch needs: the
     * occupancy the driver computes for the kernel (registers, shared memory) times the
     * multiprocessors. The rule above counts shared memory only; this asks the driver.
     */
    private boolean fitsAtOnce(long kernel, PersistentPlan plan) {
        long perSm = driver.maxActiveBlocksPerMultiprocessor(kernel, THREADS, plan.sharedBytes());
        return perSm * driver.properties().multiprocessors() >= plan.blocks();
    }

    private final Driver driver;
    private final Map<String, Long> functions = new java.util.concurrent.ConcurrentHashMap<>();
    private final long module;
    private final long util;
    private final DeviceCasts casts;

    RecurrentGpu(Driver driver) {
        this.driver = driver;
        this.module = driver.loadModule("recurrent");
        this.util = driver.loadModule("util");
        this.casts = new DeviceCasts(driver, this::utilFn);
    }

    static String suffix(DType dt) {
        return switch (dt) {
            case F32 -> "f32";
            case F16 -> "f16";
            case BF16 -> "bf16";
            default -> throw new SeqkException.DTypeMismatch("the GPU path stores F32, F16 or BF16, not " + dt
                    + " (F64 runs on the cpu backend)");
        };
    }

    /**
     * What one (layer, direction) pass keeps on the device for backward: raw [T*B, G*H] (the
     * pre-activations), c_new [T*B, H] (LSTM) and h W_hn^T + b_hn [T*B, H] (GRU with
     * linear_before_reset), in F32; no copy of a state (see {@link Saved}). All null in inference,
     * but raw for GRU's reset-first form, which reads r and z back from it.
     */
    record SlotTrace(DeviceTensor raw, DeviceTensor cNew, DeviceTensor hnLin) {
    }

    /**
     * The device state a forward leaves behind, released when the result is closed: each layer's
     * input and the last layer's output [T, B, nd*P] in the state type (backward rebuilds h_prev from
     * each layer's output), h0 [slots, B, P] in the state type and c0 [slots, B, H] in F32 (null:
     * zeros), the states before each entry's first step.
     */
    record Saved(RecurrentConfig config, DeviceScope scope, List<DeviceTensor> layerInputs, DeviceTensor output, SlotTrace[] traces,
                 DeviceTensor lengths, DeviceTensor h0, DeviceTensor c0, int steps, int batch) implements AutoCloseable {
        /** Layer {@code layer}'s output: the next layer's input, or the last layer's output. */
        DeviceTensor layerOutput(int layer) {
            return layer + 1 < layerInputs.size() ? layerInputs.get(layer + 1) : output;
        }
        @Override
        public void close() {
            scope.close();
        }
    }

    /**
     * Parameters prepared for this driver: F32 copies of every one (v1, the cells, backward), and
     * for F16/BF16 ops the storage dtype's copy of each weight the tensor-core forward multiplies
     * (W_ih, W_hh and W_hr of every layer and direction). Closing it frees them.
     */
    PreparedCopies prepare(RecurrentConfig c, Map<String, Tensor> params, DType dt) {
        suffix(dt);
        PreparedCopies prepared = new PreparedCopies(driver, this, this::utilFn);
        try {
            for (var e : params.entrySet()) {
                prepared.putF32(e.getKey(), e.getValue());
            }
            DType state = stateType(dt, StepChoice.AUTO);
            if (state != DType.F32) {
                for (String name : params.keySet()) {
                    if (name.startsWith("weight_ih_") || name.startsWith("weight_hh_") || name.startsWith("weight_hr_")) {
                        prepared.putNarrow(name, params.get(name), state);
                    }
                }
            }
            return prepared;
        } catch (RuntimeException e) {
            prepared.close();
            throw e;
        }
    }

    /** A parameter on the device in {@code type}: the prepared copy, or (unprepared) uploaded into {@code s}. */
    private static DeviceTensor param(PreparedCopies prepared, DeviceScope s, Map<String, Tensor> params, String name, DType type) {
        if (prepared == null) {
            return s.upload(params.get(name), type);
        }
        DeviceTensor t = prepared.get(name, type);
        if (t == null) {
            throw new IllegalStateException("prepared weights lack " + name + " in " + type + ": prepare() and the kernel choice disagree");
        }
        return t;
    }

    private PreparedCopies preparedHere(AutoCloseable prepared) {
        if (prepared == null) {
            return null;
        }
        if (!(prepared instanceof PreparedCopies p) || p.owner() != this) {
            throw new SeqkException.InvalidConfig(driver.name() + ": these prepared weights were made for another backend");
        }
        return p;
    }

    /**
     * The host forward: inputs uploaded, {@link #forwardOnStream} on stream 0, outputs downloaded.
     * Training keeps the saved state (and the buffers it reads) for backward; inference
     * ({@code training} false) computes no trace and frees everything before returning.
     */
    RecurrentResult forward(RecurrentConfig c, Map<String, Tensor> params, AutoCloseable preparedWeights, Tensor x, Tensor h0,
                            Tensor c0, int[] lengths, boolean training) {
        PreparedCopies prepared = preparedHere(preparedWeights);
        DType dt = x.dtype();
        suffix(dt);
        int steps = (int) (c.batchFirst() ? x.size(1) : x.size(0));
        int batch = (int) (c.batchFirst() ? x.size(0) : x.size(1));
        Linear.checkRows(driver.name(), "seq_len x batch", (long) steps * batch);
        DeviceScope scope = new DeviceScope(driver);
        DeviceScope temp = new DeviceScope(driver);
        try (PendingResults results = new PendingResults()) {
            Tensor timeMajor = c.batchFirst() ? x.permute(1, 0, 2) : x;
            DType state = stateType(dt, stepChoice);
            DeviceScope initial = training ? scope : temp;  // backward reads h0 and c0 at each entry's first step
            ForwardInputs in = new ForwardInputs(scope.upload(timeMajor, state), h0 == null ? null : initial.upload(h0, state),
                    c0 == null ? null : initial.upload(c0, DType.F32),
                    scope.uploadAndClose(Tensor.of(DType.I32, toDoubles(lengths), batch)));
            ForwardOutputs o = forwardOnStream(c, params, prepared, dt, steps, batch, in, scope, temp, 0, training);
            Tensor hn = results.keep(download(o.hn(), dt));
            Tensor cn = results.keep(o.cn() == null ? null : download(o.cn(), dt));
            Tensor output = results.keep(Tensor.allocate(dt, steps, batch, c.outputSize()));
            copyInto(o.output(), output);
            if (c.batchFirst()) {
                try (Tensor timeMajorOut = output) {
                    output = results.keep(timeMajorOut.permute(1, 0, 2).to(dt));
                }
            }
            temp.close();
            if (!training) {
                scope.close();
            }
            results.handOver();
            return new RecurrentResult(output, hn, cn, o.saved());
        } catch (RuntimeException e) {
            temp.closeAfterFailure(0, e);  // waits for the work that may still use either scope
            scope.closeAfterFailure(0, e);
            throw e;
        }
    }

    /**
     * A forward's inputs on the device, as the kernels read them: the layer-0 input [T, B, in]
     * (time-major, contiguous) and h0 [slots, B, P] in the {@link #stateType}, c0 [slots, B, H] in
     * F32 (null: zeros), and the lengths [B] as I32.
     */
    record ForwardInputs(DeviceTensor input, DeviceTensor h0, DeviceTensor c0, DeviceTensor lengths) {
    }

    /**
     * A forward's results on the device: output [T, B, out] (time-major) and hn [slots, B, P] in the
     * {@link #stateType}, cn [slots, B, H] in F32 or null, and what backward needs (null in inference).
     */
    record ForwardOutputs(DeviceTensor output, DeviceTensor hn, DeviceTensor cn, Saved saved) {
    }

    /**
     * The forward on the device, every copy, memset, GEMM and launch issued on {@code stream} in order
     * after the work already there, nothing waited for: what backward needs goes into {@code keep}
     * (the Saved it returns owns it), everything else, outputs included, into {@code temp}. The
     * host path passes stream 0 and a temp it frees after downloading; the device path passes the
     * caller's stream and the result's scope as both. Inference ({@code training} false) allocates
     * no trace and the cells write none (they skip a null trace buffer; GRU's split form still
     * gets raw, which its second kernel reads r and z from); it returns no Saved.
     */
    ForwardOutputs forwardOnStream(RecurrentConfig c, Map<String, Tensor> params, PreparedCopies prepared, DType dt, int steps,
                                   int batch, ForwardInputs in, DeviceScope keep, DeviceScope temp, long stream,
                                   boolean training) {
        int nd = c.numDirections();
        int p = c.stateSize();
        int h = c.hiddenSize();
        int gh = c.cell().gates() * h;
        int slots = c.numLayers() * nd;
        boolean lstm = c.cell() == CellType.LSTM;
        boolean gruSplit = c.cell() == CellType.GRU && !c.linearBeforeReset();
        DType state = stateType(dt, stepChoice);
        DeviceTensor input = in.input();
        DeviceTensor hn = temp.allocate(state, slots, batch, p);
        DeviceTensor cn = lstm ? temp.allocate(DType.F32, slots, batch, h) : null;
        List<DeviceTensor> layerInputs = new java.util.ArrayList<>();
        SlotTrace[] traces = new SlotTrace[slots];
        // GRU's reset-first form reads r and z back from raw within a step: inference gives every
        // slot one scratch buffer (the slots run one after another on the stream).
        DeviceTensor scratchRaw = !training && gruSplit ? temp.allocate(DType.F32, (long) steps * batch, gh) : null;
        for (int layer = 0; layer < c.numLayers(); layer++) {
            layerInputs.add(input);
            int inWidth = c.layerInputSize(layer);
            DeviceTensor out = (training ? keep : temp).allocate(state, steps, batch, (long) nd * p);  // backward reads it
            for (int d = 0; d < nd; d++) {
                int slot = layer * nd + d;
                String sfx = c.suffix(layer, d);
                DeviceTensor wih = param(prepared, temp, params, "weight_ih_" + sfx, state);
                DeviceTensor whh = param(prepared, temp, params, "weight_hh_" + sfx, state);
                DeviceTensor bih = c.bias() ? param(prepared, temp, params, "bias_ih_" + sfx, DType.F32) : null;
                DeviceTensor bhh = c.bias() ? param(prepared, temp, params, "bias_hh_" + sfx, DType.F32) : null;
                DeviceTensor whr = c.projSize() > 0 ? param(prepared, temp, params, "weight_hr_" + sfx, state) : null;
                DeviceTensor peep = c.peepholes() ? param(prepared, temp, params, "weight_peephole_" + sfx, DType.F32) : null;
                DeviceTensor gx = temp.allocate(DType.F32, (long) steps * batch, gh);
                linear(input, wih, gx, steps * batch, inWidth, gh, gh, stream, tf32(c, dt));
                DeviceTensor hState = initialState(temp, in.h0(), state, slot, batch, p, stream);
                SlotTrace tr = training ? new SlotTrace(keep.allocate(DType.F32, (long) steps * batch, gh),
                        lstm ? keep.allocate(DType.F32, (long) steps * batch, h) : null,
                        c.cell() == CellType.GRU && c.linearBeforeReset() ? keep.allocate(DType.F32, (long) steps * batch, h) : null)
                        : new SlotTrace(scratchRaw, null, null);
                traces[slot] = tr;
                DeviceTensor cState = lstm ? initialState(temp, in.c0(), DType.F32, slot, batch, h, stream) : null;
                runDirection(c, dt, d, steps, batch, in.lengths(), gx, whh, bih, bhh, whr, peep, hState, cState, tr, out, temp,
                        tf32(c, dt), stream);
                driver.copyDeviceToDeviceAsync(hn.select(0, slot).pointer(), hState.pointer(), hState.byteSize(), stream);
                if (cState != null) {
                    driver.copyDeviceToDeviceAsync(cn.select(0, slot).pointer(), cState.pointer(), cState.byteSize(), stream);
                }
            }
            input = out;
        }
        Saved saved = training ? new Saved(c, keep, layerInputs, input, traces, in.lengths(), in.h0(), in.c0(), steps, batch) : null;
        return new ForwardOutputs(input, hn, cn, saved);
    }

    /**
     * {@link DeviceRecurrent#forward}: x and h0 (the op's dtype, any strides) are copied contiguous
     * into the state type (one gather, or one copy; batch first: transposed on the way) and c0
     * gathered into F32 on the device, {@link #forwardOnStream} runs on the caller's stream with the
     * result's scope for everything, and the outputs come back in the op's dtype and layout
     * ({@link #outputInOpLayout}). Nothing is waited for or freed unless the call fails.
     */
    DeviceRecurrentResult forwardOnDevice(RecurrentConfig c, AutoCloseable preparedWeights, DeviceTensor x, DeviceTensor h0,
                                          DeviceTensor c0, int[] lengths, DeviceTensor into, long stream, boolean training) {
        DeviceScope scope = new DeviceScope(driver);
        try {
            return forwardIssued(c, preparedWeights, x, h0, c0, lengths, into, scope, stream, training);
        } catch (RuntimeException e) {
            scope.closeAfterFailure(stream, e);
            throw e;
        }
    }

    /**
     * {@link #forwardOnDevice}'s work, issued on {@code stream} with {@code scope} for everything; the
     * lengths are uploaded unless the scope replays a run that uploaded them.
     */
    private DeviceRecurrentResult forwardIssued(RecurrentConfig c, AutoCloseable preparedWeights, DeviceTensor x, DeviceTensor h0,
                                                DeviceTensor c0, int[] lengths, DeviceTensor into, DeviceScope scope, long stream,
                                                boolean training) {
        PreparedCopies prepared = preparedHere(preparedWeights);
        if (prepared == null) {
            throw new IllegalStateException("a device forward without device copies of its weights");
        }
        DType dt = x.dtype();
        suffix(dt);
        int steps = (int) x.shape()[c.batchFirst() ? 1 : 0];
        int batch = (int) x.shape()[c.batchFirst() ? 0 : 1];
        Linear.checkRows(driver.name(), "seq_len x batch", (long) steps * batch);
        DeviceTensor lens = scope.replaying() ? scope.allocate(DType.I32, batch)  // the recorded run's upload: the same lengths
                : scope.uploadOnStream(Tensor.of(DType.I32, toDoubles(lengths), batch), stream);
        DType state = stateType(dt, stepChoice);
        ForwardInputs in = new ForwardInputs(copied(scope, c.batchFirst() ? x.permute(1, 0, 2) : x, state, stream),
                h0 == null ? null : copied(scope, h0, state, stream), c0 == null ? null : casts.gathered(scope, c0, stream), lens);
        ForwardOutputs o = forwardOnStream(c, Map.of(), prepared, dt, steps, batch, in, scope, scope, stream, training);
        DeviceTensor output = outputInOpLayout(scope, c, o.output(), dt, into, training, stream);
        return new DeviceRecurrentResult(output, casts.rounded(scope, o.hn(), dt, stream),
                o.cn() == null ? null : casts.rounded(scope, o.cn(), dt, stream), training ? o.saved() : scope);
    }

    /**
     * {@link DeviceRecurrent#backward}: dOutput, dHn and dCn (the op's dtype, any strides; null for
     * zeros) are gathered into F32 on the device, {@link #backwardOnStream} runs on the caller's
     * stream, and the gradients are rounded to the op's dtype (dx transposed back for batch first).
     * Everything lives in the gradients until they are closed.
     */
    DeviceRecurrentGradients backwardOnDevice(RecurrentConfig c, AutoCloseable preparedWeights, DeviceRecurrentResult forward,
                                              DeviceTensor dOutput, DeviceTensor dHn, DeviceTensor dCn, long stream) {
        PreparedCopies prepared = preparedHere(preparedWeights);
        if (prepared == null) {
            throw new IllegalStateException("a device backward without device copies of its weights");
        }
        Saved saved = savedFor(c, forward.saved());
        DType dt = forward.output().dtype();
        DeviceScope scope = new DeviceScope(driver);
        try {
            BackwardOutputs o = backwardOnStream(c, Map.of(), prepared, saved, dt,
                    dOutput == null ? null : casts.gathered(scope, c.batchFirst() ? dOutput.permute(1, 0, 2) : dOutput, stream),
                    dHn == null ? null : casts.gathered(scope, dHn, stream), dCn == null ? null : casts.gathered(scope, dCn, stream), scope, stream);
            DeviceTensor dx = o.dx();
            if (c.batchFirst()) {
                dx = casts.gathered(scope, dx.permute(1, 0, 2), stream);
            }
            Map<String, DeviceTensor> params = new java.util.LinkedHashMap<>();
            for (var e : o.params().entrySet()) {
                params.put(e.getKey(), casts.rounded(scope, e.getValue(), dt, stream));
            }
            return new DeviceRecurrentGradients(casts.rounded(scope, dx, dt, stream), casts.rounded(scope, o.dh0(), dt, stream),
                    o.dc0() == null ? null : casts.rounded(scope, o.dc0(), dt, stream), params, scope);
        } catch (RuntimeException e) {
            scope.closeAfterFailure(stream, e);
            throw e;
        }
    }

    /**
     * The forward's output (time-major, contiguous, in the state type: F32, or the op's 16-bit dtype)
     * in the op's dtype and layout, contiguous: written into the caller's buffer when there is one,
     * else the output itself when it already is (time-major, the op's dtype) and nothing is kept for
     * backward, else a new tensor of the scope. Training never hands out the output itself: backward
     * rebuilds h_prev from it, and the caller may write its result. A change of layout is one gather
     * when the output is already in the op's dtype (or the op is F32); an F32 state of a 16-bit op is
     * gathered and then rounded.
     */
    private DeviceTensor outputInOpLayout(DeviceScope scope, RecurrentConfig c, DeviceTensor output, DType dt, DeviceTensor into,
                                          boolean training, long stream) {
        boolean asIs = !c.batchFirst() && output.dtype() == dt;
        if (into == null) {
            if (asIs) {
                return training ? copied(scope, output, dt, stream) : output;
            }
            return casts.laidOut(scope, c.batchFirst() ? output.permute(1, 0, 2) : output, dt, stream);
        }
        if (asIs) {
            driver.copyDeviceToDeviceAsync(into.pointer(), output.pointer(), output.byteSize(), stream);
        } else {
            casts.copyInto(scope, c.batchFirst() ? output.permute(1, 0, 2) : output, into, stream);
        }
        return into;
    }

    /**
     * A contiguous copy of t (the op's dtype, any strides) in {@code type} (the op's dtype or F32), in
     * {@code scope}, made on the stream: one device copy when t is contiguous and already of that
     * type, else one gather.
     */
    private DeviceTensor copied(DeviceScope scope, DeviceTensor t, DType type, long stream) {
        if (t.dtype() == type && t.isContiguous()) {
            DeviceTensor copy = scope.allocate(type, t.shape());
            driver.copyDeviceToDeviceAsync(copy.pointer(), t.pointer(), t.byteSize(), stream);
            return copy;
        }
        return casts.laidOut(scope, t, type, stream);
    }

    /** A slot's initial state [B, width] in {@code type}: a copy of its slice of {@code all} [slots, B, width] (of that type), or zeros. */
    private DeviceTensor initialState(DeviceScope temp, DeviceTensor all, DType type, int slot, int batch, int width, long stream) {
        DeviceTensor state = temp.allocate(type, batch, width);
        if (all == null) {
            driver.memsetAsync(state.pointer(), 0, Math.max(1, state.byteSize()), stream);
        } else {
            driver.copyDeviceToDeviceAsync(state.pointer(), all.select(0, slot).pointer(), state.byteSize(), stream);
        }
        return state;
    }

    private void runDirection(RecurrentConfig c, DType dt, int d, int steps, int batch, DeviceTensor lens, DeviceTensor gx,
                              DeviceTensor whh, DeviceTensor bih, DeviceTensor bhh, DeviceTensor whr,
                              DeviceTensor peep, DeviceTensor hState, DeviceTensor cState, SlotTrace tr, DeviceTensor out,
                              DeviceScope temp, boolean tf32, long stream) {
        int h = c.hiddenSize();
        int p = c.stateSize();
        int gh = c.cell().gates() * h;
        boolean gruSplit = c.cell() == CellType.GRU && !c.linearBeforeReset();
        List<Activation> act = c.activations().get(d);
        DType state = hState.dtype();
        String stateSuffix = "_" + suffix(state);
        String cellKernel = stepCellKernel(c.cell(), h, c.projSize(), c.linearBeforeReset(), stepChoice);
        boolean fused = cellKernel.endsWith("_fused");
        DeviceTensor ghStep = temp.allocate(DType.F32, batch, gh);
        DeviceTensor hnew = fused ? null : temp.allocate(state, batch, p);  // the fused step writes h_state in place
        DeviceTensor m = whr != null ? temp.allocate(state, batch, h) : null;  // the projection GEMM's operand
        DeviceTensor resetHidden = gruSplit ? temp.allocate(state, batch, h) : null;  // r*h, W_hn's operand
        Dim3 cellGrid = Dim3.of(blocks((long) batch * h));
        Dim3 stepGrid = fused || cellKernel.endsWith("_vec4") ? Dim3.of(blocks((long) batch * h / 4)) : cellGrid;
        Dim3 stateGrid = Dim3.of(blocks((long) batch * p));
        float clip = (float) c.clip();  // +infinity (no clip) passes through clip_to unchanged, NaN and infinities included
        StepChoice choice = stepChoice;  // read once: the plan's sizes and the kernel's state type must agree
        PersistentPlan plan = stateType(dt, choice) == state ? persistentPlan(c, batch, dt, driver.properties(), choice) : null;
        String persistentKernel = plan != null ? persistentKernel(c) : null;
        if (plan != null && !fitsAtOnce(kernel(persistentKernel + stateSuffix), plan)) {
            plan = null;  // a smaller GPU than the rule assumed: the per-step loop instead
        }
        if (plan != null) {
            DeviceTensor hBuf = temp.allocate(state, 2, batch, h);
            driver.copyDeviceToDeviceAsync(hBuf.pointer(), hState.pointer(), hState.byteSize(), stream);
            // The step barrier's counter (persistent.cuh's step_arrive/step_wait) starts at zero on every launch,
            // so the same launch can be captured and replayed.
            DeviceTensor arrivals = temp.allocate(DType.I32, 1);
            driver.memsetAsync(arrivals.pointer(), 0, arrivals.byteSize(), stream);
            KernelArgs args = new KernelArgs().pointer(gx.pointer()).pointer(whh.pointer()).pointer(ptr(bih)).pointer(ptr(bhh));
            int reversed = c.direction().isReversed(d) ? 1 : 0;
            if (c.cell() == CellType.LSTM) {
                args.pointer(ptr(peep)).pointer(hBuf.pointer()).pointer(cState.pointer())
                        .pointer(ptr(tr.cNew())).pointer(ptr(tr.raw())).pointer(out.pointer())
                        .pointer(lens.pointer()).pointer(arrivals.pointer()).i32(steps).i32(reversed).i32(batch).i32(h)
                        .i32(plan.unitsPerBlock()).i32(c.outputSize()).i32(d * p).i32(c.inputForget() ? 1 : 0).f32(clip);
            } else if (gruSplit) {
                args.pointer(hBuf.pointer()).pointer(resetHidden.pointer()).pointer(ptr(tr.raw()))
                        .pointer(out.pointer()).pointer(lens.pointer()).pointer(arrivals.pointer()).i32(steps).i32(reversed).i32(batch).i32(h)
                        .i32(plan.unitsPerBlock()).i32(c.outputSize()).i32(d * p).f32(clip);
            } else if (c.cell() == CellType.GRU) {
                args.pointer(hBuf.pointer()).pointer(ptr(tr.raw())).pointer(ptr(tr.hnLin()))
                        .pointer(out.pointer()).pointer(lens.pointer()).pointer(arrivals.pointer()).i32(steps).i32(reversed).i32(batch).i32(h)
                        .i32(plan.unitsPerBlock()).i32(c.outputSize()).i32(d * p).f32(clip);
            } else {
                args.pointer(hBuf.pointer()).pointer(ptr(tr.raw())).pointer(out.pointer()).pointer(lens.pointer())
                        .pointer(arrivals.pointer()).i32(steps).i32(reversed).i32(batch).i32(h).i32(plan.unitsPerBlock()).i32(c.outputSize()).i32(d * p)
                        .f32(clip);
            }
            for (int a = 0; a < c.cell().activationCount(); a++) {
                args.i32(act.get(a).kind().ordinal()).f32((float) act.get(a).alpha()).f32((float) act.get(a).beta());
            }
            boolean launched = true;
            try {
                driver.launchCooperative(kernel(persistentKernel + stateSuffix), Dim3.of(plan.blocks()), Dim3.of(THREADS), plan.sharedBytes(), stream,
                        args);
            } catch (DriverException e) {
                if (e.status() != DriverException.COOPERATIVE_LAUNCH_TOO_LARGE) {
                    throw e;
                }
                launched = false;  // fewer SMs than the device reports (MPS): nothing ran; the per-step loop instead
            }
            if (launched) {
                driver.copyDeviceToDeviceAsync(hState.pointer(), hBuf.select(0, steps % 2).pointer(), hState.byteSize(), stream);
                return;
            }
        }
        // One step, issued on `stream`; the kernels read the step index from step[0] and the last
        // launch (step_advance, or the fused step's last block, which counts the blocks done in
        // step[1]) advances it, so the same step can be captured once and launched for every t.
        DeviceTensor step = temp.allocate(DType.I32, 2);
        driver.memsetAsync(step.pointer(), 0, step.byteSize(), stream);
        int reversed = c.direction().isReversed(d) ? 1 : 0;
        java.util.function.LongConsumer oneStep = on -> {
            // h W_hh^T for every gate, except GRU's n rows when the reset gate comes first.
            linear(hState, whh, ghStep, batch, p, gruSplit ? 2 * h : gh, gh, on, tf32);
            if (fused) {
                // The cell, step_commit and step_advance in one kernel: h_state in place and the output row.
                KernelArgs fa = new KernelArgs().pointer(gx.pointer()).pointer(ghStep.pointer()).pointer(ptr(bih)).pointer(ptr(bhh));
                switch (c.cell()) {
                    case LSTM -> fa.pointer(ptr(peep)).pointer(cState.pointer()).pointer(ptr(tr.cNew()))
                            .pointer(ptr(tr.raw())).pointer(hState.pointer());
                    case GRU -> fa.pointer(hState.pointer()).pointer(ptr(tr.raw())).pointer(ptr(tr.hnLin()));
                    case RNN -> fa.pointer(ptr(tr.raw())).pointer(hState.pointer());
                }
                fa.pointer(out.pointer()).pointer(lens.pointer()).pointer(step.pointer()).i32(steps)
                        .i32(reversed).i32(batch).i32(h).i32(c.outputSize()).i32(d * p);
                if (c.cell() == CellType.LSTM) {
                    fa.i32(c.inputForget() ? 1 : 0);
                }
                fa.f32(clip);
                int activations = switch (c.cell()) {
                    case LSTM -> 3;
                    case GRU -> 2;
                    case RNN -> 1;
                };
                for (int a = 0; a < activations; a++) {
                    fa.i32(act.get(a).kind().ordinal()).f32((float) act.get(a).alpha()).f32((float) act.get(a).beta());
                }
                driver.launch(kernel(cellKernel + stateSuffix), stepGrid, Dim3.of(THREADS), 0, on, fa);
                return;
            }
            KernelArgs args = new KernelArgs().pointer(gx.pointer()).pointer(ghStep.pointer()).pointer(ptr(bih)).pointer(ptr(bhh));
            switch (c.cell()) {
                case LSTM -> driver.launch(kernel(cellKernel + stateSuffix), stepGrid, Dim3.of(THREADS), 0, on, args.pointer(ptr(peep))
                        .pointer(cState.pointer()).pointer(ptr(tr.cNew()))
                        .pointer(ptr(tr.raw())).pointer(m != null ? m.pointer() : hnew.pointer()).pointer(lens.pointer())
                        .pointer(step.pointer()).i32(steps).i32(reversed).i32(batch).i32(h).i32(c.inputForget() ? 1 : 0)
                        .f32(clip)
                        .i32(act.get(0).kind().ordinal()).f32((float) act.get(0).alpha()).f32((float) act.get(0).beta())
                        .i32(act.get(1).kind().ordinal()).f32((float) act.get(1).alpha()).f32((float) act.get(1).beta())
                        .i32(act.get(2).kind().ordinal()).f32((float) act.get(2).alpha()).f32((float) act.get(2).beta()));
                case GRU -> {
                    if (gruSplit) {
                        driver.launch(kernel("gru_reset_fwd" + stateSuffix), cellGrid, Dim3.of(THREADS), 0, on, new KernelArgs()
                                .pointer(gx.pointer()).pointer(ghStep.pointer()).pointer(ptr(bih)).pointer(ptr(bhh))
                                .pointer(hState.pointer()).pointer(ptr(tr.raw())).pointer(resetHidden.pointer())
                                .pointer(lens.pointer()).pointer(step.pointer()).i32(steps).i32(reversed).i32(batch).i32(h).f32(clip)
                                .i32(act.get(0).kind().ordinal()).f32((float) act.get(0).alpha()).f32((float) act.get(0).beta()));
                        linear(resetHidden, whh.narrow(0, 2L * h, h), ghStep.narrow(1, 2L * h, h), batch, h, h, gh, on,
                                tf32);
                    }
                    // v1's cell (a vectorizable GRU runs as a fused step), which takes both forms
                    args.pointer(hState.pointer()).pointer(ptr(tr.raw())).pointer(ptr(tr.hnLin())).pointer(hnew.pointer())
                            .pointer(lens.pointer()).pointer(step.pointer()).i32(steps).i32(reversed).i32(batch).i32(h)
                            .i32(c.linearBeforeReset() ? 1 : 0);
                    driver.launch(kernel(cellKernel + stateSuffix), stepGrid, Dim3.of(THREADS), 0, on, args.f32(clip)
                            .i32(act.get(0).kind().ordinal()).f32((float) act.get(0).alpha()).f32((float) act.get(0).beta())
                            .i32(act.get(1).kind().ordinal()).f32((float) act.get(1).alpha()).f32((float) act.get(1).beta()));
                }
                case RNN -> driver.launch(kernel(cellKernel + stateSuffix), stepGrid, Dim3.of(THREADS), 0, on, args
                        .pointer(ptr(tr.raw())).pointer(hnew.pointer()).pointer(lens.pointer()).pointer(step.pointer())
                        .i32(steps).i32(reversed).i32(batch).i32(h).f32(clip)
                        .i32(act.get(0).kind().ordinal()).f32((float) act.get(0).alpha()).f32((float) act.get(0).beta()));
            }
            if (m != null) {
                linear(m, whr, hnew, batch, h, p, p, on, tf32);
            }
            boolean advances = commitAdvances(stepChoice);
            driver.launch(kernel((advances ? "step_commit_advance" : "step_commit") + stateSuffix), stateGrid, Dim3.of(THREADS), 0, on,
                    new KernelArgs().pointer(hnew.pointer()).pointer(hState.pointer()).pointer(out.pointer())
                            .pointer(lens.pointer()).pointer(step.pointer()).i32(steps).i32(reversed).i32(batch).i32(p)
                            .i32(c.outputSize()).i32(d * p));
            if (!advances) {
                driver.launch(kernel("step_advance"), Dim3.of(1), Dim3.of(1), 0, on, new KernelArgs().pointer(step.pointer()));
            }
        };
        runSteps(steps, oneStep, stream, temp);
    }

    /**
     * Runs {@code oneStep} {@code steps} times, in order after the work on {@code stream} and before
     * whatever the caller issues there next, without waiting: captured once as a CUDA graph on a
     * stream of its own (ordered against {@code stream} by events both ways) and launched per step,
     * one launch instead of the step's GEMMs and kernels; V1, and the run and capture of a
     * whole-sequence graph ({@link DeviceScope#wholeGraph}), issue every step on {@code stream}
     * directly. The stream, events and graph are released with {@code owner}.
     */
    private void runSteps(int steps, java.util.function.LongConsumer oneStep, long stream, DeviceScope owner) {
        if (stepChoice != StepChoice.AUTO || owner.wholeGraph()) {  // a whole-sequence graph cannot nest a capture
            for (int s = 0; s < steps; s++) {
                oneStep.accept(stream);
            }
            return;
        }
        StepStream own = stepStream(owner);
        driver.recordEvent(own.before(), stream);
        driver.waitEvent(own.stream(), own.before());
        long graph = captured(own.stream(), () -> oneStep.accept(own.stream()));
        owner.release(() -> driver.destroyGraph(graph));
        for (int s = 0; s < steps; s++) {
            driver.launchGraph(graph, own.stream());
        }
        driver.recordEvent(own.after(), own.stream());
        driver.waitEvent(stream, own.after());
    }

    /** The graph of {@code work} issued on {@code stream} under capture; a failed capture is ended and its graph destroyed. */
    private long captured(long stream, Runnable work) {
        driver.beginCapture(stream);
        try {
            work.run();
        } catch (Throwable e) {  // an Error too: a capture left open would fail the thread's later driver calls
            try {
                driver.destroyGraph(driver.endCapture(stream));
            } catch (RuntimeException endFailed) {
                e.addSuppressed(endFailed);
            }
            throw e;
        }
        return driver.endCapture(stream);
    }

    /** A stream of the GPU path's own and its two ordering events: made once, reused by call after call, never destroyed. */
    private record StepStream(long stream, long before, long after) {
    }

    /**
     * Idle step streams by the driver that owns them ({@link Driver#base}): shared by every GPU path
     * over that driver (any number of backends, wrappers included), so their number is the most
     * per-step loops that ever ran at once, never one per backend or call.
     */
    private static final Map<Driver, java.util.concurrent.ConcurrentLinkedDeque<StepStream>> IDLE_STEP_STREAMS =
            new java.util.concurrent.ConcurrentHashMap<>();

    /**
     * An idle step stream, or a new one, lent to {@code owner} until it closes (so its work is done
     * first: the caller's synchronize, or the failure path's). Reusing them keeps calls free of
     * stream and event creation and destruction, and leaves the bindings no destroyed handles to
     * confuse with a framework's.
     */
    private StepStream stepStream(DeviceScope owner) {
        StepStream lent = borrowStepStream();
        owner.lend(lent.stream(), () -> giveBack(lent));
        return lent;
    }

    /** An idle step stream, or a new one; the caller gives it back ({@link #giveBack}) once its work is done or it was only captured. */
    private StepStream borrowStepStream() {
        StepStream s = idleStepStreams().poll();
        if (s == null) {
            long stream = driver.createStream();
            long before;
            long after;
            try {
                before = driver.createEvent();
                try {
                    after = driver.createEvent();
                } catch (RuntimeException e) {
                    driver.destroyEvent(before);
                    throw e;
                }
            } catch (RuntimeException e) {
                driver.destroyStream(stream);
                throw e;
            }
            s = new StepStream(stream, before, after);
        }
        return s;
    }

    private void giveBack(StepStream s) {
        idleStepStreams().push(s);
    }

    private java.util.concurrent.ConcurrentLinkedDeque<StepStream> idleStepStreams() {
        return IDLE_STEP_STREAMS.computeIfAbsent(driver.base(), d -> new java.util.concurrent.ConcurrentLinkedDeque<>());
    }

    /**
     * A device forward captured as one graph ({@link DeviceRecurrentGraph}): {@code scope} owns every
     * buffer it reads and writes, {@code result}'s tensors included, and {@code result} frees nothing
     * when closed.
     */
    record WholeGraph(long graph, DeviceScope scope, DeviceRecurrentResult result) implements AutoCloseable {
        @Override
        public void close() {
            try {
                scope.driver().destroyGraph(graph);
            } finally {
                scope.close();
            }
        }
    }

    /**
     * {@link #forwardOnDevice} run once on {@code stream} (its results are this call's) and then
     * captured as one graph: the second run is issued under capture on a step stream with a scope
     * that replays the first run's allocations ({@link DeviceScope#replaying}), so the graph reads
     * and writes the first run's memory and nothing is allocated during the capture. Both runs issue
     * the per-step loop step by step (no nested graph). The lengths are uploaded by the first run
     * only: the graph holds no host memory.
     */
    WholeGraph forwardCaptured(RecurrentConfig c, AutoCloseable preparedWeights, DeviceTensor x, DeviceTensor h0, DeviceTensor c0,
                               int[] lengths, DeviceTensor into, long stream, boolean training) {
        DeviceScope scope = DeviceScope.forWholeGraph(driver);
        try {
            forwardIssued(c, preparedWeights, x, h0, c0, lengths, into, scope, stream, training);
            DeviceScope replay = DeviceScope.replaying(scope);
            StepStream own = borrowStepStream();
            try {
                DeviceRecurrentResult[] result = new DeviceRecurrentResult[1];
                long graph = captured(own.stream(),
                        () -> result[0] = forwardIssued(c, preparedWeights, x, h0, c0, lengths, into, replay, own.stream(), training));
                if (!replay.replayedAll()) {
                    driver.destroyGraph(graph);
                    throw new IllegalStateException("the captured run allocated less than the recorded run: its graph would not own its memory");
                }
                return new WholeGraph(graph, scope, result[0]);
            } finally {
                giveBack(own);
            }
        } catch (Throwable e) {  // an Error too: the first run's memory is freed, not left to the Cleaner
            scope.closeAfterFailure(stream, e);
            throw e;
        }
    }

    /**
     * Backward through time, all in F32 (saved inputs cast once), mirroring
     * cpu/RecurrentReference.backward; gradients are rounded to the forward's dtype once at the end.
     */
    RecurrentGradients backward(RecurrentConfig c, Map<String, Tensor> params, AutoCloseable preparedWeights, RecurrentResult forward,
                                Tensor dOutput, Tensor dHn, Tensor dCn) {
        PreparedCopies prepared = preparedHere(preparedWeights);
        Saved saved = savedFor(c, forward.saved());
        DType dt = forward.output().dtype();
        DeviceScope s = new DeviceScope(driver);
        try (PendingResults results = new PendingResults()) {
            BackwardOutputs o = backwardOnStream(c, params, prepared, saved, dt,
                    dOutput == null ? null : s.upload(c.batchFirst() ? dOutput.permute(1, 0, 2) : dOutput, DType.F32),
                    dHn == null ? null : s.upload(dHn, DType.F32), dCn == null ? null : s.upload(dCn, DType.F32), s, 0);
            Tensor dh0 = results.keep(download(o.dh0(), dt));
            Tensor dc0 = results.keep(o.dc0() == null ? null : download(o.dc0(), dt));
            Tensor dxTimeMajor = results.keep(Tensor.allocate(dt, saved.steps(), saved.batch(), c.inputSize()));
            copyInto(o.dx(), dxTimeMajor);
            Tensor dx = dxTimeMajor;
            if (c.batchFirst()) {
                try (Tensor timeMajor = dxTimeMajor) {
                    dx = results.keep(timeMajor.permute(1, 0, 2).to(dt));
                }
            }
            Map<String, Tensor> grads = new java.util.LinkedHashMap<>();
            o.params().forEach((name, g) -> grads.put(name, results.keep(download(g, dt))));
            s.close();
            results.handOver();
            return new RecurrentGradients(dx, dh0, dc0, grads);
        } catch (RuntimeException e) {
            s.closeAfterFailure(0, e);
            throw e;
        }
    }

    /** The device state a forward saved, checked to come from this backend and an op of this configuration. */
    private Saved savedFor(RecurrentConfig c, Object state) {
        if (!(state instanceof Saved saved)) {
            throw new SeqkException.Unsupported(driver.name() + ": this forward result was not made by the " + driver.name()
                    + " backend (or was closed)");
        }
        Driver made = saved.scope().driver();
        if (made != driver) {
            String where = made.name().equals(driver.name()) ? "another " + made.name() + " driver object" : made.name();
            throw new SeqkException.InvalidConfig(c.cell().name().toLowerCase(java.util.Locale.ROOT) + ": this forward result was made"
                    + " on " + where + ", not on this op's " + driver.name() + " backend; run backward with the op that made it");
        }
        RecurrentConfig config = saved.config();
        RecurrentConfig asMade = new RecurrentConfig(config.cell(), config.inputSize(), config.hiddenSize(), config.numLayers(),
                config.direction(), config.batchFirst(), config.bias(), config.projSize(), config.linearBeforeReset(), config.peepholes(),
                config.inputForget(), config.clip(), config.activations(), c.allowTf32());
        if (!asMade.equals(c)) {
            throw new SeqkException.InvalidConfig(c.cell().name().toLowerCase(java.util.Locale.ROOT)
                    + ": this forward result was made by an op of another configuration (" + config + "); run backward with that op");
        }
        return saved;
    }

    /**
     * One (layer, direction)'s backward through time as one cooperative launch of {@link
     * #persistentBackwardKernel} (in place of the per-step loop: step_grad_in, the cell's backward,
     * the dh GEMM and step_grad_out a step) when {@link #persistentBackwardPlan} picks it for the
     * forward's state type and its grid fits on the device; false, with nothing queued that the
     * per-step loop would not redo, otherwise. dhState and dcState hold dh_n and dc_n on entry and
     * dh_0 and dc_0 after; the gate gradients dax and dah (and the peephole terms) of every step are
     * written as the per-step loop writes them, for the weight-gradient GEMMs after.
     */
    private boolean persistentBackward(RecurrentConfig c, DType dt, int d, int slot, Saved saved, SlotTrace tr, DeviceTensor whh,
                                       DeviceTensor peep, DeviceTensor hPrev, DeviceTensor dLayerOut, DeviceTensor dhState, DeviceTensor dcState,
                                       DeviceTensor dax, DeviceTensor dah, DeviceTensor dpeepAll, DeviceTensor rhAll, DeviceScope s,
                                       long stream) {
        DType state = saved.output().dtype();
        StepChoice choice = stepChoice;  // read once: the plan's sizes and the kernel's state type must agree
        int batch = saved.batch();
        PersistentPlan plan = stateType(dt, choice) == state ? persistentBackwardPlan(c, batch, dt, driver.properties(), choice) : null;
        if (plan == null) {
            return false;
        }
        long kernel = kernel(persistentBackwardKernel(c) + "_" + suffix(state));
        if (!fitsAtOnce(kernel, plan)) {
            return false;  // a smaller GPU than the rule assumed
        }
        int h = c.hiddenSize();
        // The step barrier's counter starts at zero on every launch (persistent.cuh's step_arrive/step_wait).
        DeviceTensor arrivals = s.allocate(DType.I32, 1);
        driver.memsetAsync(arrivals.pointer(), 0, arrivals.byteSize(), stream);
        int reversed = c.direction().isReversed(d) ? 1 : 0;
        float clip = (float) c.clip();
        KernelArgs args = new KernelArgs().pointer(ptr(tr.raw()));
        switch (c.cell()) {
            case LSTM -> args.pointer(saved.c0() == null ? 0L : saved.c0().select(0, slot).pointer()).pointer(ptr(tr.cNew()))
                    .pointer(ptr(peep)).pointer(whh.pointer()).pointer(dLayerOut.pointer()).pointer(dhState.pointer())
                    .pointer(dcState.pointer()).pointer(dax.pointer()).pointer(ptr(dpeepAll));
            case GRU -> {
                args.pointer(hPrev.pointer());
                if (c.linearBeforeReset()) {
                    args.pointer(ptr(tr.hnLin()));
                }
                args.pointer(whh.pointer()).pointer(dLayerOut.pointer()).pointer(dhState.pointer()).pointer(dax.pointer())
                        .pointer(dah.pointer());
                if (!c.linearBeforeReset()) {
                    args.pointer(rhAll.pointer());
                }
            }
            case RNN -> args.pointer(whh.pointer()).pointer(dLayerOut.pointer()).pointer(dhState.pointer()).pointer(dax.pointer());
        }
        args.pointer(saved.lengths().pointer()).pointer(arrivals.pointer()).i32(saved.steps()).i32(reversed).i32(batch).i32(h)
                .i32(plan.unitsPerBlock()).i32(c.outputSize()).i32(d * c.stateSize());
        if (c.cell() == CellType.LSTM) {
            args.i32(c.inputForget() ? 1 : 0);
        }
        args.f32(clip);
        List<Activation> act = c.activations().get(d);
        for (int a = 0; a < c.cell().activationCount(); a++) {
            args.i32(act.get(a).kind().ordinal()).f32((float) act.get(a).alpha()).f32((float) act.get(a).beta());
        }
        try {
            driver.launchCooperative(kernel, Dim3.of(plan.blocks()), Dim3.of(THREADS), plan.sharedBytes(), stream, args);
        } catch (DriverException e) {
            if (e.status() != DriverException.COOPERATIVE_LAUNCH_TOO_LARGE) {
                throw e;
            }
            return false;  // fewer SMs than the device reports (MPS): nothing ran; the per-step loop instead
        }
        return true;
    }

    /** A backward's results on the device in F32: dx [T, B, in] (time-major), dh0, dc0 (or null) and the parameter gradients in the op's order. */
    record BackwardOutputs(DeviceTensor dx, DeviceTensor dh0, DeviceTensor dc0, Map<String, DeviceTensor> params) {
    }

    /**
     * Backward through time on the device, every copy, GEMM and launch on {@code stream} in order,
     * nothing waited for; dOutput [T, B, out] (time-major), dHn and dCn in F32, each null for zeros.
     * Everything it allocates, the results included, goes into {@code s}.
     */
    BackwardOutputs backwardOnStream(RecurrentConfig c, Map<String, Tensor> params, PreparedCopies prepared, Saved saved, DType dt,
                                     DeviceTensor dOutput, DeviceTensor dHn, DeviceTensor dCn, DeviceScope s, long stream) {
        int steps = saved.steps();
        int batch = saved.batch();
        int rows = steps * batch;  // checked against an int by forward
        int nd = c.numDirections();
        int p = c.stateSize();
        int h = c.hiddenSize();
        int gh = c.cell().gates() * h;
        int slots = c.numLayers() * nd;
        boolean lstm = c.cell() == CellType.LSTM;
        boolean gruSplit = c.cell() == CellType.GRU && !c.linearBeforeReset();
        // The forward's state type (what its trace holds): the type of every backward GEMM operand.
        DType state = saved.output().dtype();
        String stateSuffix = "_" + suffix(state);
        Map<String, DeviceTensor> grads = new java.util.LinkedHashMap<>();
        DeviceTensor dh0 = s.allocate(DType.F32, slots, batch, p);
        DeviceTensor dc0 = lstm ? s.allocate(DType.F32, slots, batch, h) : null;
        DeviceTensor dLayerOut = dOutput;
        if (dLayerOut == null) {
            dLayerOut = s.allocate(DType.F32, steps, batch, c.outputSize());
            driver.memsetAsync(dLayerOut.pointer(), 0, Math.max(1, dLayerOut.byteSize()), stream);
        }
        // h_prev [T*B, P] of the (layer, direction) being differentiated, rebuilt for each in turn.
        DeviceTensor hPrev = s.allocate(state, rows, p);
            for (int layer = c.numLayers() - 1; layer >= 0; layer--) {
                int in = c.layerInputSize(layer);
                DeviceTensor x = saved.layerInputs().get(layer);  // the state type, as every operand below
                DeviceTensor dX = s.allocate(DType.F32, steps, batch, in);  // [T*B, in] to the GEMMs; [T, B, in] as layer 0's dx
                for (int d = 0; d < nd; d++) {
                    int slot = layer * nd + d;
                    String sfx = c.suffix(layer, d);
                    SlotTrace tr = saved.traces()[slot];
                    List<Activation> act = c.activations().get(d);
                    DeviceTensor wih = param(prepared, s, params, "weight_ih_" + sfx, state);
                    DeviceTensor whh = param(prepared, s, params, "weight_hh_" + sfx, state);
                    DeviceTensor whr = c.projSize() > 0 ? param(prepared, s, params, "weight_hr_" + sfx, state) : null;
                    DeviceTensor peep = c.peepholes() ? param(prepared, s, params, "weight_peephole_" + sfx, DType.F32) : null;
                    driver.launch(kernel("h_prev_of_steps" + stateSuffix), Dim3.of(blocks((long) rows * p)), Dim3.of(THREADS), 0, stream,
                            new KernelArgs().pointer(saved.layerOutput(layer).pointer())
                                    .pointer(saved.h0() == null ? 0L : saved.h0().select(0, slot).pointer()).pointer(hPrev.pointer())
                                    .pointer(saved.lengths().pointer()).i32(steps).i32(batch).i32(p).i32(c.outputSize()).i32(d * p)
                                    .i32(c.direction().isReversed(d) ? 1 : 0));
                    DeviceTensor dax = s.allocate(state, rows, gh);
                    DeviceTensor dah = c.cell() == CellType.GRU ? s.allocate(state, rows, gh) : dax;
                    DeviceTensor dhState = initialState(s, dHn, DType.F32, slot, batch, p, stream);
                    DeviceTensor dcState = lstm ? initialState(s, dCn, DType.F32, slot, batch, h, stream) : null;
                    DeviceTensor dhTotal = s.allocate(DType.F32, batch, p);
                    DeviceTensor dhAll = whr != null ? s.allocate(state, rows, p) : null;
                    DeviceTensor mAll = whr != null ? s.allocate(state, rows, h) : null;
                    DeviceTensor dm = whr != null ? s.allocate(DType.F32, batch, h) : null;
                    DeviceTensor dpeepAll = peep != null ? s.allocate(DType.F32, rows, 3L * h) : null;
                    DeviceTensor direct = c.cell() == CellType.GRU ? s.allocate(DType.F32, batch, h) : null;
                    DeviceTensor dRh = gruSplit ? s.allocate(DType.F32, batch, h) : null;
                    DeviceTensor rhAll = gruSplit ? s.allocate(state, rows, h) : null;
                    DeviceTensor gemmOut = s.allocate(DType.F32, batch, p);
                    int hRows = gruSplit ? 2 * h : gh;  // rows of W_hh that act on h itself
                    float clip = (float) c.clip();  // +infinity (no clip) passes through clip_to unchanged, NaN and infinities included
                    Dim3 cellGrid = Dim3.of(blocks((long) batch * h));
                    Dim3 stateGrid = Dim3.of(blocks((long) batch * p));
                    boolean persistent = persistentBackward(c, dt, d, slot, saved, tr, whh, peep, hPrev, dLayerOut, dhState, dcState, dax, dah,
                            dpeepAll, rhAll, s, stream);
                    // The per-step loop, unless the persistent kernel ran every step.
                    for (int step = persistent ? -1 : steps - 1; step >= 0; step--) {
                        int t = c.direction().isReversed(d) ? steps - 1 - step : step;
                        driver.launch(kernel("step_grad_in" + stateSuffix), stateGrid, Dim3.of(THREADS), 0, stream, new KernelArgs()
                                .pointer(dhState.pointer()).pointer(dLayerOut.pointer()).pointer(dhTotal.pointer())
                                .pointer(ptr(dhAll)).pointer(saved.lengths().pointer()).i32(t).i32(batch).i32(p)
                                .i32(c.outputSize()).i32(d * p));
                        switch (c.cell()) {
                            case LSTM -> {
                                if (whr != null) {
                                    // dm [B, H] = dh_total [B, P] W_hr [P, H], dh_total read as step_grad_in stored it in dh_all
                                    Linear.inputGrad(driver, dhAll.select(0, (long) t * batch).pointer(), p, whr.pointer(), h, dm.pointer(), h,
                                            batch, h, p, 0f, state, DType.F32, tf32(c, dt), stream);
                                }
                                driver.launch(kernel("lstm_step_bwd" + stateSuffix), cellGrid, Dim3.of(THREADS), 0, stream, new KernelArgs()
                                        .pointer(ptr(tr.raw())).pointer(saved.c0() == null ? 0L : saved.c0().select(0, slot).pointer())
                                        .pointer(ptr(tr.cNew())).i32(c.direction().isReversed(d) ? 1 : 0)
                                        .pointer(dm != null ? dm.pointer() : dhTotal.pointer()).pointer(ptr(peep))
                                        .pointer(dcState.pointer()).pointer(dax.pointer()).pointer(ptr(mAll)).pointer(ptr(dpeepAll))
                                        .pointer(saved.lengths().pointer()).i32(t).i32(batch).i32(h).i32(c.inputForget() ? 1 : 0)
                                        .f32(clip).i32(act.get(0).kind().ordinal()).f32((float) act.get(0).alpha())
                                        .f32((float) act.get(0).beta()).i32(act.get(1).kind().ordinal())
                                        .f32((float) act.get(1).alpha()).f32((float) act.get(1).beta())
                                        .i32(act.get(2).kind().ordinal()).f32((float) act.get(2).alpha())
                                        .f32((float) act.get(2).beta()));
                            }
                            case RNN -> driver.launch(kernel("rnn_step_bwd" + stateSuffix), cellGrid, Dim3.of(THREADS), 0, stream, new KernelArgs()
                                    .pointer(ptr(tr.raw())).pointer(dhTotal.pointer()).pointer(dax.pointer())
                                    .pointer(saved.lengths().pointer()).i32(t).i32(batch).i32(h).f32(clip)
                                    .i32(act.get(0).kind().ordinal()).f32((float) act.get(0).alpha()).f32((float) act.get(0).beta()));
                            case GRU -> {
                                driver.launch(kernel("gru_step_bwd" + stateSuffix), cellGrid, Dim3.of(THREADS), 0, stream, new KernelArgs()
                                        .pointer(ptr(tr.raw())).pointer(hPrev.pointer()).pointer(ptr(tr.hnLin()))
                                        .pointer(dhTotal.pointer()).pointer(dax.pointer()).pointer(dah.pointer())
                                        .pointer(direct.pointer()).pointer(saved.lengths().pointer()).i32(t).i32(batch).i32(h)
                                        .i32(c.linearBeforeReset() ? 1 : 0).f32(clip)
                                        .i32(act.get(0).kind().ordinal()).f32((float) act.get(0).alpha()).f32((float) act.get(0).beta())
                                        .i32(act.get(1).kind().ordinal()).f32((float) act.get(1).alpha()).f32((float) act.get(1).beta()));
                                if (gruSplit) {
                                    // d_rh [B, H] = dah_n(t) [B, H] (row stride 3H) W_hn [H, H].
                                    long dahN = dah.select(0, (long) t * batch).narrow(0, 2L * h, h).pointer();
                                    Linear.inputGrad(driver, dahN, gh, whh.narrow(0, 2L * h, h).pointer(), h, dRh.pointer(), h,
                                            batch, h, h, 0f, state, DType.F32, tf32(c, dt), stream);
                                    driver.launch(kernel("gru_step_bwd_reset" + stateSuffix), cellGrid, Dim3.of(THREADS), 0, stream, new KernelArgs()
                                            .pointer(ptr(tr.raw())).pointer(hPrev.pointer()).pointer(dRh.pointer())
                                            .pointer(dax.pointer()).pointer(dah.pointer()).pointer(direct.pointer())
                                            .pointer(rhAll.pointer()).pointer(saved.lengths().pointer()).i32(t).i32(batch).i32(h)
                                            .f32(clip).i32(act.get(0).kind().ordinal()).f32((float) act.get(0).alpha())
                                            .f32((float) act.get(0).beta()));
                                }
                            }
                        }
                        // dh_prev [B, P] = dah(t) [B, hRows] (row stride G*H) W_hh[0:hRows] [hRows, P].
                        Linear.inputGrad(driver, dah.select(0, (long) t * batch).pointer(), gh, whh.pointer(), p,
                                gemmOut.pointer(), p, batch, p, hRows, 0f, state, DType.F32, tf32(c, dt), stream);
                        driver.launch(fn32("step_grad_out"), stateGrid, Dim3.of(THREADS), 0, stream, new KernelArgs()
                                .pointer(gemmOut.pointer()).pointer(ptr(direct)).pointer(dhState.pointer())
                                .pointer(saved.lengths().pointer()).i32(t).i32(batch).i32(p));
                    }
                    driver.copyDeviceToDeviceAsync(dh0.select(0, slot).pointer(), dhState.pointer(), dhState.byteSize(), stream);
                    if (lstm) {
                        driver.copyDeviceToDeviceAsync(dc0.select(0, slot).pointer(), dcState.pointer(), dcState.byteSize(), stream);
                    }
                    // Weight gradients over all steps at once: dW = dA^T X.
                    DeviceTensor dWih = s.allocate(DType.F32, gh, in);
                    Linear.weightGrad(driver, dax.pointer(), gh, x.pointer(), in, dWih.pointer(), in, rows, in, gh, 0f, state, tf32(c, dt),
                            stream);
                    grads.put("weight_ih_" + sfx, dWih);
                    DeviceTensor dWhh = s.allocate(DType.F32, gh, p);
                    Linear.weightGrad(driver, dah.pointer(), gh, hPrev.pointer(), p, dWhh.pointer(), p, rows, p, hRows, 0f, state,
                            tf32(c, dt), stream);
                    if (gruSplit) {
                        Linear.weightGrad(driver, dah.select(1, 2L * h).pointer(), gh, rhAll.pointer(), h,
                                dWhh.narrow(0, 2L * h, h).pointer(), h, rows, h, h, 0f, state, tf32(c, dt), stream);
                    }
                    grads.put("weight_hh_" + sfx, dWhh);
                    if (c.bias()) {
                        grads.put("bias_ih_" + sfx, columnSum(s, dax, rows, gh, stream));
                        grads.put("bias_hh_" + sfx, columnSum(s, dah, rows, gh, stream));
                    }
                    if (whr != null) {
                        DeviceTensor dWhr = s.allocate(DType.F32, p, h);
                        Linear.weightGrad(driver, dhAll.pointer(), p, mAll.pointer(), h, dWhr.pointer(), h, rows, h, p, 0f, state, tf32(c, dt),
                                stream);
                        grads.put("weight_hr_" + sfx, dWhr);
                    }
                    if (peep != null) {
                        grads.put("weight_peephole_" + sfx, columnSum(s, dpeepAll, rows, 3 * h, stream));
                    }
                    // dX [R, in] (+)= dax [R, G*H] W_ih [G*H, in], summed over directions.
                    Linear.inputGrad(driver, dax.pointer(), gh, wih.pointer(), in, dX.pointer(), in, rows, in, gh, d == 0 ? 0f : 1f, state,
                            DType.F32, tf32(c, dt), stream);
                }
                dLayerOut = dX;
            }
        Map<String, DeviceTensor> ordered = new java.util.LinkedHashMap<>();
        for (String name : c.parameterShapes().keySet()) {
            ordered.put(name, grads.get(name));
        }
        return new BackwardOutputs(dLayerOut, dh0, dc0, ordered);
    }

    private long fn32(String name) {
        return kernel(name + "_f32");
    }

    private long kernel(String name) {
        return functions.computeIfAbsent(name, n -> driver.function(module, n));
    }

    /** A kernel of cuda/util.cu. */
    private long utilFn(String name) {
        return functions.computeIfAbsent("util/" + name, n -> driver.function(util, name));
    }

    /** The column sums [cols] in F32 of a [rows, cols] (F32, F16 or BF16), accumulated in fp32 in row order. */
    private DeviceTensor columnSum(DeviceScope s, DeviceTensor a, int rows, int cols, long stream) {
        DeviceTensor out = s.allocate(DType.F32, cols);
        driver.launch(utilFn("column_sum_" + suffix(a.dtype())), Dim3.of(blocks(cols)), Dim3.of(THREADS), 0, stream, new KernelArgs()
                .pointer(a.pointer()).pointer(out.pointer()).i32(rows).i32(cols).i32(cols));
        return out;
    }

    /** A host tensor of dtype dt with the values of a device tensor (F32, or dt itself). */
    private static Tensor download(DeviceTensor t, DType dt) {
        try (Tensor host = t.toHost()) {
            return host.to(dt);
        }
    }

    /** Copies a device tensor's values (F32, or the host's dtype) into a host tensor (any strides) of as many elements. */
    private static void copyInto(DeviceTensor t, Tensor host) {
        try (Tensor values = t.toHost()) {
            host.copyFrom(values.reshape(host.shape()));
        }
    }

    /**
     * Whether the op's F32 GEMMs take TF32 products: asked for, and F32 storage (a 16-bit op's GEMMs
     * are 16-bit; V1's F32 GEMMs of a 16-bit op stay fp32). The persistent kernel (small batches)
     * multiplies in fp32 either way.
     */
    private static boolean tf32(RecurrentConfig c, DType dt) {
        return c.allowTf32() && dt == DType.F32;
    }

    /**
     * y [rows, ldy] (first `out` columns) = x [rows, in] W^T, W [out, in], on {@code stream}; TF32
     * products when {@code tf32} (only ever for an F32 op, whose operands here are all F32). x and W
     * are of one type (the GEMM reads both as x's): a mismatch is a bug here, refused, not computed.
     */
    private void linear(DeviceTensor x, DeviceTensor w, DeviceTensor y, int rows, int in, int out, int ldy, long stream, boolean tf32) {
        if (x.dtype() != w.dtype()) {
            throw new IllegalStateException("a recurrent GEMM with operands of two types: " + x.dtype() + " and " + w.dtype());
        }
        Linear.forward(driver, x.pointer(), in, w.pointer(), in, y.pointer(), ldy, rows, in, out, 0f, x.dtype(), y.dtype(), stream, tf32);
    }

    private static long ptr(DeviceTensor t) {
        return t == null ? 0 : t.pointer();
    }

    private static int blocks(long n) {
        return (int) Math.max(1, (n + THREADS - 1) / THREADS);
    }

    private static double[] toDoubles(int[] v) {
        double[] d = new double[v.length];
        for (int i = 0; i < v.length; i++) {
            d[i] = v[i];
        }
        return d;
    }
}
