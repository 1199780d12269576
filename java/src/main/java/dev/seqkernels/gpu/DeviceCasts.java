package dev.seqkernels.gpu;

import dev.seqkernels.DType;

import java.util.function.ToLongFunction;

/**
 * cuda/util.cu's conversions, issued on a stream: a tensor of up to 4 dimensions in F32, F16 or
 * BF16 with any strides into contiguous F32 ({@code gather4_to_f32_*}) or into its own type
 * ({@code gather4_f16}, {@code gather4_bf16}), and contiguous F32 rounded to 16 bits
 * ({@code cast_f32_to_*}). One thread per element.
 */
final class DeviceCasts {
    private static final int THREADS = 256;
    private final Driver driver;
    private final ToLongFunction<String> utilFunction;

    DeviceCasts(Driver driver, ToLongFunction<String> utilFunction) {
        this.driver = driver;
        this.utilFunction = utilFunction;
    }

    /**
     * dst (contiguous, as many elements; F32 or src's own dtype) = src's elements in the row-major
     * order of its shape, in one pass.
     */
    void gather(DeviceTensor src, DeviceTensor dst, long stream) {
        long[] shape = src.shape();
        long[] strides = src.strides();
        if (shape.length > 4 || (dst.dtype() != DType.F32 && dst.dtype() != src.dtype()) || dst.numel() != src.numel()) {
            throw new IllegalStateException("gather: " + src + " into " + dst);
        }
        long[] n4 = {1, 1, 1, 1};
        long[] s4 = {0, 0, 0, 0};
        for (int i = 0; i < shape.length; i++) {
            n4[4 - shape.length + i] = shape[i];
            s4[4 - shape.length + i] = strides[i];
        }
        long n = src.numel();
        if (n == 0) {
            return;
        }
        String kernel = (dst.dtype() == DType.F32 ? "gather4_to_f32_" : "gather4_") + RecurrentGpu.suffix(src.dtype());
        driver.launch(utilFunction.applyAsLong(kernel), grid(n), Dim3.of(THREADS), 0,
                stream, new KernelArgs().pointer(src.pointer()).pointer(dst.pointer()).i64(n4[0]).i64(n4[1]).i64(n4[2]).i64(n4[3])
                        .i64(s4[0]).i64(s4[1]).i64(s4[2]).i64(s4[3]));
    }

    /** dst (contiguous F16 or BF16) = the first dst.numel() values of f32 (contiguous), rounded to nearest even. */
    void fromF32(DeviceTensor f32, DeviceTensor dst, long stream) {
        long n = dst.numel();
        if (n == 0) {
            return;
        }
        driver.launch(utilFunction.applyAsLong("cast_f32_to_" + RecurrentGpu.suffix(dst.dtype())), grid(n), Dim3.of(THREADS), 0, stream,
                new KernelArgs().pointer(f32.pointer()).pointer(dst.pointer()).i64(n));
    }

    /** A new contiguous F32 copy of t (any stored dtype, any strides) in {@code scope}, made on the stream. */
    DeviceTensor gathered(DeviceScope scope, DeviceTensor t, long stream) {
        DeviceTensor f32 = scope.allocate(DType.F32, t.shape());
        gather(t, f32, stream);
        return f32;
    }

    /**
     * A new contiguous copy of t (any strides) in {@code type}, in {@code scope}, made on the stream:
     * one gather when type is F32 or t's own dtype; else (F32 values into a 16-bit type) gathered
     * into F32 and rounded.
     */
    DeviceTensor laidOut(DeviceScope scope, DeviceTensor t, DType type, long stream) {
        DeviceTensor copy = scope.allocate(type, t.shape());
        copyInto(scope, t, copy, stream);
        return copy;
    }

    /**
     * dst (contiguous, as many elements, any of the three types) = src's elements in the row-major
     * order of its shape, made on the stream: one gather when dst is F32 or of src's dtype; else (F32
     * values into a 16-bit type) gathered into an F32 temporary of {@code scope} and rounded.
     */
    void copyInto(DeviceScope scope, DeviceTensor src, DeviceTensor dst, long stream) {
        if (dst.dtype() == DType.F32 || dst.dtype() == src.dtype()) {
            gather(src, dst, stream);
        } else {
            fromF32(gathered(scope, src, stream), dst, stream);
        }
    }

    /**
     * A contiguous tensor (F32, or already dt) in dt: itself when it is of dt, else (F32) rounded on
     * the stream into a new tensor of {@code scope}.
     */
    DeviceTensor rounded(DeviceScope scope, DeviceTensor t, DType dt, long stream) {
        if (t.dtype() == dt) {
            return t;
        }
        if (t.dtype() != DType.F32) {
            throw new IllegalStateException("rounded: " + t + " is neither F32 nor " + dt);
        }
        DeviceTensor r = scope.allocate(dt, t.shape());
        fromF32(t, r, stream);
        return r;
    }

    private static Dim3 grid(long n) {
        return Dim3.of(Math.toIntExact((n + THREADS - 1) / THREADS));
    }
}
