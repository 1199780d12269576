package dev.seqkernels.cpu;

import dev.seqkernels.ops.Activation;
import dev.seqkernels.ops.CellType;
import dev.seqkernels.ops.RecurrentConfig;

import java.util.List;

/**
 * The recurrent oracle: plain loops, double everywhere, forward and backward through time. Given a
 * same-precision {@link Precision}, it rounds where the kernels round instead: the GEMMs' inputs as
 * operands (weights, x, h_{t-1}, the LSTM projection's input, GRU's r*h, the gate gradients), gate
 * pre-activations, c and the carried dh and dc in fp32, and h once per step to the storage dtype
 * (the value that is both the step's output and the next step's GEMM input); and it sums products
 * in fp32 ({@link Precision#fma}).
 *
 * <p>Internal layouts are row-major and time-major: x [T][B][I], out [T][B][nd*P], states
 * [L*nd][B][P] (h) and [L*nd][B][H] (c); weights per (layer, direction) slot {@code layer*nd + d}
 * in PyTorch's shapes and gate orders (LSTM i,f,g,o; GRU r,z,n). A step t is computed for batch
 * entry b only when t &lt; lengths[b]; other steps leave the state unchanged and output zero, so the
 * forward direction's final state is the state at the last valid step and the reverse direction
 * starts at the last valid step.
 */
public final class RecurrentReference {
    private RecurrentReference() {
    }

    /** Parameters per slot {@code layer*nd + d}, flattened row-major; bias and optional arrays may be null. */
    public record Params(double[][] wih, double[][] whh, double[][] bih, double[][] bhh, double[][] whr,
                         double[][] peephole) {
        public static Params zerosLike(RecurrentConfig c) {
            int slots = c.numLayers() * c.numDirections();
            double[][] wih = new double[slots][];
            double[][] whh = new double[slots][];
            double[][] bih = c.bias() ? new double[slots][] : null;
            double[][] bhh = c.bias() ? new double[slots][] : null;
            double[][] whr = c.projSize() > 0 ? new double[slots][] : null;
            double[][] peep = c.peepholes() ? new double[slots][] : null;
            int g = c.cell().gates() * c.hiddenSize();
            for (int s = 0; s < slots; s++) {
                wih[s] = new double[g * c.layerInputSize(s / c.numDirections())];
                whh[s] = new double[g * c.stateSize()];
                if (bih != null) {
                    bih[s] = new double[g];
                    bhh[s] = new double[g];
                }
                if (whr != null) {
                    whr[s] = new double[c.projSize() * c.hiddenSize()];
                }
                if (peep != null) {
                    peep[s] = new double[3 * c.hiddenSize()];
                }
            }
            return new Params(wih, whh, bih, bhh, whr, peep);
        }
    }

    /** What one (layer, direction) pass keeps for backward: values at every computed step, [T][B][...]. */
    static final class Trace {
        final double[] raw;      // [T][B][G*H] gate pre-activations before clipping
        final double[] hPrev;    // [T][B][P] state entering the step
        final double[] cPrev;    // [T][B][H] LSTM cell entering the step
        final double[] cNew;     // [T][B][H] LSTM cell leaving the step
        final double[] hnLin;    // [T][B][H] GRU linear-before-reset: W_hn h + b_hn

        Trace(RecurrentConfig c, int steps, int batch) {
            int h = c.hiddenSize();
            raw = new double[steps * batch * c.cell().gates() * h];
            hPrev = new double[steps * batch * c.stateSize()];
            boolean lstm = c.cell() == CellType.LSTM;
            cPrev = lstm ? new double[steps * batch * h] : null;
            cNew = lstm ? new double[steps * batch * h] : null;
            hnLin = c.cell() == CellType.GRU && c.linearBeforeReset() ? new double[steps * batch * h] : null;
        }
    }

    /** Forward results; {@code layerInputs[l]} is the input to layer l, [T][B][I_l]. */
    public record Forward(double[] out, double[] hn, double[] cn, double[][] layerInputs, Trace[] traces,
                          int steps, int batch, int[] lengths) {
    }

    /** Gradients: dx [T][B][I], dh0 and dc0 like h0 and c0, parameter gradients like the parameters. */
    public record Backward(double[] dx, double[] dh0, double[] dc0, Params dParams) {
    }

