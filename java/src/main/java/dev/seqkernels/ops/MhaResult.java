package dev.seqkernels.ops;

import dev.seqkernels.Tensor;

/**
 * Multi-head attention outputs: {@code out} [Lq, B, E] ([B, Lq, E] batch-first) and, when asked
 * for, {@code attnWeights} [B, Lq, Lk] averaged over heads (else null). {@code saved} belongs to the backend;
 * closing the result releases it.
 */
public record MhaResult(Tensor out, Tensor attnWeights, Object saved) implements AutoCloseable {
    @Override
    public void close() {
        if (saved instanceof AutoCloseable resources) {
            try {
                resources.close();
            } catch (Exception e) {
                throw new IllegalStateException("could not release the saved state", e);
            }
        }
        out.close();
        if (attnWeights != null) {
            attnWeights.close();
        }
    }
}
