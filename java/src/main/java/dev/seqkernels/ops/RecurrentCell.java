package dev.seqkernels.ops;

import dev.seqkernels.SeqkException;
import dev.seqkernels.Tensor;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * One recurrent step with PyTorch's cell names and shapes ({@code nn.RNNCell}, {@code nn.LSTMCell},
 * {@code nn.GRUCell}): parameters {@code weight_ih} [G*H, I], {@code weight_hh} [G*H, H],
 * {@code bias_ih}, {@code bias_hh} [G*H] (plus {@code weight_peephole} [3H] with ONNX peepholes);
 * x [B, I], h and c [B, H]. It is exactly a one-step, one-layer, forward sequence op, and runs on
 * that op's backend. Made by {@code Lstm.builder()...buildCell()} (and likewise for Gru, Rnn).
 */
public final class RecurrentCell {
    private final RecurrentOp sequence;

    RecurrentCell(RecurrentOp sequence) {
        RecurrentConfig c = sequence.config();
        if (c.numLayers() != 1 || c.direction() != Direction.FORWARD || c.batchFirst() || c.projSize() != 0) {
            throw new SeqkException.InvalidConfig("a cell is one layer, forward, not batch-first, without projection; got "
                    + c.numLayers() + " layers, " + c.direction() + (c.batchFirst() ? ", batch-first" : "")
                    + (c.projSize() != 0 ? ", projSize " + c.projSize() : ""));
        }
        this.sequence = sequence;
    }

    public RecurrentConfig config() {
        return sequence.config();
    }

    /**
     * The one-step sequence op this cell is: for what the cell API does not take (prepared weights,
     * device tensors through {@code dev.seqkernels.gpu.DeviceRecurrent}, a caller's stream). Its
     * parameters carry the layer suffix ({@code weight_ih_l0} for the cell's {@code weight_ih}), x is
     * [1, batch, input_size] and h, c [1, batch, hidden_size]; its results are the cell's exactly.
     */
    public RecurrentOp sequenceOp() {
        return sequence;
    }

    /** Parameter names and shapes: PyTorch's cell names (no layer suffix). */
    public Map<String, long[]> parameterShapes() {
        Map<String, long[]> m = new LinkedHashMap<>();
        sequence.config().parameterShapes().forEach((name, shape) -> m.put(cellName(name), shape));
        return m;
    }

    /** The cell's new state: {@code h} [B, H], {@code c} [B, H] for LSTM (else null). */
    public record Result(Tensor h, Tensor c, RecurrentResult step) implements AutoCloseable {
        @Override
        public void close() {
            step.close();
        }
    }

    /** Gradients: dx [B, I], dh and dc (LSTM) like the incoming state, parameters under cell names. */
    public record Gradients(Tensor dx, Tensor dh, Tensor dc, Map<String, Tensor> params) implements AutoCloseable {
        @Override
        public void close() {
            dx.close();
            dh.close();
            if (dc != null) {
                dc.close();
            }
            params.values().forEach(Tensor::close);
        }
    }

    /**
     * @param x [B, I]
     * @param h [B, H] or null for zeros
     * @param c [B, H] or null for zeros (LSTM only)
     */
    public Result forward(Map<String, Tensor> params, Tensor x, Tensor h, Tensor c) {
        String op = opName();
        RecurrentConfig cfg = sequence.config();
        Checks.present(op, "x", x);
        Checks.floating(op, "x", x);
        long batch = x.rank() == 2 ? x.size(0) : -1;
        Checks.shape(op, "x", x, "[batch, input_size]", batch, cfg.inputSize());
        if (h != null) {
            Checks.shape(op, "h", h, "[batch, hidden_size]", batch, cfg.hiddenSize());
        }
        if (c != null) {
            if (cfg.cell() != CellType.LSTM) {
                throw new SeqkException.ShapeMismatch(op + ": argument 'c' is only for LSTM");
            }
            Checks.shape(op, "c", c, "[batch, hidden_size]", batch, cfg.hiddenSize());
        }
        Checks.params(op, params, parameterShapes(), x.dtype());
        RecurrentResult r = sequence.forward(sequenceParams(params), x.unsqueeze(0),
                h == null ? null : h.unsqueeze(0), c == null ? null : c.unsqueeze(0), null);
        return new Result(r.hn().select(0, 0), r.cn() == null ? null : r.cn().select(0, 0), r);
    }

    /** Gradients of sum(h' * dH) + sum(c' * dC); null gradients are zero. */
    public Gradients backward(Map<String, Tensor> params, Result forward, Tensor dH, Tensor dC) {
        String op = opName();
        if (forward == null) {
            throw new SeqkException.ShapeMismatch(op + ": argument 'forward' is required");
        }
        if (dH != null) {
            Checks.shape(op, "dH", dH, "like h", forward.h().shape());
        }
        if (dC != null) {
            if (forward.c() == null) {
                throw new SeqkException.ShapeMismatch(op + ": argument 'dC' is only for LSTM");
            }
            Checks.shape(op, "dC", dC, "like c", forward.c().shape());
        }
        Checks.params(op, params, parameterShapes(), forward.h().dtype());
        RecurrentGradients g = sequence.backward(sequenceParams(params), forward.step(), null,
                dH == null ? null : dH.unsqueeze(0), dC == null ? null : dC.unsqueeze(0));
        Map<String, Tensor> named = new LinkedHashMap<>();
        g.params().forEach((name, t) -> named.put(cellName(name), t));
        return new Gradients(g.dx().select(0, 0), g.dh0().select(0, 0), g.dc0() == null ? null : g.dc0().select(0, 0), named);
    }

    private String opName() {
        return sequence.config().cell().name().toLowerCase(java.util.Locale.ROOT) + "_cell";
    }

    private Map<String, Tensor> sequenceParams(Map<String, Tensor> params) {
        Map<String, Tensor> m = new LinkedHashMap<>();
        params.forEach((name, t) -> m.put(name + "_l0", t));
        return m;
    }

    private static String cellName(String sequenceName) {
        return sequenceName.substring(0, sequenceName.length() - "_l0".length());
    }
}