    public static Forward forward(RecurrentConfig c, Params p, double[] x, int steps, int batch, double[] h0,
                                  double[] c0, int[] lengths, Precision pr) {
        int nd = c.numDirections();
        int pSize = c.stateSize();
        int h = c.hiddenSize();
        int slots = c.numLayers() * nd;
        double[] hn = new double[slots * batch * pSize];
        double[] cn = c.cell() == CellType.LSTM ? new double[slots * batch * h] : null;
        double[][] layerInputs = new double[c.numLayers()][];
        Trace[] traces = new Trace[slots];
        double[] input = x;
        for (int layer = 0; layer < c.numLayers(); layer++) {
            layerInputs[layer] = input;
            double[] out = new double[steps * batch * nd * pSize];
            for (int d = 0; d < nd; d++) {
                int s = layer * nd + d;
                traces[s] = new Trace(c, steps, batch);
                double[] hState = h0 == null ? new double[batch * pSize] : slice(h0, s, batch * pSize);
                double[] cState = cn == null ? null : c0 == null ? new double[batch * h] : slice(c0, s, batch * h);
                runDirection(c, p, s, d, c.layerInputSize(layer), input, steps, batch, lengths, hState, cState,
                        out, traces[s], pr);
                System.arraycopy(hState, 0, hn, s * batch * pSize, batch * pSize);
                if (cn != null) {
                    System.arraycopy(cState, 0, cn, s * batch * h, batch * h);
                }
            }
            input = out;
        }
        return new Forward(input, hn, cn, layerInputs, traces, steps, batch, lengths.clone());
    }

    private static double[] slice(double[] a, int slot, int len) {
        double[] r = new double[len];
        System.arraycopy(a, slot * len, r, 0, len);
        return r;
    }

    private static double clip(double v, double clip) {
        return Math.max(-clip, Math.min(clip, v));
    }

    private static double clipGrad(double raw, double clip) {
        return Math.abs(raw) <= clip ? 1 : 0;
    }

