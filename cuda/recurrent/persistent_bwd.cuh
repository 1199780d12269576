// The persistent backward (small batches: W_hh's columns on chip for every step of backward
// through time, one cooperative launch), entry points included.
#pragma once

#include "../arch/flag.cuh"
#include "../arch/mma.cuh"
#include "../arch/warp.cuh"
#include "backward.cuh"
#include "persistent.cuh"

namespace {

// Persistent backward for small batches, LSTM (no projection), GRU (either reset form) and Elman
// RNN: one cooperative launch runs every step of one (layer, direction)'s backward, in the
// reverse of the forward's processing order, where the per-step loop launches step_grad_in, the
// cell's backward, the dh GEMM and step_grad_out per step. T is the type of the backward GEMMs'
// operands (the forward's state type): float, or a 16-bit type for F16/BF16 ops.
//
// Block k owns hidden units [u0, u0 + U) (u0 = k*U, U = units_per_block). dh_prev of unit j is
// column j of dah W_hh (K = G*H rows of W_hh, G = 4 for LSTM, 3 for GRU, 1 for RNN), so the block
// holds W_hh's columns of its units, transposed (wt[u][r] = W_hh[r][u0 + u]), in shared memory,
// loaded once, and keeps its units' dh (and the LSTM's dc) on chip, fp32, for the whole sequence:
// read from dh_state (dc_state) before the first step, written back after the last. Per step t,
// one thread per (batch entry, unit) pair (for_my_pairs: the same thread every step, so dh and dc
// need no barrier between steps):
//   - dh_total = dh + dOut[t] (zero past the entry's length), then the cell's backward: the
//     per-step kernels' lstm_bwd_at / gru_bwd_at / rnn_bwd_at, writing row t of the gate gradients
//     (dax, dah in T: the weight-gradient GEMMs after the launch read every step's) and the
//     peephole terms;
//   - the step barrier (step_arrive / step_wait: every block's part of dah row t is written);
//   - the block stages dah's rows t*B .. t*B + B - 1 [B, K] from global memory (through L2: other
//     blocks wrote them) into shared memory and projects them onto its columns: proj[b][u] = sum_r
//     dah[b][r] wt[u][r] (project_gradient: F32 by warp dot products, 16 bits by mma.sync with
//     fp32 accumulation, summed over the warps in warp order: deterministic);
//   - for the entries still inside their length, dh = proj + the GRU's direct term dh_total * z;
//     past it dh carries over, as step_grad_out leaves it.
// One round of the step barrier a step: a step's cells read only the block's own dh and dc and
// what was written before the launch, and each step writes its own row of dah, so a block that is
// still staging row t is never overwritten by a faster one already at the next step's cells. The
// reset-first GRU projects twice a step, with two barrier rounds (gru_reset_first_bwd).
//
// Shared memory, F32: wt [U][K] and the staged rows [B][K] floats. 16 bits: wt [U][S] and the
// staged rows [B][S] in T (S = K rounded up to 32, plus 8: any 8 consecutive rows start in
// distinct 16-byte slots of the 128-byte bank window, so ldmatrix is conflict-free; zeros past
// K; the reset-first GRU's rows are two segments, W_hh rows [0, 2H) and [2H, 3H), each rounded up
// to 32, so either product reads only its own), a zero chunk of 8 T (the rows the mma's padding reads: units past U, batch entries past B), then the
// warps' partial sums [warps][16][NU] (NU = U rounded up to 8). Both end with proj, dh, dc and
// direct [B][U] fp32. RecurrentGpu.persistentBackwardSharedBytes computes the same sizes.
namespace persistent {

/** A block's part of the backward (layout above). */
template <typename T>
struct GradSlice {
    T* wt;
    T* da;
    const T* zeros;  // 16 bits only: 8 zero elements
    float* partial;  // 16 bits only: [warps][16][cols]
    float* proj;
    float* dh;
    float* dc;
    float* direct;
    int stride;  // of wt's and da's rows: K (F32) or S (16 bits)
    int split;   // the first W_hh row of the second segment (the reset-first GRU's 2H; K for the others)
    int second;  // the column of wt and da where that segment starts: split (F32), split rounded up to 32 (16 bits)
    int cols;    // NU (16 bits)
    int u0;
    int mine;  // may be <= 0 for trailing blocks: they still take part in every step barrier
};

/** The four [B][U] fp32 arrays after the operands; every element starts at zero. */
template <typename T>
__device__ void place_pair_arrays(GradSlice<T>& sl, float* at, int batch, int units) {
    long pairs = static_cast<long>(batch) * units;
    sl.proj = at;
    sl.dh = at + pairs;
    sl.dc = at + 2 * pairs;
    sl.direct = at + 3 * pairs;
    for (long idx = threadIdx.x; idx < 4 * pairs; idx += blockDim.x) {
        at[idx] = 0.0f;
    }
}

/** The column of wt and da that holds W_hh row r. */
template <typename T>
__device__ __forceinline__ int column_of(const GradSlice<T>& sl, int r) {
    return r < sl.split ? r : sl.second + r - sl.split;
}

/**
 * Loads this block's columns of W_hh [K, H] transposed, wt[u][column_of(r)] = W_hh[r][u0 + u]
 * (zeros past H), the rows from split on as the second segment. Ends synchronized.
 */
__device__ GradSlice<float> load_columns(const float* w_hh, int k_rows, int split, int batch, int hidden, int units) {
    SEQK_DYNAMIC_SHARED(float, smem);
    GradSlice<float> sl;
    sl.stride = k_rows;
    sl.split = split;
    sl.second = split;
    sl.cols = units;
    sl.wt = smem;
    sl.da = smem + static_cast<long>(units) * k_rows;
    sl.zeros = nullptr;
    sl.partial = nullptr;
    sl.u0 = blockIdx.x * units;
    sl.mine = hidden - sl.u0 < units ? hidden - sl.u0 : units;
    place_pair_arrays(sl, sl.da + static_cast<long>(batch) * k_rows, batch, units);
    // Row-major over W_hh: consecutive threads read consecutive units of a row.
    for (long idx = threadIdx.x; idx < static_cast<long>(k_rows) * units; idx += blockDim.x) {
        int r = static_cast<int>(idx / units);
        int u = static_cast<int>(idx % units);
        float w = u < sl.mine ? w_hh[static_cast<long>(r) * hidden + sl.u0 + u] : 0.0f;
        sl.wt[static_cast<long>(u) * k_rows + column_of(sl, r)] = w;
    }
    __syncthreads();
    return sl;
}

/**
 * The 16-bit columns: as above in T, every padding element (and the zero chunk) zero. The zeros
 * and the pair arrays end synchronized; wt's values are first read by a projection, after the step
 * barrier's __syncthreads.
 */
template <typename T>
__device__ GradSlice<T> load_columns(const T* w_hh, int k_rows, int split, int batch, int hidden, int units) {
    SEQK_DYNAMIC_SHARED(T, smem);
    GradSlice<T> sl;
    sl.split = split;
    sl.second = round_up(split, 32);
    sl.stride = sl.second + round_up(k_rows - split, 32) + 8;
    sl.cols = round_up(units, 8);
    sl.wt = smem;
    sl.da = smem + static_cast<long>(units) * sl.stride;
    T* zeros = sl.da + static_cast<long>(batch) * sl.stride;
    sl.zeros = zeros;
    sl.partial = reinterpret_cast<float*>(zeros + 8);
    sl.u0 = blockIdx.x * units;
    sl.mine = hidden - sl.u0 < units ? hidden - sl.u0 : units;
    place_pair_arrays(sl, sl.partial + static_cast<long>(blockDim.x / 32) * 16 * sl.cols, batch, units);
    long operands = static_cast<long>(units + batch) * sl.stride + 8;
    for (long idx = threadIdx.x; idx < operands; idx += blockDim.x) {
        smem[idx] = seqk::from_float<T>(0.0f);
    }
    __syncthreads();
    for (long idx = threadIdx.x; idx < static_cast<long>(k_rows) * units; idx += blockDim.x) {
        int r = static_cast<int>(idx / units);
        int u = static_cast<int>(idx % units);
        if (u < sl.mine) {
            sl.wt[static_cast<long>(u) * sl.stride + column_of(sl, r)] = w_hh[static_cast<long>(r) * hidden + sl.u0 + u];
        }
    }
    return sl;
}

/**
 * proj[b][u] = the sum over W_hh rows r in [first, first + count) of dah[b][r] W_hh[r][u0 + u] for
 * this block's units (F32), where first is 0 or sl.split and count runs to the segment's end at
 * most: stages those columns of dah's B rows (row stride K; through L2, in 16-byte loads when K % 4
 * == 0) into their columns of da, then one warp per (b, u) pair at a time, lanes striding over the
 * columns and a butterfly sum. Ends synchronized.
 */
__device__ void project_gradient(const GradSlice<float>& sl, const float* dah_rows, int batch, int k_rows, int units, int first,
                                 int count) {
    int column = column_of(sl, first);
    if (k_rows % 4 == 0) {
        int chunks = count / 4;
        for (int idx = threadIdx.x; idx < batch * chunks; idx += blockDim.x) {
            long at = static_cast<long>(idx / chunks) * k_rows + 4 * (idx % chunks);
            *reinterpret_cast<seqk::Chunk16*>(sl.da + column + at) = load16_through_l2(dah_rows + first + at);
        }
    } else {
        for (int idx = threadIdx.x; idx < batch * count; idx += blockDim.x) {
            long at = static_cast<long>(idx / count) * k_rows + idx % count;
            sl.da[column + at] = load_through_l2(dah_rows + first + at);
        }
    }
    __syncthreads();
    int lane = seqk::arch::lane_id();
    int mine = sl.mine > 0 ? sl.mine : 0;
    for (int pair = threadIdx.x / 32; pair < batch * mine; pair += blockDim.x / 32) {
        int b = pair / mine;
        int u = pair % mine;
        float dot = 0.0f;
        for (int r = column + lane; r < column + count; r += 32) {
            dot += sl.da[static_cast<long>(b) * k_rows + r] * sl.wt[static_cast<long>(u) * k_rows + r];
        }
        SEQK_UNROLL
        for (int off = 16; off > 0; off /= 2) {
            dot += seqk::arch::shfl_xor(0xffffffffu, dot, off);
        }
        if (lane == 0) {
            sl.proj[b * units + u] = dot;
        }
    }
    __syncthreads();
}

/**
 * The same in 16 bits on tensor cores (fp32 accumulation): stages the columns in 16-byte loads
 * (K % 8 == 0 and H % 8 == 0), then, over the segment's k-step pairs (its columns rounded up to 32:
 * zeros past its end), per 8-unit tile the product da [16, S] x wt^T [S, 8] as mma.m16n8k16: warp w
 * takes the w-th of `warps` contiguous ranges of the k-step pairs; per pair two ldmatrix.x4 for A
 * (the batch entries, rows past B read the zero chunk) and one for B (both k-steps of the tile's 8
 * units; units past the block's read the zero chunk), and writes its tile sums to partial[w]; then
 * proj[b][u] is the sum of the warps' partials in warp order. Ends synchronized.
 */
template <typename T>
__device__ void project_gradient(const GradSlice<T>& sl, const T* dah_rows, int batch, int k_rows, int units, int first,
                                 int count) {
    int column = column_of(sl, first);
    int chunks = count / 8;
    for (int idx = threadIdx.x; idx < batch * chunks; idx += blockDim.x) {
        int b = idx / chunks;
        int c = idx % chunks;
        *reinterpret_cast<seqk::Chunk16*>(sl.da + b * sl.stride + column + c * 8) =
            load16_through_l2(dah_rows + static_cast<long>(b) * k_rows + first + c * 8);
    }
    __syncthreads();
    int lane = seqk::arch::lane_id();
    int warp = threadIdx.x / 32;
    int warps = blockDim.x / 32;
    int pairs = round_up(count, 32) / 32;
    int p_begin = column / 32 + warp * pairs / warps;
    int p_end = column / 32 + (warp + 1) * pairs / warps;
    // ldmatrix row addresses: A's lane l gives batch entry l % 16 at column (l / 16) * 8 (the
    // second k-step 16 columns on); B's gives unit l % 8 of the tile at column (l / 8) * 8, so
    // bf[0..1] is the pair's first k-step and bf[2..3] its second. A row that is padding reads the
    // zero chunk at every k-step (a step of 0).
    bool a_real = lane % 16 < batch;
    const T* a_row = a_real ? sl.da + (lane % 16) * sl.stride + (lane / 16) * 8 : sl.zeros;
    int a_step = a_real ? 32 : 0;
    int a_next = a_real ? 16 : 0;
    int g = lane / 4;
    int t = lane % 4;
    for (int tile = 0; tile < sl.cols / 8; tile++) {
        int unit = tile * 8 + lane % 8;
        bool b_real = unit < sl.mine;
        const T* b_row = b_real ? sl.wt + unit * sl.stride + (lane / 8) * 8 : sl.zeros;
        int b_step = b_real ? 32 : 0;
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int p = p_begin; p < p_end; p++) {
            uint32_t a0[4];
            uint32_t a1[4];
            uint32_t bf[4];
            seqk::arch::ldmatrix_x4(a0, a_row + p * a_step);
            seqk::arch::ldmatrix_x4(a1, a_row + p * a_step + a_next);
            seqk::arch::ldmatrix_x4(bf, b_row + p * b_step);
            seqk::arch::mma_m16n8k16(acc, a0, bf, T{});
            seqk::arch::mma_m16n8k16(acc, a1, bf + 2, T{});
        }
        float* part = sl.partial + static_cast<long>(warp) * 16 * sl.cols + tile * 8 + 2 * t;
        *reinterpret_cast<FloatPair*>(part + g * sl.cols) = FloatPair{acc[0], acc[1]};
        *reinterpret_cast<FloatPair*>(part + (g + 8) * sl.cols) = FloatPair{acc[2], acc[3]};
    }
    __syncthreads();
    int mine = sl.mine > 0 ? sl.mine : 0;
    for (int idx = threadIdx.x; idx < batch * mine; idx += blockDim.x) {
        int b = idx % batch;
        int u = idx / batch;
        float sum = 0.0f;
        for (int w = 0; w < warps; w++) {
            sum += sl.partial[(static_cast<long>(w) * 16 + b) * sl.cols + u];
        }
        sl.proj[b * units + u] = sum;
    }
    __syncthreads();
}

/**
 * The step loop every persistent backward shares: per step (processing order reversed: t = s when
 * the forward ran reversed, else T - 1 - s) cell(b, u, j, t, dh_total) for each of this block's
 * pairs, which writes row t's gate gradients and returns the direct term of dh_prev (the GRU's
 * dh_total * z; 0 for the others); the step barrier (round s + 1); the projection of dah row t; dh
 * updated for the entries inside their length. dh (and the LSTM's dc, which the cell carries)
 * move between global memory and shared memory by the same pairs, before and after.
 */
/** dh (and dc, unless dc_state is null) of this block's pairs from dh_state [B, H] (dc_state) into shared memory. */
template <typename T>
__device__ void load_carried(GradSlice<T>& sl, const float* dh_state, const float* dc_state, int batch, int hidden, int units) {
    for_my_pairs(sl, batch, [&](int b, int u) {
        long at = static_cast<long>(b) * hidden + sl.u0 + u;
        sl.dh[b * units + u] = dh_state[at];
        if (dc_state != nullptr) {
            sl.dc[b * units + u] = dc_state[at];
        }
    });
}

/** The same back: dh (and dc) of this block's pairs into dh_state (dc_state), after the last step. */
template <typename T>
__device__ void store_carried(const GradSlice<T>& sl, float* dh_state, float* dc_state, int batch, int hidden, int units) {
    for_my_pairs(sl, batch, [&](int b, int u) {
        long at = static_cast<long>(b) * hidden + sl.u0 + u;
        dh_state[at] = sl.dh[b * units + u];
        if (dc_state != nullptr) {
            dc_state[at] = sl.dc[b * units + u];
        }
    });
}

/** dh_total of pair (b, u) at step t: the carried dh plus dOut[t], zero past the entry's length. */
template <typename T>
__device__ __forceinline__ float dh_total_of(const GradSlice<T>& sl, const float* d_out, const int* lengths, int t, int b, int u,
                                             int batch, int units, int out_stride, int out_offset) {
    long row = static_cast<long>(t) * batch + b;
    return t < lengths[b] ? sl.dh[b * units + u] + d_out[row * out_stride + out_offset + sl.u0 + u] : 0.0f;
}

/** dh = the projection plus the direct term for this block's pairs inside their length at step t; the others carry dh. */
template <typename T>
__device__ void update_carried_dh(GradSlice<T>& sl, const int* lengths, int t, int batch, int units) {
    for_my_pairs(sl, batch, [&](int b, int u) {
        if (t < lengths[b]) {
            sl.dh[b * units + u] = sl.proj[b * units + u] + sl.direct[b * units + u];
        }
    });
}

/**
 * The step loop every persistent backward but the reset-first GRU's shares: per step (processing
 * order reversed: t = s when the forward ran reversed, else T - 1 - s) cell(b, u, j, t, dh_total)
 * for each of this block's pairs, which writes row t's gate gradients and returns the direct term
 * of dh_prev (the GRU's dh_total * z; 0 for the others); the step barrier (round s + 1); the
 * projection of dah row t; dh updated for the entries inside their length. dh (and the LSTM's dc,
 * which the cell carries) move between global memory and shared memory by the same pairs, before
 * and after.
 */
template <typename T, typename Cell>
__device__ void run_backward_steps(GradSlice<T>& sl, const T* dah, const float* d_out, float* dh_state, float* dc_state,
                                   const int* lengths, unsigned* arrivals, int steps, int reversed, int batch, int hidden,
                                   int k_rows, int units, int out_stride, int out_offset, Cell cell) {
    load_carried(sl, dh_state, dc_state, batch, hidden, units);
    for (int s = 0; s < steps; s++) {
        int t = reversed ? s : steps - 1 - s;
        for_my_pairs(sl, batch, [&](int b, int u) {
            float total = dh_total_of(sl, d_out, lengths, t, b, u, batch, units, out_stride, out_offset);
            sl.direct[b * units + u] = cell(b, u, sl.u0 + u, t, total);
        });
        step_arrive(arrivals);
        step_wait(arrivals, static_cast<unsigned>(s + 1));
        project_gradient(sl, dah + static_cast<long>(t) * batch * k_rows, batch, k_rows, units, 0, k_rows);
        update_carried_dh(sl, lengths, t, batch, units);
    }
    store_carried(sl, dh_state, dc_state, batch, hidden, units);
}

template <typename T>
__device__ void lstm_bwd(const float* raw, const float* c0, const float* c_new, const float* peephole, const T* w_hh,
                         const float* d_out, float* dh_state, float* dc_state, T* dA, float* dpeep_all, const int* lengths,
                         unsigned* arrivals, int steps, int reversed, int batch, int hidden, int units, int out_stride,
                         int out_offset, int input_forget, float clip, int f_kind, float f_alpha, float f_beta, int g_kind,
                         float g_alpha, float g_beta, int h_kind, float h_alpha, float h_beta) {
    GradSlice<T> sl = load_columns(w_hh, 4 * hidden, 4 * hidden, batch, hidden, units);
    run_backward_steps(sl, dA, d_out, dh_state, dc_state, lengths, arrivals, steps, reversed, batch, hidden, 4 * hidden, units,
                       out_stride, out_offset, [&](int b, int u, int j, int t, float total) {
                           lstm_bwd_at(b, j, total, sl.dc[b * units + u], raw, c0, c_new, reversed, peephole, dA,
                                       static_cast<T*>(nullptr), dpeep_all, lengths, t, batch, hidden, input_forget, clip,
                                       f_kind, f_alpha, f_beta, g_kind, g_alpha, g_beta, h_kind, h_alpha, h_beta);
                           return 0.0f;
                       });
}

template <typename T>
__device__ void gru_bwd(const float* raw, const T* h_prev, const float* hn_lin, const T* w_hh, const float* d_out,
                        float* dh_state, T* dax, T* dah, const int* lengths, unsigned* arrivals, int steps, int reversed,
                        int batch, int hidden, int units, int out_stride, int out_offset, float clip, int f_kind,
                        float f_alpha, float f_beta, int g_kind, float g_alpha, float g_beta) {
    GradSlice<T> sl = load_columns(w_hh, 3 * hidden, 3 * hidden, batch, hidden, units);
    run_backward_steps(sl, dah, d_out, dh_state, static_cast<float*>(nullptr), lengths, arrivals, steps, reversed, batch, hidden,
                       3 * hidden, units, out_stride, out_offset, [&](int b, int, int j, int t, float total) {
                           float direct = 0.0f;
                           gru_bwd_at(b, j, total, direct, raw, h_prev, hn_lin, dax, dah, lengths, t, batch, hidden, 1, clip,
                                      f_kind, f_alpha, f_beta, g_kind, g_alpha, g_beta);
                           return direct;
                       });
}

// GRU with the reset gate first (ONNX's default form): dh_prev = dah's r and z columns times W_hh
// rows [0, 2H) plus the direct terms, where the reset gate's gradient needs d(r*h) = dah's n
// columns times W_hn (rows [2H, 3H)) of every unit first. So a step projects twice, with two
// rounds of the step barrier (2s + 1, 2s + 2): gru_bwd_at (z and n, the direct term dh_total z;
// dah's n columns are W_hn's operand), the barrier, d(r*h) of the block's units from the second
// segment, gru_bwd_reset_at (dax's and dah's r columns, direct += d(r*h) r, r*h_prev for W_hn's
// weight gradient), the barrier, then the r and z columns onto the first segment and dh updated as
// run_backward_steps updates it.
template <typename T>
__device__ void gru_reset_first_bwd(const float* raw, const T* h_prev, const T* w_hh, const float* d_out, float* dh_state,
                                    T* dax, T* dah, T* rh_all, const int* lengths, unsigned* arrivals, int steps, int reversed,
                                    int batch, int hidden, int units, int out_stride, int out_offset, float clip, int f_kind,
                                    float f_alpha, float f_beta, int g_kind, float g_alpha, float g_beta) {
    int k_rows = 3 * hidden;
    GradSlice<T> sl = load_columns(w_hh, k_rows, 2 * hidden, batch, hidden, units);
    load_carried(sl, dh_state, static_cast<const float*>(nullptr), batch, hidden, units);
    for (int s = 0; s < steps; s++) {
        int t = reversed ? s : steps - 1 - s;
        const T* rows = dah + static_cast<long>(t) * batch * k_rows;
        for_my_pairs(sl, batch, [&](int b, int u) {
            float total = dh_total_of(sl, d_out, lengths, t, b, u, batch, units, out_stride, out_offset);
            float direct = 0.0f;
            gru_bwd_at(b, sl.u0 + u, total, direct, raw, h_prev, static_cast<const float*>(nullptr), dax, dah, lengths, t, batch, hidden, 0,
                       clip, f_kind, f_alpha, f_beta, g_kind, g_alpha, g_beta);
            sl.direct[b * units + u] = direct;
        });
        step_arrive(arrivals);
        step_wait(arrivals, static_cast<unsigned>(2 * s + 1));
        project_gradient(sl, rows, batch, k_rows, units, 2 * hidden, hidden);
        for_my_pairs(sl, batch, [&](int b, int u) {
            gru_bwd_reset_at(b, sl.u0 + u, sl.proj[b * units + u], sl.direct[b * units + u], raw, h_prev, dax, dah, rh_all, lengths,
                             t, batch, hidden, clip, f_kind, f_alpha, f_beta);
        });
        step_arrive(arrivals);
        step_wait(arrivals, static_cast<unsigned>(2 * s + 2));
        project_gradient(sl, rows, batch, k_rows, units, 0, 2 * hidden);
        update_carried_dh(sl, lengths, t, batch, units);
    }
    store_carried(sl, dh_state, static_cast<float*>(nullptr), batch, hidden, units);
}

template <typename T>
__device__ void rnn_bwd(const float* raw, const T* w_hh, const float* d_out, float* dh_state, T* dA, const int* lengths,
                        unsigned* arrivals, int steps, int reversed, int batch, int hidden, int units, int out_stride,
                        int out_offset, float clip, int f_kind, float f_alpha, float f_beta) {
    GradSlice<T> sl = load_columns(w_hh, hidden, hidden, batch, hidden, units);
    run_backward_steps(sl, dA, d_out, dh_state, static_cast<float*>(nullptr), lengths, arrivals, steps, reversed, batch, hidden,
                       hidden, units, out_stride, out_offset, [&](int b, int, int j, int t, float total) {
                           rnn_bwd_at(b, j, total, raw, dA, lengths, t, batch, hidden, clip, f_kind, f_alpha, f_beta);
                           return 0.0f;
                       });
}

}  // namespace persistent

}  // namespace

