package dev.seqkernels.gpu;

import java.util.Map;

/**
 * A device-resident multi-head attention backward's gradients, in the op's dtype, contiguous: of
 * query, key and value (each in its input's shape and the op's layout; with one tensor given as all
 * three, three gradients to add) and of the parameters by PyTorch's names, in the op's order.
 * Closing it frees them and the call's temporaries; close it only once the stream has reached the
 * call's work.
 */
public record DeviceMhaGradients(DeviceTensor dQuery, DeviceTensor dKey, DeviceTensor dValue, Map<String, DeviceTensor> params,
                                 DeviceScope scope) implements AutoCloseable {
    public DeviceMhaGradients {
        params = java.util.Collections.unmodifiableMap(new java.util.LinkedHashMap<>(params));
    }

    @Override
    public void close() {
        scope.close();
    }
}
