package dev.seqkernels.gpu;

/**
 * A device-resident multi-head attention forward's output, in the op's dtype and layout,
 * contiguous ([q_len, batch, embed_dim], batch first [batch, q_len, embed_dim]). Closing it frees
 * everything the call allocated: the output (a caller's output buffer stays the caller's), the
 * projections, the uploaded masks and what backward reads. Close it only once the stream has
 * reached the call's work.
 */
public record DeviceMhaResult(DeviceTensor out, AutoCloseable saved) implements AutoCloseable {
    /** Whether backward can run from this result (the forward did not run in inference mode). */
    public boolean differentiable() {
        return saved instanceof AttentionGpu.MhaSaved;
    }

    @Override
    public void close() {
        try {
            saved.close();
        } catch (Exception e) {
            throw new IllegalStateException("could not release the multi-head attention forward's device state", e);
        }
    }
}
