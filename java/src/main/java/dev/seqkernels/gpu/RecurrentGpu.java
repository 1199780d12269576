package dev.seqkernels.gpu;

import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.Tensor;
import dev.seqkernels.ops.Activation;
import dev.seqkernels.ops.CellType;
import dev.seqkernels.ops.RecurrentConfig;
import dev.seqkernels.ops.RecurrentResult;

import java.util.List;
import java.util.Map;

/**
 * The GPU path of the recurrent ops, written once against {@link Driver}: per layer and direction,
 * one GEMM projects every step's input (x W_ih^T); per step, one GEMM projects the state
 * (h W_hh^T; GRU without linear-before-reset adds (r*h) W_hn^T, an LSTM with projection adds
 * m W_hr^T) and cuda/recurrent.cu's v1 kernels do the gate math and move the new state into the
 * output. Lengths mask steps inside the kernels. States h and outputs are stored in the input
 * dtype (they feed the next GEMM), the cell state c, gate pre-activations and GEMM results in F32.
 */
final class RecurrentGpu {
    private static final int THREADS = 256;

    private final Driver driver;
    private final Map<String, Long> functions = new java.util.HashMap<>();
    private final long module;

    RecurrentGpu(Driver driver) {
        this.driver = driver;
        this.module = driver.loadModule("recurrent");
    }

