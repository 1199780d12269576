// v1 step kernels' bodies: plain ports of cpu/RecurrentReference, one thread per (batch, unit),
// every option a runtime argument; and step_commit, which ends a step of every forward step loop.
#pragma once

#include "cell.cuh"

namespace {

// LSTM, one step. c_state [B, H] f32 is updated in place; c_new_save [T*B, H] f32 keeps it for
// backward (which reads c_{t-1} from the step before); peephole [3H] (i, f, o) or null;
// input_forget: forget = 1 - i.
template <typename T>
__device__ void lstm_step_v1(const float* gx, const float* gh, const float* bih, const float* bhh, const float* peephole,
                             float* c_state, float* c_new_save, float* raw, T* hnew,
                             const int* lengths, int t, int batch, int hidden, int input_forget, float clip,
                             int f_kind, float f_alpha, float f_beta, int g_kind, float g_alpha, float g_beta,
                             int h_kind, float h_alpha, float h_beta) {
    int b, j;
    if (!element(batch, hidden, b, j) || t >= lengths[b]) {
        return;
    }
    long row = static_cast<long>(t) * batch + b;
    int gh4 = 4 * hidden;
    float pre[4];
    for (int g = 0; g < 4; g++) {
        int col = g * hidden + j;
        pre[g] = gx[row * gh4 + col] + gh[static_cast<long>(b) * gh4 + col] + load_or_zero(bih, col) + load_or_zero(bhh, col);
    }
    float cp = c_state[static_cast<long>(b) * hidden + j];
    float c;
    float h = lstm_cell(pre, cp, peephole, j, hidden, input_forget, clip, f_kind, f_alpha, f_beta, g_kind, g_alpha, g_beta,
                        h_kind, h_alpha, h_beta, c);
    for (int k = 0; k < 4; k++) {
        save(raw, row * gh4 + k * hidden + j, pre[k]);
    }
    save(c_new_save, row * hidden + j, c);
    c_state[static_cast<long>(b) * hidden + j] = c;
    hnew[static_cast<long>(b) * hidden + j] = seqk::from_float<T>(h);
}

// GRU without linear-before-reset, first half of a step: r and z, and r*h for the W_hn GEMM.
// gh holds h W_hr^T and h W_hz^T in its first 2H columns. raw is never null here: gru_step_v1
// reads r and z back from it (an inference forward gives it too, as scratch).
template <typename T>
__device__ void gru_reset_v1(const float* gx, const float* gh, const float* bih, const float* bhh, const T* h_state,
                             float* raw, T* reset_hidden, const int* lengths, int t, int batch, int hidden, float clip,
                             int f_kind, float f_alpha, float f_beta) {
    int b, j;
    if (!element(batch, hidden, b, j) || t >= lengths[b]) {
        return;
    }
    long row = static_cast<long>(t) * batch + b;
    int gh3 = 3 * hidden;
    float pre_r = gx[row * gh3 + j] + gh[static_cast<long>(b) * gh3 + j] + load_or_zero(bih, j) + load_or_zero(bhh, j);
    float pre_z = gx[row * gh3 + hidden + j] + gh[static_cast<long>(b) * gh3 + hidden + j] + load_or_zero(bih, hidden + j)
                  + load_or_zero(bhh, hidden + j);
    raw[row * gh3 + j] = pre_r;
    raw[row * gh3 + hidden + j] = pre_z;
    float r = activate(f_kind, f_alpha, f_beta, clip_to(pre_r, clip));
    reset_hidden[static_cast<long>(b) * hidden + j] = seqk::from_float<T>(r * seqk::to_float(h_state[static_cast<long>(b) * hidden + j]));
}

// GRU, the rest of a step. linear_before_reset: n = g(x_n + r * (h W_hn^T + b_hn)) and hn_lin_save
// keeps h W_hn^T + b_hn; otherwise gh's n columns already hold (r*h) W_hn^T and r, z were saved by
// gru_reset.
template <typename T>
__device__ void gru_step_v1(const float* gx, const float* gh, const float* bih, const float* bhh, const T* h_state, float* raw,
                            float* hn_lin_save, T* hnew, const int* lengths, int t, int batch, int hidden,
                            int linear_before_reset, float clip, int f_kind, float f_alpha, float f_beta, int g_kind,
                            float g_alpha, float g_beta) {
    int b, j;
    if (!element(batch, hidden, b, j) || t >= lengths[b]) {
        return;
    }
    long row = static_cast<long>(t) * batch + b;
    long hb = static_cast<long>(b) * hidden + j;
    int gh3 = 3 * hidden;
    float pre_r;
    float pre_z;
    if (linear_before_reset) {
        pre_r = gx[row * gh3 + j] + gh[static_cast<long>(b) * gh3 + j] + load_or_zero(bih, j) + load_or_zero(bhh, j);
        pre_z = gx[row * gh3 + hidden + j] + gh[static_cast<long>(b) * gh3 + hidden + j] + load_or_zero(bih, hidden + j)
                + load_or_zero(bhh, hidden + j);
        save(raw, row * gh3 + j, pre_r);
        save(raw, row * gh3 + hidden + j, pre_z);
    } else {
        pre_r = raw[row * gh3 + j];
        pre_z = raw[row * gh3 + hidden + j];
    }
    float h_lin = gh[static_cast<long>(b) * gh3 + 2 * hidden + j] + load_or_zero(bhh, 2 * hidden + j);
    float x_n = gx[row * gh3 + 2 * hidden + j] + load_or_zero(bih, 2 * hidden + j);
    if (linear_before_reset) {
        save(hn_lin_save, row * hidden + j, h_lin);
    }
    float pre_n;
    float h = gru_cell(pre_r, pre_z, x_n, h_lin, linear_before_reset, seqk::to_float(h_state[hb]), clip, f_kind, f_alpha,
                       f_beta, g_kind, g_alpha, g_beta, pre_n);
    save(raw, row * gh3 + 2 * hidden + j, pre_n);
    hnew[hb] = seqk::from_float<T>(h);
}

// Elman RNN, one step: h = f(x W_ih^T + b_ih + h W_hh^T + b_hh).
template <typename T>
__device__ void rnn_step_v1(const float* gx, const float* gh, const float* bih, const float* bhh, float* raw, T* hnew,
                            const int* lengths, int t, int batch, int hidden, float clip, int f_kind, float f_alpha,
                            float f_beta) {
    int b, j;
    if (!element(batch, hidden, b, j) || t >= lengths[b]) {
        return;
    }
    long row = static_cast<long>(t) * batch + b;
    float pre = gx[row * hidden + j] + gh[static_cast<long>(b) * hidden + j] + load_or_zero(bih, j) + load_or_zero(bhh, j);
    save(raw, row * hidden + j, pre);
    hnew[static_cast<long>(b) * hidden + j] = seqk::from_float<T>(activate(f_kind, f_alpha, f_beta, clip_to(pre, clip)));
}

// End of a step, for every element of [B, P]: for valid entries moves hnew into the state and the
// output, and writes zero output for entries past their length. out is [T, B, out_stride] with
// this direction at out_offset (backward rebuilds h_prev from it).
template <typename T>
__device__ void step_commit_v1(const T* hnew, T* h_state, T* out, const int* lengths, int t, int batch, int state,
                               int out_stride, int out_offset) {
    int b, j;
    if (!element(batch, state, b, j)) {
        return;
    }
    long hb = static_cast<long>(b) * state + j;
    long row = static_cast<long>(t) * batch + b;
    T* o = out + row * out_stride + out_offset + j;
    if (t < lengths[b]) {
        h_state[hb] = hnew[hb];
        *o = hnew[hb];
    } else {
        *o = seqk::from_float<T>(0.0f);
    }
}


}  // namespace
