// The SIMT emulator's C ABI: what the emu binding (java.lang.foreign) and the stand-in driver
// (native/standin) call. Every call but the queries returns 0 on success, or 1 with the reason in
// seqk_emu_last_error() (per calling thread). The emulator is single-threaded: callers serialize.
#pragma once

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

const char* seqk_emu_last_error(void);
/** Turns the checks on or off: guards, bounds, alignment, races, collectives (on by default). */
void seqk_emu_set_checking(int on);
/**
 * With checking on, whether it includes the race checks (on by default): the shadow state of every
 * shared and global access, the largest part of a checked launch's time. Off, guards, bounds,
 * alignment, collectives and resources are still checked. Between launches only (a launch reads it
 * as it goes).
 */
void seqk_emu_set_race_checks(int on);

/** The order in which a block's threads run between barriers and collectives. */
#define SEQK_EMU_SCHEDULE_ROUND_ROBIN 0  /* thread 0, 1, 2, ... */
#define SEQK_EMU_SCHEDULE_REVERSE 1      /* the last thread first */
#define SEQK_EMU_SCHEDULE_RANDOM 2       /* a new seeded shuffle at every pass */
#define SEQK_EMU_SCHEDULE_WARP_AHEAD 3   /* one warp runs until it blocks, then the next */
/** Sets the schedule, its seed, and whether cp.async copies land at issue (else at the wait). */
int seqk_emu_set_schedule(int mode, uint64_t seed, int cp_async_land_at_issue);

int seqk_emu_kernel_count(void);
const char* seqk_emu_kernel_name(int i);
/** Argument count of a kernel, or -1 if no kernel has that name. */
int seqk_emu_kernel_arity(const char* name);
/**
 * Parameter i of a kernel as g++ compiled it: its size and alignment in bytes, and whether it is a
 * pointer. Returns 0, or 1 when there is no such kernel or parameter.
 */
int seqk_emu_kernel_param(const char* name, int i, unsigned* size, unsigned* align, int* pointer);

int seqk_emu_malloc(uint64_t bytes, uint64_t* out);
int seqk_emu_free(uint64_t ptr);
/** Whether [ptr, ptr + bytes) lies inside one live device allocation (bytes 0: ptr may be one past its end). */
int seqk_emu_contains(uint64_t ptr, uint64_t bytes);
/** Bytes allocated and not freed, and the number of allocations. */
void seqk_emu_memory_in_use(uint64_t* bytes, uint64_t* count);
/** The most device memory in use at once since the last call, in bytes; starts counting anew. */
uint64_t seqk_emu_take_peak(void);
/**
 * The ldmatrix instructions (one per warp) run since the last call, the 8x8 matrices they loaded
 * and the shared-memory wavefronts they took; starts counting anew. A matrix's 8 rows of 16 bytes
 * take one wavefront when their addresses fall in 8 different 16-byte bank groups (offset / 16
 * mod 8, from the block's shared-memory base), else as many as the most distinct addresses in one
 * group (equal addresses are one broadcast): wavefronts / matrices is 1.0 when conflict-free.
 */
void seqk_emu_take_ldmatrix_counts(uint64_t* instructions, uint64_t* matrices, uint64_t* wavefronts);
/** kind: 0 host->device, 1 device->host, 2 device->device; device ranges must lie inside one allocation. */
int seqk_emu_memcpy(uint64_t dst, uint64_t src, uint64_t bytes, int kind);
/* Host <-> device copies with the host side as a pointer (the Java binding passes a segment, which the
   JDK keeps alive for the call); the device side must lie inside an allocation. */
int seqk_emu_copy_to_device(uint64_t dst, const void* src, uint64_t bytes);
int seqk_emu_copy_to_host(void* dst, uint64_t src, uint64_t bytes);
int seqk_emu_memset(uint64_t dst, int value, uint64_t bytes);

int seqk_emu_launch(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                    unsigned shared_bytes, void** args, int arg_count, int cooperative);

/**
 * C = alpha * op(A) * op(B) + beta * C, column-major like cuBLAS, for `batch` matrices at the
 * given element strides. dtype: 0 f32, 1 f16, 2 bf16 for A and B; C is f32 (c_dtype 0) or the
 * same 16-bit type (c_dtype = dtype). tf32: f32 operands are first rounded to TF32 (10 mantissa
 * bits, nearest, ties away from zero), as tensor cores take them. Accumulation in fp32, one fused
 * multiply-add per term in k order, as a cuBLAS thread accumulates its outputs under COMPUTE_32F:
 * the emulator's GEMM is no more exact than a GPU's (an accumulation in double hid the F32 rounding
 * that a recurrent backward amplifies).
 */
int seqk_emu_gemm(int trans_a, int trans_b, int m, int n, int k, float alpha, uint64_t a, int lda, long stride_a,
                  uint64_t b, int ldb, long stride_b, float beta, uint64_t c, int ldc, long stride_c, int batch,
                  int dtype, int c_dtype, int tf32);

#ifdef __cplusplus
}
#endif
