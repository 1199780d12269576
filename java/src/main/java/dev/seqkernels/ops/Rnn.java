package dev.seqkernels.ops;

import dev.seqkernels.Backend;
import dev.seqkernels.SeqkException;

import java.util.List;

/** Elman RNN over whole sequences, PyTorch's {@code nn.RNN}: h' = act(W_ih x + b_ih + W_hh h + b_hh). */
public final class Rnn extends RecurrentOp {
    private Rnn(RecurrentConfig config, Backend backend) {
        super(config, backend);
    }

    public static Builder builder() {
        return new Builder();
    }

    public static final class Builder extends RecurrentOp.Builder<Builder, Rnn> {
        private Activation nonlinearity = Activation.TANH;

        /** PyTorch's {@code nonlinearity}: "tanh" (default) or "relu". */
        public Builder nonlinearity(String name) {
            nonlinearity = switch (name) {
                case "tanh" -> Activation.TANH;
                case "relu" -> Activation.RELU;
                default -> throw new SeqkException.InvalidConfig("nonlinearity must be \"tanh\" or \"relu\", got \"" + name + "\"");
            };
            return this;
        }

        @Override
        Builder self() {
            return this;
        }

        @Override
        List<Activation> defaultActivations() {
            return List.of(nonlinearity);
        }

        @Override
        RecurrentConfig config(List<List<Activation>> acts) {
            return new RecurrentConfig(CellType.RNN, inputSize, hiddenSize, numLayers, direction, batchFirst, bias, 0,
                    false, false, false, clip, acts, allowTf32);
        }

        @Override
        Rnn create(RecurrentConfig config, Backend backend) {
            return new Rnn(config, backend);
        }
    }
}