    /** One (layer, direction) pass; updates hState/cState in place and writes this direction's output slice. */
    private static void runDirection(RecurrentConfig c, Params p, int slot, int d, int in, double[] x, int steps,
                                     int batch, int[] lengths, double[] hState, double[] cState, double[] out,
                                     Trace tr, Precision pr) {
        int h = c.hiddenSize();
        int pSize = c.stateSize();
        int gh = c.cell().gates() * h;
        int outStride = c.numDirections() * pSize;
        double clip = c.clip();
        List<Activation> act = c.activations().get(d);
        double[] wih = pr.operands(p.wih()[slot]);
        double[] whh = pr.operands(p.whh()[slot]);
        double[] bih = p.bih() == null ? null : p.bih()[slot];
        double[] bhh = p.bhh() == null ? null : p.bhh()[slot];
        double[] whr = p.whr() == null ? null : pr.operands(p.whr()[slot]);
        double[] peep = p.peephole() == null ? null : p.peephole()[slot];
        boolean reversed = c.direction().isReversed(d);
        x = pr.operands(x);
        double[] hOp = new double[pSize];
        double[] ax = new double[gh];
        double[] ah = new double[gh];
        double[] m = new double[h];
        double[] hNew = new double[pSize];
        for (int step = 0; step < steps; step++) {
            int t = reversed ? steps - 1 - step : step;
            for (int b = 0; b < batch; b++) {
                if (t >= lengths[b]) {
                    continue;
                }
                int tb = t * batch + b;
                int xOff = tb * in;
                int hOff = b * pSize;
                System.arraycopy(hState, hOff, tr.hPrev, tb * pSize, pSize);
                for (int k = 0; k < pSize; k++) {
                    hOp[k] = pr.operand(hState[hOff + k]);
                }
                for (int g = 0; g < gh; g++) {
                    double sx = bih == null ? 0 : bih[g];
                    for (int k = 0; k < in; k++) {
                        sx = pr.fma(wih[g * in + k], x[xOff + k], sx);
                    }
                    ax[g] = pr.fp32(sx);
                    double sh = bhh == null ? 0 : bhh[g];
                    for (int k = 0; k < pSize; k++) {
                        sh = pr.fma(whh[g * pSize + k], hOp[k], sh);
                    }
                    ah[g] = pr.fp32(sh);
                }
                int rawOff = tb * gh;
                switch (c.cell()) {
                    case RNN -> {
                        for (int j = 0; j < h; j++) {
                            double raw = ax[j] + ah[j];
                            tr.raw[rawOff + j] = raw;
                            hNew[j] = pr.stored(act.get(0).apply(clip(raw, clip)));
                        }
                    }
                    case LSTM -> {
                        int cOff = b * h;
                        System.arraycopy(cState, cOff, tr.cPrev, tb * h, h);
                        for (int j = 0; j < h; j++) {
                            double cp = cState[cOff + j];
                            double rawI = ax[j] + ah[j] + (peep == null ? 0 : peep[j] * cp);
                            double rawF = ax[h + j] + ah[h + j] + (peep == null ? 0 : peep[h + j] * cp);
                            double rawG = ax[2 * h + j] + ah[2 * h + j];
                            double gi = act.get(0).apply(clip(rawI, clip));
                            double gf = c.inputForget() ? 1 - gi : act.get(0).apply(clip(rawF, clip));
                            double gg = act.get(1).apply(clip(rawG, clip));
                            double cNew = pr.fp32(gf * cp + gi * gg);
                            double rawO = ax[3 * h + j] + ah[3 * h + j] + (peep == null ? 0 : peep[2 * h + j] * cNew);
                            double go = act.get(0).apply(clip(rawO, clip));
                            tr.raw[rawOff + j] = rawI;
                            tr.raw[rawOff + h + j] = rawF;
                            tr.raw[rawOff + 2 * h + j] = rawG;
                            tr.raw[rawOff + 3 * h + j] = rawO;
                            tr.cNew[tb * h + j] = cNew;
                            cState[cOff + j] = cNew;
                            m[j] = go * act.get(2).apply(cNew);
                        }
                        if (whr == null) {
                            for (int j = 0; j < h; j++) {
                                hNew[j] = pr.stored(m[j]);
                            }
                        } else {
                            for (int q = 0; q < pSize; q++) {
                                double s = 0;
                                for (int j = 0; j < h; j++) {
                                    s = pr.fma(whr[q * h + j], pr.operand(m[j]), s);
                                }
                                hNew[q] = pr.stored(s);
                            }
                        }
                    }
                    case GRU -> {
                        double[] rh = new double[h];
                        double[] rGate = new double[h];
                        for (int j = 0; j < h; j++) {
                            double rawR = ax[j] + ah[j];
                            double rawZ = ax[h + j] + ah[h + j];
                            tr.raw[rawOff + j] = rawR;
                            tr.raw[rawOff + h + j] = rawZ;
                            rGate[j] = act.get(0).apply(clip(rawR, clip));
                            rh[j] = pr.operand(rGate[j] * hState[hOff + j]);
                        }
                        for (int j = 0; j < h; j++) {
                            double rawN;
                            if (c.linearBeforeReset()) {
                                tr.hnLin[tb * h + j] = ah[2 * h + j];
                                rawN = ax[2 * h + j] + rGate[j] * ah[2 * h + j];
                            } else {
                                double s = bhh == null ? 0 : bhh[2 * h + j];
                                for (int k = 0; k < h; k++) {
                                    s = pr.fma(whh[(2 * h + j) * h + k], rh[k], s);
                                }
                                rawN = ax[2 * h + j] + pr.fp32(s);
                            }
                            tr.raw[rawOff + 2 * h + j] = rawN;
                            double z = act.get(0).apply(clip(tr.raw[rawOff + h + j], clip));
                            double n = act.get(1).apply(clip(rawN, clip));
                            hNew[j] = pr.stored((1 - z) * n + z * hState[hOff + j]);
                        }
                    }
                }
                System.arraycopy(hNew, 0, hState, hOff, pSize);
                System.arraycopy(hNew, 0, out, tb * outStride + d * pSize, pSize);
            }
        }
    }

