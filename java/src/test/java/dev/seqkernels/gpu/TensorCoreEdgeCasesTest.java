package dev.seqkernels.gpu;

import dev.seqkernels.DType;
import dev.seqkernels.TestData;
import dev.seqkernels.Tensor;
import dev.seqkernels.ops.Attention;
import dev.seqkernels.ops.AttentionResult;
import dev.seqkernels.ops.CausalAlignment;
import dev.seqkernels.ops.Mask;
import org.junit.jupiter.api.Test;

/**
 * The tensor-core forward's two loops and two instances on edge shapes, against the reference in
 * values and NaN pattern: unmasked tiles with rows past a query length, odd counts of 8-column v
 * blocks with 16-byte and element loads, negative bottom-right offsets, key length 0, GQA, an
 * explicit mask, NaN in q and NaN and inf in v.
 */
@PerBinding
@DeviceDependent
class TensorCoreEdgeCasesTest {
    @Test
    void edgeShapesMatchTheReference() {
        GpuTargets.assumeTensorCores("the tensor-core forward's edge shapes");
        TestData data = new TestData();
        // dtype, B, hq, hkv, lq, lk, d, dv, causal, keyLengths, queryLengths, explicit mask
        Object[][] cases = {
            {DType.F16, 2, 2, 1, 130, 200, 40, 24, CausalAlignment.NONE, new int[]{200, 150}, new int[]{130, 70}, false},
            {DType.BF16, 2, 2, 2, 130, 200, 20, 40, CausalAlignment.TOP_LEFT, new int[]{200, 131}, new int[]{130, 100}, false},
            {DType.F16, 2, 4, 2, 150, 100, 72, 88, CausalAlignment.BOTTOM_RIGHT, new int[]{100, 60}, new int[]{150, 129}, false},
            {DType.BF16, 1, 2, 1, 100, 300, 64, 24, CausalAlignment.BOTTOM_RIGHT, new int[]{300}, new int[]{65}, false},
            {DType.F16, 1, 2, 1, 100, 300, 64, 40, CausalAlignment.BOTTOM_RIGHT, new int[]{300}, new int[]{65}, false},
            {DType.BF16, 1, 1, 1, 70, 200, 128, 120, CausalAlignment.TOP_LEFT, null, null, false},
            {DType.F16, 1, 1, 1, 70, 200, 96, 104, CausalAlignment.NONE, new int[]{0}, null, false},
            {DType.F16, 2, 2, 1, 130, 200, 40, 24, CausalAlignment.BOTTOM_RIGHT, new int[]{200, 10}, new int[]{130, 70}, true},
            {DType.F16, 2, 2, 1, 70, 200, 24, 20, CausalAlignment.NONE, new int[]{200, 150}, new int[]{70, 60}, false},
            {DType.BF16, 1, 2, 2, 130, 260, 8, 12, CausalAlignment.TOP_LEFT, null, new int[]{100}, false},
            {DType.BF16, 1, 1, 1, 100, 90, 120, 100, CausalAlignment.BOTTOM_RIGHT, new int[]{40}, new int[]{100}, false},
            // 256 columns (q in shared memory): no key at all, GQA with lengths past the tiles, an explicit mask
            {DType.BF16, 1, 1, 1, 70, 100, 160, 144, CausalAlignment.NONE, new int[]{0}, null, false},
            {DType.F16, 2, 2, 1, 100, 90, 200, 256, CausalAlignment.BOTTOM_RIGHT, new int[]{90, 33}, new int[]{100, 65}, false},
            {DType.BF16, 1, 2, 1, 65, 50, 256, 136, CausalAlignment.TOP_LEFT, null, null, true},
        };
        int n = 0;
        for (Object[] c : cases) {
            DType dt = (DType) c[0];
            int b = (int) c[1], hq = (int) c[2], hkv = (int) c[3], lq = (int) c[4], lk = (int) c[5], d = (int) c[6], dv = (int) c[7];
            CausalAlignment causal = (CausalAlignment) c[8];
            int[] kl = (int[]) c[9], ql = (int[]) c[10];
            boolean bias = (boolean) c[11];
            Tensor q = data.tensor(dt, 1, b, hq, lq, d);
            Tensor k = data.tensor(dt, 1, b, hkv, lk, d);
            Tensor v = data.tensor(dt, 1, b, hkv, lk, dv);
            // non-finite v scattered: some keys attended by all later rows, some only by late rows
            for (int j = 5; j < lk; j += 37) {
                v.set(Double.NaN, 0, 0, j, (j / 37) % dv);
                v.set(Double.POSITIVE_INFINITY, b - 1, hkv - 1, j, (j / 37 + 3) % dv);
            }
            q.set(Double.NaN, 0, 0, lq - 1, 0);
            Tensor add = bias ? data.tensor(DType.F32, 1, lq, lk) : null;
            Attention.Inputs in = Attention.inputs(q, k, v).keyLengths(kl).queryLengths(ql);
            Attention.Inputs ref = Attention.inputs(q.to(DType.F64), k.to(DType.F64), v.to(DType.F64)).keyLengths(kl).queryLengths(ql);
            if (add != null) {
                in.mask(Mask.additive(add));
                ref.mask(Mask.additive(add.to(DType.F64)));
            }
            String tag = "case " + (n++) + " " + dt + " d=" + d + " dv=" + dv + " " + causal + " " + data;
            try (AttentionResult got = Attention.builder().causal(causal).backend(GpuTargets.newBackend()).build().forward(in);
                 AttentionResult want = Attention.builder().causal(causal).backend("cpu").build().forward(ref)) {
                NanPropagationTest.checkNan(tag + " out", got.out(), want.out(), dev.seqkernels.Compare.tolerance(dt));
                NanPropagationTest.checkNan(tag + " lse", got.lse(), want.lse().to(DType.F32), dev.seqkernels.Compare.tolerance(DType.F32));
            }
        }
    }
}
