package dev.seqkernels.ops;

import dev.seqkernels.Tensor;

import java.util.Map;

/**
 * Gradients of a recurrent op: {@code dx} like x, {@code dh0} like h0, {@code dc0} like c0 (LSTM
 * only, else null), and one gradient per parameter under the parameter's PyTorch name.
 */
public record RecurrentGradients(Tensor dx, Tensor dh0, Tensor dc0, Map<String, Tensor> params)
        implements AutoCloseable {
    @Override
    public void close() {
        dx.close();
        dh0.close();
        if (dc0 != null) {
            dc0.close();
        }
        params.values().forEach(Tensor::close);
    }
}
