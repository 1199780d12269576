package dev.seqkernels.gpu;

/**
 * A device-resident recurrent forward's outputs, in the op's dtype and layout, contiguous: output
 * [seq_len, batch, D*P] (batch first: [batch, seq_len, D*P]), hn [num_layers*D, batch, P] and, for
 * an LSTM, cn [num_layers*D, batch, H] (else null). Closing it frees everything the call allocated:
 * the outputs (a caller's output buffer stays the caller's), the uploaded lengths, the scratch and
 * the per-step traces backward reads. Close it only once the stream has reached the call's work.
 */
public record DeviceRecurrentResult(DeviceTensor output, DeviceTensor hn, DeviceTensor cn, AutoCloseable saved)
        implements AutoCloseable {
    /** Whether backward can run from this result (the forward did not run in inference mode). */
    public boolean differentiable() {
        return saved instanceof RecurrentGpu.Saved;
    }

    @Override
    public void close() {
        try {
            saved.close();
        } catch (Exception e) {
            throw new IllegalStateException("could not release the recurrent forward's device state", e);
        }
    }
}