    private long fn(String name, DType dt) {
        return functions.computeIfAbsent(name + "_" + suffix(dt), n -> driver.function(module, n));
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

    /** What one (layer, direction) pass keeps on the device for backward. */
    record SlotTrace(DeviceTensor raw, DeviceTensor hPrev, DeviceTensor cPrev, DeviceTensor cNew, DeviceTensor hnLin) {
    }

    /** The device state a forward leaves behind, released when the result is closed. */
    record Saved(DeviceScope scope, List<DeviceTensor> layerInputs, SlotTrace[] traces, DeviceTensor lengths, int steps,
                 int batch) implements AutoCloseable {
        @Override
        public void close() {
            scope.close();
        }
    }

    RecurrentResult forward(RecurrentConfig c, Map<String, Tensor> params, Tensor x, Tensor h0, Tensor c0, int[] lengths) {
        DType dt = x.dtype();
        suffix(dt);
        int steps = (int) (c.batchFirst() ? x.size(1) : x.size(0));
        int batch = (int) (c.batchFirst() ? x.size(0) : x.size(1));
        int nd = c.numDirections();
        int p = c.stateSize();
        int h = c.hiddenSize();
        int gh = c.cell().gates() * h;
        int slots = c.numLayers() * nd;
        DeviceScope scope = new DeviceScope(driver);
        try (DeviceScope temp = new DeviceScope(driver)) {
            DeviceTensor lens = scope.upload(Tensor.of(DType.I32, toDoubles(lengths), batch));
            DeviceTensor input = scope.upload(c.batchFirst() ? x.permute(1, 0, 2) : x);
            DeviceTensor h0d = h0 == null ? null : temp.upload(h0);
            Tensor hn = Tensor.allocate(dt, slots, batch, p);
            Tensor cn = c.cell() == CellType.LSTM ? Tensor.allocate(dt, slots, batch, h) : null;
            List<DeviceTensor> layerInputs = new java.util.ArrayList<>();
            SlotTrace[] traces = new SlotTrace[slots];
            for (int layer = 0; layer < c.numLayers(); layer++) {
                layerInputs.add(input);
                int in = c.layerInputSize(layer);
                DeviceTensor out = scope.allocate(dt, steps, batch, (long) nd * p);
                for (int d = 0; d < nd; d++) {
                    int slot = layer * nd + d;
                    String sfx = c.suffix(layer, d);
                    DeviceTensor wih = temp.upload(params.get("weight_ih_" + sfx));
                    DeviceTensor whh = temp.upload(params.get("weight_hh_" + sfx));
                    DeviceTensor bih = c.bias() ? temp.upload(params.get("bias_ih_" + sfx)) : null;
                    DeviceTensor bhh = c.bias() ? temp.upload(params.get("bias_hh_" + sfx)) : null;
                    DeviceTensor whr = c.projSize() > 0 ? temp.upload(params.get("weight_hr_" + sfx)) : null;
                    DeviceTensor peep = c.peepholes() ? temp.upload(params.get("weight_peephole_" + sfx)) : null;
                    DeviceTensor gx = temp.allocate(DType.F32, (long) steps * batch, gh);
                    linear(input, wih, gx, steps * batch, in, gh, 0);
                    DeviceTensor hState = temp.zeros(dt, batch, p);
                    if (h0d != null) {
                        driver.copyDeviceToDevice(hState.pointer(), h0d.select(0, slot).pointer(), hState.byteSize());
                    }
                    SlotTrace tr = new SlotTrace(scope.allocate(DType.F32, (long) steps * batch, gh),
                            scope.allocate(dt, (long) steps * batch, p),
                            c.cell() == CellType.LSTM ? scope.allocate(DType.F32, (long) steps * batch, h) : null,
                            c.cell() == CellType.LSTM ? scope.allocate(DType.F32, (long) steps * batch, h) : null,
                            c.cell() == CellType.GRU && c.linearBeforeReset() ? scope.allocate(DType.F32, (long) steps * batch, h) : null);
                    traces[slot] = tr;
                    DeviceTensor cState = null;
                    if (c.cell() == CellType.LSTM) {
                        cState = c0 == null ? temp.zeros(DType.F32, batch, h)
                                : temp.upload(c0.select(0, slot).to(DType.F32));
                    }
                    runDirection(c, d, dt, steps, batch, lens, gx, wih, whh, bih, bhh, whr, peep, hState, cState, tr, out, temp);
                    hState.copyTo(hn.select(0, slot));
                    if (cState != null) {
                        Tensor cHost = cState.toHost();
                        cn.select(0, slot).copyFrom(cHost.toDoubleArray());
                    }
                }
                input = out;
            }
            Tensor output = input.toHost();
            if (c.batchFirst()) {
                try (Tensor timeMajor = output) {
                    output = timeMajor.permute(1, 0, 2).to(dt);
                }
            }
            return new RecurrentResult(output, hn, cn, new Saved(scope, layerInputs, traces, lens, steps, batch));
        } catch (RuntimeException e) {
            scope.close();
            throw e;
        }
    }

    private void runDirection(RecurrentConfig c, int d, DType dt, int steps, int batch, DeviceTensor lens, DeviceTensor gx,
                              DeviceTensor wih, DeviceTensor whh, DeviceTensor bih, DeviceTensor bhh, DeviceTensor whr,
                              DeviceTensor peep, DeviceTensor hState, DeviceTensor cState, SlotTrace tr, DeviceTensor out,
                              DeviceScope temp) {
        int h = c.hiddenSize();
        int p = c.stateSize();
        int gh = c.cell().gates() * h;
        boolean gruSplit = c.cell() == CellType.GRU && !c.linearBeforeReset();
        List<Activation> act = c.activations().get(d);
        DeviceTensor ghStep = temp.allocate(DType.F32, batch, gh);
        DeviceTensor hnew = temp.allocate(dt, batch, p);
        DeviceTensor m = whr != null ? temp.allocate(dt, batch, h) : null;
        DeviceTensor resetHidden = gruSplit ? temp.allocate(dt, batch, h) : null;
        Dim3 cellGrid = Dim3.of(blocks((long) batch * h));
        Dim3 stateGrid = Dim3.of(blocks((long) batch * p));
        float clip = (float) Math.min(c.clip(), Float.MAX_VALUE);
        for (int s = 0; s < steps; s++) {
            int t = c.direction().isReversed(d) ? steps - 1 - s : s;
            // h W_hh^T for every gate, except GRU's n rows when the reset gate comes first.
            linear(hState, whh, ghStep, batch, p, gruSplit ? 2 * h : gh, gh);
            KernelArgs args = new KernelArgs().pointer(gx.pointer()).pointer(ghStep.pointer()).pointer(ptr(bih)).pointer(ptr(bhh));
            switch (c.cell()) {
                case LSTM -> driver.launch(fn("lstm_step_fwd", dt), cellGrid, Dim3.of(THREADS), 0, 0, args.pointer(ptr(peep))
                        .pointer(cState.pointer()).pointer(tr.cPrev().pointer()).pointer(tr.cNew().pointer())
                        .pointer(tr.raw().pointer()).pointer(m != null ? m.pointer() : hnew.pointer()).pointer(lens.pointer())
                        .i32(t).i32(batch).i32(h).i32(c.inputForget() ? 1 : 0).f32(clip)
                        .i32(act.get(0).kind().ordinal()).f32((float) act.get(0).alpha()).f32((float) act.get(0).beta())
                        .i32(act.get(1).kind().ordinal()).f32((float) act.get(1).alpha()).f32((float) act.get(1).beta())
                        .i32(act.get(2).kind().ordinal()).f32((float) act.get(2).alpha()).f32((float) act.get(2).beta()));
                case GRU -> {
                    if (gruSplit) {
                        driver.launch(fn("gru_reset_fwd", dt), cellGrid, Dim3.of(THREADS), 0, 0, new KernelArgs()
                                .pointer(gx.pointer()).pointer(ghStep.pointer()).pointer(ptr(bih)).pointer(ptr(bhh))
                                .pointer(hState.pointer()).pointer(tr.raw().pointer()).pointer(resetHidden.pointer())
                                .pointer(lens.pointer()).i32(t).i32(batch).i32(h).f32(clip)
                                .i32(act.get(0).kind().ordinal()).f32((float) act.get(0).alpha()).f32((float) act.get(0).beta()));
                        linearInto(resetHidden, whh.narrow(0, 2L * h, h), ghStep.narrow(1, 2L * h, h), batch, h, h, gh);
                    }
                    driver.launch(fn("gru_step_fwd", dt), cellGrid, Dim3.of(THREADS), 0, 0, args.pointer(hState.pointer())
                            .pointer(tr.raw().pointer()).pointer(ptr(tr.hnLin())).pointer(hnew.pointer()).pointer(lens.pointer())
                            .i32(t).i32(batch).i32(h).i32(c.linearBeforeReset() ? 1 : 0).f32(clip)
                            .i32(act.get(0).kind().ordinal()).f32((float) act.get(0).alpha()).f32((float) act.get(0).beta())
                            .i32(act.get(1).kind().ordinal()).f32((float) act.get(1).alpha()).f32((float) act.get(1).beta()));
                }
                case RNN -> driver.launch(fn("rnn_step_fwd", dt), cellGrid, Dim3.of(THREADS), 0, 0, args
                        .pointer(tr.raw().pointer()).pointer(hnew.pointer()).pointer(lens.pointer()).i32(t).i32(batch).i32(h)
                        .f32(clip).i32(act.get(0).kind().ordinal()).f32((float) act.get(0).alpha()).f32((float) act.get(0).beta()));
            }
            if (m != null) {
                linearInto(m, whr, hnew, batch, h, p, p);
            }
            driver.launch(fn("step_commit", dt), stateGrid, Dim3.of(THREADS), 0, 0, new KernelArgs().pointer(hnew.pointer())
                    .pointer(hState.pointer()).pointer(tr.hPrev().pointer()).pointer(out.pointer()).pointer(lens.pointer())
                    .i32(t).i32(batch).i32(p).i32(c.outputSize()).i32(d * p));
        }
    }

    /** y [rows, ldy] (F32, first `out` columns) = x [rows, in] W^T with W [out, in]: one column-major GEMM. */
    private void linear(DeviceTensor x, DeviceTensor w, DeviceTensor y, int rows, int in, int out, int ldyOrZero) {
        linearInto(x, w, y, rows, in, out, ldyOrZero == 0 ? out : ldyOrZero);
    }

    private void linearInto(DeviceTensor x, DeviceTensor w, DeviceTensor y, int rows, int in, int out, int ldy) {
        // Row-major y = x W^T is column-major y^T = W x^T: A = W (k x m stored, transposed), B = x^T.
        driver.gemm(new Gemm(true, false, out, rows, in, 1f, w.pointer(), in, 0, x.pointer(), in, 0, 0f, y.pointer(), ldy,
                0, 1, x.dtype(), y.dtype()), 0);
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
