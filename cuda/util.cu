// Small helpers shared by the op families: deterministic column sums and
// the dtype changes of the device-resident entry points. One thread per output element or
// column; memory bound; plain v1 versions.
#include <type_traits>

#include "seqk.cuh"

// out[c] = sum over rows of a[r * lda + c], for c < cols: one thread per column, rows in order
// (deterministic; v1, no split over rows).
template <typename T>
__device__ void column_sum(const T* a, float* out, int rows, int cols, int lda) {
    long c = static_cast<long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (c >= cols) {
        return;
    }
    float s = 0.0f;
    for (long r = 0; r < rows; r++) {
        s += seqk::to_float(a[r * lda + c]);
    }
    out[c] = s;
}

#define SEQK_COLUMN_SUM(suffix, T)                                                                  \
    extern "C" __global__ void column_sum_##suffix(const T* a, float* out, int rows, int cols, int lda) { \
        column_sum<T>(a, out, rows, cols, lda);                                                     \
    }                                                                                               \
    SEQK_KERNEL(column_sum_##suffix)

SEQK_COLUMN_SUM(f32, float);
SEQK_COLUMN_SUM(f16, __half);
SEQK_COLUMN_SUM(bf16, __nv_bfloat16);


// Does nothing. BindingBench (bench/) launches it with one block of one thread to measure what a
// launch costs the host through each binding (packing seven arguments and the driver call), apart
// from any kernel time. The arguments mirror a cell kernel's mix of pointers, ints and floats.
// The parameters are unnamed because nothing reads them.
extern "C" __global__ void launch_probe(const float*, const float*, const float*, float*, float*, int, float) {
}
SEQK_KERNEL(launch_probe);


// Device-side dtype and layout changes for the ops' device-resident entry points (DeviceAttention,
// DeviceRecurrent, DeviceMultiHeadAttention, prepared weights), so a framework's tensors never
// round-trip through the host. One thread per element; memory bound.

// dst[i] (contiguous [n0, n1, n2, n3]; f32, or T itself) = src at element (i0, i1, i2, i3) with
// element strides s. One thread: one element.
template <typename T, typename D>
__device__ void gather4(const T* src, D* dst, long long n0, long long n1, long long n2, long long n3, long long s0,
                        long long s1, long long s2, long long s3) {
    long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n0 * n1 * n2 * n3) {
        return;
    }
    long long i3 = i % n3;
    long long i2 = (i / n3) % n2;
    long long i1 = (i / (n3 * n2)) % n1;
    long long i0 = i / (n3 * n2 * n1);
    T v = src[i0 * s0 + i1 * s1 + i2 * s2 + i3 * s3];
    if constexpr (std::is_same<D, T>::value) {
        dst[i] = v;
    } else {
        dst[i] = seqk::to_float(v);
    }
}

// dst[i] = src[i] rounded to T (round to nearest even), for i < n.
template <typename T>
__device__ void cast_from_f32(const float* src, T* dst, long long n) {
    long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) {
        dst[i] = seqk::from_float<T>(src[i]);
    }
}

#define SEQK_UTIL_CASTS(T, suffix)                                                                                        \
    extern "C" __global__ void gather4_to_f32_##suffix(const T* src, float* dst, long long n0, long long n1, long long n2, \
                                                       long long n3, long long s0, long long s1, long long s2,           \
                                                       long long s3) {                                                   \
        gather4<T, float>(src, dst, n0, n1, n2, n3, s0, s1, s2, s3);                                                     \
    }                                                                                                                    \
    SEQK_KERNEL(gather4_to_f32_##suffix);
SEQK_UTIL_CASTS(float, f32)
SEQK_UTIL_CASTS(__half, f16)
SEQK_UTIL_CASTS(__nv_bfloat16, bf16)

// The same type: a strided 16-bit tensor made contiguous in one pass (the tensor-core attention
// backward's dout, a recurrent op's batch-first or strided input and output).
#define SEQK_UTIL_GATHER(T, suffix)                                                                                       \
    extern "C" __global__ void gather4_##suffix(const T* src, T* dst, long long n0, long long n1, long long n2,           \
                                                long long n3, long long s0, long long s1, long long s2, long long s3) {   \
        gather4<T, T>(src, dst, n0, n1, n2, n3, s0, s1, s2, s3);                                                         \
    }                                                                                                                    \
    SEQK_KERNEL(gather4_##suffix);
SEQK_UTIL_GATHER(__half, f16)
SEQK_UTIL_GATHER(__nv_bfloat16, bf16)

extern "C" __global__ void cast_f32_to_f16(const float* src, __half* dst, long long n) { cast_from_f32<__half>(src, dst, n); }
SEQK_KERNEL(cast_f32_to_f16);
extern "C" __global__ void cast_f32_to_bf16(const float* src, __nv_bfloat16* dst, long long n) {
    cast_from_f32<__nv_bfloat16>(src, dst, n);
}
SEQK_KERNEL(cast_f32_to_bf16);
