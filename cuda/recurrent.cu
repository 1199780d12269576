// Recurrent sequence steps on the GPU: the pointwise parts of RNN, LSTM and GRU steps, forward,
// for the sequence driver in java/.../gpu/RecurrentGpu.java. The GEMMs (x W_ih^T for all steps,
// h W_hh^T per step, the LSTM projection, GRU's W_hn (r*h)) go through Driver.gemm.
//
// Versions: v1 (recurrent/v1.cuh) are plain ports of cpu/RecurrentReference: one thread per
// (batch, unit), the gate math in float, every option a runtime argument. Beside them: the
// vectorized cells (4 units per thread), the persistent forward (small batches), and the 16-bit
// instances of both step-cell sets, for the tensor-core step path of F16/BF16 ops (h stored in 16
// bits and multiplied on tensor cores by the per-step GEMM; see RecurrentGpu.stateType).
//
// Common arguments:
//   gx      [T*B, G*H] f32   x W_ih^T for every step (no bias), gate blocks in PyTorch order
//   gh      [B, G*H]   f32   h W_hh^T for this step (no bias)
//   bih,bhh [G*H]      f32   biases, or null
//   lengths [B]        i32   steps t >= lengths[b] are skipped (state kept, output zero)
//   raw     [T*B, G*H] f32   saved pre-activations (before clip) for backward; null in inference (every trace
//                            buffer, raw, c_new_save, hn_lin_save, may be: nothing is saved; but GRU's reset-first
//                            form reads r and z back from raw, so it gets raw always). No state is saved:
//                            backward reads c_{t-1} as c_new of the step before and rebuilds h_prev from the output
//   act*    kind, alpha, beta of the activations in ONNX order; kinds are Activation.Kind ordinals
//   clip    > 0; +inf for none
// Each step writes the new h (or, for an LSTM with projection, m = o * h(c)) of the valid batch
// entries into hnew [B, P] in the state type, rounded once; step_commit (or step_commit_advance)
// then moves it into the state and the output. The fused steps do both in one kernel.
// Bytes per step and element: about (2G + 2) * 4 read, (G + 2) * 4 written; memory bound.
//
// This file holds the forward kernels' entry points; their code is split by role under recurrent/:
// cell.cuh (activations and cell math), v1.cuh (v1 steps and the step commit), step_vec4.cuh,
// persistent.cuh, backward.cuh (the per-step backward kernels, entry points included) and
// persistent_bwd.cuh (the persistent backward, entry points included).
#include "recurrent/backward.cuh"
#include "recurrent/cell.cuh"
#include "recurrent/persistent.cuh"
#include "recurrent/persistent_bwd.cuh"
#include "recurrent/step_vec4.cuh"
#include "recurrent/v1.cuh"

// Ends a step: one thread moves the step index on.
extern "C" __global__ void step_advance(int* step) {
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        *step += 1;
    }
}
SEQK_KERNEL(step_advance);

