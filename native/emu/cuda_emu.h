// The CUDA surface our kernels use, for g++: the SIMT emulator's view of cuda/*.cu.
//
// A block's threads run as fibers on one OS thread (runtime.cpp), so __syncthreads and the warp
// collectives are real rendezvous points, and the builtins below ask the runtime for the running
// fiber's coordinates. Shared memory, static (SEQK_SHARED_ARRAY) and dynamic, is one arena per
// block that the runtime poisons and watches: a bare __shared__ does not compile here. Kernels
// reach shuffles, votes and other primitives only through cuda/arch/ wrappers, whose emulator
// side calls the functions declared here.
//
// The kernel sources are compiled with GCC's thread-sanitizer instrumentation (build-emulator.sh):
// every load and store in kernel code calls back into the runtime (hazards.cpp), which keeps the
// shadow state for race, bounds and alignment checks. Nothing here may touch runtime state
// through a pointer in inline code, or those callbacks would see it as a kernel's access.
#pragma once

#include <math.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static_assert(false, "in the emulator build, declare static shared memory with SEQK_SHARED_ARRAY");
#define __launch_bounds__(...)

struct uint3 {
    unsigned x, y, z;
};

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

namespace seqk_emu {

/** What one emulated thread sees: its coordinates and its block's. */
struct ThreadContext {
    uint3 thread_idx;
    uint3 block_idx;
    dim3 block_dim;
    dim3 grid_dim;
    unsigned linear;  // thread index within the block, x fastest
};

/**
 * The emulator's per-OS-thread pointers that kernel code and the checks read on every access use
 * the initial-exec TLS model: an offset from the thread pointer instead of a __tls_get_addr call
 * per read (6% of an attention test's time). One such variable puts the library's whole TLS segment
 * in static TLS, of which glibc keeps a small surplus for libraries loaded at run time (dlopen fails
 * with "cannot allocate memory in static TLS block" when it runs out): so every thread_local here is
 * a pointer or a small value (the per-thread Block and fiber stacks are held through pointers).
 */
#define SEQK_EMU_HOT_TLS thread_local __attribute__((tls_model("initial-exec")))

extern SEQK_EMU_HOT_TLS ThreadContext* current;

/**
 * Where in the kernel's source a barrier or collective is called, taken from the caller through a
 * default argument (SEQK_EMU_SITE): the threads meeting there must all come from one site.
 */
struct Site {
    const char* file;
    unsigned line;
};
#define SEQK_EMU_SITE const char* site_file = __builtin_FILE(), unsigned site_line = __builtin_LINE()
/** The site SEQK_EMU_SITE received (the builtins must be default arguments themselves to see the caller's line). */
#define SEQK_EMU_SITE_VALUE (::seqk_emu::Site{site_file, site_line})

void syncthreads(Site site);
/** __syncthreads_or: the barrier, then whether any thread of the block passed a nonzero predicate. */
int syncthreads_or(int predicate, Site site);
/** __threadfence: a sequentially consistent fence (in the runtime: the kernels' tsan build may not fence itself). */
void thread_fence();
void syncwarp(unsigned mask, Site site);
/** The warp collective: every lane in mask contributes `value`; returns all 32 slots (lanes not in mask: 0). */
void warp_exchange(unsigned mask, uint64_t value, uint64_t out[32], Site site);
/** The same for up to kWideBytes per lane: lane l's bytes land at all + l * bytes. */
constexpr unsigned kWideBytes = 64;
void warp_exchange_wide(unsigned mask, const void* value, unsigned bytes, void* all, Site site);
/**
 * cp.async: queued per thread; lands at cp_async_wait (or when the thread ends), or at issue by
 * schedule. Reads src_bytes (<= bytes) of the source and fills the rest of the bytes with zeros.
 */
void cp_async(void* shared_dst, const void* global_src, unsigned bytes, unsigned src_bytes);
void cp_async_commit();
void cp_async_wait(int pending_groups_allowed);
/** Cooperative launches: every thread of every block arrives before any continues. */
void grid_sync(Site site);
/** Cooperative launches: red.release.gpu.global.add.u32 on a device word (runtime.cpp's GridBoard orders it). */
void flag_release_add(uint32_t* word, uint32_t value);
/** Cooperative launches: a spin on ld.acquire.gpu.global.u32 until *word reaches target (wrap-safe; the thread sleeps meanwhile). */
void flag_wait_geq(const uint32_t* word, uint32_t target, Site site);
unsigned lane_id();
[[noreturn]] void kernel_error(const char* what);
/**
 * Counts one warp's ldmatrix of `count` 8x8 b16 matrices whose row addresses are rows[0..8*count):
 * the shared-memory wavefronts it takes (seqk_emu_take_ldmatrix_counts).
 */
void count_ldmatrix(const void* const* rows, unsigned count);
void* dynamic_shared();
/** This block's copy of the static shared array declared at `site` (SEQK_SHARED_ARRAY): poisoned and watched like dynamic. */
void* static_shared(const void* site, unsigned bytes, unsigned align);
uint3 thread_idx();
uint3 block_idx();
dim3 block_dim();
dim3 grid_dim();

template <typename T>
inline uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffled values are at most 8 bytes");
    uint64_t b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}

template <typename T>
inline T from_bits(uint64_t b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}

/** One kernel parameter as g++ compiled it: what the stand-in driver compares with the PTX's .param list. */
struct ParamInfo {
    unsigned size;
    unsigned align;
    bool pointer;
};