// The persistent backward's entry points, one instance per operand type S (the forward's state
// type): F32 (warp dot products) and F16/BF16 (W_hh and the gate gradients in 16 bits, mma.sync
// with fp32 accumulation; sm_80+). raw, c0, c_new, hn_lin, peepholes, d_out, dh_state, dc_state
// and dpeep_all are f32 in every instance. d_out [T, B, out_stride] is the layer's output gradient
// (this direction at out_offset); dh_state and dc_state [B, H] hold dh_n and dc_n on entry, dh_0 and
// dc_0 on return; arrivals is one zeroed counter.
#define SEQK_RECURRENT_PERSISTENT_BWD(suffix, S)                                                                        \
    extern "C" __global__ void lstm_persistent_bwd_##suffix(                                                            \
        const float* raw, const float* c0, const float* c_new, const float* peephole, const S* w_hh,                    \
        const float* d_out, float* dh_state, float* dc_state, S* dA, float* dpeep_all, const int* lengths,              \
        unsigned* arrivals, int steps, int reversed, int batch, int hidden, int units, int out_stride, int out_offset,  \
        int input_forget, float clip, int f_kind, float f_alpha, float f_beta, int g_kind, float g_alpha,               \
        float g_beta, int h_kind, float h_alpha, float h_beta) {                                                        \
        persistent::lstm_bwd<S>(raw, c0, c_new, peephole, w_hh, d_out, dh_state, dc_state, dA, dpeep_all, lengths,      \
                                arrivals, steps, reversed, batch, hidden, units, out_stride, out_offset, input_forget,   \
                                clip, f_kind, f_alpha, f_beta, g_kind, g_alpha, g_beta, h_kind, h_alpha, h_beta);       \
    }                                                                                                                   \
    SEQK_KERNEL(lstm_persistent_bwd_##suffix);                                                                          \
    extern "C" __global__ void gru_persistent_bwd_##suffix(                                                             \
        const float* raw, const S* h_prev, const float* hn_lin, const S* w_hh, const float* d_out, float* dh_state,     \
        S* dax, S* dah, const int* lengths, unsigned* arrivals, int steps, int reversed, int batch, int hidden,          \
        int units, int out_stride, int out_offset, float clip, int f_kind, float f_alpha, float f_beta, int g_kind,     \
        float g_alpha, float g_beta) {                                                                                  \
        persistent::gru_bwd<S>(raw, h_prev, hn_lin, w_hh, d_out, dh_state, dax, dah, lengths, arrivals, steps,          \
                               reversed, batch, hidden, units, out_stride, out_offset, clip, f_kind, f_alpha, f_beta,   \
                               g_kind, g_alpha, g_beta);                                                                \
    }                                                                                                                   \
    SEQK_KERNEL(gru_persistent_bwd_##suffix);                                                                           \
    extern "C" __global__ void gru_reset_first_persistent_bwd_##suffix(                                                 \
        const float* raw, const S* h_prev, const S* w_hh, const float* d_out, float* dh_state, S* dax, S* dah,          \
        S* rh_all, const int* lengths, unsigned* arrivals, int steps, int reversed, int batch, int hidden, int units,   \
        int out_stride, int out_offset, float clip, int f_kind, float f_alpha, float f_beta, int g_kind, float g_alpha, \
        float g_beta) {                                                                                                 \
        persistent::gru_reset_first_bwd<S>(raw, h_prev, w_hh, d_out, dh_state, dax, dah, rh_all, lengths, arrivals,     \
                                           steps, reversed, batch, hidden, units, out_stride, out_offset, clip, f_kind, \
                                           f_alpha, f_beta, g_kind, g_alpha, g_beta);                                   \
    }                                                                                                                   \
    SEQK_KERNEL(gru_reset_first_persistent_bwd_##suffix);                                                               \
    extern "C" __global__ void rnn_persistent_bwd_##suffix(                                                             \
        const float* raw, const S* w_hh, const float* d_out, float* dh_state, S* dA, const int* lengths,                \
        unsigned* arrivals, int steps, int reversed, int batch, int hidden, int units, int out_stride, int out_offset,  \
        float clip, int f_kind, float f_alpha, float f_beta) {                                                          \
        persistent::rnn_bwd<S>(raw, w_hh, d_out, dh_state, dA, lengths, arrivals, steps, reversed, batch, hidden,       \
                               units, out_stride, out_offset, clip, f_kind, f_alpha, f_beta);                           \
    }                                                                                                                   \
    SEQK_KERNEL(rnn_persistent_bwd_##suffix)

SEQK_RECURRENT_PERSISTENT_BWD(f32, float);
SEQK_RECURRENT_PERSISTENT_BWD(f16, __half);
SEQK_RECURRENT_PERSISTENT_BWD(bf16, __nv_bfloat16);