    /**
     * Backward through time. {@code dOut}, {@code dHn}, {@code dCn} may be null (zero). Gradients of
     * output positions past a sequence's length are ignored: those outputs are constant zero.
     */
    public static Backward backward(RecurrentConfig c, Params p, Forward f, double[] dOut, double[] dHn,
                                    double[] dCn, Precision pr) {
        int nd = c.numDirections();
        int pSize = c.stateSize();
        int h = c.hiddenSize();
        int steps = f.steps();
        int batch = f.batch();
        boolean lstm = c.cell() == CellType.LSTM;
        double[] dh0 = new double[c.numLayers() * nd * batch * pSize];
        double[] dc0 = lstm ? new double[c.numLayers() * nd * batch * h] : null;
        Params grads = Params.zerosLike(c);
        double[] dLayerOut = dOut == null ? new double[steps * batch * c.outputSize()] : dOut.clone();
        double[] dInput = null;
        for (int layer = c.numLayers() - 1; layer >= 0; layer--) {
            int in = c.layerInputSize(layer);
            dInput = new double[steps * batch * in];
            for (int d = 0; d < nd; d++) {
                int s = layer * nd + d;
                double[] dh = dHn == null ? new double[batch * pSize] : slice(dHn, s, batch * pSize);
                double[] dc = lstm ? (dCn == null ? new double[batch * h] : slice(dCn, s, batch * h)) : null;
                backDirection(c, p, grads, s, d, in, f.layerInputs()[layer], f.traces()[s], steps, batch, f.lengths(),
                        dLayerOut, dh, dc, dInput, pr);
                System.arraycopy(dh, 0, dh0, s * batch * pSize, batch * pSize);
                if (lstm) {
                    System.arraycopy(dc, 0, dc0, s * batch * h, batch * h);
                }
            }
            dLayerOut = dInput;
        }
        return new Backward(dInput, dh0, dc0, grads);
    }

