package dev.seqkernels.gpu;

/**
 * A device-resident attention backward's gradients, in the op's dtype, each with its input's shape
 * and element strides (a strided q gets a dq laid out the same way). Closing it frees them and the
 * call's temporaries; close it only once the stream has reached the call's work.
 */
public record DeviceAttentionGradients(DeviceTensor dq, DeviceTensor dk, DeviceTensor dv, DeviceScope scope)
        implements AutoCloseable {
    @Override
    public void close() {
        scope.close();
    }
}
