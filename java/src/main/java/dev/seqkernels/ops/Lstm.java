package dev.seqkernels.ops;

import dev.seqkernels.Backend;

import java.util.List;

/**
 * LSTM over whole sequences, PyTorch's {@code nn.LSTM} semantics (gates i,f,g,o; {@code proj_size})
 * plus ONNX's extras: peepholes, cell clip, coupled input-forget gate, per-gate activations.
 */
public final class Lstm extends RecurrentOp {
    private Lstm(RecurrentConfig config, Backend backend) {
        super(config, backend);
    }

    public static Builder builder() {
        return new Builder();
    }

    public static final class Builder extends RecurrentOp.Builder<Builder, Lstm> {
        private int projSize;
        private boolean peepholes;
        private boolean inputForget;

        /** PyTorch's {@code proj_size}: h = W_hr (o * tanh(c)), of size projSize. */
        public Builder projSize(int v) {
            projSize = v;
            return this;
        }

        /** ONNX peepholes: parameters {@code weight_peephole_l<k>[_reverse]} [3H], gates i,f,o. */
        public Builder peepholes(boolean v) {
            peepholes = v;
            return this;
        }

        /** ONNX {@code input_forget}: the forget gate is 1 - i, and its own weights are unused. */
        public Builder inputForget(boolean v) {
            inputForget = v;
            return this;
        }

        @Override
        Builder self() {
            return this;
        }

        @Override
        List<Activation> defaultActivations() {
            return List.of(Activation.SIGMOID, Activation.TANH, Activation.TANH);
        }

        @Override
        RecurrentConfig config(List<List<Activation>> acts) {
            return new RecurrentConfig(CellType.LSTM, inputSize, hiddenSize, numLayers, direction, batchFirst, bias,
                    projSize, false, peepholes, inputForget, clip, acts, allowTf32);
        }

        @Override
        Lstm create(RecurrentConfig config, Backend backend) {
            return new Lstm(config, backend);
        }
    }
}
