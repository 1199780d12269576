// Recurrent sequence steps on the GPU: the pointwise parts of RNN, LSTM and GRU steps, forward,
// for the sequence driver in java/.../gpu/RecurrentGpu.java. The GEMMs (x W_ih^T for all steps,
// h W_hh^T per step, the LSTM projection, GRU's W_hn (r*h)) go through Driver.gemm.
//
// Versions: v1 (these) are plain ports of cpu/RecurrentReference: one thread per (batch, unit),
// the gate math in float, every option a runtime argument. Faster versions will sit beside them.
//
// Common arguments:
//   gx      [T*B, G*H] f32   x W_ih^T for every step (no bias), gate blocks in PyTorch order
//   gh      [B, G*H]   f32   h W_hh^T for this step (no bias)
//   bih,bhh [G*H]      T     biases, or null
//   lengths [B]        i32   steps t >= lengths[b] are skipped (state kept, output zero)
//   raw     [T*B, G*H] f32   saved pre-activations (before clip) for backward
//   act*    kind, alpha, beta of the activations in ONNX order; kinds are Activation.Kind ordinals
//   clip    > 0; +inf for none
// Each step writes the new h (or, for an LSTM with projection, m = o * h(c)) of the valid batch
// entries into hnew [B, P]; step_commit then moves it into the state and the output.
// Bytes per step and element: about (2G + 2) * 4 read, (G + 2) * 4 written; memory bound.
#include "seqk.cuh"

namespace {

enum Kind { SIGMOID, TANH, RELU, HARD_SIGMOID, AFFINE, LEAKY_RELU, THRESHOLDED_RELU, SCALED_TANH, ELU, SOFTSIGN, SOFTPLUS };

/** Activation `kind` (Activation.Kind ordinal) with its alpha and beta, as in ops/Activation.java. */
__device__ __forceinline__ float activate(int kind, float alpha, float beta, float x) {
    switch (kind) {
        case SIGMOID: return 1.0f / (1.0f + expf(-x));
        case TANH: return tanhf(x);
        case RELU: return fmaxf(x, 0.0f);
        case HARD_SIGMOID: return fminf(1.0f, fmaxf(0.0f, alpha * x + beta));
        case AFFINE: return alpha * x + beta;
        case LEAKY_RELU: return x >= 0.0f ? x : alpha * x;
        case THRESHOLDED_RELU: return x > alpha ? x : 0.0f;
        case SCALED_TANH: return alpha * tanhf(beta * x);
        case ELU: return x >= 0.0f ? x : alpha * (expf(x) - 1.0f);
        case SOFTSIGN: return x / (1.0f + fabsf(x));
        default: return x > 0.0f ? x + log1pf(expf(-x)) : log1pf(expf(x));  // SOFTPLUS
    }
}

__device__ __forceinline__ float clip_to(float v, float clip) { return fmaxf(-clip, fminf(clip, v)); }

template <typename T>
__device__ __forceinline__ float load_or_zero(const T* p, long i) {
    return p == nullptr ? 0.0f : seqk::to_float(p[i]);
}

/** The (b, j) element of a [B, H] launch, or false past the end. */
__device__ __forceinline__ bool element(int batch, int hidden, int& b, int& j) {
    long idx = static_cast<long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= static_cast<long>(batch) * hidden) {
        return false;
    }
    b = static_cast<int>(idx / hidden);
    j = static_cast<int>(idx % hidden);
    return true;
}

