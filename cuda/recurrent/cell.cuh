// Recurrent cells' shared math: activations (forward and derivative) in Activation.Kind order,
// clip, the (batch, unit) element of a launch, the LSTM and GRU cells every forward kernel runs
// (v1, vec4, persistent), and the step index the captured step reads from device memory.
#pragma once

#include "../seqk.cuh"

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

// The trace, what backward reads (the raw pre-activations, c_new, GRU's
// h W_hn^T + b_hn), is written only where its buffer is given: an inference forward passes null
// for each and saves nothing (RecurrentGpu.forwardOnStream). The branch is uniform across a launch.
template <typename T>
__device__ __forceinline__ void save(T* trace, long i, T v) {
    if (trace != nullptr) {
        trace[i] = v;
    }
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
__device__ __forceinline__ float lstm_cell(float pre[4], float cp, const float* peephole, int j, int hidden, int input_forget,
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

// The forward step kernels take the step index from device memory (`step`, advanced by
// step_advance at the end of each step) rather than as an argument, so that one step, captured
// once as a CUDA graph, can be launched for every step of the sequence; t runs backwards for the
// reverse direction.
__device__ __forceinline__ int step_time(const int* step, int steps, int reversed) {
    int s = *step;
    return reversed ? steps - 1 - s : s;
}

// A fused step (recurrent/step_vec4.cuh) ends the step itself instead of step_advance: step[0] is
// the index and step[1] counts the launch's blocks that are done; the last block to finish moves
// the index on and resets the count. Every block reads the index before it counts itself done, so
// no block can see the next step's index. Blocks of one launch share both words, so every access
// is atomic (one per block, by thread 0), and the index reaches the block's threads through
// shared memory.
__device__ __forceinline__ int fused_step_time(int* step, int steps, int reversed) {
    SEQK_SHARED_ARRAY(int, index, 1);
    if (threadIdx.x == 0) {
        index[0] = atomicAdd(&step[0], 0);
    }
    __syncthreads();
    int s = index[0];
    return reversed ? steps - 1 - s : s;
}

/**
 * Ends the step for this block, once its work is done: thread 0, which read the index (before the
 * block's barrier in fused_step_time; the other threads read it from shared memory, which the
 * advance does not touch), counts the block done. The block's writes need no ordering here: the
 * next step is another launch.
 */
__device__ __forceinline__ void end_fused_step(int* step) {
    if (threadIdx.x == 0) {
        __threadfence();  // this thread's read of the index before its count
        if (atomicAdd(&step[1], 1) == static_cast<int>(gridDim.x) - 1) {
            __threadfence();  // every block's count (and so its read of the index) before the move
            atomicAdd(&step[1], -static_cast<int>(gridDim.x));
            atomicAdd(&step[0], 1);
        }
    }
}

}  // namespace
