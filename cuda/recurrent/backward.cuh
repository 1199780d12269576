// Backward through time: the per-step gradient kernels, entry points included. The suffix of an
// entry point names the operand type S of the values the backward GEMMs read: the gate gradients
// dax/dah, and h_prev (rebuilt by h_prev_of_steps), m_all, rh_all, dh_all (f32 for v1 and F32 ops; f16/bf16 for the
// 16-bit state of F16/BF16 ops, whose backward GEMMs multiply 16-bit operands on tensor cores and
// accumulate in fp32). Everything the kernels carry (dh_state, dc_state, dh_total, direct, d_rh,
// dpeep_all, the GEMM results) is f32 in every instance.
#pragma once

#include "cell.cuh"

//
// Backward through time, per (layer, direction), walking the steps in reverse processing order.
// Gate gradients go to dax/dah [T*B, G*H] (x-side and h-side pre-activation gradients; equal
// except for GRU), zero rows for steps past a sequence's length, so the weight gradients are
// single GEMMs over all steps and the bias gradients column sums (column_sum_*, deterministic).
// dh_total [B, P] = dh_state + dOut[t] for the valid entries; step_grad_out folds the GEMM
// dh_total-side result (dA W_hh) and the direct terms back into dh_state.

namespace {

// dh_total[b, q] = dh_state[b, q] + d_out[t, b, out_offset + q] for valid entries, else 0; also
// kept in dh_all [T*B, P] (rounded to S) when dh_all is not null: the LSTM projection's GEMMs read it.
template <typename S>
__device__ void step_grad_in(const float* dh_state, const float* d_out, float* dh_total, S* dh_all, const int* lengths, int t,
                             int batch, int state, int out_stride, int out_offset) {
    int b, q;
    if (!element(batch, state, b, q)) {
        return;
    }
    long hb = static_cast<long>(b) * state + q;
    long row = static_cast<long>(t) * batch + b;
    float v = t < lengths[b] ? dh_state[hb] + (d_out ? d_out[row * out_stride + out_offset + q] : 0.0f) : 0.0f;
    dh_total[hb] = v;
    if (dh_all) {
        dh_all[row * state + q] = seqk::from_float<S>(v);
    }
}

// Whether the state before step t of entry b is the initial one (h0, c0): at the entry's first
// step in processing order, t = 0, or t = length - 1 when reversed (the steps past a length leave
// the initial state as it was; true there too, so such rows read a finite value). Otherwise it is
// the state after the step processed before, whose row is previous_row.
__device__ __forceinline__ bool from_initial_state(int t, int length, int reversed) {
    return reversed ? t >= length - 1 : t == 0;
}

__device__ __forceinline__ long previous_row(long row, int batch, int reversed) {
    return reversed ? row + batch : row - batch;
}

// h_prev [T*B, P] for the backward's GEMMs and GRU's cells, rebuilt from what the forward keeps
// anyway instead of a copy saved every step: the state before step t is the layer output out [T, B,
// out_stride] (this direction at out_offset) of the step processed before (t-1, or t+1 when
// reversed), or h0 [B, P] (null: zeros) at the entry's first step (t = 0, or t = length - 1 when
// reversed: the steps past a length leave h0 as it was). Rows past an entry's length get a finite
// value (their gate gradients are zero): out of the step before, or h0 when reversed. One thread
// per element.
template <typename S>
__device__ void h_prev_of_steps(const S* out, const S* h0, S* h_prev, const int* lengths, int steps, int batch, int state,
                                int out_stride, int out_offset, int reversed) {
    long idx = static_cast<long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= static_cast<long>(steps) * batch * state) {
        return;
    }
    long row = idx / state;
    int q = static_cast<int>(idx % state);
    int t = static_cast<int>(row / batch);
    int b = static_cast<int>(row % batch);
    S v;
    if (from_initial_state(t, lengths[b], reversed)) {
        v = h0 == nullptr ? seqk::from_float<S>(0.0f) : h0[static_cast<long>(b) * state + q];
    } else {
        v = out[previous_row(row, batch, reversed) * out_stride + out_offset + q];
    }
    h_prev[idx] = v;
}

