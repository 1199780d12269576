package dev.seqkernels.cpu;

import dev.seqkernels.DType;
import dev.seqkernels.FiniteDifferences;
import dev.seqkernels.TestData;
import dev.seqkernels.Tensor;
import dev.seqkernels.ops.Activation;
import dev.seqkernels.ops.Direction;
import dev.seqkernels.ops.Gru;
import dev.seqkernels.ops.Lstm;
import dev.seqkernels.ops.RecurrentGradients;
import dev.seqkernels.ops.RecurrentOp;
import dev.seqkernels.ops.RecurrentResult;
import dev.seqkernels.ops.Rnn;
import org.junit.jupiter.api.Named;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.Map;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;

/** Backward through time of every recurrent feature against central finite differences in float64. */
class RecurrentGradientTest {

    static Stream<Arguments> configs() {
        return Stream.of(
                op("rnn tanh, 2 layers, bidirectional",
                        Rnn.builder().inputSize(3).hiddenSize(4).numLayers(2).bidirectional(true).backend("cpu").build()),
                op("rnn relu, batch-first, no bias",
                        Rnn.builder().inputSize(3).hiddenSize(5).nonlinearity("relu").batchFirst(true).bias(false).backend("cpu").build()),
                op("lstm, 2 layers, bidirectional, projection",
                        Lstm.builder().inputSize(3).hiddenSize(5).projSize(2).numLayers(2).bidirectional(true).backend("cpu").build()),
                op("lstm peepholes + clip",
                        Lstm.builder().inputSize(3).hiddenSize(4).peepholes(true).clip(1.5).backend("cpu").build()),
                op("lstm input-forget, reverse",
                        Lstm.builder().inputSize(3).hiddenSize(4).inputForget(true).direction(Direction.REVERSE).backend("cpu").build()),
                op("lstm ONNX activations",
                        Lstm.builder().inputSize(3).hiddenSize(3).activations(Activation.of(Activation.Kind.SOFTSIGN),
                                Activation.of(Activation.Kind.SCALED_TANH), Activation.of(Activation.Kind.SOFTPLUS)).backend("cpu").build()),
                op("gru linear-before-reset, bidirectional",
                        Gru.builder().inputSize(3).hiddenSize(4).bidirectional(true).backend("cpu").build()),
                op("gru reset-before-linear, 2 layers, batch-first",
                        Gru.builder().inputSize(2).hiddenSize(4).numLayers(2).linearBeforeReset(false).batchFirst(true).backend("cpu").build()),
                op("gru ONNX activations + clip",
                        Gru.builder().inputSize(3).hiddenSize(3).linearBeforeReset(false).clip(1.0)
                                .activations(Activation.of(Activation.Kind.HARD_SIGMOID), Activation.of(Activation.Kind.ELU)).backend("cpu").build()));
    }

    private static Arguments op(String name, RecurrentOp op) {
        return Arguments.of(Named.of(name, op));
    }

    @ParameterizedTest
    @MethodSource("configs")
    void backwardMatchesFiniteDifferences(RecurrentOp op) {
        TestData data = new TestData();
        var c = op.config();
        int steps = 5;
        int batch = 3;
        int[] lengths = {5, 1, 3};
        int slots = c.numLayers() * c.numDirections();
        Map<String, Tensor> params = data.params(DType.F64, 0.8, c.parameterShapes());
        Tensor x = data.tensor(DType.F64, 1.0, c.batchFirst() ? new long[]{batch, steps, c.inputSize()} : new long[]{steps, batch, c.inputSize()});
        Tensor h0 = data.tensor(DType.F64, 0.5, slots, batch, c.stateSize());
        boolean lstm = c.cell() == dev.seqkernels.ops.CellType.LSTM;
        Tensor c0 = lstm ? data.tensor(DType.F64, 0.5, slots, batch, c.hiddenSize()) : null;
        RecurrentResult first = op.forward(params, x, h0, c0, lengths);
        Tensor seedOut = data.tensor(DType.F64, 1.0, first.output().shape());
        Tensor seedHn = data.tensor(DType.F64, 1.0, first.hn().shape());
        Tensor seedCn = lstm ? data.tensor(DType.F64, 1.0, first.cn().shape()) : null;
        RecurrentGradients g = op.backward(params, first, seedOut, seedHn, seedCn);
        java.util.function.DoubleSupplier loss = () -> {
            try (RecurrentResult r = op.forward(params, x, h0, c0, lengths)) {
                return FiniteDifferences.dot(r.output(), seedOut) + FiniteDifferences.dot(r.hn(), seedHn)
                        + FiniteDifferences.dot(r.cn(), seedCn);
            }
        };
        String tag = c.cell() + " " + data;
        FiniteDifferences.check(tag + " dx", x, g.dx(), loss);
        FiniteDifferences.check(tag + " dh0", h0, g.dh0(), loss);
        if (lstm) {
            FiniteDifferences.check(tag + " dc0", c0, g.dc0(), loss);
        }
        assertEquals(params.keySet(), g.params().keySet());
        for (var e : params.entrySet()) {
            FiniteDifferences.check(tag + " d" + e.getKey(), e.getValue(), g.params().get(e.getKey()), loss);
        }
    }
}
