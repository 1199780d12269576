package dev.seqkernels.ops;

import dev.seqkernels.Tensor;

/**
 * Scaled dot-product attention outputs: {@code out} [B, Hq, Lq, Dv] and {@code lse} [B, Hq, Lq]
 * (natural log-sum-exp of the scaled, masked scores; F32 for F16/BF16 inputs, else the input dtype).
 * A fully masked row has out 0 and lse -infinity. {@code saved} belongs to the backend;
 * closing the result releases it.
 */
public record AttentionResult(Tensor out, Tensor lse, Object saved) implements AutoCloseable {
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
        lse.close();
    }
}