// LSTM step backward. dm [B, H]: gradient of m = o * h(c) (dh_total itself without projection).
// Writes dA [T*B, 4H] (x-side = h-side), updates dc_state [B, H], and for the projection's weight
// gradient m_all [T*B, H]; peephole gradient contributions go to dpeep_all [T*B, 3H] (or null).
// The forward saves c_new [T*B, H] only: c_{t-1} is the c_new of the step processed before t (t-1,
// or t+1 when reversed), or the initial c0 [B, H] (null: zeros) at the entry's first step (t = 0,
// or t = length - 1 when reversed: the steps past a length leave c0 as it was).
// lstm_bwd_at is the cell's part for one (batch entry b, unit j) with dm = dmv, carrying dc (dc_state's
// element: read, and updated unless t is past the entry's length); the per-step kernel and the
// persistent backward (persistent_bwd.cuh) both run it.
template <typename S>
__device__ __forceinline__ void lstm_bwd_at(int b, int j, float dmv, float& dc_carried, const float* raw, const float* c0,
                                            const float* c_new, int reversed, const float* peephole, S* dA, S* m_all,
                                            float* dpeep_all, const int* lengths, int t, int batch, int hidden,
                                            int input_forget, float clip, int f_kind, float f_alpha, float f_beta,
                                            int g_kind, float g_alpha, float g_beta, int h_kind, float h_alpha,
                                            float h_beta) {
    long row = static_cast<long>(t) * batch + b;
    int g4 = 4 * hidden;
    S* da = dA + row * g4;
    if (t >= lengths[b]) {
        for (int k = 0; k < 4; k++) {
            da[k * hidden + j] = seqk::from_float<S>(0.0f);
        }
        if (dpeep_all) {
            for (int k = 0; k < 3; k++) {
                dpeep_all[row * 3 * hidden + k * hidden + j] = 0.0f;
            }
        }
        if (m_all) {
            m_all[row * hidden + j] = seqk::from_float<S>(0.0f);
        }
        return;
    }
    long hb = static_cast<long>(b) * hidden + j;
    float raw_i = raw[row * g4 + j], raw_f = raw[row * g4 + hidden + j];
    float raw_g = raw[row * g4 + 2 * hidden + j], raw_o = raw[row * g4 + 3 * hidden + j];
    float cp = from_initial_state(t, lengths[b], reversed) ? load_or_zero(c0, hb)
                                                           : c_new[previous_row(row, batch, reversed) * hidden + j];
    float cn = c_new[row * hidden + j];
    float gi = activate(f_kind, f_alpha, f_beta, clip_to(raw_i, clip));
    float gf = input_forget ? 1.0f - gi : activate(f_kind, f_alpha, f_beta, clip_to(raw_f, clip));
    float gg = activate(g_kind, g_alpha, g_beta, clip_to(raw_g, clip));
    float go = activate(f_kind, f_alpha, f_beta, clip_to(raw_o, clip));
    float hc = activate(h_kind, h_alpha, h_beta, cn);
    if (m_all) {
        m_all[row * hidden + j] = seqk::from_float<S>(go * hc);
    }
    float d_raw_o = dmv * hc * activate_grad(f_kind, f_alpha, f_beta, clip_to(raw_o, clip)) * clip_grad(raw_o, clip);
    float dc = dc_carried + dmv * go * activate_grad(h_kind, h_alpha, h_beta, cn);
    float p_i = load_or_zero(peephole, j), p_f = load_or_zero(peephole, hidden + j), p_o = load_or_zero(peephole, 2 * hidden + j);
    dc += d_raw_o * p_o;
    float d_i = dc * gg;
    float d_g = dc * gi;
    float d_f = dc * cp;
    if (input_forget) {
        d_i -= d_f;
        d_f = 0.0f;
    }
    float d_raw_i = d_i * activate_grad(f_kind, f_alpha, f_beta, clip_to(raw_i, clip)) * clip_grad(raw_i, clip);
    float d_raw_f = input_forget ? 0.0f : d_f * activate_grad(f_kind, f_alpha, f_beta, clip_to(raw_f, clip)) * clip_grad(raw_f, clip);
    float d_raw_g = d_g * activate_grad(g_kind, g_alpha, g_beta, clip_to(raw_g, clip)) * clip_grad(raw_g, clip);
    dc_carried = dc * gf + d_raw_i * p_i + d_raw_f * p_f;
    if (dpeep_all) {
        dpeep_all[row * 3 * hidden + j] = d_raw_i * cp;
        dpeep_all[row * 3 * hidden + hidden + j] = d_raw_f * cp;
        dpeep_all[row * 3 * hidden + 2 * hidden + j] = d_raw_o * cn;
    }
    da[j] = seqk::from_float<S>(d_raw_i);
    da[hidden + j] = seqk::from_float<S>(d_raw_f);
    da[2 * hidden + j] = seqk::from_float<S>(d_raw_g);
    da[3 * hidden + j] = seqk::from_float<S>(d_raw_o);
}

