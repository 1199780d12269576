package dev.seqkernels.gpu;

/**
 * Row-major linear algebra on device buffers, each as one column-major GEMM through
 * {@link Driver#gemm} (a row-major [r, c] matrix is the column-major [c, r] one, so every product
 * is computed transposed). All operands share one input dtype; y, dW and dX may be F32.
 */
final class Linear {
    private Linear() {
    }

    /** GEMM dimensions are ints: a product of extents beyond one is refused, never wrapped. */
    static void checkRows(String binding, String what, long rows) {
        if (rows > Integer.MAX_VALUE) {
            throw new dev.seqkernels.SeqkException.Unsupported(binding + ": " + what + " = " + rows
                    + " rows exceed a GEMM's int dimension (" + Integer.MAX_VALUE + ")");
        }
    }

    /**
     * y [rows, out] (row stride ldy) = x [rows, in] (row stride ldx) W^T, W [out, in] (row stride
     * ldw), on {@code stream}; TF32 products when {@code tf32} (F32 operands and output only).
     */
    static void forward(Driver d, long x, int ldx, long w, int ldw, long y, int ldy, int rows, int in, int out, float beta,
                        dev.seqkernels.DType input, dev.seqkernels.DType output, long stream, boolean tf32) {
        d.gemm(new Gemm(true, false, out, rows, in, 1f, w, ldw, 0, x, ldx, 0, beta, y, ldy, 0, 1, input, output, tf32), stream);
    }

    /**
     * dW [out, in] (row stride ldw, F32) = dY [rows, out]^T X [rows, in] (both {@code input}): the
     * weight gradient of forward(), on {@code stream}; TF32 products when {@code tf32}.
     */
    static void weightGrad(Driver d, long dy, int lddy, long x, int ldx, long dw, int ldw, int rows, int in, int out,
                           float beta, dev.seqkernels.DType input, boolean tf32, long stream) {
        d.gemm(new Gemm(false, true, in, out, rows, 1f, x, ldx, 0, dy, lddy, 0, beta, dw, ldw, 0, 1,
                input, dev.seqkernels.DType.F32, tf32), stream);
    }

    /**
     * dX [rows, in] (row stride lddx, {@code output}: F32, or the input type, rounded once) = dY [rows, out]
     * W [out, in] (both {@code input}): the input gradient of forward(), on {@code stream}; TF32 products
     * when {@code tf32}.
     */
    static void inputGrad(Driver d, long dy, int lddy, long w, int ldw, long dx, int lddx, int rows, int in, int out,
                          float beta, dev.seqkernels.DType input, dev.seqkernels.DType output, boolean tf32, long stream) {
        d.gemm(new Gemm(false, false, in, rows, out, 1f, w, ldw, 0, dy, lddy, 0, beta, dx, lddx, 0, 1,
                input, output, tf32), stream);
    }
}
