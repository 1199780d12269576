package dev.seqkernels;

import dev.seqkernels.ops.Attention;
import dev.seqkernels.ops.AttentionGradients;
import dev.seqkernels.ops.AttentionResult;
import dev.seqkernels.ops.MhaGradients;
import dev.seqkernels.ops.MhaResult;
import dev.seqkernels.ops.MultiHeadAttention;
import dev.seqkernels.ops.RecurrentConfig;
import dev.seqkernels.ops.RecurrentGradients;
import dev.seqkernels.ops.RecurrentResult;

import java.util.Map;

/**
 * Where an op's math runs. Ops validate their arguments before calling a backend, so a backend may
 * assume shapes, dtypes and lengths are consistent. Every method returns newly allocated tensors in
 * the dtype of the op's input.
 */
public interface Backend {
    String name();

    RecurrentResult recurrentForward(RecurrentConfig config, Map<String, Tensor> params, Tensor x, Tensor h0,
                                     Tensor c0, int[] lengths);

    /** {@code dOutput}, {@code dHn}, {@code dCn} may be null (zero gradient). */
    RecurrentGradients recurrentBackward(RecurrentConfig config, Map<String, Tensor> params, RecurrentResult forward,
                                         Tensor dOutput, Tensor dHn, Tensor dCn);

    /**
     * The backend's prepared form of a recurrent op's parameters (for example device copies in
     * the compute dtype), reused by every call given it; null when the backend reads the host
     * tensors each call. Closing it releases what it holds.
     */
    default AutoCloseable prepareRecurrent(RecurrentConfig config, Map<String, Tensor> params, DType dtype) {
        return null;
    }

    /** {@link #recurrentForward} with the parameters' prepared form (from {@link #prepareRecurrent}; null: none). */
    default RecurrentResult recurrentForward(RecurrentConfig config, Map<String, Tensor> params, AutoCloseable prepared, Tensor x,
                                             Tensor h0, Tensor c0, int[] lengths) {
        return recurrentForward(config, params, x, h0, c0, lengths);
    }

    /** {@link #recurrentBackward} with the parameters' prepared form (null: none). */
    default RecurrentGradients recurrentBackward(RecurrentConfig config, Map<String, Tensor> params, AutoCloseable prepared,
                                                 RecurrentResult forward, Tensor dOutput, Tensor dHn, Tensor dCn) {
        return recurrentBackward(config, params, forward, dOutput, dHn, dCn);
    }

    AttentionResult attentionForward(Attention op, Attention.Inputs inputs);

    AttentionGradients attentionBackward(Attention op, AttentionResult forward, Tensor dOut);

    MhaResult mhaForward(MultiHeadAttention op, Map<String, Tensor> params, MultiHeadAttention.Inputs inputs);

    /** A multi-head attention op's prepared parameters (as {@link #prepareRecurrent}); null: the host tensors each call. */
    default AutoCloseable prepareMha(MultiHeadAttention op, Map<String, Tensor> params, DType dtype) {
        return null;
    }

    /** {@link #mhaForward} with the parameters' prepared form (null: none). */
    default MhaResult mhaForward(MultiHeadAttention op, Map<String, Tensor> params, AutoCloseable prepared,
                                 MultiHeadAttention.Inputs inputs) {
        return mhaForward(op, params, inputs);
    }

    /** {@code dAttnWeights} may be null; it must be null when the forward did not return weights. */
    MhaGradients mhaBackward(MultiHeadAttention op, Map<String, Tensor> params, MhaResult forward, Tensor dOut,
                             Tensor dAttnWeights);
}
