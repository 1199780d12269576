package dev.seqkernels;

import dev.seqkernels.gpu.DeviceTensor;
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

    /** Whether the backend computes ops stored as F64 (the CPU reference does; GPU paths store F32, F16 and BF16). */
    default boolean supportsF64() {
        return false;
    }

    RecurrentResult recurrentForward(RecurrentConfig config, Map<String, Tensor> params, Tensor x, Tensor h0,
                                     Tensor c0, int[] lengths);

    /** {@code dOutput}, {@code dHn}, {@code dCn} may be null (zero gradient). */
    RecurrentGradients recurrentBackward(RecurrentConfig config, Map<String, Tensor> params, RecurrentResult forward,
                                         Tensor dOutput, Tensor dHn, Tensor dCn);

    /**
     * A backend's own copies of an op's parameters ({@link #prepareRecurrent}, {@link #prepareMha}),
     * updated in place by {@link dev.seqkernels.ops.PreparedWeights#update}, which checked the
     * name, shape and dtype of the values; closing frees them.
     */
    interface PreparedParams extends AutoCloseable {
        /** Writes parameter {@code name}'s new values (host memory) into every copy of it, before returning. */
        void update(String name, Tensor values);

        /** Writes parameter {@code name}'s new values (device memory of this backend's driver) into every copy, on {@code stream}. */
        void update(String name, DeviceTensor values, long stream);
    }

    /**
     * The backend's prepared form of a recurrent op's parameters (for example device copies in
     * the compute dtype), reused by every call given it; null when the backend reads the host
     * tensors each call. Closing it releases what it holds.
     */
    default PreparedParams prepareRecurrent(RecurrentConfig config, Map<String, Tensor> params, DType dtype) {
        return null;
    }

    /** {@link #recurrentForward} with the parameters' prepared form (from {@link #prepareRecurrent}; null: none). */
    default RecurrentResult recurrentForward(RecurrentConfig config, Map<String, Tensor> params, AutoCloseable prepared, Tensor x,
                                             Tensor h0, Tensor c0, int[] lengths) {
        return recurrentForward(config, params, x, h0, c0, lengths);
    }

    /**
     * {@link #recurrentForward} for inference: the result is never differentiated, so a backend may
     * skip saving what backward needs (the GPU path's cells write no trace). Its saved state, if
     * any, is released by the op. The default is the training forward.
     */
    default RecurrentResult recurrentInference(RecurrentConfig config, Map<String, Tensor> params, AutoCloseable prepared, Tensor x,
                                               Tensor h0, Tensor c0, int[] lengths) {
        return recurrentForward(config, params, prepared, x, h0, c0, lengths);
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
    default PreparedParams prepareMha(MultiHeadAttention op, Map<String, Tensor> params, DType dtype) {
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
