package dev.seqkernels.gpu;

/**
 * A device-resident attention forward's outputs: out (the caller's buffer when one was given) and
 * lse [batch, q_heads, q_len] f32. Closing it frees what the call allocated (lse, a new out, the
 * uploads of masks and lengths, scratch) and what backward would have needed; a caller's out
 * buffer stays the caller's. Close it only once the stream has reached the call's work.
 */
public record DeviceAttentionResult(DeviceTensor out, DeviceTensor lse, AutoCloseable saved) implements AutoCloseable {
    /** Whether backward can run from this result (the forward did not run in inference mode). */
    public boolean differentiable() {
        return saved instanceof AttentionGpu.Saved;
    }

    @Override
    public void close() {
        try {
            saved.close();
        } catch (Exception e) {
            throw new IllegalStateException("could not release the attention forward's device state", e);
        }
    }
}