template <typename S>
__device__ void lstm_step_bwd(const float* raw, const float* c0, const float* c_new, int reversed, const float* dm, const float* peephole,
                              float* dc_state, S* dA, S* m_all, float* dpeep_all, const int* lengths, int t, int batch,
                              int hidden, int input_forget, float clip, int f_kind, float f_alpha, float f_beta, int g_kind,
                              float g_alpha, float g_beta, int h_kind, float h_alpha, float h_beta) {
    int b, j;
    if (!element(batch, hidden, b, j)) {
        return;
    }
    long hb = static_cast<long>(b) * hidden + j;
    float dc = dc_state[hb];
    lstm_bwd_at(b, j, dm[hb], dc, raw, c0, c_new, reversed, peephole, dA, m_all, dpeep_all, lengths, t, batch, hidden,
                input_forget, clip, f_kind, f_alpha, f_beta, g_kind, g_alpha, g_beta, h_kind, h_alpha, h_beta);
    dc_state[hb] = dc;
}

// Elman RNN step backward: dA [T*B, H] (x-side = h-side).
// rnn_bwd_at: one (batch entry b, unit j) with dh_total = dh.
template <typename S>
__device__ __forceinline__ void rnn_bwd_at(int b, int j, float dh, const float* raw, S* dA, const int* lengths, int t, int batch,
                                           int hidden, float clip, int f_kind, float f_alpha, float f_beta) {
    long row = static_cast<long>(t) * batch + b;
    if (t >= lengths[b]) {
        dA[row * hidden + j] = seqk::from_float<S>(0.0f);
        return;
    }
    float r = raw[row * hidden + j];
    dA[row * hidden + j] = seqk::from_float<S>(dh * activate_grad(f_kind, f_alpha, f_beta, clip_to(r, clip)) * clip_grad(r, clip));
}

template <typename S>
__device__ void rnn_step_bwd(const float* raw, const float* dh_total, S* dA, const int* lengths, int t, int batch, int hidden,
                             float clip, int f_kind, float f_alpha, float f_beta) {
    int b, j;
    if (!element(batch, hidden, b, j)) {
        return;
    }
    rnn_bwd_at(b, j, dh_total[static_cast<long>(b) * hidden + j], raw, dA, lengths, t, batch, hidden, clip, f_kind, f_alpha, f_beta);
}

// GRU step backward, first part: everything but what the reset gate gets through W_hn when the
// reset comes before the linear map. Writes dax, dah [T*B, 3H] and direct [B, H] (dh_prev's
// pointwise terms). With linear_before_reset it is complete; otherwise dah's n columns hold the
// gradient of W_hn (r*h) + b_hn, and gru_step_bwd_reset finishes r.
// gru_bwd_at: one (batch entry b, unit j) with dh_total = dh; sets direct (left as it was past
// the entry's length, where nothing reads it).
template <typename S>
__device__ __forceinline__ void gru_bwd_at(int b, int j, float dh, float& direct, const float* raw, const S* h_prev,
                                           const float* hn_lin, S* dax, S* dah, const int* lengths, int t, int batch,
                                           int hidden, int linear_before_reset, float clip, int f_kind, float f_alpha,
                                           float f_beta, int g_kind, float g_alpha, float g_beta) {
    long row = static_cast<long>(t) * batch + b;
    int g3 = 3 * hidden;
    if (t >= lengths[b]) {
        for (int k = 0; k < 3; k++) {
            dax[row * g3 + k * hidden + j] = seqk::from_float<S>(0.0f);
            dah[row * g3 + k * hidden + j] = seqk::from_float<S>(0.0f);
        }
        return;
    }
    float raw_r = raw[row * g3 + j], raw_z = raw[row * g3 + hidden + j], raw_n = raw[row * g3 + 2 * hidden + j];
    float z = activate(f_kind, f_alpha, f_beta, clip_to(raw_z, clip));
    float n = activate(g_kind, g_alpha, g_beta, clip_to(raw_n, clip));
    float hp = seqk::to_float(h_prev[row * hidden + j]);
    float d_raw_n = dh * (1.0f - z) * activate_grad(g_kind, g_alpha, g_beta, clip_to(raw_n, clip)) * clip_grad(raw_n, clip);
    float d_raw_z = dh * (hp - n) * activate_grad(f_kind, f_alpha, f_beta, clip_to(raw_z, clip)) * clip_grad(raw_z, clip);
    direct = dh * z;
    dax[row * g3 + hidden + j] = seqk::from_float<S>(d_raw_z);
    dah[row * g3 + hidden + j] = seqk::from_float<S>(d_raw_z);
    dax[row * g3 + 2 * hidden + j] = seqk::from_float<S>(d_raw_n);
    if (linear_before_reset) {
        float r = activate(f_kind, f_alpha, f_beta, clip_to(raw_r, clip));
        float d_raw_r = d_raw_n * hn_lin[row * hidden + j] * activate_grad(f_kind, f_alpha, f_beta, clip_to(raw_r, clip))
                        * clip_grad(raw_r, clip);
        dah[row * g3 + 2 * hidden + j] = seqk::from_float<S>(d_raw_n * r);
        dax[row * g3 + j] = seqk::from_float<S>(d_raw_r);
        dah[row * g3 + j] = seqk::from_float<S>(d_raw_r);
    } else {
        dah[row * g3 + 2 * hidden + j] = seqk::from_float<S>(d_raw_n);  // the W_hn GEMM's operand (gru_step_bwd_reset)
    }
}

