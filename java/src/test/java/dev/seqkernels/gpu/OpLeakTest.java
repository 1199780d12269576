package dev.seqkernels.gpu;

import dev.seqkernels.DType;
import dev.seqkernels.Tensor;
import dev.seqkernels.TestData;
import dev.seqkernels.ops.Attention;
import dev.seqkernels.ops.CausalAlignment;
import dev.seqkernels.ops.Gru;
import dev.seqkernels.ops.Lstm;
import dev.seqkernels.ops.Mask;
import dev.seqkernels.ops.MultiHeadAttention;
import org.junit.jupiter.api.Test;

import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * Every op, forward and backward, leaves no host or device memory behind once its results are
 * closed: {@link Tensor#openBytes()} and the driver's memory in use return exactly to where they
 * were after each call, once a first call has loaded modules (counters, not RSS, so a few calls
 * prove it and the garbage collector plays no part). The same ops on cpu, then through the binding
 * under test.
 */
@PerBinding
class OpLeakTest {
    private final TestData data = new TestData();

    private void flat(String what, Runnable call) {
        Driver driver = GpuTargets.driver();
        call.run();  // a first call may load modules and size caches once
        for (int i = 0; i < 2; i++) {
            long host = Tensor.openBytes();
            long device = driver.memoryInUse();
            call.run();
            assertEquals(host, Tensor.openBytes(), what + ": host bytes left behind by call " + i);
            assertEquals(device, driver.memoryInUse(), what + ": device bytes left behind by call " + i);
        }
    }

    private void recurrent(String backend) {
        for (DType dt : new DType[]{DType.F32, DType.BF16}) {
            Lstm lstm = Lstm.builder().inputSize(3).hiddenSize(5).numLayers(2).bidirectional(true).backend(backend).build();
            Map<String, Tensor> p = data.params(dt, 0.5, lstm.config().parameterShapes());
            Tensor x = data.tensor(dt, 1, 4, 2, 3);
            flat("lstm " + dt + " on " + backend, () -> {
                try (var f = lstm.forward(p, x, null, null, new int[]{4, 2});
                     Tensor dOut = data.tensor(dt, 1, f.output().shape());
                     var g = lstm.backward(p, f, dOut, null, null)) {
                    assertEquals(3, g.dx().size(2));
                }
            });
            Gru gru = Gru.builder().inputSize(3).hiddenSize(5).batchFirst(true).backend(backend).build();
            Map<String, Tensor> gp = data.params(dt, 0.5, gru.config().parameterShapes());
            Tensor xb = data.tensor(dt, 1, 2, 4, 3);
            flat("gru " + dt + " on " + backend, () -> {
                try (var f = gru.forward(gp, xb);
                     Tensor dOut = data.tensor(dt, 1, f.output().shape());
                     var g = gru.backward(gp, f, dOut, null, null)) {
                    assertEquals(3, g.dx().size(2));
                }
            });
            var cell = Lstm.builder().inputSize(3).hiddenSize(5).backend(backend).buildCell();
            Map<String, Tensor> cp = data.params(dt, 0.5, cell.parameterShapes());
            Tensor xc = data.tensor(dt, 1, 2, 3);
            flat("lstm_cell " + dt + " on " + backend, () -> {
                try (var f = cell.forward(cp, xc, null, null);
                     Tensor dh = data.tensor(dt, 1, 2, 5);
                     var g = cell.backward(cp, f, dh, null)) {
                    assertEquals(3, g.dx().size(1));
                }
            });
            x.close();
            xb.close();
            xc.close();
        }
    }

    private void attention(String backend) {
        for (DType dt : new DType[]{DType.F32, DType.F16}) {
            Attention sdpa = Attention.builder().causal(CausalAlignment.BOTTOM_RIGHT).backend(backend).build();
            Tensor q = data.tensor(dt, 1, 2, 2, 5, 8);
            Tensor k = data.tensor(dt, 1, 2, 1, 7, 8);
            Tensor v = data.tensor(dt, 1, 2, 1, 7, 8);
            Tensor bias = data.tensor(DType.F32, 1, 5, 7);
            flat("sdpa " + dt + " on " + backend, () -> {
                try (var f = sdpa.forward(Attention.inputs(q, k, v).mask(Mask.additive(bias)).keyLengths(new int[]{7, 4}));
                     Tensor dOut = data.tensor(dt, 1, f.out().shape());
                     var g = sdpa.backward(f, dOut)) {
                    assertEquals(8, g.dq().size(3));
                }
            });
            MultiHeadAttention mha = MultiHeadAttention.builder().embedDim(12).numHeads(4).numKvHeads(2).needWeights(true)
                    .backend(backend).build();
            Map<String, Tensor> mp = data.params(dt, 0.5, mha.parameterShapes());
            Tensor xm = data.tensor(dt, 1, 6, 2, 12);
            Tensor padding = Tensor.of(DType.BOOL, new double[]{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1}, 2, 6);
            flat("mha " + dt + " on " + backend, () -> {
                try (var f = mha.forward(mp, MultiHeadAttention.inputs(xm, xm, xm).keyPaddingMask(Mask.blocked(padding)));
                     Tensor dOut = data.tensor(dt, 1, f.out().shape());
                     var g = mha.backward(mp, f, dOut, null)) {
                    assertEquals(12, g.dQuery().size(2));
                }
            });
        }
    }

    @Test
    void recurrentOpsLeaveNothingOnCpu() {
        recurrent("cpu");
    }

    @Test
    void recurrentOpsLeaveNothing() {
        recurrent(GpuTargets.backend());
    }

    @Test
    void attentionOpsLeaveNothingOnCpu() {
        attention("cpu");
    }

    @Test
    void attentionOpsLeaveNothing() {
        attention(GpuTargets.backend());
    }
}