    private static void backDirection(RecurrentConfig c, Params p, Params grads, int slot, int d, int in,
                                      double[] x, Trace tr, int steps, int batch, int[] lengths, double[] dOut,
                                      double[] dh, double[] dc, double[] dx, Precision pr) {
        int h = c.hiddenSize();
        int pSize = c.stateSize();
        int gh = c.cell().gates() * h;
        int outStride = c.numDirections() * pSize;
        double clip = c.clip();
        List<Activation> act = c.activations().get(d);
        double[] wih = pr.operands(p.wih()[slot]);
        double[] whh = pr.operands(p.whh()[slot]);
        double[] whr = p.whr() == null ? null : pr.operands(p.whr()[slot]);
        double[] peep = p.peephole() == null ? null : p.peephole()[slot];
        x = pr.operands(x);
        double[] hpOp = new double[pSize];
        double[] gWih = grads.wih()[slot];
        double[] gWhh = grads.whh()[slot];
        double[] gBih = grads.bih() == null ? null : grads.bih()[slot];
        double[] gBhh = grads.bhh() == null ? null : grads.bhh()[slot];
        double[] gWhr = grads.whr() == null ? null : grads.whr()[slot];
        double[] gPeep = grads.peephole() == null ? null : grads.peephole()[slot];
        boolean reversed = c.direction().isReversed(d);
        double[] dax = new double[gh];   // gradient of the x-side pre-activation (W_ih x + b_ih)
        double[] dah = new double[gh];   // gradient of the h-side pre-activation (W_hh h + b_hh)
        double[] dhTotal = new double[pSize];
        double[] dhPrev = new double[pSize];
        double[] resetHidden = new double[pSize]; // GRU without linear-before-reset: r*h, input of the n rows
        for (int step = steps - 1; step >= 0; step--) {
            int t = reversed ? steps - 1 - step : step;
            for (int b = 0; b < batch; b++) {
                if (t >= lengths[b]) {
                    continue;
                }
                int tb = t * batch + b;
                int rawOff = tb * gh;
                int hOff = b * pSize;
                for (int q = 0; q < pSize; q++) {
                    dhTotal[q] = pr.fp32(dh[hOff + q] + dOut[tb * outStride + d * pSize + q]);
                    dhPrev[q] = 0;
                }
                double[] hp = tr.hPrev;
                int hpOff = tb * pSize;
                switch (c.cell()) {
                    case RNN -> {
                        for (int j = 0; j < h; j++) {
                            double raw = tr.raw[rawOff + j];
                            double g = dhTotal[j] * act.get(0).derivative(clip(raw, clip)) * clipGrad(raw, clip);
                            dax[j] = g;
                            dah[j] = g;
                        }
                    }
                    case LSTM -> {
                        double[] dm = new double[h];
                        int cOff = tb * h;
                        if (whr == null) {
                            System.arraycopy(dhTotal, 0, dm, 0, h);
                        } else {
                            for (int j = 0; j < h; j++) {
                                double cNew = tr.cNew[cOff + j];
                                double mj = act.get(0).apply(clip(tr.raw[rawOff + 3 * h + j], clip)) * act.get(2).apply(cNew);
                                double s = 0;
                                for (int q = 0; q < pSize; q++) {
                                    s = pr.fma(whr[q * h + j], pr.operand(dhTotal[q]), s);
                                    gWhr[q * h + j] = pr.fma(pr.operand(dhTotal[q]), pr.operand(mj), gWhr[q * h + j]);
                                }
                                dm[j] = pr.fp32(s);
                            }
                        }
                        for (int j = 0; j < h; j++) {
                            double cp = tr.cPrev[cOff + j];
                            double cNew = tr.cNew[cOff + j];
                            double rawI = tr.raw[rawOff + j];
                            double rawF = tr.raw[rawOff + h + j];
                            double rawG = tr.raw[rawOff + 2 * h + j];
                            double rawO = tr.raw[rawOff + 3 * h + j];
                            double gi = act.get(0).apply(clip(rawI, clip));
                            double gf = c.inputForget() ? 1 - gi : act.get(0).apply(clip(rawF, clip));
                            double gg = act.get(1).apply(clip(rawG, clip));
                            double go = act.get(0).apply(clip(rawO, clip));
                            double hc = act.get(2).apply(cNew);
                            double dRawO = dm[j] * hc * act.get(0).derivative(clip(rawO, clip)) * clipGrad(rawO, clip);
                            double dcTotal = dc[b * h + j] + dm[j] * go * act.get(2).derivative(cNew);
                            if (peep != null) {
                                dcTotal += dRawO * peep[2 * h + j];
                                gPeep[2 * h + j] = pr.fma(dRawO, cNew, gPeep[2 * h + j]);
                            }
                            double dI = dcTotal * gg;
                            double dG = dcTotal * gi;
                            double dF = dcTotal * cp;
                            if (c.inputForget()) {
                                dI -= dF;
                                dF = 0;
                            }
                            double dRawI = dI * act.get(0).derivative(clip(rawI, clip)) * clipGrad(rawI, clip);
                            double dRawF = c.inputForget() ? 0
                                    : dF * act.get(0).derivative(clip(rawF, clip)) * clipGrad(rawF, clip);
                            double dRawG = dG * act.get(1).derivative(clip(rawG, clip)) * clipGrad(rawG, clip);
                            double dcPrev = dcTotal * gf;
                            if (peep != null) {
                                dcPrev += dRawI * peep[j] + dRawF * peep[h + j];
                                gPeep[j] = pr.fma(dRawI, cp, gPeep[j]);
                                gPeep[h + j] = pr.fma(dRawF, cp, gPeep[h + j]);
                            }
                            dc[b * h + j] = pr.fp32(dcPrev);
                            dax[j] = dah[j] = dRawI;
                            dax[h + j] = dah[h + j] = dRawF;
                            dax[2 * h + j] = dah[2 * h + j] = dRawG;
                            dax[3 * h + j] = dah[3 * h + j] = dRawO;
                        }
                    }
                    case GRU -> {
                        double[] dRh = new double[h];
                        for (int j = 0; j < h; j++) {
                            double rawR = tr.raw[rawOff + j];
                            double rawZ = tr.raw[rawOff + h + j];
                            double rawN = tr.raw[rawOff + 2 * h + j];
                            double z = act.get(0).apply(clip(rawZ, clip));
                            double n = act.get(1).apply(clip(rawN, clip));
                            double hPrevJ = hp[hpOff + j];
                            double dN = dhTotal[j] * (1 - z);
                            double dZ = dhTotal[j] * (hPrevJ - n);
                            dhPrev[j] += dhTotal[j] * z;
                            double dRawN = dN * act.get(1).derivative(clip(rawN, clip)) * clipGrad(rawN, clip);
                            dax[2 * h + j] = dRawN;
                            dax[h + j] = dah[h + j] = dZ * act.get(0).derivative(clip(rawZ, clip)) * clipGrad(rawZ, clip);
                            if (c.linearBeforeReset()) {
                                double r = act.get(0).apply(clip(rawR, clip));
                                double dR = dRawN * tr.hnLin[tb * h + j];
                                dah[2 * h + j] = dRawN * r;
                                dax[j] = dah[j] = dR * act.get(0).derivative(clip(rawR, clip)) * clipGrad(rawR, clip);
                            } else {
                                dah[2 * h + j] = dRawN;
                            }
                        }
                        if (!c.linearBeforeReset()) {
                            // n = g(W_in x + b_in + W_hn (r*h) + b_hn): the n rows see r*h, not h.
                            for (int j = 0; j < h; j++) {
                                dah[2 * h + j] = pr.operand(dah[2 * h + j]);
                            }
                            for (int k = 0; k < h; k++) {
                                double s = 0;
                                for (int j = 0; j < h; j++) {
                                    s = pr.fma(whh[(2 * h + j) * h + k], dah[2 * h + j], s);
                                }
                                dRh[k] = pr.fp32(s);
                            }
                            for (int j = 0; j < h; j++) {
                                double rawR = tr.raw[rawOff + j];
                                double r = act.get(0).apply(clip(rawR, clip));
                                dhPrev[j] += dRh[j] * r;
                                resetHidden[j] = pr.operand(r * hp[hpOff + j]);
                                double dR = dRh[j] * hp[hpOff + j];
                                dax[j] = dah[j] = dR * act.get(0).derivative(clip(rawR, clip)) * clipGrad(rawR, clip);
                            }
                        }
                    }
                }
                for (int g = 0; g < gh; g++) {
                    dax[g] = pr.operand(dax[g]);
                    dah[g] = pr.operand(dah[g]);
                }
                for (int k = 0; k < pSize; k++) {
                    hpOp[k] = pr.operand(hp[hpOff + k]);
                }
                accumulateLinear(c, wih, whh, gWih, gWhh, gBih, gBhh, x, tb * in, in, hpOp, 0, resetHidden, dax,
                        dah, dx, dhPrev, pr);
                for (int k = 0; k < pSize; k++) {
                    dh[hOff + k] = pr.fp32(dhPrev[k]);
                }
            }
        }
    }

