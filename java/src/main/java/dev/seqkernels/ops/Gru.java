package dev.seqkernels.ops;

import dev.seqkernels.Backend;

import java.util.List;

/**
 * GRU over whole sequences, PyTorch's {@code nn.GRU} semantics (gates r,z,n). With
 * {@code linearBeforeReset(true)} (PyTorch, cuDNN; the default) n = g(W_in x + b_in + r*(W_hn h + b_hn));
 * with false (the original GRU, ONNX's default) n = g(W_in x + b_in + W_hn (r*h) + b_hn).
 */
public final class Gru extends RecurrentOp {
    private Gru(RecurrentConfig config, Backend backend) {
        super(config, backend);
    }

    public static Builder builder() {
        return new Builder();
    }

    public static final class Builder extends RecurrentOp.Builder<Builder, Gru> {
        private boolean linearBeforeReset = true;

        public Builder linearBeforeReset(boolean v) {
            linearBeforeReset = v;
            return this;
        }

        @Override
        Builder self() {
            return this;
        }

        @Override
        List<Activation> defaultActivations() {
            return List.of(Activation.SIGMOID, Activation.TANH);
        }

        @Override
        RecurrentConfig config(List<List<Activation>> acts) {
            return new RecurrentConfig(CellType.GRU, inputSize, hiddenSize, numLayers, direction, batchFirst, bias, 0,
                    linearBeforeReset, false, false, clip, acts, allowTf32);
        }

        @Override
        Gru create(RecurrentConfig config, Backend backend) {
            return new Gru(config, backend);
        }
    }
}