template <typename S>
__device__ void gru_step_bwd(const float* raw, const S* h_prev, const float* hn_lin, const float* dh_total, S* dax, S* dah,
                             float* direct, const int* lengths, int t, int batch, int hidden, int linear_before_reset, float clip,
                             int f_kind, float f_alpha, float f_beta, int g_kind, float g_alpha, float g_beta) {
    int b, j;
    if (!element(batch, hidden, b, j)) {
        return;
    }
    long hb = static_cast<long>(b) * hidden + j;
    gru_bwd_at(b, j, dh_total[hb], direct[hb], raw, h_prev, hn_lin, dax, dah, lengths, t, batch, hidden, linear_before_reset,
               clip, f_kind, f_alpha, f_beta, g_kind, g_alpha, g_beta);
}

// GRU without linear-before-reset, second part: d_rh [B, H] = (dah's n columns) W_hn reaches the
// reset gate and h_prev. Finishes dax, dah r columns, adds r * d_rh to direct, and writes
// rh_all [T*B, H] = r * h_prev for W_hn's weight gradient.
// gru_bwd_reset_at: one (batch entry b, unit j) with d_rh = d(r*h) there; adds to direct.
template <typename S>
__device__ __forceinline__ void gru_bwd_reset_at(int b, int j, float d_rh, float& direct, const float* raw, const S* h_prev,
                                                 S* dax, S* dah, S* rh_all, const int* lengths, int t, int batch, int hidden,
                                                 float clip, int f_kind, float f_alpha, float f_beta) {
    long row = static_cast<long>(t) * batch + b;
    if (t >= lengths[b]) {
        rh_all[row * hidden + j] = seqk::from_float<S>(0.0f);
        return;
    }
    int g3 = 3 * hidden;
    float raw_r = raw[row * g3 + j];
    float r = activate(f_kind, f_alpha, f_beta, clip_to(raw_r, clip));
    float hp = seqk::to_float(h_prev[row * hidden + j]);
    float d_raw_r = d_rh * hp * activate_grad(f_kind, f_alpha, f_beta, clip_to(raw_r, clip)) * clip_grad(raw_r, clip);
    dax[row * g3 + j] = seqk::from_float<S>(d_raw_r);
    dah[row * g3 + j] = seqk::from_float<S>(d_raw_r);
    direct += d_rh * r;
    rh_all[row * hidden + j] = seqk::from_float<S>(r * hp);
}

template <typename S>
__device__ void gru_step_bwd_reset(const float* raw, const S* h_prev, const float* d_rh, S* dax, S* dah, float* direct,
                                   S* rh_all, const int* lengths, int t, int batch, int hidden, float clip, int f_kind,
                                   float f_alpha, float f_beta) {
    int b, j;
    if (!element(batch, hidden, b, j)) {
        return;
    }
    long hb = static_cast<long>(b) * hidden + j;
    gru_bwd_reset_at(b, j, d_rh[hb], direct[hb], raw, h_prev, dax, dah, rh_all, lengths, t, batch, hidden, clip, f_kind, f_alpha,
                     f_beta);
}

}  // namespace

// dh_state[b, q] = gemm[b, q] + direct[b, q] (direct may be null) for valid entries; others keep dh_state.
extern "C" __global__ void step_grad_out_f32(const float* gemm, const float* direct, float* dh_state, const int* lengths,
                                            int t, int batch, int state) {
    int b, q;
    if (!element(batch, state, b, q) || t >= lengths[b]) {
        return;
    }
    long hb = static_cast<long>(b) * state + q;
    dh_state[hb] = gemm[hb] + (direct ? direct[hb] : 0.0f);
}
SEQK_KERNEL(step_grad_out_f32);

