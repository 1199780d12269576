package dev.seqkernels.ops;

import dev.seqkernels.Tensor;

/**
 * Multi-head attention outputs: {@code out} [Lq, B, E] ([B, Lq, E] batch-first) and, when asked
 * for, {@code attnWeights} [B, Lq, Lk] averaged over heads (else null). {@code saved} belongs to the backend.
 */
public record MhaResult(Tensor out, Tensor attnWeights, Object saved) implements AutoCloseable {
    @Override
    public void close() {
        out.close();
        if (attnWeights != null) {
            attnWeights.close();
        }
    }
}
