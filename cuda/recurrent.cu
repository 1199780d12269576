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
//   bih,bhh [G*H]      T     biases, or null (T is f32 in v1: RecurrentGpu widens at its boundary)
//   lengths [B]        i32   steps t >= lengths[b] are skipped (state kept, output zero)
//   raw     [T*B, G*H] f32   saved pre-activations (before clip) for backward
//   act*    kind, alpha, beta of the activations in ONNX order; kinds are Activation.Kind ordinals
//   clip    > 0; +inf for none
// Each step writes the new h (or, for an LSTM with projection, m = o * h(c)) of the valid batch
// entries into hnew [B, P]; step_commit then moves it into the state and the output.
// Bytes per step and element: about (2G + 2) * 4 read, (G + 2) * 4 written; memory bound.
#include "arch/grid.cuh"
#include "arch/warp.cuh"
#include "seqk.cuh"

namespace {

enum Kind { SIGMOID, TANH, RELU, HARD_SIGMOID, AFFINE, LEAKY_RELU, THRESHOLDED_RELU, SCALED_TANH, ELU, SOFTSIGN, SOFTPLUS };

/** Activation `kind` (Activation.Kind ordinal) with its alpha and beta, as in ops/Activation.java. */
__device__ __forceinline__ float activate(int kind, float alpha, float beta, float x) {
    switch (kind) {
        case SIGMOID: return 1.0f / (1.0f + expf(-x));
        case TANH: return tanhf(x);
        // Selects, not fmaxf/fminf: those return the other operand for a NaN, where the reference's
        // Math.max/Math.min (and these selects, whose comparisons are false for NaN) keep the NaN.
        case RELU: return x < 0.0f ? 0.0f : x;
        case HARD_SIGMOID: {
            float y = alpha * x + beta;
            return y < 0.0f ? 0.0f : (y > 1.0f ? 1.0f : y);
        }
        case AFFINE: return alpha * x + beta;
        case LEAKY_RELU: return x >= 0.0f ? x : alpha * x;
        case THRESHOLDED_RELU: return x <= alpha ? 0.0f : x;  // NaN stays NaN, as in the reference
        case SCALED_TANH: return alpha * tanhf(beta * x);
        case ELU: return x >= 0.0f ? x : alpha * (expf(x) - 1.0f);
        case SOFTSIGN: return x / (1.0f + fabsf(x));
        default: return x > 0.0f ? x + log1pf(expf(-x)) : log1pf(expf(x));  // SOFTPLUS
    }
}

// Selects keep a NaN pre-activation NaN (fminf(clip, NaN) is clip; with no clip, +inf, and tanh(+inf)
// = 1 turned a NaN input into finite outputs), as the reference's Math.max(-clip, Math.min(clip, v)).
__device__ __forceinline__ float clip_to(float v, float clip) { return v < -clip ? -clip : (v > clip ? clip : v); }

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

// The LSTM cell of unit j from its four pre-activations (x and h projections plus biases, gate
// order i, f, g, o) and the previous cell state cp: adds the peephole terms to pre (which the
// caller saves as the raw pre-activations), returns h and sets c.
template <typename T>
__device__ __forceinline__ float lstm_cell(float pre[4], float cp, const T* peephole, int j, int hidden, int input_forget,
                                           float clip, int f_kind, float f_alpha, float f_beta, int g_kind, float g_alpha,
                                           float g_beta, int h_kind, float h_alpha, float h_beta, float& c) {
    pre[0] += load_or_zero(peephole, j) * cp;
    pre[1] += load_or_zero(peephole, hidden + j) * cp;
    float i = activate(f_kind, f_alpha, f_beta, clip_to(pre[0], clip));
    float f = input_forget ? 1.0f - i : activate(f_kind, f_alpha, f_beta, clip_to(pre[1], clip));
    float g = activate(g_kind, g_alpha, g_beta, clip_to(pre[2], clip));
    c = f * cp + i * g;
    pre[3] += load_or_zero(peephole, 2 * hidden + j) * c;
    float o = activate(f_kind, f_alpha, f_beta, clip_to(pre[3], clip));
    return o * activate(h_kind, h_alpha, h_beta, c);
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
    float c;
    float h = lstm_cell(pre, cp, peephole, j, hidden, input_forget, clip, f_kind, f_alpha, f_beta, g_kind, g_alpha, g_beta,
                        h_kind, h_alpha, h_beta, c);
    for (int k = 0; k < 4; k++) {
        raw[row * gh4 + k * hidden + j] = pre[k];
    }
    c_prev_save[row * hidden + j] = cp;
    c_new_save[row * hidden + j] = c;
    c_state[static_cast<long>(b) * hidden + j] = c;
    hnew[static_cast<long>(b) * hidden + j] = seqk::from_float<T>(h);
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

// The GRU cell from its pre-activations: r and z from pre_r, pre_z; pre_n = x_n + r * h_lin when
// linear_before_reset (h_lin = h W_hn^T + b_hn), else x_n + h_lin (h_lin = (r*h) W_hn^T + b_hn);
// returns the new h = (1 - z) n + z h_prev and sets pre_n (saved as the n gate's raw value).
__device__ __forceinline__ float gru_cell(float pre_r, float pre_z, float x_n, float h_lin, int linear_before_reset,
                                          float h_prev, float clip, int f_kind, float f_alpha, float f_beta, int g_kind,
                                          float g_alpha, float g_beta, float& pre_n) {
    float r = activate(f_kind, f_alpha, f_beta, clip_to(pre_r, clip));
    float z = activate(f_kind, f_alpha, f_beta, clip_to(pre_z, clip));
    pre_n = linear_before_reset ? x_n + r * h_lin : x_n + h_lin;
    float n = activate(g_kind, g_alpha, g_beta, clip_to(pre_n, clip));
    return (1.0f - z) * n + z * h_prev;
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
    float h_lin = gh[static_cast<long>(b) * gh3 + 2 * hidden + j] + load_or_zero(bhh, 2 * hidden + j);
    float x_n = gx[row * gh3 + 2 * hidden + j] + load_or_zero(bih, 2 * hidden + j);
    if (linear_before_reset) {
        hn_lin_save[row * hidden + j] = h_lin;
    }
    float pre_n;
    float h = gru_cell(pre_r, pre_z, x_n, h_lin, linear_before_reset, seqk::to_float(h_state[hb]), clip, f_kind, f_alpha,
                       f_beta, g_kind, g_alpha, g_beta, pre_n);
    raw[row * gh3 + 2 * hidden + j] = pre_n;
    hnew[hb] = seqk::from_float<T>(h);
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

// The forward step kernels take the step index from device memory (`step`, advanced by
// step_advance at the end of each step) rather than as an argument, so that one step, captured
// once as a CUDA graph, can be launched for every step of the sequence; t runs backwards for the
// reverse direction.
__device__ __forceinline__ int step_time(const int* step, int steps, int reversed) {
    int s = *step;
    return reversed ? steps - 1 - s : s;
}

// Ends a step: one thread moves the step index on.
extern "C" __global__ void step_advance(int* step) {
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        *step += 1;
    }
}
SEQK_KERNEL(step_advance);

#define SEQK_RECURRENT_FWD(suffix, T)                                                                                   \
    extern "C" __global__ void lstm_step_fwd_##suffix(                                                                  \
        const float* gx, const float* gh, const T* bih, const T* bhh, const T* peephole, float* c_state,                \
        float* c_prev_save, float* c_new_save, float* raw, T* hnew, const int* lengths, const int* step, int steps,     \
        int reversed, int batch, int hidden, int input_forget, float clip, int f_kind, float f_alpha, float f_beta,     \
        int g_kind, float g_alpha, float g_beta, int h_kind, float h_alpha, float h_beta) {                             \
        lstm_step_v1<T>(gx, gh, bih, bhh, peephole, c_state, c_prev_save, c_new_save, raw, hnew, lengths,               \
                        step_time(step, steps, reversed), batch, hidden, input_forget, clip, f_kind, f_alpha, f_beta,   \
                        g_kind, g_alpha, g_beta, h_kind, h_alpha, h_beta);                                              \
    }                                                                                                                   \
    SEQK_KERNEL(lstm_step_fwd_##suffix);                                                                                \
    extern "C" __global__ void gru_reset_fwd_##suffix(                                                                  \
        const float* gx, const float* gh, const T* bih, const T* bhh, const T* h_state, float* raw, T* reset_hidden,    \
        const int* lengths, const int* step, int steps, int reversed, int batch, int hidden, float clip, int f_kind,    \
        float f_alpha, float f_beta) {                                                                                  \
        gru_reset_v1<T>(gx, gh, bih, bhh, h_state, raw, reset_hidden, lengths, step_time(step, steps, reversed), batch, \
                        hidden, clip, f_kind, f_alpha, f_beta);                                                         \
    }                                                                                                                   \
    SEQK_KERNEL(gru_reset_fwd_##suffix);                                                                                \
    extern "C" __global__ void gru_step_fwd_##suffix(                                                                   \
        const float* gx, const float* gh, const T* bih, const T* bhh, const T* h_state, float* raw, float* hn_lin_save, \
        T* hnew, const int* lengths, const int* step, int steps, int reversed, int batch, int hidden,                   \
        int linear_before_reset, float clip, int f_kind, float f_alpha, float f_beta, int g_kind, float g_alpha,        \
        float g_beta) {                                                                                                 \
        gru_step_v1<T>(gx, gh, bih, bhh, h_state, raw, hn_lin_save, hnew, lengths, step_time(step, steps, reversed),    \
                       batch, hidden, linear_before_reset, clip, f_kind, f_alpha, f_beta, g_kind, g_alpha, g_beta);     \
    }                                                                                                                   \
    SEQK_KERNEL(gru_step_fwd_##suffix);                                                                                 \
    extern "C" __global__ void rnn_step_fwd_##suffix(                                                                   \
        const float* gx, const float* gh, const T* bih, const T* bhh, float* raw, T* hnew, const int* lengths,          \
        const int* step, int steps, int reversed, int batch, int hidden, float clip, int f_kind, float f_alpha,         \
        float f_beta) {                                                                                                 \
        rnn_step_v1<T>(gx, gh, bih, bhh, raw, hnew, lengths, step_time(step, steps, reversed), batch, hidden, clip,     \
                       f_kind, f_alpha, f_beta);                                                                        \
    }                                                                                                                   \
    SEQK_KERNEL(rnn_step_fwd_##suffix);                                                                                 \
    extern "C" __global__ void step_commit_##suffix(const T* hnew, T* h_state, T* h_prev_save, T* out,                  \
                                                    const int* lengths, const int* step, int steps, int reversed,       \
                                                    int batch, int state, int out_stride, int out_offset) {             \
        step_commit_v1<T>(hnew, h_state, h_prev_save, out, lengths, step_time(step, steps, reversed), batch, state,     \
                          out_stride, out_offset);                                                                      \
    }                                                                                                                   \
    SEQK_KERNEL(step_commit_##suffix)

// v1 computes in f32 between its boundaries (RecurrentGpu widens inputs once and rounds results
// once, as the CPU reference does), so only f32 is instantiated.
SEQK_RECURRENT_FWD(f32, float);

// ---------------------------------------------------------------- backward (all f32)
//
// Backward through time, per (layer, direction), walking the steps in reverse processing order.
// Gate gradients go to dax/dah [T*B, G*H] (x-side and h-side pre-activation gradients; equal
// except for GRU), zero rows for steps past a sequence's length, so the weight gradients are
// single GEMMs over all steps and the bias gradients column sums (column_sum_f32, deterministic).
// dh_total [B, P] = dh_state + dOut[t] for the valid entries; step_grad_out folds the GEMM
// dh_total-side result (dA W_hh) and the direct terms back into dh_state.

namespace {

/**
 * d activate / dx, in forms without cancellation: tanh' = 1/cosh^2 and sigmoid' = s * sigmoid(-x)
 * keep full relative precision where the function saturates (1 - tanh^2 in float loses about three
 * digits at |x| = 5, which backward through time then amplifies).
 */
__device__ __forceinline__ float activate_grad(int kind, float alpha, float beta, float x) {
    switch (kind) {
        case SIGMOID: return (1.0f / (1.0f + expf(-x))) * (1.0f / (1.0f + expf(x)));
        case TANH: {
            float c = coshf(x);
            return 1.0f / (c * c);
        }
        case RELU: return x > 0.0f ? 1.0f : 0.0f;
        case HARD_SIGMOID: {
            float y = alpha * x + beta;
            return y > 0.0f && y < 1.0f ? alpha : 0.0f;
        }
        case AFFINE: return alpha;
        case LEAKY_RELU: return x >= 0.0f ? 1.0f : alpha;
        case THRESHOLDED_RELU: return x > alpha ? 1.0f : 0.0f;
        case SCALED_TANH: {
            float c = coshf(beta * x);
            return alpha * beta / (c * c);
        }
        case ELU: return x >= 0.0f ? 1.0f : alpha * expf(x);
        case SOFTSIGN: {
            float d = 1.0f + fabsf(x);
            return 1.0f / (d * d);
        }
        default: return 1.0f / (1.0f + expf(-x));  // SOFTPLUS
    }
}

__device__ __forceinline__ float clip_grad(float raw, float clip) { return fabsf(raw) <= clip ? 1.0f : 0.0f; }


// Vectorized step cells (LSTM; GRU with linear_before_reset; Elman RNN).
// LSTM step, vectorized: one thread handles 4 consecutive units j..j+3 of one batch entry with
// 16-byte loads and stores (gx, gh, biases, peepholes, the cell state, the saved trace, hnew) and
// runs lstm_cell on each, so the math is v1's. F32 buffers (v1's interior); H % 4 == 0, which
// with buffers that start 16-byte aligned keeps every row's quads aligned (RecurrentGpu checks H).
// Bytes per step and element as v1; fewer, wider memory transactions.
namespace vec4 {

/** This thread's batch entry b and first unit j0 of 4, or false past the end or past b's length. */
__device__ __forceinline__ bool quad(int batch, int hidden, const int* lengths, int t, int& b, int& j0) {
    int quads = hidden / 4;
    long idx = static_cast<long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= static_cast<long>(batch) * quads) {
        return false;
    }
    b = static_cast<int>(idx / quads);
    j0 = static_cast<int>(idx % quads) * 4;
    return t < lengths[b];
}

__device__ __forceinline__ void load4(const float* p, float out[4]) {
    float4 v = *reinterpret_cast<const float4*>(p);
    out[0] = v.x;
    out[1] = v.y;
    out[2] = v.z;
    out[3] = v.w;
}

__device__ __forceinline__ void load4_or_zero(const float* p, float out[4]) {
    if (p == nullptr) {
        out[0] = out[1] = out[2] = out[3] = 0.0f;
    } else {
        load4(p, out);
    }
}

__device__ __forceinline__ void store4(float* p, const float in[4]) {
    float4 v;
    v.x = in[0];
    v.y = in[1];
    v.z = in[2];
    v.w = in[3];
    *reinterpret_cast<float4*>(p) = v;
}

__device__ void lstm_step(const float* gx, const float* gh, const float* bih, const float* bhh, const float* peephole,
                          float* c_state, float* c_prev_save, float* c_new_save, float* raw, float* hnew, const int* lengths,
                          int t, int batch, int hidden, int input_forget, float clip, int f_kind, float f_alpha, float f_beta,
                          int g_kind, float g_alpha, float g_beta, int h_kind, float h_alpha, float h_beta) {
    int b, j0;
    if (!quad(batch, hidden, lengths, t, b, j0)) {
        return;
    }
    long row = static_cast<long>(t) * batch + b;
    long gh4 = 4L * hidden;
    float pre[4][4];  // [gate][unit]
    for (int g = 0; g < 4; g++) {
        float x[4], hh[4], bi[4], bh[4];
        load4(gx + row * gh4 + g * hidden + j0, x);
        load4(gh + b * gh4 + g * hidden + j0, hh);
        load4_or_zero(bih == nullptr ? nullptr : bih + g * hidden + j0, bi);
        load4_or_zero(bhh == nullptr ? nullptr : bhh + g * hidden + j0, bh);
        for (int u = 0; u < 4; u++) {
            pre[g][u] = x[u] + hh[u] + bi[u] + bh[u];
        }
    }
    float cp[4], c_new[4], h_new[4];
    load4(c_state + static_cast<long>(b) * hidden + j0, cp);
    for (int u = 0; u < 4; u++) {
        float unit_pre[4] = {pre[0][u], pre[1][u], pre[2][u], pre[3][u]};
        h_new[u] = lstm_cell(unit_pre, cp[u], peephole, j0 + u, hidden, input_forget, clip, f_kind, f_alpha, f_beta, g_kind,
                             g_alpha, g_beta, h_kind, h_alpha, h_beta, c_new[u]);
        for (int g = 0; g < 4; g++) {
            pre[g][u] = unit_pre[g];
        }
    }
    for (int g = 0; g < 4; g++) {
        store4(raw + row * gh4 + g * hidden + j0, pre[g]);
    }
    store4(c_prev_save + row * hidden + j0, cp);
    store4(c_new_save + row * hidden + j0, c_new);
    store4(c_state + static_cast<long>(b) * hidden + j0, c_new);
    store4(hnew + static_cast<long>(b) * hidden + j0, h_new);
}

// GRU step with linear_before_reset, vectorized like lstm_step: 4 units per thread, gru_cell per
// unit; saves raw (r, z, n) and h W_hn^T + b_hn as gru_step_v1 does.
__device__ void gru_step(const float* gx, const float* gh, const float* bih, const float* bhh, const float* h_state,
                         float* raw, float* hn_lin_save, float* hnew, const int* lengths, int t, int batch, int hidden,
                         float clip, int f_kind, float f_alpha, float f_beta, int g_kind, float g_alpha, float g_beta) {
    int b, j0;
    if (!quad(batch, hidden, lengths, t, b, j0)) {
        return;
    }
    long row = static_cast<long>(t) * batch + b;
    long gh3 = 3L * hidden;
    float x[3][4], hh[3][4], bi[3][4], bh[3][4];
    for (int g = 0; g < 3; g++) {
        load4(gx + row * gh3 + g * hidden + j0, x[g]);
        load4(gh + b * gh3 + g * hidden + j0, hh[g]);
        load4_or_zero(bih == nullptr ? nullptr : bih + g * hidden + j0, bi[g]);
        load4_or_zero(bhh == nullptr ? nullptr : bhh + g * hidden + j0, bh[g]);
    }
    float hp[4], pre_r[4], pre_z[4], pre_n[4], h_lin[4], h_new[4];
    load4(h_state + static_cast<long>(b) * hidden + j0, hp);
    for (int u = 0; u < 4; u++) {
        pre_r[u] = x[0][u] + hh[0][u] + bi[0][u] + bh[0][u];
        pre_z[u] = x[1][u] + hh[1][u] + bi[1][u] + bh[1][u];
        h_lin[u] = hh[2][u] + bh[2][u];
        h_new[u] = gru_cell(pre_r[u], pre_z[u], x[2][u] + bi[2][u], h_lin[u], 1, hp[u], clip, f_kind, f_alpha, f_beta, g_kind,
                            g_alpha, g_beta, pre_n[u]);
    }
    store4(raw + row * gh3 + j0, pre_r);
    store4(raw + row * gh3 + hidden + j0, pre_z);
    store4(raw + row * gh3 + 2 * hidden + j0, pre_n);
    store4(hn_lin_save + row * hidden + j0, h_lin);
    store4(hnew + static_cast<long>(b) * hidden + j0, h_new);
}

// Elman RNN step, vectorized: 4 units per thread, as rnn_step_v1.
__device__ void rnn_step(const float* gx, const float* gh, const float* bih, const float* bhh, float* raw, float* hnew,
                         const int* lengths, int t, int batch, int hidden, float clip, int f_kind, float f_alpha,
                         float f_beta) {
    int b, j0;
    if (!quad(batch, hidden, lengths, t, b, j0)) {
        return;
    }
    long row = static_cast<long>(t) * batch + b;
    float x[4], hh[4], bi[4], bh[4], pre[4], h_new[4];
    load4(gx + row * hidden + j0, x);
    load4(gh + static_cast<long>(b) * hidden + j0, hh);
    load4_or_zero(bih == nullptr ? nullptr : bih + j0, bi);
    load4_or_zero(bhh == nullptr ? nullptr : bhh + j0, bh);
    for (int u = 0; u < 4; u++) {
        pre[u] = x[u] + hh[u] + bi[u] + bh[u];
        h_new[u] = activate(f_kind, f_alpha, f_beta, clip_to(pre[u], clip));
    }
    store4(raw + row * hidden + j0, pre);
    store4(hnew + static_cast<long>(b) * hidden + j0, h_new);
}

}  // namespace vec4

// ---------------------------------------------------------------------------------------------
// Persistent forward for small batches, LSTM (no projection) and GRU (linear_before_reset): one
// cooperative launch runs every step of one (layer, direction), keeping W_hh on chip throughout.
//
// Block k owns hidden units [k*U, k*U + U) (U = units_per_block) and holds their G*U rows of W_hh
// (G = 4 gates for LSTM, 3 for GRU; gate-major: row g*U + u is W_hh row g*H + u) in shared memory,
// loaded once. Per step every
// block stages h_{t-1} [B, H] from global memory into shared memory (through L2: other blocks
// wrote it), each warp computes dot products of (batch entry, W_hh row) pairs with its lanes
// striding over H and a butterfly sum, then each thread applies lstm_cell to (batch entry, unit)
// pairs exactly as lstm_step_v1 does, saves what backward needs (raw, c_prev, c_new, h_prev),
// writes h_t into the other half of h_buf [2, B, H] (double buffered: no block overwrites what
// another may still be reading) and the output, and the grid synchronizes before the next step.
// Shared memory: (G*U*H + B*H + G*U*B) floats. Per step: 2*G*B*H*U flops per block; W_hh is read
// from shared memory, never from DRAM, after the first step.
namespace persistent {

__device__ __forceinline__ float load_through_l2(const float* p) {
#ifdef SEQK_EMU
    return *p;
#else
    return __ldcg(p);
#endif
}

/** A block's part: hidden units [u0, u0 + mine) and its shared memory: W [G*U][H], h [B][H], gates [B][G*U]. */
struct Slice {
    float* w;
    float* hs;
    float* gate;
    int u0;
    int mine;  // may be <= 0 for trailing blocks: they still take part in every grid sync
};

/** Loads this block's G*U rows of W_hh (row g*U + u is W_hh row g*H + u0 + u; zeros past H) into shared memory. */
template <int G>
__device__ Slice load_slice(const float* w_hh, int batch, int hidden, int units) {
    SEQK_DYNAMIC_SHARED(float, smem);
    Slice sl;
    sl.w = smem;
    sl.hs = smem + static_cast<long>(G) * units * hidden;
    sl.gate = sl.hs + static_cast<long>(batch) * hidden;
    sl.u0 = blockIdx.x * units;
    sl.mine = hidden - sl.u0 < units ? hidden - sl.u0 : units;
    for (long idx = threadIdx.x; idx < static_cast<long>(G) * units * hidden; idx += blockDim.x) {
        int r = static_cast<int>(idx / hidden);
        int u = r % units;
        sl.w[idx] = u < sl.mine ? w_hh[(static_cast<long>(r / units) * hidden + sl.u0 + u) * hidden + idx % hidden] : 0.0f;
    }
    return sl;
}

/**
 * One step's recurrent projections of this block's units: stages h_{t-1} [B, H] from global
 * memory (through L2: other blocks wrote it), then gate[b][r] = W row r . h_b, one warp per
 * (b, r) pair at a time, lanes striding over H and a butterfly sum. Ends synchronized.
 */
template <int G>
__device__ void project_state(const Slice& sl, const float* h_cur, int batch, int hidden, int units) {
    int lane = seqk::arch::lane_id();
    int warps = blockDim.x / 32;
    for (long idx = threadIdx.x; idx < static_cast<long>(batch) * hidden; idx += blockDim.x) {
        sl.hs[idx] = load_through_l2(h_cur + idx);
    }
    __syncthreads();
    for (int pair = threadIdx.x / 32; pair < batch * G * units; pair += warps) {
        int b = pair / (G * units);
        int r = pair % (G * units);
        float dot = 0.0f;
        if (r % units < sl.mine) {
            for (int e = lane; e < hidden; e += 32) {
                dot += sl.w[static_cast<long>(r) * hidden + e] * sl.hs[static_cast<long>(b) * hidden + e];
            }
        }
        SEQK_UNROLL
        for (int off = 16; off > 0; off /= 2) {
            dot += seqk::arch::shfl_xor(0xffffffffu, dot, off);
        }
        if (lane == 0) {
            sl.gate[b * G * units + r] = dot;
        }
    }
    __syncthreads();
}

/**
 * The step loop both persistent kernels share: per step, the state projection, then for each of
 * this block's (batch entry, unit) pairs the saved h_{t-1}, and either the carried state and a zero
 * output (t past the entry's length) or cell(b, u, j, row, h_{t-1}), which returns the new h and
 * saves its cell's trace; the new h goes to the other h_buf half and to the output. Grid sync per step.
 */
template <int G, typename Cell>
__device__ void run_steps(const Slice& sl, float* h_buf, float* h_prev_save, float* out, const int* lengths, int steps,
                          int reversed, int batch, int hidden, int units, int out_stride, int out_offset, Cell cell) {
    for (int s = 0; s < steps; s++) {
        int t = reversed ? steps - 1 - s : s;
        float* h_next = h_buf + static_cast<long>((s + 1) % 2) * batch * hidden;
        project_state<G>(sl, h_buf + static_cast<long>(s % 2) * batch * hidden, batch, hidden, units);
        for (int pair = threadIdx.x; pair < batch * (sl.mine > 0 ? sl.mine : 0); pair += blockDim.x) {
            int b = pair / sl.mine;
            int u = pair % sl.mine;
            int j = sl.u0 + u;
            long row = static_cast<long>(t) * batch + b;
            float hp = sl.hs[static_cast<long>(b) * hidden + j];
            h_prev_save[row * hidden + j] = hp;
            float* o = out + row * out_stride + out_offset + j;
            if (t >= lengths[b]) {
                h_next[static_cast<long>(b) * hidden + j] = hp;
                *o = 0.0f;
                continue;
            }
            float h = cell(b, u, j, row, hp);
            h_next[static_cast<long>(b) * hidden + j] = h;
            *o = h;
        }
        seqk::arch::grid_sync();
    }
}

__device__ void lstm_fwd(const float* gx, const float* w_hh, const float* bih, const float* bhh, const float* peephole,
                         float* h_buf, float* c_state, float* c_prev_save, float* c_new_save, float* raw, float* h_prev_save,
                         float* out, const int* lengths, int steps, int reversed, int batch, int hidden, int units,
                         int out_stride, int out_offset, int input_forget, float clip, int f_kind, float f_alpha,
                         float f_beta, int g_kind, float g_alpha, float g_beta, int h_kind, float h_alpha, float h_beta) {
    Slice sl = load_slice<4>(w_hh, batch, hidden, units);
    long gh4 = 4L * hidden;
    run_steps<4>(sl, h_buf, h_prev_save, out, lengths, steps, reversed, batch, hidden, units, out_stride, out_offset,
                 [&](int b, int u, int j, long row, float) {
                     float pre[4];
                     for (int g = 0; g < 4; g++) {
                         int col = g * hidden + j;
                         pre[g] = gx[row * gh4 + col] + sl.gate[b * 4 * units + g * units + u] + load_or_zero(bih, col) +
                                  load_or_zero(bhh, col);
                     }
                     float cp = c_state[static_cast<long>(b) * hidden + j];
                     float c;
                     float h = lstm_cell(pre, cp, peephole, j, hidden, input_forget, clip, f_kind, f_alpha, f_beta, g_kind,
                                         g_alpha, g_beta, h_kind, h_alpha, h_beta, c);
                     for (int k = 0; k < 4; k++) {
                         raw[row * gh4 + k * hidden + j] = pre[k];
                     }
                     c_prev_save[row * hidden + j] = cp;
                     c_new_save[row * hidden + j] = c;
                     c_state[static_cast<long>(b) * hidden + j] = c;
                     return h;
                 });
}

// GRU with linear_before_reset (PyTorch's and cuDNN's form): the same step structure with 3 gate
// rows per unit; the cell is gru_cell, as in gru_step_v1, saving raw and h W_hn^T + b_hn.
__device__ void gru_fwd(const float* gx, const float* w_hh, const float* bih, const float* bhh, float* h_buf, float* raw,
                        float* hn_lin_save, float* h_prev_save, float* out, const int* lengths, int steps, int reversed,
                        int batch, int hidden, int units, int out_stride, int out_offset, float clip, int f_kind,
                        float f_alpha, float f_beta, int g_kind, float g_alpha, float g_beta) {
    Slice sl = load_slice<3>(w_hh, batch, hidden, units);
    long gh3 = 3L * hidden;
    run_steps<3>(sl, h_buf, h_prev_save, out, lengths, steps, reversed, batch, hidden, units, out_stride, out_offset,
                 [&](int b, int u, int j, long row, float hp) {
                     const float* g = sl.gate + b * 3 * units;
                     float pre_r = gx[row * gh3 + j] + g[u] + load_or_zero(bih, j) + load_or_zero(bhh, j);
                     float pre_z = gx[row * gh3 + hidden + j] + g[units + u] + load_or_zero(bih, hidden + j) +
                                   load_or_zero(bhh, hidden + j);
                     float h_lin = g[2 * units + u] + load_or_zero(bhh, 2 * hidden + j);
                     float x_n = gx[row * gh3 + 2 * hidden + j] + load_or_zero(bih, 2 * hidden + j);
                     float pre_n;
                     float h = gru_cell(pre_r, pre_z, x_n, h_lin, 1, hp, clip, f_kind, f_alpha, f_beta, g_kind, g_alpha,
                                        g_beta, pre_n);
                     raw[row * gh3 + j] = pre_r;
                     raw[row * gh3 + hidden + j] = pre_z;
                     raw[row * gh3 + 2 * hidden + j] = pre_n;
                     hn_lin_save[row * hidden + j] = h_lin;
                     return h;
                 });
}

}  // namespace persistent

}  // namespace

// dh_total[b, q] = dh_state[b, q] + d_out[t, b, out_offset + q] for valid entries, else 0; also
// kept in dh_all [T*B, P] when dh_all is not null (the LSTM projection's weight gradient needs it).
extern "C" __global__ void step_grad_in_f32(const float* dh_state, const float* d_out, float* dh_total, float* dh_all,
                                           const int* lengths, int t, int batch, int state, int out_stride,
                                           int out_offset) {
    int b, q;
    if (!element(batch, state, b, q)) {
        return;
    }
    long hb = static_cast<long>(b) * state + q;
    long row = static_cast<long>(t) * batch + b;
    float v = t < lengths[b] ? dh_state[hb] + (d_out ? d_out[row * out_stride + out_offset + q] : 0.0f) : 0.0f;
    dh_total[hb] = v;
    if (dh_all) {
        dh_all[row * state + q] = v;
    }
}
SEQK_KERNEL(step_grad_in_f32);

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

// LSTM step backward. dm [B, H]: gradient of m = o * h(c) (dh_total itself without projection).
// Writes dA [T*B, 4H] (x-side = h-side), updates dc_state [B, H], and for the projection's weight
// gradient m_all [T*B, H]; peephole gradient contributions go to dpeep_all [T*B, 3H] (or null).
extern "C" __global__ void lstm_step_bwd_f32(const float* raw, const float* c_prev, const float* c_new, const float* dm,
                                            const float* peephole, float* dc_state, float* dA, float* m_all,
                                            float* dpeep_all, const int* lengths, int t, int batch, int hidden,
                                            int input_forget, float clip, int f_kind, float f_alpha, float f_beta,
                                            int g_kind, float g_alpha, float g_beta, int h_kind, float h_alpha,
                                            float h_beta) {
    int b, j;
    if (!element(batch, hidden, b, j)) {
        return;
    }
    long row = static_cast<long>(t) * batch + b;
    int g4 = 4 * hidden;
    float* da = dA + row * g4;
    if (t >= lengths[b]) {
        for (int k = 0; k < 4; k++) {
            da[k * hidden + j] = 0.0f;
        }
        if (dpeep_all) {
            for (int k = 0; k < 3; k++) {
                dpeep_all[row * 3 * hidden + k * hidden + j] = 0.0f;
            }
        }
        if (m_all) {
            m_all[row * hidden + j] = 0.0f;
        }
        return;
    }
    long hb = static_cast<long>(b) * hidden + j;
    float raw_i = raw[row * g4 + j], raw_f = raw[row * g4 + hidden + j];
    float raw_g = raw[row * g4 + 2 * hidden + j], raw_o = raw[row * g4 + 3 * hidden + j];
    float cp = c_prev[row * hidden + j];
    float cn = c_new[row * hidden + j];
    float gi = activate(f_kind, f_alpha, f_beta, clip_to(raw_i, clip));
    float gf = input_forget ? 1.0f - gi : activate(f_kind, f_alpha, f_beta, clip_to(raw_f, clip));
    float gg = activate(g_kind, g_alpha, g_beta, clip_to(raw_g, clip));
    float go = activate(f_kind, f_alpha, f_beta, clip_to(raw_o, clip));
    float hc = activate(h_kind, h_alpha, h_beta, cn);
    if (m_all) {
        m_all[row * hidden + j] = go * hc;
    }
    float dmv = dm[hb];
    float d_raw_o = dmv * hc * activate_grad(f_kind, f_alpha, f_beta, clip_to(raw_o, clip)) * clip_grad(raw_o, clip);
    float dc = dc_state[hb] + dmv * go * activate_grad(h_kind, h_alpha, h_beta, cn);
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
    dc_state[hb] = dc * gf + d_raw_i * p_i + d_raw_f * p_f;
    if (dpeep_all) {
        dpeep_all[row * 3 * hidden + j] = d_raw_i * cp;
        dpeep_all[row * 3 * hidden + hidden + j] = d_raw_f * cp;
        dpeep_all[row * 3 * hidden + 2 * hidden + j] = d_raw_o * cn;
    }
    da[j] = d_raw_i;
    da[hidden + j] = d_raw_f;
    da[2 * hidden + j] = d_raw_g;
    da[3 * hidden + j] = d_raw_o;
}
SEQK_KERNEL(lstm_step_bwd_f32);

// Elman RNN step backward: dA [T*B, H] (x-side = h-side).
extern "C" __global__ void rnn_step_bwd_f32(const float* raw, const float* dh_total, float* dA, const int* lengths, int t,
                                           int batch, int hidden, float clip, int f_kind, float f_alpha, float f_beta) {
    int b, j;
    if (!element(batch, hidden, b, j)) {
        return;
    }
    long row = static_cast<long>(t) * batch + b;
    if (t >= lengths[b]) {
        dA[row * hidden + j] = 0.0f;
        return;
    }
    float r = raw[row * hidden + j];
    dA[row * hidden + j] = dh_total[static_cast<long>(b) * hidden + j]
                           * activate_grad(f_kind, f_alpha, f_beta, clip_to(r, clip)) * clip_grad(r, clip);
}
SEQK_KERNEL(rnn_step_bwd_f32);

// GRU step backward, first part: everything but what the reset gate gets through W_hn when the
// reset comes before the linear map. Writes dax, dah [T*B, 3H] and direct [B, H] (dh_prev's
// pointwise terms). With linear_before_reset it is complete; otherwise dah's n columns hold the
// gradient of W_hn (r*h) + b_hn, and gru_step_bwd_reset finishes r.
extern "C" __global__ void gru_step_bwd_f32(const float* raw, const float* h_prev, const float* hn_lin,
                                           const float* dh_total, float* dax, float* dah, float* direct,
                                           const int* lengths, int t, int batch, int hidden, int linear_before_reset,
                                           float clip, int f_kind, float f_alpha, float f_beta, int g_kind,
                                           float g_alpha, float g_beta) {
    int b, j;
    if (!element(batch, hidden, b, j)) {
        return;
    }
    long row = static_cast<long>(t) * batch + b;
    int g3 = 3 * hidden;
    if (t >= lengths[b]) {
        for (int k = 0; k < 3; k++) {
            dax[row * g3 + k * hidden + j] = 0.0f;
            dah[row * g3 + k * hidden + j] = 0.0f;
        }
        return;
    }
    long hb = static_cast<long>(b) * hidden + j;
    float raw_r = raw[row * g3 + j], raw_z = raw[row * g3 + hidden + j], raw_n = raw[row * g3 + 2 * hidden + j];
    float z = activate(f_kind, f_alpha, f_beta, clip_to(raw_z, clip));
    float n = activate(g_kind, g_alpha, g_beta, clip_to(raw_n, clip));
    float hp = h_prev[row * hidden + j];
    float dh = dh_total[hb];
    float d_raw_n = dh * (1.0f - z) * activate_grad(g_kind, g_alpha, g_beta, clip_to(raw_n, clip)) * clip_grad(raw_n, clip);
    float d_raw_z = dh * (hp - n) * activate_grad(f_kind, f_alpha, f_beta, clip_to(raw_z, clip)) * clip_grad(raw_z, clip);
    direct[hb] = dh * z;
    dax[row * g3 + hidden + j] = d_raw_z;
    dah[row * g3 + hidden + j] = d_raw_z;
    dax[row * g3 + 2 * hidden + j] = d_raw_n;
    if (linear_before_reset) {
        float r = activate(f_kind, f_alpha, f_beta, clip_to(raw_r, clip));
        float d_raw_r = d_raw_n * hn_lin[row * hidden + j] * activate_grad(f_kind, f_alpha, f_beta, clip_to(raw_r, clip))
                        * clip_grad(raw_r, clip);
        dah[row * g3 + 2 * hidden + j] = d_raw_n * r;
        dax[row * g3 + j] = d_raw_r;
        dah[row * g3 + j] = d_raw_r;
    } else {
        dah[row * g3 + 2 * hidden + j] = d_raw_n;
    }
}
SEQK_KERNEL(gru_step_bwd_f32);

// GRU without linear-before-reset, second part: d_rh [B, H] = (dah's n columns) W_hn reaches the
// reset gate and h_prev. Finishes dax, dah r columns, adds r * d_rh to direct, and writes
// rh_all [T*B, H] = r * h_prev for W_hn's weight gradient.
extern "C" __global__ void gru_step_bwd_reset_f32(const float* raw, const float* h_prev, const float* d_rh, float* dax,
                                                 float* dah, float* direct, float* rh_all, const int* lengths, int t,
                                                 int batch, int hidden, float clip, int f_kind, float f_alpha,
                                                 float f_beta) {
    int b, j;
    if (!element(batch, hidden, b, j)) {
        return;
    }
    long row = static_cast<long>(t) * batch + b;
    if (t >= lengths[b]) {
        rh_all[row * hidden + j] = 0.0f;
        return;
    }
    long hb = static_cast<long>(b) * hidden + j;
    int g3 = 3 * hidden;
    float raw_r = raw[row * g3 + j];
    float r = activate(f_kind, f_alpha, f_beta, clip_to(raw_r, clip));
    float hp = h_prev[row * hidden + j];
    float d_raw_r = d_rh[hb] * hp * activate_grad(f_kind, f_alpha, f_beta, clip_to(raw_r, clip)) * clip_grad(raw_r, clip);
    dax[row * g3 + j] = d_raw_r;
    dah[row * g3 + j] = d_raw_r;
    direct[hb] += d_rh[hb] * r;
    rh_all[row * hidden + j] = r * hp;
}
SEQK_KERNEL(gru_step_bwd_reset_f32);


extern "C" __global__ void lstm_persistent_fwd_f32(const float* gx, const float* w_hh, const float* bih, const float* bhh,
                                                   const float* peephole, float* h_buf, float* c_state, float* c_prev_save,
                                                   float* c_new_save, float* raw, float* h_prev_save, float* out,
                                                   const int* lengths, int steps, int reversed, int batch, int hidden,
                                                   int units, int out_stride, int out_offset, int input_forget, float clip,
                                                   int f_kind, float f_alpha, float f_beta, int g_kind, float g_alpha,
                                                   float g_beta, int h_kind, float h_alpha, float h_beta) {
    persistent::lstm_fwd(gx, w_hh, bih, bhh, peephole, h_buf, c_state, c_prev_save, c_new_save, raw, h_prev_save, out, lengths,
                         steps, reversed, batch, hidden, units, out_stride, out_offset, input_forget, clip, f_kind, f_alpha,
                         f_beta, g_kind, g_alpha, g_beta, h_kind, h_alpha, h_beta);
}
SEQK_KERNEL(lstm_persistent_fwd_f32);

extern "C" __global__ void lstm_step_fwd_vec4_f32(const float* gx, const float* gh, const float* bih, const float* bhh,
                                                  const float* peephole, float* c_state, float* c_prev_save, float* c_new_save,
                                                  float* raw, float* hnew, const int* lengths, const int* step, int steps,
                                                  int reversed, int batch, int hidden, int input_forget, float clip,
                                                  int f_kind, float f_alpha, float f_beta, int g_kind, float g_alpha,
                                                  float g_beta, int h_kind, float h_alpha, float h_beta) {
    vec4::lstm_step(gx, gh, bih, bhh, peephole, c_state, c_prev_save, c_new_save, raw, hnew, lengths,
                    step_time(step, steps, reversed), batch, hidden,
                    input_forget, clip, f_kind, f_alpha, f_beta, g_kind, g_alpha, g_beta, h_kind, h_alpha, h_beta);
}
SEQK_KERNEL(lstm_step_fwd_vec4_f32);

extern "C" __global__ void gru_persistent_fwd_f32(const float* gx, const float* w_hh, const float* bih, const float* bhh,
                                                  float* h_buf, float* raw, float* hn_lin_save, float* h_prev_save, float* out,
                                                  const int* lengths, int steps, int reversed, int batch, int hidden, int units,
                                                  int out_stride, int out_offset, float clip, int f_kind, float f_alpha,
                                                  float f_beta, int g_kind, float g_alpha, float g_beta) {
    persistent::gru_fwd(gx, w_hh, bih, bhh, h_buf, raw, hn_lin_save, h_prev_save, out, lengths, steps, reversed, batch, hidden,
                        units, out_stride, out_offset, clip, f_kind, f_alpha, f_beta, g_kind, g_alpha, g_beta);
}
SEQK_KERNEL(gru_persistent_fwd_f32);

extern "C" __global__ void gru_step_fwd_vec4_f32(const float* gx, const float* gh, const float* bih, const float* bhh,
                                                 const float* h_state, float* raw, float* hn_lin_save, float* hnew,
                                                 const int* lengths, const int* step, int steps, int reversed, int batch,
                                                 int hidden, float clip, int f_kind, float f_alpha, float f_beta, int g_kind,
                                                 float g_alpha, float g_beta) {
    vec4::gru_step(gx, gh, bih, bhh, h_state, raw, hn_lin_save, hnew, lengths, step_time(step, steps, reversed), batch,
                   hidden, clip, f_kind, f_alpha, f_beta, g_kind, g_alpha, g_beta);
}
SEQK_KERNEL(gru_step_fwd_vec4_f32);

extern "C" __global__ void rnn_step_fwd_vec4_f32(const float* gx, const float* gh, const float* bih, const float* bhh,
                                                 float* raw, float* hnew, const int* lengths, const int* step, int steps,
                                                 int reversed, int batch, int hidden, float clip, int f_kind,
                                                 float f_alpha, float f_beta) {
    vec4::rnn_step(gx, gh, bih, bhh, raw, hnew, lengths, step_time(step, steps, reversed), batch, hidden, clip, f_kind,
                   f_alpha, f_beta);
}
SEQK_KERNEL(rnn_step_fwd_vec4_f32);
