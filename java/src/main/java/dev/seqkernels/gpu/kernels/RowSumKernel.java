package dev.seqkernels.gpu.kernels;

import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.gpu.DeviceTensor;
import dev.seqkernels.gpu.Dim3;
import dev.seqkernels.gpu.Driver;
import dev.seqkernels.gpu.KernelArgs;

/**
 * Launch plan for cuda/reduce.cu: out[r] = sum of row r, one warp per row,
 * {@value #WARPS_PER_BLOCK} warps (rows) per block.
 */
public final class RowSumKernel {
    static final int WARPS_PER_BLOCK = 8;

    private final Driver driver;
    private final long f32;

    public RowSumKernel(Driver driver) {
        this.driver = driver;
        this.f32 = driver.function(driver.loadModule("reduce"), "row_sum_f32");
    }

    /** x [rows, cols] F32, out [rows] F32. */
    public void sum(DeviceTensor x, DeviceTensor out, long stream) {
        long[] s = x.shape();
        if (s.length != 2) {
            throw new SeqkException.ShapeMismatch("row_sum: 'x' must be [rows, cols]");
        }
        LstmCellKernel.check("x", x, DType.F32, s[0], s[1]);
        LstmCellKernel.check("out", out, DType.F32, s[0]);
        if (s[0] == 0) {
            return;
        }
        int blocks = (int) ((s[0] + WARPS_PER_BLOCK - 1) / WARPS_PER_BLOCK);
        driver.launch(f32, Dim3.of(blocks), Dim3.of(32, WARPS_PER_BLOCK), 0, stream,
                new KernelArgs().pointer(x.pointer()).pointer(out.pointer()).i32((int) s[0]).i32((int) s[1]));
    }
}