// LSTM, one step. c_state [B, H] f32 is updated in place; c_prev_save and c_new_save [T*B, H] f32
// keep it for backward; peephole [3H] (i, f, o) or null; input_forget: forget = 1 - i.
template <typename T>
__device__ void lstm_step_v1(const float* gx, const float* gh, const T* bih, const T* bhh, const T* peephole,
                             float* c_state, float* c_prev_save, float* c_new_save, float* raw, T* hnew,
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
    pre[0] += load_or_zero(peephole, j) * cp;
    pre[1] += load_or_zero(peephole, hidden + j) * cp;
    float i = activate(f_kind, f_alpha, f_beta, clip_to(pre[0], clip));
    float f = input_forget ? 1.0f - i : activate(f_kind, f_alpha, f_beta, clip_to(pre[1], clip));
    float g = activate(g_kind, g_alpha, g_beta, clip_to(pre[2], clip));
    float c = f * cp + i * g;
    pre[3] += load_or_zero(peephole, 2 * hidden + j) * c;
    float o = activate(f_kind, f_alpha, f_beta, clip_to(pre[3], clip));
    for (int k = 0; k < 4; k++) {
        raw[row * gh4 + k * hidden + j] = pre[k];
    }
    c_prev_save[row * hidden + j] = cp;
    c_new_save[row * hidden + j] = c;
    c_state[static_cast<long>(b) * hidden + j] = c;
    hnew[static_cast<long>(b) * hidden + j] = seqk::from_float<T>(o * activate(h_kind, h_alpha, h_beta, c));
}

// GRU without linear-before-reset, first half of a step: r and z, and r*h for the W_hn GEMM.
// gh holds h W_hr^T and h W_hz^T in its first 2H columns.
template <typename T>
__device__ void gru_reset_v1(const float* gx, const float* gh, const T* bih, const T* bhh, const T* h_state,
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
__device__ void gru_step_v1(const float* gx, const float* gh, const T* bih, const T* bhh, const T* h_state, float* raw,
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
        raw[row * gh3 + j] = pre_r;
        raw[row * gh3 + hidden + j] = pre_z;
    } else {
        pre_r = raw[row * gh3 + j];
        pre_z = raw[row * gh3 + hidden + j];
    }
    float r = activate(f_kind, f_alpha, f_beta, clip_to(pre_r, clip));
    float z = activate(f_kind, f_alpha, f_beta, clip_to(pre_z, clip));
    float h_lin = gh[static_cast<long>(b) * gh3 + 2 * hidden + j] + load_or_zero(bhh, 2 * hidden + j);
    float x_n = gx[row * gh3 + 2 * hidden + j] + load_or_zero(bih, 2 * hidden + j);
    float pre_n;
    if (linear_before_reset) {
        hn_lin_save[row * hidden + j] = h_lin;
        pre_n = x_n + r * h_lin;
    } else {
        pre_n = x_n + h_lin;
    }
    raw[row * gh3 + 2 * hidden + j] = pre_n;
    float n = activate(g_kind, g_alpha, g_beta, clip_to(pre_n, clip));
    float h_prev = seqk::to_float(h_state[hb]);
    hnew[hb] = seqk::from_float<T>((1.0f - z) * n + z * h_prev);
}

// Elman RNN, one step: h = f(x W_ih^T + b_ih + h W_hh^T + b_hh).
template <typename T>
__device__ void rnn_step_v1(const float* gx, const float* gh, const T* bih, const T* bhh, float* raw, T* hnew,
                            const int* lengths, int t, int batch, int hidden, float clip, int f_kind, float f_alpha,
                            float f_beta) {
    int b, j;
    if (!element(batch, hidden, b, j) || t >= lengths[b]) {
        return;
    }
    long row = static_cast<long>(t) * batch + b;
    float pre = gx[row * hidden + j] + gh[static_cast<long>(b) * hidden + j] + load_or_zero(bih, j) + load_or_zero(bhh, j);
    raw[row * hidden + j] = pre;
    hnew[static_cast<long>(b) * hidden + j] = seqk::from_float<T>(activate(f_kind, f_alpha, f_beta, clip_to(pre, clip)));
}

// End of a step, for every element of [B, P]: saves the incoming state (h_prev_save [T*B, P]),
// then for valid entries moves hnew into the state and the output, and writes zero output for
// entries past their length. out is [T, B, out_stride] with this direction at out_offset.
template <typename T>
__device__ void step_commit_v1(const T* hnew, T* h_state, T* h_prev_save, T* out, const int* lengths, int t, int batch,
                               int state, int out_stride, int out_offset) {
    int b, j;
    if (!element(batch, state, b, j)) {
        return;
    }
    long hb = static_cast<long>(b) * state + j;
    long row = static_cast<long>(t) * batch + b;
    h_prev_save[row * state + j] = h_state[hb];
    T* o = out + row * out_stride + out_offset + j;
    if (t < lengths[b]) {
        h_state[hb] = hnew[hb];
        *o = hnew[hb];
    } else {
        *o = seqk::from_float<T>(0.0f);
    }
}

}  // namespace

