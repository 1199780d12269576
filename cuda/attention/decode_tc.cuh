// Tensor-core split-KV decoding for 16-bit storage (attn_fwd_decode_tc64, attn_fwd_decode_tc128).
#pragma once

#include "../arch/cp_async.cuh"
#include "../arch/mma.cuh"
#include "common.cuh"
#include "decode.cuh"
#include "forward_tc.cuh"

namespace {

// ---------------------------------------------------------------------------------------------
// attn_fwd_decode_tc: the split kernel for fp16/bf16 with D and Dv up to 128 and 16-byte rows
// (AttentionGpu.splitKernel), on sm_80+. Decoding moves k and v once per GQA group and does little
// arithmetic per byte, so the work per byte must be a handful of instructions: here the scores and
// P v are mma.sync products (FlashDecoding's scheme on FlashAttention-2's warp tile), where the
// SIMT attn_fwd_decode spends a conversion and an FMA per element and row.
//
// One block (4 warps) = one (batch entry, kv head, group of 16 query rows, key split): the 16 rows
// are the GQA group's Hq / Hkv heads times Lq positions (query row r of the group is head
// r / Lq, position r % Lq), padded with zero rows, and form one mma row tile whose A fragments
// every warp keeps in registers. The block walks its split in tiles of 64 keys: all 128 threads
// copy the tile's k and v rows global -> shared with 16-byte cp.async (zeros past the keys any
// row may see and past D and Dv), double buffered. Warp w takes keys 16w..16w+15 of each tile:
// S = q k^T (two 8-key column blocks), scale and masks, the online softmax of its own rows' running
// max and sum (the same softmax_update as the tensor-core forward), P rounded to 16 bits as the
// A fragment of one k-step, o += P v (pv_tile_may_block where a mask blocks one of its pairs, so a
// non-finite v at a blocked key never reaches the row). A warp whose 16 keys every row of the
// block may see, with no explicit mask, takes the unmasked step: scale only, P v straight through
// mma (FlashAttention-2 likewise keeps mask code off the tiles no mask touches). Keys are counted
// from the split's first in 32 bits. So each warp holds a partial softmax over
// a quarter of the split's keys; after the last tile the four meet in shared memory (the k and v
// tiles, idle by then) and combine as splits do: weights exp(m_w - max m), sums and outputs
// weighted and added, the split's normalized output, max and sum written for attn_fwd_combine.
// Shared rows are [D + 8] padded (the tensor-core forward's layout, conflict-free ldmatrix).
// A thread holds, per 8-column block, rows g = lane / 4 and g + 8 of the tile and columns 2t, 2t + 1.
namespace decode_tc {

constexpr int WARPS = 4;
constexpr int ROWS = 16;
constexpr int KEYS = 16 * WARPS;
constexpr int STAGES = split::STAGES;

/** The tiling for head dimensions up to DMAX (64 or 128). */
template <int DMAX>
struct Tiling {
    static constexpr int LD = DMAX + 8;
    /** 16-bit elements of one k or v tile, and of the q tile. */
    static constexpr int TILE = KEYS * LD;
    static constexpr int Q_TILE = ROWS * LD;
    /** Dynamic shared memory (AttentionGpu.splitKernel computes the same). */
    static constexpr int SHARED_BYTES = (2 * STAGES * TILE + Q_TILE) * 2;
    static_assert(WARPS * ROWS * DMAX * 4 + (3 * WARPS + 1) * ROWS * 4 <= 2 * STAGES * TILE * 2,
                  "the warps' partial outputs, maxima, sums and weights, and the row sums fit in the tiles");
};

template <typename T, int DMAX>
__device__ void attn_fwd_decode_tc(const T* q, const T* k, const T* v, float* part_out, float* part_ml, const int* key_lengths,
                                   const int* query_lengths, const float* bias0, const float* bias1, const AttnShape& s,
                                   long long keys_per_split, long long splits) {
    using Tile = Tiling<DMAX>;
    constexpr int LD = Tile::LD;
    constexpr int KS = DMAX / 16;  // k-steps of q k^T
    constexpr int NO = DMAX / 8;   // 8-column blocks of the output
    SEQK_DYNAMIC_SHARED(uint16_t, smem);
    uint16_t* k_tiles = smem;                               // [STAGES][KEYS][LD]
    uint16_t* v_tiles = smem + STAGES * Tile::TILE;         // [STAGES][KEYS][LD]
    uint16_t* q_tile = smem + 2 * STAGES * Tile::TILE;      // [ROWS][LD]

    const int tid = static_cast<int>(threadIdx.x);
    const int warp = tid / 32;
    const int lane = seqk::arch::lane_id();
    const int g = lane / 4;
    const int t = lane % 4;
    const split::Block blk(s, ROWS, keys_per_split, splits, key_lengths, query_lengths);
    const long long b = blk.b, kvh = blk.kvh, split = blk.split, j0 = blk.j0;
    const int rows_here = blk.rows_here;
    const split::Block::KeyRange keys = blk.key_range();
    const long long stop = keys.any;
    const int d = static_cast<int>(s.head_dim), dv = static_cast<int>(s.value_dim);
    const float scale = static_cast<float>(s.scale);

    // The q tile (zeros past the rows and D), then its A fragments.
    for (int x = tid; x < ROWS * DMAX; x += WARPS * 32) {
        int r = x / DMAX;
        int e = x % DMAX;
        q_tile[r * LD + e] = r < rows_here && e < d ? tc::raw(q[at(s.q_stride, b, blk.head(r), blk.position(r), e)]) : uint16_t{0};
    }
    __syncthreads();  // the q tile complete
    uint32_t qa[KS][4];
    SEQK_UNROLL
    for (int ks = 0; ks < KS; ks++) {
        // Matrix j = lane / 8: rows 8 (j % 2).., columns 16 ks + 8 (j / 2): a[0..3] in the A layout.
        seqk::arch::ldmatrix_x4(qa[ks], q_tile + ((lane / 8) % 2 * 8 + lane % 8) * LD + ks * 16 + (lane / 16) * 8);
    }

    // Keys are counted from the split's first, j0, in 32 bits (AttentionGpu.splitPlan keeps a split
    // within MAX_KEYS_PER_SPLIT = 2^30 keys); span keys [j0, stop) are loaded.
    const int span = static_cast<int>(stop - j0);
    // The thread's rows g and g + 8: their key limits (relative), heads and positions (for the bias).
    const int my_rows[2] = {g, g + 8};
    int limit[2];
    long long my_h[2], my_i[2];
    SEQK_UNROLL
    for (int r = 0; r < 2; r++) {
        limit[r] = static_cast<int>(blk.key_limit(my_rows[r]) - j0);
        my_h[r] = blk.head(my_rows[r]);
        my_i[r] = blk.position(my_rows[r]);
    }
    // Below this key no mask blocks a pair of a row that exists: a warp whose 16 keys lie below it
    // takes the unmasked step (scale only, P v without the blocked-pair test).
    const int unmasked_keys = bias0 || bias1 ? 0 : static_cast<int>(keys.all - j0);
    // The explicit masks' sum at (thread row r, relative key j); whether the pair is allowed:
    // within the row's limit and not blocked by a bias.
    auto bias_of = [&](int r, int j) {
        float add = 0.0f;
        if (bias0) {
            add += bias0[at(s.bias_stride[0], b, my_h[r], my_i[r], j0 + j)];
        }
        if (bias1) {
            add += bias1[at(s.bias_stride[1], b, my_h[r], my_i[r], j0 + j)];
        }
        return add;
    };
    auto allowed_pair = [&](int r, long long j) { return j < limit[r] && bias_of(r, static_cast<int>(j)) != -INFINITY; };

    // Every 16-byte chunk of the tile's DMAX columns: a copy within [j0, stop) and D (Dv), else
    // zeros (the source then is key j0's row, which exists, as cp.async's src-size 0 still wants).
    // A thread copies the same chunk column of keys key0, key0 + KEY_STEP, ... in PASSES unrolled
    // passes: its column offsets and predicates are fixed, its sources start at its first key's
    // row and step by KEY_STEP rows (one 64-bit add per copy).
    constexpr int CHUNKS = DMAX / 8;
    constexpr int KEY_STEP = WARPS * 32 / CHUNKS;
    constexpr int PASSES = KEYS / KEY_STEP;
    const int chunk = tid % CHUNKS;
    const int key0 = tid / CHUNKS;
    const bool k_column = chunk * 8 < d;
    const bool v_column = chunk * 8 < dv;
    const T* k_zero = k + b * s.k_stride[0] + kvh * s.k_stride[1] + j0 * s.k_stride[2] + (k_column ? chunk * 8 : 0);
    const T* v_zero = v + b * s.v_stride[0] + kvh * s.v_stride[1] + j0 * s.v_stride[2] + (v_column ? chunk * 8 : 0);
    const long long k_step = KEY_STEP * s.k_stride[2];
    const long long v_step = KEY_STEP * s.v_stride[2];
    const int tiles = (span + KEYS - 1) / KEYS;
    auto load_tile = [&](int n, int stage) {
        const int first = n * KEYS + key0;
        const T* k_row = k_zero + first * s.k_stride[2];
        const T* v_row = v_zero + first * s.v_stride[2];
        SEQK_UNROLL
        for (int pass = 0; pass < PASSES; pass++) {
            const bool row = first + pass * KEY_STEP < span;
            const int at_row = (key0 + pass * KEY_STEP) * LD + chunk * 8;
            seqk::arch::cp_async_16_or_zeros(k_tiles + stage * Tile::TILE + at_row, row ? k_row : k_zero, row && k_column);
            seqk::arch::cp_async_16_or_zeros(v_tiles + stage * Tile::TILE + at_row, row ? v_row : v_zero, row && v_column);
            k_row += k_step;
            v_row += v_step;
        }
    };

    float m[2] = {-INFINITY, -INFINITY};
    float l[2] = {0.0f, 0.0f};
    float o[NO][4];
    SEQK_UNROLL
    for (int n = 0; n < NO; n++) {
        o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    }
    const int ksteps = (d + 15) / 16;
    const int oblocks = (dv + 7) / 8;

    split::walk_key_tiles(tiles, load_tile, [&](int n, int stage) {
        const int wk0 = n * KEYS + warp * 16;  // the warp's first key
        const uint16_t* kt = k_tiles + stage * Tile::TILE + warp * 16 * LD;
        const uint16_t* vt = v_tiles + stage * Tile::TILE + warp * 16 * LD;
        float sc[2][4];
        SEQK_UNROLL
        for (int c = 0; c < 2; c++) {
            sc[c][0] = sc[c][1] = sc[c][2] = sc[c][3] = 0.0f;
        }
        tc::product_abt<T, KS, 2, LD>(sc, qa, seqk::arch::shared_addr(kt), ksteps, lane);

        // Scale and mask: element (c, 2r + e) is row my_rows[r], key wk0 + 8c + 2t + e. A blocked
        // pair of a live row (one with a key to see) with a key the block loaded may meet a
        // non-finite v: then P v takes pv_tile_may_block. Warp-uniform: whether any mask touches
        // the warp's keys.
        const bool unmasked = wk0 + 16 <= unmasked_keys;
        float tile_max[2];
        bool blocks_loaded_key = false;
        SEQK_UNROLL
        for (int r = 0; r < 2; r++) {
            float mx = -INFINITY;
            SEQK_UNROLL
            for (int c = 0; c < 2; c++) {
                SEQK_UNROLL
                for (int e = 0; e < 2; e++) {
                    float x;
                    if (unmasked) {
                        x = sc[c][2 * r + e] * scale;
                    } else {
                        int j = wk0 + 8 * c + 2 * t + e;
                        bool within = j < limit[r];
                        float add = within ? bias_of(r, j) : 0.0f;
                        bool ok = within && add != -INFINITY;
                        blocks_loaded_key = blocks_loaded_key || (!ok && limit[r] > 0 && j < span);
                        x = ok ? fmaf(sc[c][2 * r + e], scale, add) : -INFINITY;
                    }
                    sc[c][2 * r + e] = x;
                    mx = fmaxf(mx, x);  // drops a NaN score, which reaches l and o through its weight
                }
            }
            mx = fmaxf(mx, seqk::arch::shfl_xor(0xffffffffu, mx, 1));
            tile_max[r] = fmaxf(mx, seqk::arch::shfl_xor(0xffffffffu, mx, 2));
        }
        tc::softmax_update<2, NO, true>(sc, o, m, l, tile_max);

        uint32_t pa[1][4];
        tc::c_to_a<T, 2>(pa, sc);
        if (seqk::arch::any(0xffffffffu, blocks_loaded_key)) {
            tc::pv_tile_may_block<T, NO, 16, LD>(o, pa, vt, oblocks, lane, t, wk0, allowed_pair);
        } else {
            tc::product_ab<T, 1, NO, LD>(o, pa, seqk::arch::shared_addr(vt), oblocks, lane);
        }
    });

    // The warps' partial softmaxes meet in the idle tiles: o [WARPS][ROWS][DMAX], then m and l [2][WARPS][ROWS].
    // (After the loop's last barrier no copy is in flight: the last group committed was empty.)
    float* partial = reinterpret_cast<float*>(smem);
    float* warp_ml = partial + WARPS * ROWS * DMAX;
    SEQK_UNROLL
    for (int r = 0; r < 2; r++) {
        l[r] += seqk::arch::shfl_xor(0xffffffffu, l[r], 1);
        l[r] += seqk::arch::shfl_xor(0xffffffffu, l[r], 2);
        SEQK_UNROLL
        for (int n = 0; n < NO; n++) {
            partial[(warp * ROWS + my_rows[r]) * DMAX + n * 8 + 2 * t] = o[n][2 * r];
            partial[(warp * ROWS + my_rows[r]) * DMAX + n * 8 + 2 * t + 1] = o[n][2 * r + 1];
        }
        if (t == 0) {
            warp_ml[warp * ROWS + my_rows[r]] = m[r];
            warp_ml[(WARPS + warp) * ROWS + my_rows[r]] = l[r];
        }
    }
    __syncthreads();  // every warp's partial softmax complete
    // Each row's merge, as attn_fwd_combine merges splits: the max over the warps, each warp's
    // weight exp(m_w - max) (softmax_weight: +inf maxima weigh 1 each, sharing the row; a warp
    // whose keys all weigh 0 has m = -inf and l = 0: weight 0, or 1 when every warp's has), the
    // weighted sums. Written for attn_fwd_combine; the weights go to the output loop. A row with
    // no key to see in the split (past the query length, or the causal limit before the split)
    // is written as 0: its warps' o may hold 0 x inf from a key the block loaded for another row.
    float* weight = warp_ml + 2 * WARPS * ROWS;  // [WARPS][ROWS], then the row sums [ROWS]
    const long long rows = s.batch * s.q_heads * s.q_len;
    if (tid < rows_here) {
        float mx = -INFINITY;
        SEQK_UNROLL
        for (int w = 0; w < WARPS; w++) {
            mx = fmaxf(mx, warp_ml[w * ROWS + tid]);
        }
        float sum = 0.0f;
        SEQK_UNROLL
        for (int w = 0; w < WARPS; w++) {
            weight[w * ROWS + tid] = softmax_weight(warp_ml[w * ROWS + tid], mx);
            sum += weight[w * ROWS + tid] * warp_ml[(WARPS + w) * ROWS + tid];
        }
        weight[WARPS * ROWS + tid] = sum;
        part_ml[split * rows + blk.row_index(tid)] = mx;
        part_ml[(splits + split) * rows + blk.row_index(tid)] = sum;
    }
    __syncthreads();  // the rows' weights complete
    for (int x = tid; x < rows_here * dv; x += WARPS * 32) {
        int r = x / dv;
        int col = x % dv;
        float acc = 0.0f;
        SEQK_UNROLL
        for (int w = 0; w < WARPS; w++) {
            acc += weight[w * ROWS + r] * partial[(w * ROWS + r) * DMAX + col];
        }
        part_out[(split * rows + blk.row_index(r)) * s.value_dim + col] =
            blk.key_limit(r) == j0 ? 0.0f : split::normalized(acc, weight[WARPS * ROWS + r]);
    }
}

}  // namespace decode_tc

}  // namespace
