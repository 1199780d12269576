package dev.seqkernels.gpu;

import dev.seqkernels.Backend;
import dev.seqkernels.DType;
import dev.seqkernels.Tensor;
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
 * The ops' GPU path over one {@link Driver} binding (emu, panama or jcuda).
 * What is not on the GPU yet fails with a sentence saying so: never a silent fall back to the CPU.
 */
public final class GpuBackend implements Backend {
    private final Driver driver;
    private final RecurrentGpu recurrent;
    private final AttentionGpu attention;

    public GpuBackend(Driver driver) {
        this.driver = driver;
        this.recurrent = new RecurrentGpu(driver);
        this.attention = new AttentionGpu(driver);
    }

    /** The recurrent path, for tests that pin its kernel choice. */
    RecurrentGpu recurrentPath() {
        return recurrent;
    }

    /** The attention path, for tests that pin its kernel choice. */
    AttentionGpu attentionPath() {
        return attention;
    }

    /** The binding this backend launches on. */
    public Driver driver() {
        return driver;
    }

    @Override
    public String name() {
        return driver.name();
    }

    @Override
    public RecurrentResult recurrentForward(RecurrentConfig config, Map<String, Tensor> params, Tensor x, Tensor h0,
                                            Tensor c0, int[] lengths) {
        return recurrent.forward(config, params, null, x, h0, c0, lengths, true);
    }

    @Override
    public RecurrentGradients recurrentBackward(RecurrentConfig config, Map<String, Tensor> params, RecurrentResult forward,
                                                Tensor dOutput, Tensor dHn, Tensor dCn) {
        return recurrent.backward(config, params, null, forward, dOutput, dHn, dCn);
    }

    @Override
    public PreparedParams prepareRecurrent(RecurrentConfig config, Map<String, Tensor> params, DType dtype) {
        return recurrent.prepare(config, params, dtype);
    }

    @Override
    public RecurrentResult recurrentForward(RecurrentConfig config, Map<String, Tensor> params, AutoCloseable prepared, Tensor x,
                                            Tensor h0, Tensor c0, int[] lengths) {
        return recurrent.forward(config, params, prepared, x, h0, c0, lengths, true);
    }

    /** The forward without the trace: the cells save nothing, and nothing stays on the device. */
    @Override
    public RecurrentResult recurrentInference(RecurrentConfig config, Map<String, Tensor> params, AutoCloseable prepared, Tensor x,
                                              Tensor h0, Tensor c0, int[] lengths) {
        return recurrent.forward(config, params, prepared, x, h0, c0, lengths, false);
    }

    @Override
    public RecurrentGradients recurrentBackward(RecurrentConfig config, Map<String, Tensor> params, AutoCloseable prepared,
                                                RecurrentResult forward, Tensor dOutput, Tensor dHn, Tensor dCn) {
        return recurrent.backward(config, params, prepared, forward, dOutput, dHn, dCn);
    }

    @Override
    public AttentionResult attentionForward(Attention op, Attention.Inputs inputs) {
        return attention.forward(op, inputs);
    }

    @Override
    public AttentionGradients attentionBackward(Attention op, AttentionResult forward, Tensor dOut) {
        return attention.backward(forward, dOut);
    }

    @Override
    public MhaResult mhaForward(MultiHeadAttention op, Map<String, Tensor> params, MultiHeadAttention.Inputs inputs) {
        return attention.mhaForward(op, params, null, inputs);
    }

    @Override
    public PreparedParams prepareMha(MultiHeadAttention op, Map<String, Tensor> params, DType dtype) {
        return attention.prepareMha(op, params, dtype);
    }

    @Override
    public MhaResult mhaForward(MultiHeadAttention op, Map<String, Tensor> params, AutoCloseable prepared,
                                MultiHeadAttention.Inputs inputs) {
        return attention.mhaForward(op, params, prepared, inputs);
    }

    @Override
    public MhaGradients mhaBackward(MultiHeadAttention op, Map<String, Tensor> params, MhaResult forward, Tensor dOut,
                                    Tensor dAttnWeights) {
        return attention.mhaBackward(op, params, forward, dOut, dAttnWeights);
    }
}