#define SEQK_RECURRENT_FWD(suffix, T)                                                                                   \
    extern "C" __global__ void lstm_step_fwd_##suffix(                                                                  \
        const float* gx, const float* gh, const float* bih, const float* bhh, const float* peephole, float* c_state,                \
        float* c_new_save, float* raw, T* hnew, const int* lengths, const int* step, int steps,                         \
        int reversed, int batch, int hidden, int input_forget, float clip, int f_kind, float f_alpha, float f_beta,     \
        int g_kind, float g_alpha, float g_beta, int h_kind, float h_alpha, float h_beta) {                             \
        lstm_step_v1<T>(gx, gh, bih, bhh, peephole, c_state, c_new_save, raw, hnew, lengths,                            \
                        step_time(step, steps, reversed), batch, hidden, input_forget, clip, f_kind, f_alpha, f_beta,   \
                        g_kind, g_alpha, g_beta, h_kind, h_alpha, h_beta);                                              \
    }                                                                                                                   \
    SEQK_KERNEL(lstm_step_fwd_##suffix);                                                                                \
    extern "C" __global__ void gru_reset_fwd_##suffix(                                                                  \
        const float* gx, const float* gh, const float* bih, const float* bhh, const T* h_state, float* raw, T* reset_hidden,    \
        const int* lengths, const int* step, int steps, int reversed, int batch, int hidden, float clip, int f_kind,    \
        float f_alpha, float f_beta) {                                                                                  \
        gru_reset_v1<T>(gx, gh, bih, bhh, h_state, raw, reset_hidden, lengths, step_time(step, steps, reversed), batch, \
                        hidden, clip, f_kind, f_alpha, f_beta);                                                         \
    }                                                                                                                   \
    SEQK_KERNEL(gru_reset_fwd_##suffix);                                                                                \
    extern "C" __global__ void gru_step_fwd_##suffix(                                                                   \
        const float* gx, const float* gh, const float* bih, const float* bhh, const T* h_state, float* raw, float* hn_lin_save, \
        T* hnew, const int* lengths, const int* step, int steps, int reversed, int batch, int hidden,                   \
        int linear_before_reset, float clip, int f_kind, float f_alpha, float f_beta, int g_kind, float g_alpha,        \
        float g_beta) {                                                                                                 \
        gru_step_v1<T>(gx, gh, bih, bhh, h_state, raw, hn_lin_save, hnew, lengths, step_time(step, steps, reversed),    \
                       batch, hidden, linear_before_reset, clip, f_kind, f_alpha, f_beta, g_kind, g_alpha, g_beta);     \
    }                                                                                                                   \
    SEQK_KERNEL(gru_step_fwd_##suffix);                                                                                 \
    extern "C" __global__ void rnn_step_fwd_##suffix(                                                                   \
        const float* gx, const float* gh, const float* bih, const float* bhh, float* raw, T* hnew, const int* lengths,          \
        const int* step, int steps, int reversed, int batch, int hidden, float clip, int f_kind, float f_alpha,         \
        float f_beta) {                                                                                                 \
        rnn_step_v1<T>(gx, gh, bih, bhh, raw, hnew, lengths, step_time(step, steps, reversed), batch, hidden, clip,     \
                       f_kind, f_alpha, f_beta);                                                                        \
    }                                                                                                                   \
    SEQK_KERNEL(rnn_step_fwd_##suffix);                                                                                 \
    extern "C" __global__ void step_commit_##suffix(const T* hnew, T* h_state, T* out,                                  \
                                                    const int* lengths, const int* step, int steps, int reversed,       \
                                                    int batch, int state, int out_stride, int out_offset) {             \
        step_commit_v1<T>(hnew, h_state, out, lengths, step_time(step, steps, reversed), batch, state,                  \
                          out_stride, out_offset);                                                                      \
    }                                                                                                                   \
    SEQK_KERNEL(step_commit_##suffix);                                                                                  \
    /* step_commit that also ends the step as the fused step does (end_fused_step): one node, not two. */               \
    extern "C" __global__ void step_commit_advance_##suffix(const T* hnew, T* h_state, T* out,                          \
                                                            const int* lengths, int* step, int steps, int reversed,     \
                                                            int batch, int state, int out_stride, int out_offset) {     \
        step_commit_v1<T>(hnew, h_state, out, lengths, fused_step_time(step, steps, reversed), batch,                   \
                          state, out_stride, out_offset);                                                               \
        end_fused_step(step);                                                                                           \
    }                                                                                                                   \
    SEQK_KERNEL(step_commit_advance_##suffix)

// The suffix names the state type T (h, hnew, the output; GRU's r*h): f32 for
// v1's all-f32 interior and for F32 ops, f16/bf16 for 16-bit ops on the tensor-core step path,
// whose state is the 16-bit value the next step's GEMM reads (rounded once per step). gx, gh, the
// biases, peepholes, c and the saved pre-activations are f32 in every instance.
SEQK_RECURRENT_FWD(f32, float);
SEQK_RECURRENT_FWD(f16, __half);
SEQK_RECURRENT_FWD(bf16, __nv_bfloat16);

// The vectorized LSTM cell (vec4:: in recurrent/step_vec4.cuh) writing hnew, for an LSTM with a
// projection (the W_hr GEMM comes between the cell and the commit); every other vectorized cell
// runs as a fused step, below. One instance per state type as above.
#define SEQK_RECURRENT_FWD_VEC4(suffix, S)                                                                              \
    extern "C" __global__ void lstm_step_fwd_vec4_##suffix(                                                             \
        const float* gx, const float* gh, const float* bih, const float* bhh, const float* peephole, float* c_state,    \
        float* c_new_save, float* raw, S* hnew, const int* lengths, const int* step, int steps,                         \
        int reversed, int batch, int hidden, int input_forget, float clip, int f_kind, float f_alpha, float f_beta,     \
        int g_kind, float g_alpha, float g_beta, int h_kind, float h_alpha, float h_beta) {                             \
        vec4::lstm_step<S>(gx, gh, bih, bhh, peephole, c_state, c_new_save, raw,                                        \
                           {hnew, nullptr, 0, 0}, lengths, step_time(step, steps, reversed), batch,                     \
                           hidden, input_forget, clip, f_kind, f_alpha,                                                 \
                           f_beta, g_kind, g_alpha, g_beta, h_kind, h_alpha, h_beta);                                   \
    }                                                                                                                   \
    SEQK_KERNEL(lstm_step_fwd_vec4_##suffix)

SEQK_RECURRENT_FWD_VEC4(f32, float);
SEQK_RECURRENT_FWD_VEC4(f16, __half);
SEQK_RECURRENT_FWD_VEC4(bf16, __nv_bfloat16);

// The fused steps: the vectorized cells with step_commit's work and the step advance done in the
// cell (vec4::StepOut, fused_step_time, end_fused_step), so a step is the recurrent GEMM and one
// kernel. h_state [B, H] is read (GRU) and updated in place; the output
// [T, B, out_stride] (this direction at out_offset) as step_commit writes them; step[0] is the
// index, step[1] the count of the launch's blocks done (both zero before the first step).
#define SEQK_RECURRENT_FUSED(suffix, S)                                                                                 \
    extern "C" __global__ void lstm_step_fused_##suffix(                                                                \
        const float* gx, const float* gh, const float* bih, const float* bhh, const float* peephole, float* c_state,    \
        float* c_new_save, float* raw, S* h_state, S* out, const int* lengths,                                          \
        int* step, int steps, int reversed, int batch, int hidden, int out_stride, int out_offset, int input_forget,    \
        float clip, int f_kind, float f_alpha, float f_beta, int g_kind, float g_alpha, float g_beta, int h_kind,       \
        float h_alpha, float h_beta) {                                                                                  \
        vec4::lstm_step<S>(gx, gh, bih, bhh, peephole, c_state, c_new_save, raw,                                        \
                           {h_state, out, out_stride, out_offset}, lengths,                                             \
                           fused_step_time(step, steps, reversed), batch, hidden, input_forget, clip, f_kind, f_alpha,  \
                           f_beta, g_kind, g_alpha, g_beta, h_kind, h_alpha, h_beta);                                   \
        end_fused_step(step);                                                                                           \
    }                                                                                                                   \
    SEQK_KERNEL(lstm_step_fused_##suffix);                                                                              \
    extern "C" __global__ void gru_step_fused_##suffix(                                                                 \
        const float* gx, const float* gh, const float* bih, const float* bhh, S* h_state, float* raw,                   \
        float* hn_lin_save, S* out, const int* lengths, int* step, int steps, int reversed, int batch,                  \
        int hidden, int out_stride, int out_offset, float clip, int f_kind, float f_alpha, float f_beta, int g_kind,    \
        float g_alpha, float g_beta) {                                                                                  \
        vec4::gru_step<S>(gx, gh, bih, bhh, h_state, raw, hn_lin_save, {h_state, out, out_stride,                       \
                          out_offset}, lengths, fused_step_time(step, steps, reversed), batch, hidden, clip, f_kind,    \
                          f_alpha, f_beta, g_kind, g_alpha, g_beta);                                                    \
        end_fused_step(step);                                                                                           \
    }                                                                                                                   \
    SEQK_KERNEL(gru_step_fused_##suffix);                                                                               \
    extern "C" __global__ void rnn_step_fused_##suffix(                                                                 \
        const float* gx, const float* gh, const float* bih, const float* bhh, float* raw, S* h_state,                   \
        S* out, const int* lengths, int* step, int steps, int reversed, int batch, int hidden, int out_stride,          \
        int out_offset, float clip, int f_kind, float f_alpha, float f_beta) {                                          \
        vec4::rnn_step<S>(gx, gh, bih, bhh, raw, {h_state, out, out_stride, out_offset}, lengths,                       \
                          fused_step_time(step, steps, reversed), batch, hidden, clip, f_kind, f_alpha, f_beta);        \
        end_fused_step(step);                                                                                           \
    }                                                                                                                   \
    SEQK_KERNEL(rnn_step_fused_##suffix)

SEQK_RECURRENT_FUSED(f32, float);
SEQK_RECURRENT_FUSED(f16, __half);
SEQK_RECURRENT_FUSED(bf16, __nv_bfloat16);

// The persistent forward (recurrent/persistent.cuh), one instance per state type: F32 (warp dot
// products) and F16/BF16 (W_hh and h in 16 bits, mma.sync with fp32 accumulation; sm_80+). gx,
// biases, peepholes, c and the saved trace are f32 in every instance; h_buf, the output and the
// reset-first GRU's r*h are the state type S.
#define SEQK_RECURRENT_PERSISTENT(suffix, S)                                                                            \
    extern "C" __global__ void lstm_persistent_fwd_##suffix(                                                            \
        const float* gx, const S* w_hh, const float* bih, const float* bhh, const float* peephole, S* h_buf,            \
        float* c_state, float* c_new_save, float* raw, S* out, const int* lengths, unsigned* arrivals, int steps,       \
        int reversed, int batch, int hidden, int units, int out_stride, int out_offset, int input_forget, float clip,   \
        int f_kind, float f_alpha, float f_beta, int g_kind, float g_alpha, float g_beta, int h_kind, float h_alpha,    \
        float h_beta) {                                                                                                 \
        persistent::lstm_fwd<S>(gx, w_hh, bih, bhh, peephole, h_buf, c_state, c_new_save, raw, out, lengths, arrivals,  \
                                steps, reversed, batch, hidden, units, out_stride, out_offset, input_forget, clip,       \
                                f_kind, f_alpha, f_beta, g_kind, g_alpha, g_beta, h_kind, h_alpha, h_beta);             \
    }                                                                                                                   \
    SEQK_KERNEL(lstm_persistent_fwd_##suffix);                                                                          \
    extern "C" __global__ void gru_persistent_fwd_##suffix(                                                             \
        const float* gx, const S* w_hh, const float* bih, const float* bhh, S* h_buf, float* raw, float* hn_lin_save,   \
        S* out, const int* lengths, unsigned* arrivals, int steps, int reversed, int batch, int hidden, int units,      \
        int out_stride, int out_offset, float clip, int f_kind, float f_alpha, float f_beta, int g_kind, float g_alpha, \
        float g_beta) {                                                                                                 \
        persistent::gru_fwd<S>(gx, w_hh, bih, bhh, h_buf, raw, hn_lin_save, out, lengths, arrivals, steps, reversed,    \
                               batch, hidden, units, out_stride, out_offset, clip, f_kind, f_alpha, f_beta, g_kind,     \
                               g_alpha, g_beta);                                                                        \
    }                                                                                                                   \
    SEQK_KERNEL(gru_persistent_fwd_##suffix);                                                                           \
    extern "C" __global__ void gru_reset_first_persistent_fwd_##suffix(                                                 \
        const float* gx, const S* w_hh, const float* bih, const float* bhh, S* h_buf, S* reset_hidden, float* raw,      \
        S* out, const int* lengths, unsigned* arrivals, int steps, int reversed, int batch, int hidden, int units,      \
        int out_stride, int out_offset, float clip, int f_kind, float f_alpha, float f_beta, int g_kind, float g_alpha, \
        float g_beta) {                                                                                                 \
        persistent::gru_reset_first_fwd<S>(gx, w_hh, bih, bhh, h_buf, reset_hidden, raw, out, lengths, arrivals, steps, \
                                           reversed, batch, hidden, units, out_stride, out_offset, clip, f_kind,        \
                                           f_alpha, f_beta, g_kind, g_alpha, g_beta);                                   \
    }                                                                                                                   \
    SEQK_KERNEL(gru_reset_first_persistent_fwd_##suffix);                                                               \
    extern "C" __global__ void rnn_persistent_fwd_##suffix(                                                             \
        const float* gx, const S* w_hh, const float* bih, const float* bhh, S* h_buf, float* raw, S* out,               \
        const int* lengths, unsigned* arrivals, int steps, int reversed, int batch, int hidden, int units,              \
        int out_stride, int out_offset, float clip, int f_kind, float f_alpha, float f_beta) {                          \
        persistent::rnn_fwd<S>(gx, w_hh, bih, bhh, h_buf, raw, out, lengths, arrivals, steps, reversed, batch, hidden,  \
                               units, out_stride, out_offset, clip, f_kind, f_alpha, f_beta);                           \
    }                                                                                                                   \
    SEQK_KERNEL(rnn_persistent_fwd_##suffix)

SEQK_RECURRENT_PERSISTENT(f32, float);
SEQK_RECURRENT_PERSISTENT(f16, __half);
SEQK_RECURRENT_PERSISTENT(bf16, __nv_bfloat16);
