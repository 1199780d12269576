package dev.seqkernels.ops;

import dev.seqkernels.Tensor;

/**
 * A recurrent forward's outputs. {@code output} is [T, B, D*P] ([B, T, D*P] batch-first), zero past
 * each sequence's length; {@code hn} [L*D, B, P] and {@code cn} [L*D, B, H] (LSTM only, else null)
 * are the states at each sequence's last valid step. {@code saved} is what the backend that made it
 * needs for backward; pass the whole result to {@code backward}. Closing the result also releases
 * what {@code saved} holds (device buffers, on a GPU backend).
 */
public record RecurrentResult(Tensor output, Tensor hn, Tensor cn, Object saved) implements AutoCloseable {
    @Override
    public void close() {
        output.close();
        hn.close();
        if (cn != null) {
            cn.close();
        }
        if (saved instanceof AutoCloseable resources) {
            try {
                resources.close();
            } catch (Exception e) {
                throw new IllegalStateException("could not release a recurrent result's saved state", e);
            }
        }
    }
}
