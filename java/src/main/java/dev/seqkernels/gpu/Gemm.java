package dev.seqkernels.gpu;

import dev.seqkernels.DType;

/**
 * C = alpha * op(A) * op(B) + beta * C for {@code batch} matrices, column-major as in cuBLAS
 * ({@code cublasGemmStridedBatchedEx}): op(A) is m x k, op(B) k x n, C m x n; lda, ldb, ldc are
 * leading dimensions and the strides are in elements between consecutive matrices. A and B are
 * {@code inputType} (F32, F16, BF16); C is F32 or the same 16-bit type; accumulation is at least fp32.
 * {@code tf32}: F32 operands rounded to TF32 for tensor-core products ({@code CUBLAS_COMPUTE_32F_FAST_TF32}), fp32 accumulation.
 * A row-major [rows, cols] matrix is the column-major [cols, rows] one: swap the operands to use it.
 */
public record Gemm(boolean transA, boolean transB, int m, int n, int k, float alpha, long a, int lda, long strideA,
                   long b, int ldb, long strideB, float beta, long c, int ldc, long strideC, int batch,
                   DType inputType, DType outputType, boolean tf32) {
    /** Without TF32: fp32 products of F32 operands ({@code CUBLAS_COMPUTE_32F}). */
    public Gemm(boolean transA, boolean transB, int m, int n, int k, float alpha, long a, int lda, long strideA, long b, int ldb,
                long strideB, float beta, long c, int ldc, long strideC, int batch, DType inputType, DType outputType) {
        this(transA, transB, m, n, k, alpha, a, lda, strideA, b, ldb, strideB, beta, c, ldc, strideC, batch, inputType, outputType,
                false);
    }

    public Gemm {
        if (m < 0 || n < 0 || k < 0 || batch < 0) {
            throw new IllegalArgumentException("gemm sizes must be non-negative: m=" + m + " n=" + n + " k=" + k + " batch=" + batch);
        }
        if (inputType != DType.F32 && inputType != DType.F16 && inputType != DType.BF16) {
            throw new IllegalArgumentException("gemm inputs must be F32, F16 or BF16, got " + inputType);
        }
        if (outputType != DType.F32 && outputType != inputType) {
            throw new IllegalArgumentException("gemm output must be F32 or the input type, got " + outputType);
        }
        if (tf32 && (inputType != DType.F32 || outputType != DType.F32)) {
            throw new IllegalArgumentException("TF32 products are for F32 operands and output, got " + inputType + " -> " + outputType);
        }
    }
}
