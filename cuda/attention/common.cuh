// Attention kernels' shared pieces: the shape struct the Java side packs (AttnShape), row
// coordinates, index arithmetic and the scaled, masked score of v1 and split-KV.
#pragma once

#include "../arch/warp.cuh"
#include "../seqk.cuh"

namespace {

/** Shapes, strides and options; every field 8 bytes so the Java side packs it word by word. */
struct AttnShape {
    long long batch, q_heads, kv_heads, q_len, kv_len, head_dim, value_dim;
    long long q_stride[4], k_stride[4], v_stride[4], o_stride[4];
    long long bias_stride[2][4];
    long long causal;
    double scale;
};

/** A [B, H, L, E] tensor's element strides, for one read with strides of its own (the forward's out). */
struct RowStrides {
    long long s[4];
};

struct AttnRow {
    long long b, h, kvh, i, q_valid, k_valid;
};

__device__ __forceinline__ long long at(const long long* s, long long b, long long h, long long l, long long e) {
    return b * s[0] + h * s[1] + l * s[2] + e * s[3];
}

/** Row coordinates of query row `row` in [B*Hq*Lq], with its batch entry's valid lengths. */
__device__ __forceinline__ AttnRow row_of(const AttnShape& s, long long row, const int* key_lengths, const int* query_lengths) {
    AttnRow r;
    r.i = row % s.q_len;
    r.h = (row / s.q_len) % s.q_heads;
    r.b = row / (s.q_len * s.q_heads);
    r.kvh = r.h / (s.q_heads / s.kv_heads);
    r.k_valid = key_lengths ? key_lengths[r.b] : s.kv_len;
    r.q_valid = query_lengths ? query_lengths[r.b] : s.q_len;
    return r;
}

/**
 * exp(s - m) for a score s under the running maximum m >= s, or s NaN: 1 at the maximum, also when
 * both are +inf (a score beyond fp32's range: exp(inf - inf) would be NaN; such keys share the
 * weight, softmax's limit and the double reference's result when they tie); NaN for a NaN score.
 * The caller never passes a blocked (-inf) score.
 */
__device__ __forceinline__ float softmax_weight(float s, float m) { return s == m ? 1.0f : expf(s - m); }

/**
 * Whether a weight is marked blocked: -0, which exp never returns. An allowed key's weight that
 * underflows is +0 and still multiplies its value (0 x inf is NaN, as in the reference); a
 * blocked key's value is never read.
 */
__device__ __forceinline__ bool marked_blocked(float p) { return p == 0.0f && copysignf(1.0f, p) < 0.0f; }

/** The scaled, biased score of (row, key j), or -inf when any mask blocks it. */
template <typename T>
__device__ float score(const AttnShape& s, const AttnRow& r, long long j, const T* q, const T* k, const float* bias0,
                       const float* bias1) {
    if (j >= r.k_valid || r.i >= r.q_valid) {
        return -INFINITY;
    }
    if ((s.causal == 1 && j > r.i) || (s.causal == 2 && j > r.i + (r.k_valid - r.q_valid))) {
        return -INFINITY;
    }
    float add = 0.0f;
    if (bias0) {
        add += bias0[at(s.bias_stride[0], r.b, r.h, r.i, j)];
    }
    if (bias1) {
        add += bias1[at(s.bias_stride[1], r.b, r.h, r.i, j)];
    }
    if (add == -INFINITY) {
        return -INFINITY;
    }
    float dot = 0.0f;
    for (long long e = 0; e < s.head_dim; e++) {
        dot += seqk::to_float(q[at(s.q_stride, r.b, r.h, r.i, e)]) * seqk::to_float(k[at(s.k_stride, r.b, r.kvh, j, e)]);
    }
    return static_cast<float>(s.scale) * dot + add;
}

/** How many keys row r scores +inf: a row whose lse is +inf shares its weight among them. Rare, so a scan. */
template <typename T>
__device__ float hot_keys(const AttnShape& s, const AttnRow& r, const T* q, const T* k, const float* bias0, const float* bias1) {
    float hot = 0.0f;
    for (long long j = 0; j < s.kv_len; j++) {
        hot += score(s, r, j, q, k, bias0, bias1) == INFINITY ? 1.0f : 0.0f;
    }
    return hot;
}

/**
 * The forward's weight of a key with score sc in a row with that lse, as attn_probs and backward
 * recompute it; `hot` is the row's hot_keys when lse is +inf (the +inf keys share the weight, the
 * others get 0; exp(inf - inf) would be NaN). At most 1: the score recomputed here (fp32, in its
 * own summation order) may exceed the lse the forward took from its own scores (another order, or
 * TF32) by their rounding error, which for scores near 1e19 is beyond exp's range.
 */
__device__ __forceinline__ float prob_of(float sc, float lse, float hot) {
    if (lse == INFINITY) {
        return sc == INFINITY ? 1.0f / hot : sc != sc ? NAN : 0.0f;
    }
    if (sc == -INFINITY || lse == -INFINITY) {
        return 0.0f;
    }
    float d = sc - lse;
    return d > 0.0f ? 1.0f : expf(d);  // a NaN d stays NaN
}

}  // namespace