    /**
     * Gradients through the two affine maps a_x = W_ih x + b_ih and a_h = W_hh h + b_hh of one step:
     * weights, biases, dx and dhPrev (both accumulated). For GRU without linear-before-reset the n rows
     * of W_hh act on {@code resetHidden} = r*h, whose gradient the caller already folded into dhPrev.
     */
    private static void accumulateLinear(RecurrentConfig c, double[] wih, double[] whh, double[] gWih,
                                         double[] gWhh, double[] gBih, double[] gBhh, double[] x, int xOff, int in,
                                         double[] hp, int hpOff, double[] resetHidden, double[] dax, double[] dah,
                                         double[] dx, double[] dhPrev, Precision pr) {
        int h = c.hiddenSize();
        int pSize = c.stateSize();
        int gh = c.cell().gates() * h;
        int nRowsFrom = c.cell() == CellType.GRU && !c.linearBeforeReset() ? 2 * h : gh;
        for (int g = 0; g < gh; g++) {
            double gx = dax[g];
            double gHid = dah[g];
            if (gBih != null) {
                gBih[g] = pr.sum(gBih[g], gx);
                gBhh[g] = pr.sum(gBhh[g], gHid);
            }
            for (int k = 0; k < in; k++) {
                gWih[g * in + k] = pr.fma(gx, x[xOff + k], gWih[g * in + k]);
                dx[xOff + k] = pr.fma(wih[g * in + k], gx, dx[xOff + k]);
            }
            if (g < nRowsFrom) {
                for (int k = 0; k < pSize; k++) {
                    gWhh[g * pSize + k] = pr.fma(gHid, hp[hpOff + k], gWhh[g * pSize + k]);
                    dhPrev[k] = pr.fma(whh[g * pSize + k], gHid, dhPrev[k]);
                }
            } else {
                for (int k = 0; k < pSize; k++) {
                    gWhh[g * pSize + k] = pr.fma(gHid, resetHidden[k], gWhh[g * pSize + k]);
                }
            }
        }
    }
}
