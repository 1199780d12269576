// Split-KV forward for decoding (attn_fwd_split, attn_fwd_combine).
#pragma once

#include "common.cuh"

namespace {

// ---------------------------------------------------------------------------------------------
// Split-KV forward for decoding (few query rows, long key ranges: FlashDecoding's scheme), any
// storage type, D and Dv up to 256.
//
// attn_fwd_split: grid = (b, kv head, group of 4 query rows, key split), 1-D as
// ((b * Hkv + kvh) * row_groups + group) * splits + split. The query rows of a kv head are the Lq
// rows of each of its Hq/Hkv query heads; warp w of the block owns row 4 * group + w of them, so the
// 4 warps read the same k and v rows (through L1) and a GQA group's k and v are read once per split.
// A warp walks the keys of its split one at a time: lanes hold D/32 elements of q and Dv/32 of the
// output accumulator (lane + 32x), the score is a butterfly sum over the warp, then the online
// softmax. It writes its split's normalized partial output, running max m and sum l (f32 scratch).
// attn_fwd_combine: one thread per (row, value column): weights l_s * exp(m_s - max_s m_s) over the
// splits give the output and the LSE; a row with no allowed key in any split gives 0 and -inf.
// m and l rather than one partial LSE m + log l: when keys overflowed to +inf, m is +inf and the
// combine needs each split's count of them (l) to share the weight over all of them equally.
// Bytes: k and v once per split group, the partials (splits * rows * (Dv + 2) * 4) twice.
namespace split {

constexpr int ROWS_PER_BLOCK = 4;

template <typename T, int DMAX>
__device__ void attn_fwd_split(const T* q, const T* k, const T* v, float* part_out, float* part_ml, const int* key_lengths,
                               const int* query_lengths, const float* bias0, const float* bias1, const AttnShape& s,
                               long long keys_per_split, long long splits) {
    constexpr int PER_LANE = DMAX / 32;
    long long group_rows = (s.q_heads / s.kv_heads) * s.q_len;
    long long row_groups = (group_rows + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK;
    long long split = blockIdx.x % splits;
    long long rest = blockIdx.x / splits;
    long long group = rest % row_groups;
    long long kvh = (rest / row_groups) % s.kv_heads;
    long long b = rest / (row_groups * s.kv_heads);
    long long local = group * ROWS_PER_BLOCK + threadIdx.x / 32;
    if (local >= group_rows) {
        return;  // a whole warp leaves: no later shuffle waits for it
    }
    int lane = seqk::arch::lane_id();
    long long h = kvh * (s.q_heads / s.kv_heads) + local / s.q_len;
    long long i = local % s.q_len;
    long long row = (b * s.q_heads + h) * s.q_len + i;
    long long k_valid = key_lengths ? key_lengths[b] : s.kv_len;
    long long q_valid = query_lengths ? query_lengths[b] : s.q_len;
    float scale = static_cast<float>(s.scale);

    float qv[PER_LANE];
    float o[PER_LANE];
    SEQK_UNROLL
    for (int x = 0; x < PER_LANE; x++) {
        long long e = lane + 32 * x;
        qv[x] = e < s.head_dim ? seqk::to_float(q[at(s.q_stride, b, h, i, e)]) : 0.0f;
        o[x] = 0.0f;
    }
    float m = -INFINITY;
    float l = 0.0f;
    long long j_end = (split + 1) * keys_per_split < s.kv_len ? (split + 1) * keys_per_split : s.kv_len;
    for (long long j = split * keys_per_split; j < j_end; j++) {
        bool blocked = j >= k_valid || i >= q_valid || (s.causal == 1 && j > i) ||
                       (s.causal == 2 && j > i + (k_valid - q_valid));
        if (blocked) {
            continue;  // uniform over the warp: every lane has the same row and key
        }
        float add = 0.0f;
        if (bias0) {
            add += bias0[at(s.bias_stride[0], b, h, i, j)];
        }
        if (bias1) {
            add += bias1[at(s.bias_stride[1], b, h, i, j)];
        }
        if (add == -INFINITY) {
            continue;
        }
        float dot = 0.0f;
        SEQK_UNROLL
        for (int x = 0; x < PER_LANE; x++) {
            long long e = lane + 32 * x;
            if (e < s.head_dim) {
                dot += qv[x] * seqk::to_float(k[at(s.k_stride, b, kvh, j, e)]);
            }
        }
        SEQK_UNROLL
        for (int off = 16; off > 0; off /= 2) {
            dot += seqk::arch::shfl_xor(0xffffffffu, dot, off);
        }
        float score = scale * dot + add;
        if (score == -INFINITY) {
            continue;  // below fp32's range: weight 0, like a blocked key (uniform over the warp)
        }
        // fmaxf drops a NaN score (m is never NaN); its weight exp(NaN) carries it into l and o.
        float m_new = fmaxf(m, score);
        float corr = softmax_weight(m, m_new);
        float p = softmax_weight(score, m_new);
        l = l * corr + p;
        m = m_new;
        SEQK_UNROLL
        for (int x = 0; x < PER_LANE; x++) {
            long long e = lane + 32 * x;
            float ve = e < s.value_dim ? seqk::to_float(v[at(s.v_stride, b, kvh, j, e)]) : 0.0f;
            o[x] = o[x] * corr + p * ve;
        }
    }
    long long rows = s.batch * s.q_heads * s.q_len;
    float inv = l == 0.0f ? 0.0f : 1.0f / l;  // l NaN (a NaN score): o is NaN too and stays so
    SEQK_UNROLL
    for (int x = 0; x < PER_LANE; x++) {
        long long e = lane + 32 * x;
        if (e < s.value_dim) {
            part_out[(split * rows + row) * s.value_dim + e] = o[x] * inv;
        }
    }
    if (lane == 0) {
        part_ml[split * rows + row] = m;
        part_ml[(splits + split) * rows + row] = l;
    }
}

template <typename T>
__device__ void attn_fwd_combine(const float* part_out, const float* part_ml, T* out, float* lse, const AttnShape& s,
                                 long long splits) {
    long long rows = s.batch * s.q_heads * s.q_len;
    long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= rows * s.value_dim) {
        return;
    }
    long long row = idx / s.value_dim;
    long long e = idx % s.value_dim;
    // A split with no key has m = -inf and l = 0: weight 0. A split whose scores were all NaN has
    // m = -inf too (fmaxf dropped them) but l NaN: the row is live, and its NaN reaches sum and acc.
    float mx = -INFINITY;
    bool live = false;
    for (long long sp = 0; sp < splits; sp++) {
        mx = fmaxf(mx, part_ml[sp * rows + row]);
        live = live || part_ml[(splits + sp) * rows + row] != 0.0f;
    }
    float sum = 0.0f;
    float acc = 0.0f;
    if (live) {
        for (long long sp = 0; sp < splits; sp++) {
            float w = part_ml[(splits + sp) * rows + row] * softmax_weight(part_ml[sp * rows + row], mx);
            sum += w;
            acc += w * part_out[(sp * rows + row) * s.value_dim + e];
        }
    }
    long long i = row % s.q_len;
    long long h = (row / s.q_len) % s.q_heads;
    long long b = row / (s.q_len * s.q_heads);
    out[at(s.o_stride, b, h, i, e)] = seqk::from_float<T>(live ? acc / sum : 0.0f);
    if (e == 0) {
        lse[row] = live ? mx + logf(sum) : -INFINITY;
    }
}

}  // namespace split

}  // namespace