#define SEQK_RECURRENT_BWD(suffix, S)                                                                                   \
    extern "C" __global__ void h_prev_of_steps_##suffix(const S* out, const S* h0, S* h_prev, const int* lengths,       \
                                                        int steps, int batch, int state, int out_stride,                \
                                                        int out_offset, int reversed) {                                 \
        h_prev_of_steps<S>(out, h0, h_prev, lengths, steps, batch, state, out_stride, out_offset, reversed);            \
    }                                                                                                                   \
    SEQK_KERNEL(h_prev_of_steps_##suffix);                                                                              \
    extern "C" __global__ void step_grad_in_##suffix(const float* dh_state, const float* d_out, float* dh_total,        \
                                                     S* dh_all, const int* lengths, int t, int batch, int state,        \
                                                     int out_stride, int out_offset) {                                  \
        step_grad_in<S>(dh_state, d_out, dh_total, dh_all, lengths, t, batch, state, out_stride, out_offset);           \
    }                                                                                                                   \
    SEQK_KERNEL(step_grad_in_##suffix);                                                                                 \
    extern "C" __global__ void lstm_step_bwd_##suffix(                                                                  \
        const float* raw, const float* c0, const float* c_new, int reversed, const float* dm, const float* peephole,    \
        float* dc_state, S* dA, S* m_all, float* dpeep_all, const int* lengths, int t, int batch, int hidden,           \
        int input_forget, float clip, int f_kind, float f_alpha, float f_beta, int g_kind, float g_alpha, float g_beta, \
        int h_kind, float h_alpha, float h_beta) {                                                                      \
        lstm_step_bwd<S>(raw, c0, c_new, reversed, dm, peephole, dc_state, dA, m_all, dpeep_all, lengths, t, batch,     \
                         hidden, input_forget, clip, f_kind, f_alpha, f_beta, g_kind, g_alpha, g_beta, h_kind,          \
                         h_alpha, h_beta);                                                                              \
    }                                                                                                                   \
    SEQK_KERNEL(lstm_step_bwd_##suffix);                                                                                \
    extern "C" __global__ void rnn_step_bwd_##suffix(const float* raw, const float* dh_total, S* dA,                    \
                                                     const int* lengths, int t, int batch, int hidden, float clip,      \
                                                     int f_kind, float f_alpha, float f_beta) {                         \
        rnn_step_bwd<S>(raw, dh_total, dA, lengths, t, batch, hidden, clip, f_kind, f_alpha, f_beta);                   \
    }                                                                                                                   \
    SEQK_KERNEL(rnn_step_bwd_##suffix);                                                                                 \
    extern "C" __global__ void gru_step_bwd_##suffix(                                                                   \
        const float* raw, const S* h_prev, const float* hn_lin, const float* dh_total, S* dax, S* dah, float* direct,   \
        const int* lengths, int t, int batch, int hidden, int linear_before_reset, float clip, int f_kind,              \
        float f_alpha, float f_beta, int g_kind, float g_alpha, float g_beta) {                                         \
        gru_step_bwd<S>(raw, h_prev, hn_lin, dh_total, dax, dah, direct, lengths, t, batch, hidden, linear_before_reset, \
                        clip, f_kind, f_alpha, f_beta, g_kind, g_alpha, g_beta);                                        \
    }                                                                                                                   \
    SEQK_KERNEL(gru_step_bwd_##suffix);                                                                                 \
    extern "C" __global__ void gru_step_bwd_reset_##suffix(                                                             \
        const float* raw, const S* h_prev, const float* d_rh, S* dax, S* dah, float* direct, S* rh_all,                 \
        const int* lengths, int t, int batch, int hidden, float clip, int f_kind, float f_alpha, float f_beta) {        \
        gru_step_bwd_reset<S>(raw, h_prev, d_rh, dax, dah, direct, rh_all, lengths, t, batch, hidden, clip, f_kind,     \
                              f_alpha, f_beta);                                                                         \
    }                                                                                                                   \
    SEQK_KERNEL(gru_step_bwd_reset_##suffix)

SEQK_RECURRENT_BWD(f32, float);
SEQK_RECURRENT_BWD(f16, __half);
SEQK_RECURRENT_BWD(bf16, __nv_bfloat16);
