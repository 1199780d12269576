// Self-test kernels: one per emulated feature, checked from Java (EmulatorFeatureTest) against
// plain expectations, plus kernels with deliberate bugs that the emulator's checks must report.
// They build for the GPU too, so the same tests can run there.
//
// Every kernel: one block of blockDim.x threads unless its comment says otherwise.
#include "seqk.cuh"
#include "arch/warp.cuh"

// Barriers and dynamic shared memory: out[b*n + t] = in[b*n + (n-1-t)] for a block of n threads.
// Each thread writes one shared slot, waits at the barrier, reads its mirror's slot.
extern "C" __global__ void selftest_reverse_f32(const float* in, float* out) {
    SEQK_DYNAMIC_SHARED(float, buf);
    int n = blockDim.x;
    int t = threadIdx.x;
    buf[t] = in[blockIdx.x * n + t];
    __syncthreads();
    out[blockIdx.x * n + t] = buf[n - 1 - t];
}
SEQK_KERNEL(selftest_reverse_f32);

// The same without the barrier: a race. The emulator runs threads in order, so thread t reads
// slot n-1-t before its owner wrote it for t < n/2, and dynamic shared memory is poisoned with
// NaN: the race shows up as NaN in the output.
extern "C" __global__ void selftest_reverse_no_barrier_f32(const float* in, float* out) {
    SEQK_DYNAMIC_SHARED(float, buf);
    int n = blockDim.x;
    int t = threadIdx.x;
    buf[t] = in[blockIdx.x * n + t];
    out[blockIdx.x * n + t] = buf[n - 1 - t];
}
SEQK_KERNEL(selftest_reverse_no_barrier_f32);

// Static shared memory and a two-level block reduction: out[blockIdx.x] = sum of the block's inputs.
// Block of up to 1024 threads; one shared slot per warp.
extern "C" __global__ void selftest_block_sum_f32(const float* in, float* out) {
    __shared__ float warp_sums[32];
    int t = threadIdx.x;
    float v = in[blockIdx.x * blockDim.x + t];
    for (int offset = 16; offset > 0; offset >>= 1) {
        v += seqk::arch::shfl_down(0xffffffffu, v, offset);
    }
    if (seqk::arch::lane_id() == 0) {
        warp_sums[t / 32] = v;
    }
    __syncthreads();
    if (t == 0) {
        float s = 0;
        for (int w = 0; w < (int)(blockDim.x + 31) / 32; w++) {
            s += warp_sums[w];
        }
        out[blockIdx.x] = s;
    }
}
SEQK_KERNEL(selftest_block_sum_f32);

// Shuffles and votes, one warp: for lane l with value v = values[l], writes 8 results per lane:
// shfl(v, 31-l), shfl_xor(v, 5), shfl_down(v, 3), shfl_up(v, 2), ballot(v odd), any(v > 90),
// all(v >= 0), and a shfl_xor over the 16-lane mask 0x0000ffff (lanes >= 16 write -1).
extern "C" __global__ void selftest_warp_ops_i32(const int* values, int* out) {
    unsigned l = seqk::arch::lane_id();
    int v = values[l];
    int* o = out + l * 8;
    o[0] = seqk::arch::shfl(0xffffffffu, v, 31 - (int)l);
    o[1] = seqk::arch::shfl_xor(0xffffffffu, v, 5);
    o[2] = seqk::arch::shfl_down(0xffffffffu, v, 3u);
    o[3] = seqk::arch::shfl_up(0xffffffffu, v, 2u);
    o[4] = (int)seqk::arch::ballot(0xffffffffu, v & 1);
    o[5] = seqk::arch::any(0xffffffffu, v > 90);
    o[6] = seqk::arch::all(0xffffffffu, v >= 0);
    o[7] = l < 16 ? seqk::arch::shfl_xor(0x0000ffffu, v, 1) : -1;
}
SEQK_KERNEL(selftest_warp_ops_i32);

// Atomics: every thread of every block adds 1 to *counter.
extern "C" __global__ void selftest_atomic_count(int* counter) {
    atomicAdd(counter, 1);
}
SEQK_KERNEL(selftest_atomic_count);

// Bug: threads below 16 leave before a barrier the others wait at. The emulator reports it.
extern "C" __global__ void selftest_divergent_barrier(float* out) {
    if (threadIdx.x < 16) {
        return;
    }
    __syncthreads();
    out[threadIdx.x] = 1.0f;
}
SEQK_KERNEL(selftest_divergent_barrier);

// Bug: thread `bad` of block `bad_block` writes one element past the end of out[n].
extern "C" __global__ void selftest_write_past_end(float* out, int n, int bad_block, int bad) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        out[i] = 1.0f;
    }
    if ((int)blockIdx.x == bad_block && (int)threadIdx.x == bad) {
        out[n] = 2.0f;
    }
}
SEQK_KERNEL(selftest_write_past_end);

// Bug: thread 3 writes one float past the end of the dynamic shared memory (blockDim.x floats).
extern "C" __global__ void selftest_shared_overflow(float* out) {
    SEQK_DYNAMIC_SHARED(float, buf);
    buf[threadIdx.x] = 0.0f;
    if (threadIdx.x == 3) {
        buf[blockDim.x] = 1.0f;
    }
    __syncthreads();
    out[threadIdx.x] = buf[threadIdx.x];
}
SEQK_KERNEL(selftest_shared_overflow);

// Bug: lanes 8..31 exit while lanes 0..7 shuffle over the full warp.
extern "C" __global__ void selftest_shuffle_with_exited_lanes(float* out) {
    unsigned l = seqk::arch::lane_id();
    if (l >= 8) {
        return;
    }
    out[l] = seqk::arch::shfl_xor(0xffffffffu, 1.0f, 1);
}
SEQK_KERNEL(selftest_shuffle_with_exited_lanes);