/** Registers an extern "C" kernel under its name, with a trampoline that unpacks cuLaunchKernel-style args. */
struct Registrar {
    using Trampoline = void (*)(void* fn, void** args);
    Registrar(const char* name, void* fn, Trampoline trampoline, int arg_count, const ParamInfo* params);
};

template <typename... A, std::size_t... I>
void invoke(void (*fn)(A...), void** args, std::index_sequence<I...>) {
    fn(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
}

template <typename... A>
void trampoline(void* fn, void** args) {
    invoke(reinterpret_cast<void (*)(A...)>(fn), args, std::index_sequence_for<A...>{});
}

template <typename... A>
Registrar make_registrar(const char* name, void (*fn)(A...)) {
    static const ParamInfo params[] = {ParamInfo{static_cast<unsigned>(sizeof(A)), static_cast<unsigned>(alignof(A)),
                                                 std::is_pointer<A>::value}...,
                                       ParamInfo{0, 0, false}};
    return Registrar(name, reinterpret_cast<void*>(fn), &trampoline<A...>, static_cast<int>(sizeof...(A)), params);
}

}  // namespace seqk_emu

#define threadIdx (::seqk_emu::thread_idx())
#define blockIdx (::seqk_emu::block_idx())
#define blockDim (::seqk_emu::block_dim())
#define gridDim (::seqk_emu::grid_dim())
static constexpr int warpSize = 32;

inline void __syncthreads(SEQK_EMU_SITE) {
    ::seqk_emu::syncthreads(SEQK_EMU_SITE_VALUE);
}

inline int __syncthreads_or(int predicate, SEQK_EMU_SITE) {
    return ::seqk_emu::syncthreads_or(predicate, SEQK_EMU_SITE_VALUE);
}

// A real fence (blocks of a cooperative launch run on OS threads of their own; kernels pair it
// with atomics, as on a GPU). The race checker does not model fences: cross-block accesses that a
// fence orders must be atomic to pass it, as the fused recurrent step's are.
inline void __threadfence() { ::seqk_emu::thread_fence(); }

// ---- math intrinsics: the exact libm functions stand in for the fast approximations.
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }

// ---- atomics: a block's fibers never preempt each other, but these stay truly atomic so that a
// runner with blocks on several OS threads needs no change here.
inline float atomicAdd(float* p, float v) {
    uint32_t* word = reinterpret_cast<uint32_t*>(p);
    uint32_t old = __atomic_load_n(word, __ATOMIC_RELAXED);
    uint32_t desired;
    float f;
    do {
        std::memcpy(&f, &old, 4);
        float sum = f + v;
        std::memcpy(&desired, &sum, 4);
    } while (!__atomic_compare_exchange_n(word, &old, desired, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
    std::memcpy(&f, &old, 4);
    return f;
}
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline int atomicCAS(int* p, int expected, int desired) {
    __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return expected;
}
inline int atomicMax(int* p, int v) {
    int old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (v > old && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
    }
    return old;
}
inline unsigned atomicExch(unsigned* p, unsigned v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }

// ---- CUDA's 16-byte vector type, for kernels' vectorized loads and stores.
struct alignas(16) float4 {
    float x, y, z, w;
};

// ---- 16-bit float storage types: bits only; conversions are in cuda/seqk.cuh (round-to-nearest-even).
struct __half {
    uint16_t bits;
};
struct __nv_bfloat16 {
    uint16_t bits;
};

inline float __half2float(__half h) {
    uint32_t sign = (h.bits & 0x8000u) << 16;
    uint32_t exp = (h.bits >> 10) & 0x1f;
    uint32_t man = h.bits & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {  // subnormal: normalize
            int e = -1;
            do {
                man <<= 1;
                e++;
            } while ((man & 0x400) == 0);
            bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (man & 0x3ff) << 13;
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | man << 13;
    } else {
        bits = sign | (exp + 112) << 23 | man << 13;
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

inline __half __float2half_rn(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
    uint32_t absx = x & 0x7fffffffu;
    if (absx > 0x7f800000u) {
        return {static_cast<uint16_t>(sign | 0x7e00u | ((absx >> 13) & 0x3ff))};  // NaN stays NaN
    }
    if (absx >= 0x477ff000u) {  // >= 65520: rounds to infinity
        return {static_cast<uint16_t>(sign | 0x7c00u)};
    }
    if (absx < 0x38800000u) {  // below the smallest normal half: subnormal or zero
        if (absx < 0x33000000u) {
            return {sign};  // below half the smallest subnormal
        }
        uint32_t man = (absx & 0x7fffffu) | 0x800000u;
        int shift = 126 - static_cast<int>(absx >> 23);  // value = man * 2^(e-150); the grid is 2^-24
        uint32_t q = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) {
            q++;
        }
        return {static_cast<uint16_t>(sign | q)};
    }
    uint32_t r = absx - 0x38000000u;  // rebias exponent 127 -> 15
    uint32_t q = r >> 13;
    uint32_t rem = r & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1))) {
        q++;
    }
    return {static_cast<uint16_t>(sign | q)};
}

inline float __bfloat162float(__nv_bfloat16 b) {
    uint32_t bits = static_cast<uint32_t>(b.bits) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) {
        return {static_cast<uint16_t>((x >> 16) | 0x40u)};
    }
    uint32_t lsb = (x >> 16) & 1u;
    return {static_cast<uint16_t>((x + 0x7fffu + lsb) >> 16)};
}

#define SEQK_EMU_REGISTER(name) \
    static ::seqk_emu::Registrar seqk_emu_registrar_##name = ::seqk_emu::make_registrar(#name, &name)