#define SEQK_RECURRENT_FWD(suffix, T)                                                                                     \
    extern "C" __global__ void lstm_step_fwd_##suffix(                                                                    \
        const float* gx, const float* gh, const T* bih, const T* bhh, const T* peephole, float* c_state,                  \
        float* c_prev_save, float* c_new_save, float* raw, T* hnew, const int* lengths, int t, int batch, int hidden,     \
        int input_forget, float clip, int f_kind, float f_alpha, float f_beta, int g_kind, float g_alpha, float g_beta,   \
        int h_kind, float h_alpha, float h_beta) {                                                                        \
        lstm_step_v1<T>(gx, gh, bih, bhh, peephole, c_state, c_prev_save, c_new_save, raw, hnew, lengths, t, batch,      \
                        hidden, input_forget, clip, f_kind, f_alpha, f_beta, g_kind, g_alpha, g_beta, h_kind, h_alpha,    \
                        h_beta);                                                                                          \
    }                                                                                                                     \
    SEQK_KERNEL(lstm_step_fwd_##suffix);                                                                                  \
    extern "C" __global__ void gru_reset_fwd_##suffix(const float* gx, const float* gh, const T* bih, const T* bhh,       \
                                                      const T* h_state, float* raw, T* reset_hidden, const int* lengths,  \
                                                      int t, int batch, int hidden, float clip, int f_kind,               \
                                                      float f_alpha, float f_beta) {                                      \
        gru_reset_v1<T>(gx, gh, bih, bhh, h_state, raw, reset_hidden, lengths, t, batch, hidden, clip, f_kind, f_alpha,  \
                        f_beta);                                                                                          \
    }                                                                                                                     \
    SEQK_KERNEL(gru_reset_fwd_##suffix);                                                                                  \
    extern "C" __global__ void gru_step_fwd_##suffix(                                                                     \
        const float* gx, const float* gh, const T* bih, const T* bhh, const T* h_state, float* raw, float* hn_lin_save,   \
        T* hnew, const int* lengths, int t, int batch, int hidden, int linear_before_reset, float clip, int f_kind,        \
        float f_alpha, float f_beta, int g_kind, float g_alpha, float g_beta) {                                           \
        gru_step_v1<T>(gx, gh, bih, bhh, h_state, raw, hn_lin_save, hnew, lengths, t, batch, hidden,                      \
                       linear_before_reset, clip, f_kind, f_alpha, f_beta, g_kind, g_alpha, g_beta);                      \
    }                                                                                                                     \
    SEQK_KERNEL(gru_step_fwd_##suffix);                                                                                   \
    extern "C" __global__ void rnn_step_fwd_##suffix(const float* gx, const float* gh, const T* bih, const T* bhh,        \
                                                     float* raw, T* hnew, const int* lengths, int t, int batch,           \
                                                     int hidden, float clip, int f_kind, float f_alpha, float f_beta) {   \
        rnn_step_v1<T>(gx, gh, bih, bhh, raw, hnew, lengths, t, batch, hidden, clip, f_kind, f_alpha, f_beta);            \
    }                                                                                                                     \
    SEQK_KERNEL(rnn_step_fwd_##suffix);                                                                                   \
    extern "C" __global__ void step_commit_##suffix(const T* hnew, T* h_state, T* h_prev_save, T* out,                    \
                                                    const int* lengths, int t, int batch, int state, int out_stride,      \
                                                    int out_offset) {                                                     \
        step_commit_v1<T>(hnew, h_state, h_prev_save, out, lengths, t, batch, state, out_stride, out_offset);             \
    }                                                                                                                     \
    SEQK_KERNEL(step_commit_##suffix)

SEQK_RECURRENT_FWD(f32, float);
SEQK_RECURRENT_FWD(f16, __half);
SEQK_RECURRENT_FWD(bf16, __nv_bfloat16);
