// The tiled tensor-core backward, fp16/bf16 (attn_bwd_delta, attn_bwd_dq_tc64/128,
// attn_bwd_dkdv_tc64/128, and the no-bias instances attn_bwd_dq_tc64/128_nobias,
// attn_bwd_dkdv_tc64/128_nobias): FlashAttention-2's recompute from the forward's LSE with its
// preprocessing (delta = rowsum(dout * out)), deterministic (no atomics), in three kernels the
// host runs in order: delta, then dq (and each row's count of +inf keys), then dk and dv.
#pragma once

#include "forward_tc.cuh"

namespace {
namespace tc {

/**
 * The scaled score of (row i, key j) from its q.k product, as the forward computed it: -inf where
 * a mask blocks the pair when MASK (a tile that straddles a boundary or has an explicit mask);
 * without MASK every pair of the tile is allowed.
 */
template <bool MASK>
__device__ __forceinline__ float scaled_score(float qk, const AttnShape& s, long long b, long long h, long long i, long long j,
                                              long long k_valid, long long q_valid, float scale, const float* bias0,
                                              const float* bias1) {
    if (!MASK) {
        return qk * scale;
    }
    if (outside(s, i, j, k_valid, q_valid)) {
        return -INFINITY;
    }
    float add = bias_at(s, b, h, i, j, bias0, bias1);
    return add == -INFINITY ? -INFINITY : fmaf(qk, scale, add);
}

/**
 * acc += A tile (product_ab) on a tile where a mask may block some of the warp's (row, k) pairs.
 * A blocked pair's entry of A is 0, but its tile row may hold NaN or inf (0 x NaN), which v1 never
 * reads. So each 8-column block's product goes to a fresh accumulator, which joins acc when the
 * whole warp's is finite (the common case); otherwise the block is summed again in fp32 from A's
 * 16-bit values, skipping the pairs `blocked(r, k)` names (r = 0: the thread's row g, 1: row g + 8;
 * k the index along A's row, the tile's row). That rare path reads A back from the warp's own
 * 16 x 16KK scratch rows in shared memory (`scratch`): indexing A's registers at run time would
 * move them to local memory for the common path too.
 */
template <typename T, int KK, int NO, int LD, typename Blocked>
__device__ __forceinline__ void product_ab_checked(float (&acc)[NO][4], const uint32_t (&a)[KK][4], const uint16_t* tile, int blocks,
                                                   uint16_t* scratch, int lane, int t, Blocked blocked) {
    constexpr int W = 16 * KK;  // a scratch row
    const int g = lane / 4;
    SEQK_UNROLL
    for (int n = 0; n < NO; n += 2) {
        if (n < blocks) {
            float fresh[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
            SEQK_UNROLL
            for (int kk = 0; kk < KK; kk++) {
                uint32_t tb[4];
                seqk::arch::ldmatrix_x4_trans(tb, tile + (kk * 16 + lane % 16) * LD + (n + lane / 16) * 8);
                mma(fresh[0], a[kk], tb, T{});
                mma(fresh[1], a[kk], tb + 2, T{});
            }
            SEQK_UNROLL
            for (int half = 0; half < 2; half++) {
                if (seqk::arch::all(0xffffffffu, finite4(fresh[half]))) {
                    SEQK_UNROLL
                    for (int x = 0; x < 4; x++) {
                        acc[n + half][x] += fresh[half][x];
                    }
                    continue;
                }
                SEQK_UNROLL
                for (int kk = 0; kk < KK; kk++) {
                    SEQK_UNROLL
                    for (int x = 0; x < 4; x++) {
                        uint16_t* at_pair = scratch + (g + 8 * (x % 2)) * W + kk * 16 + 8 * (x / 2) + 2 * t;
                        at_pair[0] = static_cast<uint16_t>(a[kk][x] & 0xffffu);
                        at_pair[1] = static_cast<uint16_t>(a[kk][x] >> 16);
                    }
                }
                seqk::arch::syncwarp(0xffffffffu);
                int col = (n + half) * 8 + 2 * t;
                float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                for (int k = 0; k < W; k++) {
                    float w0 = from_bits<T>(scratch[g * W + k]), w1 = from_bits<T>(scratch[(g + 8) * W + k]);
                    float x0 = from_bits<T>(tile[k * LD + col]), x1 = from_bits<T>(tile[k * LD + col + 1]);
                    if (!blocked(0, k)) {
                        sum[0] += w0 * x0;
                        sum[1] += w0 * x1;
                    }
                    if (!blocked(1, k)) {
                        sum[2] += w1 * x0;
                        sum[3] += w1 * x1;
                    }
                }
                seqk::arch::syncwarp(0xffffffffu);  // every lane has read the scratch before it is written again
                SEQK_UNROLL
                for (int x = 0; x < 4; x++) {
                    acc[n + half][x] += sum[x];
                }
            }
        }
    }
}

/** The row's weight count when its lse is +inf (v1's hot_keys; rare, so a scan), else 0. */
template <typename T>
__device__ __forceinline__ float hot_of(float row_lse, const AttnShape& s, long long row, const int* key_lengths, const int* query_lengths,
                                        const T* q, const T* k, const float* bias0, const float* bias1) {
    return row_lse == INFINITY ? hot_keys(s, row_of(s, row, key_lengths, query_lengths), q, k, bias0, bias1) : 0.0f;
}

/**
 * prob_of for a row whose lse is finite: exp2 of the difference in log2 units (the forward's exp2
 * domain; one multiply and ex2 where expf takes a dozen instructions), 1 above the lse, NaN kept, 0
 * at a -inf score. The unmasked loops use it alone: before them a block checks that every row they
 * will read has a finite lse (the rows of an overflowed score take the masked loop and prob_of's
 * +inf and -inf rules).
 */
__device__ __forceinline__ float prob_of_finite_row(float sc, float lse) {
    float d = sc - lse;
    return d > 0.0f ? 1.0f : exp2f(d * LOG2E);  // a NaN d stays NaN
}

/** The tensor-core backward's weight: prob_of_finite_row where the row's lse is finite, else prob_of. */
__device__ __forceinline__ float prob_of_row(float sc, float lse, float hot) {
    return is_finite(lse) ? prob_of_finite_row(sc, lse) : prob_of(sc, lse, hot);
}

// ---------------------------------------------------------------------------------------------
// delta: attn_bwd_delta<T>, FlashAttention-2's preprocessing, delta = rowsum(dout * out).
// One warp per query row of [B * Hq * Lq] (4 rows a block of 128 threads); lane l takes columns l,
// l + 32, ... of Dv. The products of two 16-bit values are exact in fp32 (fp16's always; bf16's
// unless they leave fp32's range); the lanes' sums join by a fixed shuffle tree, so delta is
// deterministic. out is read with its own strides (the forward's destination, which need not be
// laid out as dout). Equal to v1's sum_j P dP over the allowed keys but for rounding (out is the
// forward's, rounded to T) and for an infinite dout: there every dP_j is infinite or NaN, so v1's
// and the reference's delta and every dS of the row are NaN, while dout * out would be an infinity
// that leaves some dS infinite; such a row's delta is NaN here too. Every row gets its value: the
// dq and dk/dv kernels weigh delta only at pairs a mask allows, so the one of a fully masked row,
// or of a row past its query length (whose dout may be anything), is never used.
template <typename T>
__device__ void attn_bwd_delta(const T* out, const T* dout, float* delta, const AttnShape& s, const RowStrides& out_stride) {
    const long long row = (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
    const int lane = static_cast<int>(threadIdx.x % 32);
    if (row >= s.batch * s.q_heads * s.q_len) {
        return;  // the whole warp: a warp's lanes share the row
    }
    const AttnRow r = row_of(s, row, nullptr, nullptr);  // its coordinates; the lengths are not read here
    float sum = 0.0f;
    bool infinite_dout = false;
    for (long long e = lane; e < s.value_dim; e += 32) {
        float g = seqk::to_float(dout[at(s.o_stride, r.b, r.h, r.i, e)]);
        infinite_dout |= fabsf(g) == INFINITY;
        sum += g * seqk::to_float(out[at(out_stride.s, r.b, r.h, r.i, e)]);
    }
    SEQK_UNROLL
    for (int m = 16; m > 0; m /= 2) {
        sum += seqk::arch::shfl_xor(0xffffffffu, sum, m);
    }
    if (seqk::arch::any(0xffffffffu, infinite_dout)) {
        sum = NAN;
    }
    if (lane == 0) {
        delta[row] = sum;
    }
}

// ---------------------------------------------------------------------------------------------
// dq: attn_bwd_dq_tc<T, DMAX, BN>, after attn_bwd_delta.
// Grid and block as the forward (one block per (b, h, 64 query rows), 4 warps of 16 rows); k and v
// stream through the same double-buffered shared tiles. A warp keeps its rows' q and dout (16-bit)
// as A fragments, their lse and delta, and dq (16 x DMAX f32) in registers. One pass over the key
// tiles: S = q k^T, dP = dout v^T (mma), P from S and lse, dS = P (dP - delta) (0 where blocked),
// rounded to T (as FlashAttention rounds it) and dq += dS k (mma, k through ldmatrix.x4.trans); dq
// is scaled once when written. It also writes each row's count of +inf keys (hot_keys_out: 0
// unless its lse is +inf), which attn_bwd_dkdv_tc reads rather than scanning the keys again. Rows
// past the query length get dq = 0 and a count of 0. Flops: 6 * rows * keys * DMAX per (b, h).
// Instances as the forward's (TcInstance): NO_BIAS (no explicit mask, 16-byte k and v rows, which
// the host guarantees when it picks it) loads by unrolled 16-byte cp.async only, runs every k-step
// and column block of DMAX (zeros past D and Dv: the sums are unchanged) and has no bias code.
template <typename T, int DMAX, int BN, TcInstance I>
__device__ void attn_bwd_dq_tc(const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* delta, float* hot_keys_out,
                               float* dq, const int* key_lengths, const int* query_lengths, const float* bias0, const float* bias1,
                               const AttnShape& s, bool vec) {
    static_assert(DMAX % 16 == 0 && BN % 16 == 0, "tiles are whole mma steps");
    constexpr int LD = DMAX + 8;
    constexpr int KS = DMAX / 16;
    constexpr int NS = BN / 8;
    constexpr int NO = DMAX / 8;
    constexpr bool VEC = I == TcInstance::NO_BIAS;
    if (VEC) {
        bias0 = bias1 = nullptr;  // constant from here on: the bias code folds away
    }
    SEQK_DYNAMIC_SHARED(uint16_t, smem);
    using Buffers = std::conditional_t<VEC, OffsetBuffers<uint16_t>, PointerBuffers<uint16_t>>;
    const Buffers buffers(smem, BN * LD);

    const TileBlock blk = tile_block(s, key_lengths, query_lengths);
    const long long b = blk.b, h = blk.h, k_valid = blk.k_valid, q_valid = blk.q_valid;
    const int warp = blk.warp, lane = blk.lane, g = blk.g, t = blk.t;
    uint16_t* const scratch = smem + 4 * BN * LD + warp * 16 * BN;  // this warp's dS rows for product_ab_checked
    const int d = static_cast<int>(s.head_dim), dv = static_cast<int>(s.value_dim);
    const float scale = static_cast<float>(s.scale);
    const long long key_end = key_end_of(s, blk.row0, BLOCK_M, k_valid, q_valid);
    const long long kv_tiles = (key_end + BN - 1) / BN;
    long long unmasked_tiles = unmasked_key_tiles(s, blk.row0, k_valid, q_valid, bias0 || bias1, BN, kv_tiles);

    const long long my_row[2] = {blk.row0 + warp * 16 + g, blk.row0 + warp * 16 + g + 8};
    uint32_t qa[KS][4], da[KS][4];
    row_fragments<T, KS>(qa, q, s.q_stride, b, h, my_row, q_valid, d, t);
    row_fragments<T, KS>(da, dout, s.o_stride, b, h, my_row, q_valid, dv, t);
    float row_lse[2], hot[2], row_delta[2];
    SEQK_UNROLL
    for (int r = 0; r < 2; r++) {
        long long row = (b * s.q_heads + h) * s.q_len + my_row[r];
        row_lse[r] = my_row[r] < q_valid ? lse[row] : -INFINITY;
        row_delta[r] = my_row[r] < q_valid ? delta[row] : 0.0f;
        hot[r] = hot_of(row_lse[r], s, row, key_lengths, query_lengths, q, k, bias0, bias1);
    }
    // The unmasked loop weighs by prob_of_finite_row: a block with a valid row whose lse is not
    // finite takes the masked loop for every tile. (Rows past the query length get whatever weight;
    // only their own dq reads it, and that is written as 0.)
    const bool odd_row = (my_row[0] < q_valid && !is_finite(row_lse[0])) || (my_row[1] < q_valid && !is_finite(row_lse[1]));
    if (__syncthreads_or(odd_row)) {
        unmasked_tiles = 0;
    }
    float dqa[NO][4];
    SEQK_UNROLL
    for (int n = 0; n < NO; n++) {
        dqa[n][0] = dqa[n][1] = dqa[n][2] = dqa[n][3] = 0.0f;
    }
    const int ksteps = VEC ? KS : (d + 15) / 16, vsteps = VEC ? KS : (dv + 15) / 16, dblocks = VEC ? NO : (d + 7) / 8;

    long long tile = 0;
    // One key tile: S and dP, then P and dS, then dq += dS k.
    auto step = [&](auto masked) {
        constexpr bool MASK = decltype(masked)::value;
        int buf = static_cast<int>(tile % 2);
        next_kv_tile<T, uint16_t, BN, LD, VEC, DMAX>(buffers, k, v, s, blk, key_end, tile, kv_tiles, vec);
        const uint16_t* kt = buffers.k(buf);
        const uint16_t* vt = buffers.v(buf);
        const long long j0 = tile * BN;

        float sc[NS][4], dp[NS][4];
        SEQK_UNROLL
        for (int n = 0; n < NS; n++) {
            SEQK_UNROLL
            for (int x = 0; x < 4; x++) {
                sc[n][x] = dp[n][x] = 0.0f;
            }
        }
        product_abt<T, KS, NS, LD>(sc, qa, seqk::arch::shared_addr(kt), ksteps, lane);
        product_abt<T, KS, NS, LD>(dp, da, seqk::arch::shared_addr(vt), vsteps, lane);
        SEQK_UNROLL
        for (int n = 0; n < NS; n++) {
            SEQK_UNROLL
            for (int x = 0; x < 4; x++) {
                int r = x / 2;
                long long j = j0 + n * 8 + 2 * t + x % 2;
                float xs = scaled_score<MASK>(sc[n][x], s, b, h, my_row[r], j, k_valid, q_valid, scale, bias0, bias1);
                float p = MASK ? prob_of_row(xs, row_lse[r], hot[r]) : prob_of_finite_row(xs, row_lse[r]);
                sc[n][x] = xs == -INFINITY ? 0.0f : p * (dp[n][x] - row_delta[r]);
            }
        }
        uint32_t sa[NS / 2][4];
        c_to_a<T, NS>(sa, sc);
        if (MASK) {
            product_ab_checked<T, NS / 2, NO, LD>(dqa, sa, kt, dblocks, scratch, lane, t, [&](int r, int kx) {
                return !allowed(s, b, h, my_row[r], j0 + kx, k_valid, q_valid, bias0, bias1);
            });
        } else {
            product_ab<T, NS / 2, NO, LD>(dqa, sa, seqk::arch::shared_addr(kt), dblocks, lane);
        }
        __syncthreads();  // every warp is done with this buffer before the next load refills it
    };

    first_kv_tile<T, uint16_t, BN, LD, VEC, DMAX>(buffers, k, v, s, blk, key_end, kv_tiles, vec);
    for (; tile < unmasked_tiles; tile++) {
        step(Masked<false>{});
    }
    for (; tile < kv_tiles; tile++) {
        step(Masked<true>{});
    }

    SEQK_UNROLL
    for (int r = 0; r < 2; r++) {
        long long i = my_row[r];
        if (i >= s.q_len) {
            continue;
        }
        bool dead = i >= q_valid;
        if (t == 0) {
            hot_keys_out[(b * s.q_heads + h) * s.q_len + i] = dead ? 0.0f : hot[r];
        }
        SEQK_UNROLL
        for (int n = 0; n < NO; n++) {
            SEQK_UNROLL
            for (int e = 0; e < 2; e++) {
                int col = n * 8 + 2 * t + e;
                if (col < d) {
                    dq[at(s.q_stride, b, h, i, col)] = dead ? 0.0f : dqa[n][2 * r + e] * scale;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// dk and dv: attn_bwd_dkdv_tc<T, DMAX, BQ, SPLIT>, K/V-stationary (FlashAttention-2's outer loop).
// Grid: one block per (b, kv head, tile of 64 keys): blockIdx.x = (b * Hkv + kvh) * key_tiles + tile.
// Block: 4 warps; warp w owns keys 16w..16w+15 of the tile and keeps, in registers, their k and v
// as A fragments and dk and dv (16 x DMAX f32 each). The block walks every query head of the
// group (GQA: the group's sum, without atomics) and its query rows that may see the tile, in
// tiles of BQ rows: q and dout tiles go to shared memory ([BQ][DMAX + 8] 16-bit) with each row's
// lse, delta and count of +inf keys (from attn_bwd_dq_tc), double buffered (cp.async when `vec`).
// Per tile a warp computes, transposed so that its keys are the rows of every product,
// S^T = k q^T and dP^T = v dout^T, P^T from S^T and lse, dS^T = P^T (dP^T - delta), then
// dv += P^T dout and dk += dS^T q (P^T and dS^T rounded to T, as FlashAttention rounds P and dS;
// q and dout through ldmatrix.x4.trans; dk scaled once when written). No exchange between warps.
// SPLIT (DMAX 128: k, v, dk and dv alone would take 192 registers a thread): the walk runs twice,
// first S^T, P^T and dv (written, its registers free), then S^T, dP^T, dS^T and dk; one more
// S^T product per pair. Tiles no mask touches (every row valid, every key valid and, causal, on
// or below the diagonal) are walked first, in a loop of their own without the mask code (the
// walk's order, below). Keys past the key length get dk = dv = 0.
// Instances as attn_bwd_dq_tc's: NO_BIAS (no explicit mask, 16-byte q and dout rows) loads by
// unrolled 16-byte cp.async only, runs every k-step and column block of DMAX, has no bias code.
// Flops: 8 * rows * keys * DMAX per (b, h) (S, dP, dv, dk); 10 with SPLIT.
template <int P>
struct Part {
    static constexpr int value = P;
};
constexpr int DV_PART = 1, DK_PART = 2;

template <typename T, int DMAX, int BQ, bool SPLIT, TcInstance I>
__device__ void attn_bwd_dkdv_tc(const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* delta,
                                 const float* hot_keys_in, float* dk, float* dv, const int* key_lengths, const int* query_lengths, const float* bias0,
                                 const float* bias1, const AttnShape& s, bool vec) {
    static_assert(DMAX % 16 == 0 && BQ % 16 == 0, "tiles are whole mma steps");
    constexpr int LD = DMAX + 8;
    constexpr int KS = DMAX / 16;
    constexpr int NQ = BQ / 8;  // 8-row blocks of a query tile: the columns of S^T
    constexpr int NO = DMAX / 8;
    constexpr int BK = BLOCK_M;  // keys per block
    constexpr bool VEC = I == TcInstance::NO_BIAS;
    if (VEC) {
        bias0 = bias1 = nullptr;  // constant from here on: the bias code folds away
    }
    SEQK_DYNAMIC_SHARED(uint16_t, smem);
    // Buffer x of the q tiles at smem + x BQ LD, of the dout tiles at smem + (2 + x) BQ LD (arithmetic,
    // not an array of pointers a run-time index would put in local memory).
    float* const stats = reinterpret_cast<float*>(smem + 4 * BQ * LD);  // [2 buffers][lse, delta, hot][BQ]

    const long long key_tiles = (s.kv_len + BK - 1) / BK;
    const long long bkv = blockIdx.x / key_tiles;
    const long long b = bkv / s.kv_heads, kvh = bkv % s.kv_heads;
    const long long j0 = (blockIdx.x % key_tiles) * BK;
    const long long k_valid = key_lengths ? key_lengths[b] : s.kv_len;
    const long long q_valid = query_lengths ? query_lengths[b] : s.q_len;
    const int warp = threadIdx.x / 32, lane = seqk::arch::lane_id(), g = lane / 4, t = lane % 4;
    uint16_t* const scratch = smem + 4 * BQ * LD + 12 * BQ + warp * 16 * BQ;  // this warp's P^T or dS^T rows for product_ab_checked
    const int d = static_cast<int>(s.head_dim), dvd = static_cast<int>(s.value_dim);
    const float scale = static_cast<float>(s.scale);
    const bool bias = bias0 || bias1;
    const long long group = s.q_heads / s.kv_heads;

    const long long my_key[2] = {j0 + warp * 16 + g, j0 + warp * 16 + g + 8};
    uint32_t ka[KS][4], va[KS][4];
    row_fragments<T, KS>(ka, k, s.k_stride, b, kvh, my_key, k_valid, d, t);
    row_fragments<T, KS>(va, v, s.v_stride, b, kvh, my_key, k_valid, dvd, t);
    const int ksteps = VEC ? KS : (d + 15) / 16, vsteps = VEC ? KS : (dvd + 15) / 16;
    const int dblocks = VEC ? NO : (d + 7) / 8, vblocks = VEC ? NO : (dvd + 7) / 8;

    // The query rows that may see a key of this tile: from the causal diagonal through key j0 (the
    // first row, tile-aligned) to the query length; none when the tile is past the key length.
    const long long offset = s.causal == 2 ? k_valid - q_valid : 0;
    long long first_row = s.causal != 0 ? j0 - offset : 0;
    first_row = first_row > 0 ? first_row / BQ * BQ : 0;
    const long long row_tiles = j0 < k_valid && first_row < q_valid ? (q_valid - first_row + BQ - 1) / BQ : 0;
    const long long steps = group * row_tiles;

    // The walk's order, fixed by the shape (and, without a bias, whether a row of the hot loop has
    // a non-finite lse; below), so that every instance sums dk and dv in the same order: first the
    // row tiles [lo, hi) of each query head in turn, the tiles no length or causal diagonal touches
    // (the hot loop: without a bias no mask code), then the rest of each head in turn ([0, lo) and
    // [hi, row_tiles)): all of it when the key tile crosses the key length. A cursor moves from one
    // tile to the next by adds and compares (no division in the loop).
    long long lo = 0, hi = 0;
    if (row_tiles > 0 && j0 + BK <= k_valid) {
        long long causal_from = s.causal != 0 ? j0 + BK - 1 - offset - first_row : 0;  // first row past the diagonal, from first_row
        lo = causal_from > 0 ? (causal_from + BQ - 1) / BQ : 0;
        hi = (q_valid - first_row) / BQ;  // whole tiles within the query length
        lo = lo < hi ? lo : hi;
    }
    // Without a bias the hot loop weighs by prob_of_finite_row: when a row it would read has an lse
    // that is not finite, every tile takes the masked loop. (With a bias it takes the masked step.)
    bool odd_row = false;
    for (long long h = kvh * group; !bias && h < (kvh + 1) * group; h++) {
        const float* row_lse = lse + (b * s.q_heads + h) * s.q_len + first_row;
        for (long long i = lo * BQ + threadIdx.x; i < hi * BQ; i += blockDim.x) {
            odd_row |= !is_finite(row_lse[i]);
        }
    }
    if (__syncthreads_or(odd_row)) {
        lo = hi = 0;
    }
    const long long hot_steps = group * (hi - lo);
    struct Cursor {
        long long h, tile;  // query head of the group, row tile
    };
    auto first_rest = [&]() { return Cursor{0, lo > 0 ? 0 : hi}; };
    auto first = [&]() { return hot_steps > 0 ? Cursor{0, lo} : first_rest(); };
    // The cursor after step x's.
    auto after = [&](Cursor c, long long x) {
        if (x + 1 < hot_steps) {
            return ++c.tile == hi ? Cursor{c.h + 1, lo} : c;
        }
        if (x + 1 == hot_steps) {
            return first_rest();
        }
        if (++c.tile == lo) {
            c.tile = hi;
        }
        return c.tile >= row_tiles ? Cursor{c.h + 1, lo > 0 ? 0 : hi} : c;
    };

    // A tile (query head, first row) into buffer `buf`, as one cp.async group.
    auto load = [&](Cursor c, int buf) {
        long long h = kvh * group + c.h;
        long long i0 = first_row + c.tile * BQ;
        load_tile<T, uint16_t, BQ, LD, VEC, DMAX>(smem + buf * BQ * LD, q, s.q_stride, b, h, i0, q_valid, d, vec);
        load_tile<T, uint16_t, BQ, LD, VEC, DMAX>(smem + (2 + buf) * BQ * LD, dout, s.o_stride, b, h, i0, q_valid, dvd, vec);
        float* st = stats + buf * 3 * BQ;
        for (int r = threadIdx.x; r < BQ; r += blockDim.x) {
            long long i = i0 + r;
            long long row = (b * s.q_heads + h) * s.q_len + i;
            float row_lse = i < q_valid ? lse[row] : -INFINITY;
            st[r] = row_lse;
            st[BQ + r] = i < q_valid ? delta[row] : 0.0f;
            st[2 * BQ + r] = i < q_valid ? hot_keys_in[row] : 0.0f;
        }
        seqk::arch::cp_async_commit();
    };

    float dka[NO][4], dva[NO][4];
    // Step x, on tile `cur` (loaded into buffer x % 2; the next tile goes to the other): S^T and P^T
    // always; dv += P^T dout (DV); dP^T, dS^T and dk += dS^T q (DK). Returns the next step's tile.
    auto step = [&](auto masked, auto part, Cursor cur, long long x) {
        constexpr bool MASK = decltype(masked)::value;
        constexpr bool DV = (decltype(part)::value & DV_PART) != 0, DK = (decltype(part)::value & DK_PART) != 0;
        int buf = static_cast<int>(x % 2);
        const Cursor next = after(cur, x);
        if (x + 1 < steps) {
            load(next, buf ^ 1);
            seqk::arch::cp_async_wait<1>();
        } else {
            seqk::arch::cp_async_wait<0>();
        }
        __syncthreads();
        const uint16_t* qt = smem + buf * BQ * LD;
        const uint16_t* dt = smem + (2 + buf) * BQ * LD;
        const float* st = stats + buf * 3 * BQ;
        const long long h = kvh * group + cur.h;
        const long long i0 = first_row + cur.tile * BQ;

        float sc[NQ][4], dp[NQ][4];
        SEQK_UNROLL
        for (int n = 0; n < NQ; n++) {
            SEQK_UNROLL
            for (int e = 0; e < 4; e++) {
                sc[n][e] = dp[n][e] = 0.0f;
            }
        }
        product_abt<T, KS, NQ, LD>(sc, ka, seqk::arch::shared_addr(qt), ksteps, lane);
        if (DK) {
            product_abt<T, KS, NQ, LD>(dp, va, seqk::arch::shared_addr(dt), vsteps, lane);
        }
        // sc becomes P^T, dp becomes dS^T (both 0 where blocked).
        SEQK_UNROLL
        for (int n = 0; n < NQ; n++) {
            SEQK_UNROLL
            for (int e = 0; e < 4; e++) {
                int c = n * 8 + 2 * t + e % 2;
                float xs = scaled_score<MASK>(sc[n][e], s, b, h, i0 + c, my_key[e / 2], k_valid, q_valid, scale, bias0, bias1);
                float p = MASK ? prob_of_row(xs, st[c], st[2 * BQ + c]) : prob_of_finite_row(xs, st[c]);
                sc[n][e] = p;
                if (DK) {
                    dp[n][e] = xs == -INFINITY ? 0.0f : p * (dp[n][e] - st[BQ + c]);
                }
            }
        }
        auto blocked = [&](int r, int c) { return !allowed(s, b, h, i0 + c, my_key[r], k_valid, q_valid, bias0, bias1); };
        if (DV) {
            uint32_t pa[NQ / 2][4];
            c_to_a<T, NQ>(pa, sc);
            if (MASK) {
                product_ab_checked<T, NQ / 2, NO, LD>(dva, pa, dt, vblocks, scratch, lane, t, blocked);
            } else {
                product_ab<T, NQ / 2, NO, LD>(dva, pa, seqk::arch::shared_addr(dt), vblocks, lane);
            }
        }
        if (DK) {
            uint32_t sa[NQ / 2][4];
            c_to_a<T, NQ>(sa, dp);
            if (MASK) {
                product_ab_checked<T, NQ / 2, NO, LD>(dka, sa, qt, dblocks, scratch, lane, t, blocked);
            } else {
                product_ab<T, NQ / 2, NO, LD>(dka, sa, seqk::arch::shared_addr(qt), dblocks, lane);
            }
        }
        __syncthreads();  // every warp is done with this buffer before the next load refills it
        return next;
    };

    // Every query tile of the group, for one part of the work (from a fresh pipeline), in the
    // walk's order: the hot loop, then the tiles a length or the diagonal touches.
    auto walk = [&](auto part) {
        Cursor cur = first();
        if (steps > 0) {
            load(cur, 0);
        }
        long long x = 0;
        if (bias) {
            for (; x < hot_steps; x++) {
                cur = step(Masked<true>{}, part, cur, x);
            }
        } else {
            for (; x < hot_steps; x++) {
                cur = step(Masked<false>{}, part, cur, x);
            }
        }
        for (; x < steps; x++) {
            cur = step(Masked<true>{}, part, cur, x);
        }
    };

    // The warp's rows of dk or dv (f32, times `factor`; 0 past the key length).
    auto write = [&](float (&acc)[NO][4], float* dst, const long long* st, int cols, float factor) {
        SEQK_UNROLL
        for (int r = 0; r < 2; r++) {
            long long j = my_key[r];
            if (j >= s.kv_len) {
                continue;
            }
            bool dead = j >= k_valid;
            SEQK_UNROLL
            for (int n = 0; n < NO; n++) {
                SEQK_UNROLL
                for (int e = 0; e < 2; e++) {
                    int col = n * 8 + 2 * t + e;
                    if (col < cols) {
                        dst[at(st, b, kvh, j, col)] = dead ? 0.0f : acc[n][2 * r + e] * factor;
                    }
                }
            }
        }
    };
    auto zero = [](float (&acc)[NO][4]) {
        SEQK_UNROLL
        for (int n = 0; n < NO; n++) {
            acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
        }
    };

    if (SPLIT) {
        // dv's accumulators are written and dead before dk's are live: the registers of one.
        zero(dva);
        walk(Part<DV_PART>{});
        write(dva, dv, s.v_stride, dvd, 1.0f);
        zero(dka);
        walk(Part<DK_PART>{});
    } else {
        zero(dva);
        zero(dka);
        walk(Part<DV_PART | DK_PART>{});
        write(dva, dv, s.v_stride, dvd, 1.0f);
    }
    write(dka, dk, s.k_stride, d, scale);
}

}  // namespace tc
}  // namespace
