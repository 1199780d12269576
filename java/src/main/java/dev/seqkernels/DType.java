package dev.seqkernels;

/**
 * Storage element types. Arithmetic is always done in at least fp32 (fp64 on the CPU reference);
 * the dtype says only how elements are stored. {@link #I64}, {@link #I32} and {@link #BOOL} carry
 * lengths and masks.
 */
public enum DType {
    F64(8), F32(4), F16(2), BF16(2), I64(8), I32(4), BOOL(1);

    private final int byteSize;

    DType(int byteSize) {
        this.byteSize = byteSize;
    }

    public int byteSize() {
        return byteSize;
    }

    public boolean isFloatingPoint() {
        return this == F64 || this == F32 || this == F16 || this == BF16;
    }
}
