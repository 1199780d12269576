// Vectorized step cells' bodies (4 units per thread, 16-byte memory operations).
#pragma once

#include "cell.cuh"

namespace {

// Vectorized step cells (LSTM; GRU with linear_before_reset; Elman RNN).
// LSTM step, vectorized: one thread handles 4 consecutive units j..j+3 of one batch entry with
// one memory operation per row and quad (16 bytes for f32: gx, gh, biases, peepholes, the cell state
// and the saved trace, which stay f32; 16 or 8 bytes for the state type S of hnew and GRU's h)
// and runs lstm_cell on each unit, so the math is v1's. H % 4 == 0, which with buffers that start
// 16-byte aligned keeps every row's quads aligned (RecurrentGpu checks H). Loops over the 4 units
// and the gates are unrolled so the per-unit arrays stay in registers (no stack frame).
// Bytes per step and element as v1; fewer, wider memory transactions.
namespace vec4 {

/** This thread's batch entry b and first unit j0 of 4, or false past the end. */
__device__ __forceinline__ bool quad(int batch, int hidden, int& b, int& j0) {
    int quads = hidden / 4;
    long idx = static_cast<long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= static_cast<long>(batch) * quads) {
        return false;
    }
    b = static_cast<int>(idx / quads);
    j0 = static_cast<int>(idx % quads) * 4;
    return true;
}

/** Four consecutive elements of type S, loaded and stored as one 16-byte (F32) or 8-byte (16-bit) access. */
template <typename S>
struct alignas(4 * sizeof(S)) Quad {
    S v[4];
};

template <typename S>
__device__ __forceinline__ void load4(const S* p, float out[4]) {
    Quad<S> q = *reinterpret_cast<const Quad<S>*>(p);
    SEQK_UNROLL
    for (int u = 0; u < 4; u++) {
        out[u] = seqk::to_float(q.v[u]);
    }
}

__device__ __forceinline__ void load4_or_zero(const float* p, float out[4]) {
    if (p == nullptr) {
        out[0] = out[1] = out[2] = out[3] = 0.0f;
    } else {
        load4(p, out);
    }
}

/** Rounds to S once (nearest even) and stores the four values as one access. */
template <typename S>
__device__ __forceinline__ void store4(S* p, const float in[4]) {
    Quad<S> q;
    SEQK_UNROLL
    for (int u = 0; u < 4; u++) {
        q.v[u] = seqk::from_float<S>(in[u]);
    }
    *reinterpret_cast<Quad<S>*>(p) = q;
}

/** store4 at trace + i, unless the trace buffer is null (inference; cell.cuh's save). */
template <typename S>
__device__ __forceinline__ void save4(S* trace, long i, const float in[4]) {
    if (trace != nullptr) {
        store4(trace + i, in);
    }
}

/**
 * Where a cell puts the new h of its quad. Unfused (out null): h is hnew [B, H], which step_commit
 * (or the LSTM projection's GEMM) moves on. Fused: h is the state h_state [B, H] itself (the
 * step's GEMM has read it), and the cell does step_commit's work: a valid entry's state and output
 * row take the new h, an entry past its length keeps its state and gets a zero output row (out
 * [T, B, out_stride], this direction at out_offset; backward rebuilds h_prev from it).
 */
template <typename S>
struct StepOut {
    S* h;
    S* out;
    int out_stride;
    int out_offset;
};

/** Stores the quad's new h (rounded to S once), as StepOut says; h_new null: past the entry's length. */
template <typename S>
__device__ __forceinline__ void put_h(const StepOut<S>& o, long row, int b, int j0, int hidden, const float* h_new) {
    if (o.out != nullptr) {
        const float zero[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        store4(o.out + row * o.out_stride + o.out_offset + j0, h_new != nullptr ? h_new : zero);
    }
    if (h_new != nullptr) {
        store4(o.h + static_cast<long>(b) * hidden + j0, h_new);
    }
}

/**
 * This thread's quad (batch entry b, first unit j0, its row t*B + b in the per-step buffers), or
 * false when it has no cell to compute: past the launch's end, or past b's length (such a quad's
 * commit done here by put_h).
 */
template <typename S>
__device__ __forceinline__ bool quad_to_compute(const StepOut<S>& o, const int* lengths, int t, int batch, int hidden, int& b,
                                                int& j0, long& row) {
    if (!quad(batch, hidden, b, j0)) {
        return false;
    }
    row = static_cast<long>(t) * batch + b;
    if (t >= lengths[b]) {
        put_h(o, row, b, j0, hidden, nullptr);
        return false;
    }
    return true;
}

template <typename S>
__device__ void lstm_step(const float* gx, const float* gh, const float* bih, const float* bhh, const float* peephole,
                          float* c_state, float* c_new_save, float* raw, const StepOut<S>& o,
                          const int* lengths, int t, int batch, int hidden, int input_forget, float clip, int f_kind,
                          float f_alpha, float f_beta, int g_kind, float g_alpha, float g_beta, int h_kind, float h_alpha,
                          float h_beta) {
    int b, j0;
    long row;
    if (!quad_to_compute(o, lengths, t, batch, hidden, b, j0, row)) {
        return;
    }
    long gh4 = 4L * hidden;
    float pre[4][4];  // [gate][unit]
    SEQK_UNROLL
    for (int g = 0; g < 4; g++) {
        float x[4], hh[4], bi[4], bh[4];
        load4(gx + row * gh4 + g * hidden + j0, x);
        load4(gh + b * gh4 + g * hidden + j0, hh);
        load4_or_zero(bih == nullptr ? nullptr : bih + g * hidden + j0, bi);
        load4_or_zero(bhh == nullptr ? nullptr : bhh + g * hidden + j0, bh);
        SEQK_UNROLL
        for (int u = 0; u < 4; u++) {
            pre[g][u] = x[u] + hh[u] + bi[u] + bh[u];
        }
    }
    float cp[4], c_new[4], h_new[4];
    load4(c_state + static_cast<long>(b) * hidden + j0, cp);
    SEQK_UNROLL
    for (int u = 0; u < 4; u++) {
        float unit_pre[4] = {pre[0][u], pre[1][u], pre[2][u], pre[3][u]};
        h_new[u] = lstm_cell(unit_pre, cp[u], peephole, j0 + u, hidden, input_forget, clip, f_kind, f_alpha, f_beta, g_kind,
                             g_alpha, g_beta, h_kind, h_alpha, h_beta, c_new[u]);
        SEQK_UNROLL
        for (int g = 0; g < 4; g++) {
            pre[g][u] = unit_pre[g];
        }
    }
    SEQK_UNROLL
    for (int g = 0; g < 4; g++) {
        save4(raw, row * gh4 + g * hidden + j0, pre[g]);
    }
    save4(c_new_save, row * hidden + j0, c_new);
    store4(c_state + static_cast<long>(b) * hidden + j0, c_new);
    put_h(o, row, b, j0, hidden, h_new);
}

// GRU step with linear_before_reset, vectorized like lstm_step: 4 units per thread, gru_cell per
// unit; saves raw (r, z, n) and h W_hn^T + b_hn as gru_step_v1 does.
template <typename S>
__device__ void gru_step(const float* gx, const float* gh, const float* bih, const float* bhh, const S* h_state,
                         float* raw, float* hn_lin_save, const StepOut<S>& o, const int* lengths, int t, int batch,
                         int hidden, float clip, int f_kind, float f_alpha, float f_beta, int g_kind, float g_alpha,
                         float g_beta) {
    int b, j0;
    long row;
    if (!quad_to_compute(o, lengths, t, batch, hidden, b, j0, row)) {
        return;
    }
    long gh3 = 3L * hidden;
    float x[3][4], hh[3][4], bi[3][4], bh[3][4];
    SEQK_UNROLL
    for (int g = 0; g < 3; g++) {
        load4(gx + row * gh3 + g * hidden + j0, x[g]);
        load4(gh + b * gh3 + g * hidden + j0, hh[g]);
        load4_or_zero(bih == nullptr ? nullptr : bih + g * hidden + j0, bi[g]);
        load4_or_zero(bhh == nullptr ? nullptr : bhh + g * hidden + j0, bh[g]);
    }
    float hp[4], pre_r[4], pre_z[4], pre_n[4], h_lin[4], h_new[4];
    load4(h_state + static_cast<long>(b) * hidden + j0, hp);
    SEQK_UNROLL
    for (int u = 0; u < 4; u++) {
        pre_r[u] = x[0][u] + hh[0][u] + bi[0][u] + bh[0][u];
        pre_z[u] = x[1][u] + hh[1][u] + bi[1][u] + bh[1][u];
        h_lin[u] = hh[2][u] + bh[2][u];
        h_new[u] = gru_cell(pre_r[u], pre_z[u], x[2][u] + bi[2][u], h_lin[u], 1, hp[u], clip, f_kind, f_alpha, f_beta, g_kind,
                            g_alpha, g_beta, pre_n[u]);
    }
    save4(raw, row * gh3 + j0, pre_r);
    save4(raw, row * gh3 + hidden + j0, pre_z);
    save4(raw, row * gh3 + 2 * hidden + j0, pre_n);
    save4(hn_lin_save, row * hidden + j0, h_lin);
    put_h(o, row, b, j0, hidden, h_new);
}

// Elman RNN step, vectorized: 4 units per thread, as rnn_step_v1.
template <typename S>
__device__ void rnn_step(const float* gx, const float* gh, const float* bih, const float* bhh, float* raw,
                         const StepOut<S>& o, const int* lengths, int t, int batch, int hidden, float clip, int f_kind,
                         float f_alpha, float f_beta) {
    int b, j0;
    long row;
    if (!quad_to_compute(o, lengths, t, batch, hidden, b, j0, row)) {
        return;
    }
    float x[4], hh[4], bi[4], bh[4], pre[4], h_new[4];
    load4(gx + row * hidden + j0, x);
    load4(gh + static_cast<long>(b) * hidden + j0, hh);
    load4_or_zero(bih == nullptr ? nullptr : bih + j0, bi);
    load4_or_zero(bhh == nullptr ? nullptr : bhh + j0, bh);
    SEQK_UNROLL
    for (int u = 0; u < 4; u++) {
        pre[u] = x[u] + hh[u] + bi[u] + bh[u];
        h_new[u] = activate(f_kind, f_alpha, f_beta, clip_to(pre[u], clip));
    }
    save4(raw, row * hidden + j0, pre);
    put_h(o, row, b, j0, hidden, h_new);
}

}  // namespace vec4

}  // namespace
