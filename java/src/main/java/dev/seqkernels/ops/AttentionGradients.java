package dev.seqkernels.ops;

import dev.seqkernels.Tensor;

/** Gradients of attention: shaped like q, k and v (grouped heads summed over their query heads). */
public record AttentionGradients(Tensor dq, Tensor dk, Tensor dv) implements AutoCloseable {
    @Override
    public void close() {
        dq.close();
        dk.close();
        dv.close();
    }
}
