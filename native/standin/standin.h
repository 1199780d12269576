// What the stand-in libcuda.so.1 exports beyond the driver API: for the stand-in libcublas (work on
// a stream, which a capture records), and for tests (diagnostics, the misuse log, settings).
#pragma once

#include <cuda.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Identifies the stand-in: "seqkernels stand-in driver over the SIMT emulator". A real libcuda lacks it. */
const char* seqk_standin_identity(void);

/**
 * Why the last call the calling OS thread made that was refused was refused, beyond its CUresult;
 * not cleared by calls that succeed, so read it right after the failing call (on the same thread).
 */
const char* seqk_standin_diagnostic(void);

/**
 * Calls a real driver might crash on or silently accept, recorded since the last take: handles used
 * after destroy, freed or foreign pointers, kernel pointer arguments outside device memory,
 * unsupported entry points. One per line; the string lives until the calling thread's next take.
 */
const char* seqk_standin_take_misuse(void);

/** Modules loaded and not unloaded. */
int seqk_standin_module_count(void);

/**
 * Changes the simulated device (for tests); returns 0, or 1 for an unknown key or a bad value.
 * "multiprocessors": the SM count the device reports (default 4);
 * "cooperative_multiprocessors": SMs a cooperative launch may use (as under MPS); 0 = all;
 * "race_checks": 1 = the emulator checks launches for races, 0 = not (its other checks still run;
 * cuInit sets it from SEQK_STANDIN_CHECKS, full or memory).
 */
int seqk_standin_configure(const char* key, long long value);

/**
 * Runs `work(arg)` in stream order on `stream`, or records it into the stream's capture; `release(arg)`
 * frees it once it can no longer run. `work` returns a CUresult. For the stand-in libcublas.
 */
CUresult seqk_standin_submit(CUstream stream, CUresult (*work)(void* arg), void (*release)(void* arg), void* arg,
                             const char* what);

/** Records a misuse (see seqk_standin_take_misuse) and makes `what` the calling thread's diagnostic. */
void seqk_standin_report(const char* what, int misuse);

/** Runs fn(arg) under the stand-in's lock (the emulator is single-threaded). */
int seqk_standin_locked(int (*fn)(void* arg), void* arg);

#ifdef __cplusplus
}
#endif
