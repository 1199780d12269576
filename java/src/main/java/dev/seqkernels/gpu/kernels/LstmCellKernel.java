package dev.seqkernels.gpu.kernels;

import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.gpu.DeviceTensor;
import dev.seqkernels.gpu.Dim3;
import dev.seqkernels.gpu.Driver;
import dev.seqkernels.gpu.KernelArgs;

import java.util.Arrays;

/**
 * Launch plan for cuda/lstm_cell.cu: the pointwise LSTM step after the GEMMs.
 * One thread per (batch, unit) element, {@value #THREADS} threads per block.
 */
public final class LstmCellKernel {
    static final int THREADS = 256;

    private final Driver driver;
    private final long f32;
    private final long f16;
    private final long bf16;

    public LstmCellKernel(Driver driver) {
        this.driver = driver;
        long module = driver.loadModule("lstm_cell");
        this.f32 = driver.function(module, "lstm_cell_fwd_f32");
        this.f16 = driver.function(module, "lstm_cell_fwd_f16");
        this.bf16 = driver.function(module, "lstm_cell_fwd_bf16");
    }

    /**
     * @param gatesX [B, 4H] x W_ih^T + b_ih (gates i, f, g, o)
     * @param gatesH [B, 4H] h W_hh^T + b_hh
     * @param cPrev  [B, H]
     * @param hOut   [B, H], written
     * @param cOut   [B, H], written; may be cPrev itself
     */
    public void forward(DeviceTensor gatesX, DeviceTensor gatesH, DeviceTensor cPrev, DeviceTensor hOut,
                        DeviceTensor cOut, long stream) {
        long[] c = cPrev.shape();
        if (c.length != 2) {
            throw new SeqkException.ShapeMismatch("lstm_cell_fwd: 'cPrev' must be [batch, hidden], got " + Arrays.toString(c));
        }
        long batch = c[0];
        long hidden = c[1];
        DType dt = cPrev.dtype();
        check("gatesX", gatesX, dt, batch, 4 * hidden);
        check("gatesH", gatesH, dt, batch, 4 * hidden);
        check("hOut", hOut, dt, batch, hidden);
        check("cOut", cOut, dt, batch, hidden);
        long function = switch (dt) {
            case F32 -> f32;
            case F16 -> f16;
            case BF16 -> bf16;
            default -> throw new SeqkException.DTypeMismatch("lstm_cell_fwd: dtype " + dt + " is not F32, F16 or BF16");
        };
        long n = batch * hidden;
        if (n == 0) {
            return;
        }
        if (n > Integer.MAX_VALUE) {
            throw new SeqkException.ShapeMismatch("lstm_cell_fwd: batch*hidden = " + n + " exceeds 2^31-1");
        }
        int blocks = (int) ((n + THREADS - 1) / THREADS);
        driver.launch(function, Dim3.of(blocks), Dim3.of(THREADS), 0, stream, new KernelArgs()
                .pointer(gatesX.pointer()).pointer(gatesH.pointer()).pointer(cPrev.pointer())
                .pointer(hOut.pointer()).pointer(cOut.pointer()).i32((int) batch).i32((int) hidden));
    }

    static void check(String name, DeviceTensor t, DType dtype, long... shape) {
        if (t.dtype() != dtype) {
            throw new SeqkException.DTypeMismatch("argument '" + name + "' has dtype " + t.dtype() + ", expected " + dtype);
        }
        if (!Arrays.equals(t.shape(), shape)) {
            throw new SeqkException.ShapeMismatch("argument '" + name + "' has shape " + Arrays.toString(t.shape())
                    + ", expected " + Arrays.toString(shape));
        }
        if (!t.isContiguous()) {
            throw new SeqkException.Unsupported("argument '" + name + "' must be contiguous");
        }
    }
}
