// Fused LSTM cell, forward: the pointwise part of one step, after the two GEMMs.
//
// Versions (one per function, the plain port first; faster versions will sit beside it and must
// match it):
//   v1 lstm_cell_fwd_v1: the CPU reference's pointwise math, one thread per (batch, unit).
//
// Arguments (all row-major, contiguous, storage type T; math in float):
//   gates_x [B, 4H]  x W_ih^T + b_ih, gate blocks i, f, g, o (PyTorch order)
//   gates_h [B, 4H]  h W_hh^T + b_hh, same blocks
//   c_prev  [B, H]   cell state entering the step
//   h_out   [B, H]   o * tanh(c), written
//   c_out   [B, H]   f * c_prev + i * g, written; may alias c_prev (each thread reads its element first)
// Bytes per step: 2 * 4BH (gates) + BH (c_prev) read, 2 * BH written, times sizeof(T);
// about 20 flops and 4 transcendentals per element: memory bound.
#include "seqk.cuh"

namespace {

// One block: 256 consecutive (b, j) elements. One thread: one element, all four gates.
// No shared memory, no synchronization.
template <typename T>
__device__ __forceinline__ void lstm_cell_fwd_v1(const T* __restrict__ gates_x, const T* __restrict__ gates_h,
                                                 const T* c_prev, T* h_out, T* c_out, int batch, int hidden) {
    long idx = static_cast<long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= static_cast<long>(batch) * hidden) {
        return;
    }
    long b = idx / hidden;
    long j = idx % hidden;
    const T* gx = gates_x + b * 4 * hidden;
    const T* gh = gates_h + b * 4 * hidden;
    float i = seqk::sigmoid(seqk::to_float(gx[j]) + seqk::to_float(gh[j]));
    float f = seqk::sigmoid(seqk::to_float(gx[hidden + j]) + seqk::to_float(gh[hidden + j]));
    float g = tanhf(seqk::to_float(gx[2 * hidden + j]) + seqk::to_float(gh[2 * hidden + j]));
    float o = seqk::sigmoid(seqk::to_float(gx[3 * hidden + j]) + seqk::to_float(gh[3 * hidden + j]));
    float c = f * seqk::to_float(c_prev[idx]) + i * g;
    c_out[idx] = seqk::from_float<T>(c);
    h_out[idx] = seqk::from_float<T>(o * tanhf(c));
}

}  // namespace

extern "C" __global__ void lstm_cell_fwd_f32(const float* gates_x, const float* gates_h, const float* c_prev,
                                             float* h_out, float* c_out, int batch, int hidden) {
    lstm_cell_fwd_v1(gates_x, gates_h, c_prev, h_out, c_out, batch, hidden);
}
SEQK_KERNEL(lstm_cell_fwd_f32);

extern "C" __global__ void lstm_cell_fwd_f16(const __half* gates_x, const __half* gates_h, const __half* c_prev,
                                             __half* h_out, __half* c_out, int batch, int hidden) {
    lstm_cell_fwd_v1(gates_x, gates_h, c_prev, h_out, c_out, batch, hidden);
}
SEQK_KERNEL(lstm_cell_fwd_f16);

extern "C" __global__ void lstm_cell_fwd_bf16(const __nv_bfloat16* gates_x, const __nv_bfloat16* gates_h,
                                              const __nv_bfloat16* c_prev, __nv_bfloat16* h_out,
                                              __nv_bfloat16* c_out, int batch, int hidden) {
    lstm_cell_fwd_v1(gates_x, gates_h, c_prev, h_out, c_out, batch, hidden);
}
SEQK_KERNEL(lstm_cell_fwd_bf16);
