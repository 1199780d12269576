// Row sums with warp shuffles: out[r] = sum_c x[r, c].
//
// Versions:
//   v1 row_sum_v1: one warp per row; lanes stride over the columns, then a butterfly
//      (shfl_xor 16, 8, 4, 2, 1) leaves the total in every lane and lane 0 writes it.
//
// Arguments: x [rows, cols] f32 row-major; out [rows] f32, written.
// One block: blockDim.y warps of 32 lanes (blockDim.x must be 32), one row per warp.
// One warp: one row. One thread: columns lane, lane+32, ...; no shared memory.
// Bytes: 4 * rows * cols read; memory bound.
#include "seqk.cuh"
#include "arch/warp.cuh"

extern "C" __global__ void row_sum_f32(const float* x, float* out, int rows, int cols) {
    int row = blockIdx.x * blockDim.y + threadIdx.y;
    if (row >= rows) {
        return;  // the whole warp shares the row, so the warp exits together
    }
    unsigned lane = seqk::arch::lane_id();
    float s = 0.0f;
    for (int c = lane; c < cols; c += 32) {
        s += x[static_cast<long>(row) * cols + c];
    }
    for (int offset = 16; offset > 0; offset >>= 1) {
        s += seqk::arch::shfl_xor(0xffffffffu, s, offset);
    }
    if (lane == 0) {
        out[row] = s;
    }
}
SEQK_KERNEL(row_sum_f32);
