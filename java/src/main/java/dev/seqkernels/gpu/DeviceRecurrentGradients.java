package dev.seqkernels.gpu;

import java.util.Map;

/**
 * A device-resident recurrent backward's gradients, in the op's dtype, contiguous: dx like x (in
 * the op's layout), dh0 like hn, dc0 like cn (an LSTM's; else null) and the parameter gradients by
 * PyTorch's names, in the op's order. Closing it frees them and the call's temporaries; close it
 * only once the stream has reached the call's work.
 */
public record DeviceRecurrentGradients(DeviceTensor dx, DeviceTensor dh0, DeviceTensor dc0, Map<String, DeviceTensor> params,
                                       DeviceScope scope) implements AutoCloseable {
    public DeviceRecurrentGradients {
        params = java.util.Collections.unmodifiableMap(new java.util.LinkedHashMap<>(params));
    }

    @Override
    public void close() {
        scope.close();
    }
}
