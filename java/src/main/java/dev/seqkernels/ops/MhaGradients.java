package dev.seqkernels.ops;

import dev.seqkernels.Tensor;

import java.util.Map;

/**
 * Gradients of multi-head attention: shaped like query, key and value, and one per parameter under
 * its PyTorch name. For self-attention (one tensor passed as query, key and value) the caller adds
 * the three.
 */
public record MhaGradients(Tensor dQuery, Tensor dKey, Tensor dValue, Map<String, Tensor> params)
        implements AutoCloseable {
    @Override
    public void close() {
        dQuery.close();
        dKey.close();
        dValue.close();
        params.values().forEach(Tensor::close);
    }
}
