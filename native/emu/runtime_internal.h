// What the emulator's runtime (runtime.cpp: fibers, scheduler, memory, C ABI) and its hazard
// checker (hazards.cpp: shadow state behind every load and store of kernel code) share.
#pragma once


#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda_emu.h"

namespace seqk_emu {

/** Thrown on the scheduler side (never across a fiber boundary) to end a launch with a message. */
struct EmuError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

struct Kernel {
    std::string name;
    void* fn;
    Registrar::Trampoline trampoline;
    int arg_count;
    const ParamInfo* params;  // arg_count entries
};

// ---------------------------------------------------------------- shadow state (hazards.cpp)

/**
 * One access to a shadowed granule: by whom, in which barrier epoch, after which warp sync, from
 * where. Kept small (28 bytes): a shadow entry holds two, for every 2 bytes of watched memory.
 */
struct Access {
    uint32_t owner = 0;        // the block serial (shared memory) or launch serial (global) it belongs to; 0: none
    uint32_t block = 0;        // linear block index (global memory)
    uint32_t epoch = 0;        // __syncthreads opened in that block before the access
    uint32_t warp_sync = 0;    // __syncwarps the thread's warp had completed before the access
    uint32_t grid_epoch = 0;   // grid syncs passed before the access (cooperative launches)
    uint32_t site = 0;         // code address as an offset into this library's image, plus 1; 0: unknown
    uint16_t thread = 0;       // linear thread index in the block
    uint8_t bytes = 0;         // which bytes of the granule it touched (bit 0: the first)
    bool atomic = false;
};

/**
 * Accesses of one kind to a granule since its last plain write: the reads, or the atomic writes.
 * A later access that must not race with them checks each: the first and the two latest member
 * threads are kept exactly; earlier members only as a union (their bytes, the latest stamp).
 */
struct AccessSet {
    Access first;                  // the first member: owner, block, epochs, what a report names
    uint32_t warps = 0;            // warps of first's block with a member (bit w)
    uint32_t latest_sync = 0;      // the warp-sync stamp of latest_thread's last access
    uint32_t second_sync = 0;      // the same for second_thread, when has_second
    uint32_t older_sync = 0;       // the latest stamp among members no longer kept, when more
    uint32_t older_plain_sync = 0; // the same among those of them that were plain
    uint32_t latest_site = 0;
    uint32_t second_site = 0;
    uint16_t latest_thread = 0;
    uint16_t second_thread = 0;
    uint8_t latest_bytes = 0;      // bytes of the granule latest_thread touched
    uint8_t second_bytes = 0;
    uint8_t older_bytes = 0;       // union of the bytes members no longer kept touched
    uint8_t bytes = 0;             // union of all
    bool has_second = false;       // at least two threads of first's block
    bool more = false;             // more than two: older_* describe the others
    bool several_blocks = false;   // members in more than one block (global memory)
    bool plain = false;            // some member was not atomic
    bool latest_plain = false;     // latest_thread's accesses were not all atomic
    bool second_plain = false;
    bool older_plain = false;
    uint8_t carried_bytes = 0;     // bytes first's block touched in earlier barrier epochs of this grid epoch:
    uint8_t carried_plain = 0;     // not ordered for other blocks (and those a plain member touched);
    uint16_t carried_thread = 0;   // the first of those members, for a report
    uint32_t carried_site = 0;
    uint32_t span = 0;             // cooperative launches, members in several blocks: their per-block summary
                                   // (hazards.cpp's spans, index plus 1; 0: none)
};

/** A granule's last plain write, the atomic writes and the reads since. */
struct WordShadow {
    Access write;
    AccessSet atomics;
    AccessSet reads;
    bool pending = false;      // `write` is a cp.async its thread has not waited for yet
};

/** Frees a shadow made with calloc (zero bytes are the empty state, and untouched pages cost nothing). */
struct ShadowFree {
    void operator()(WordShadow* p) const { std::free(p); }
};

struct Allocation {
    unsigned char* base;     // what we free
    unsigned char* payload;  // what the caller gets: guard zones before and after
    size_t bytes;            // what the caller asked for
    std::unique_ptr<WordShadow, ShadowFree> shadow;  // per 2-byte granule, made at the first checked access
    size_t shadow_bytes = 0;
};

/** The allocation whose payload contains [p, p+bytes), or null. */
Allocation* find(uintptr_t p, size_t bytes);

// ---------------------------------------------------------------- fibers and blocks

constexpr size_t kStackBytes = 256 * 1024;  // each fiber's stack

enum class State { Runnable, AtBarrier, AtWarp, AtGrid, AtFlag, Done };

struct PendingCopy {
    void* dst;
    const void* src;
    unsigned bytes;
    unsigned src_bytes;  // read from src; the rest of the bytes are zeros (cp.async's src-size)
    bool landed;       // copied already (the "land at issue" schedule); the wait only ends its hazard window
    const void* site;  // the cp.async in kernel code
};

struct Fiber {
    void* sp = nullptr;  // its saved stack pointer while switched out (see switch_stack in runtime.cpp)
    ThreadContext coords;
    State state = State::Runnable;
    unsigned warp_mask = 0;   // mask of the collective it waits in (or last waited in)
    Site collective_site{nullptr, 0};  // where that collective is called
    Site wait_site{nullptr, 0};  // where it waits: the __syncthreads, collective or grid sync in the source
    // The collective it waits in: its value (on its own stack), where every lane's value goes, and
    // whether it is a __syncwarp (the only collective that orders memory between lanes).
    const void* exchange_value = nullptr;
    void* exchange_out = nullptr;
    unsigned exchange_bytes = 0;
    bool orders_memory = false;
    unsigned char* stack = nullptr;
    std::vector<PendingCopy> copies;       // cp.async issued and not yet waited for
    std::vector<size_t> group_ends;        // committed groups: end index into copies
    // A flag wait (AtFlag): the word, and the value it waits for it to reach.
    const uint32_t* flag = nullptr;
    uint32_t flag_target = 0;
    // What this thread's completed flag acquires made visible: per block, the barrier epoch below
    // which that block's accesses are ordered before this thread. Joined into the block's `known`
    // when its next __syncthreads opens (the barrier after the wait is what orders the other threads).
    std::vector<uint32_t> acquired;
};

class GridBoard;

struct Block {
    std::vector<Fiber> fibers;
    void* scheduler_sp = nullptr;  // the scheduler's saved stack pointer while a fiber runs
    unsigned barrier_waiting = 0;
    bool barrier_or = false;       // __syncthreads_or: the predicates posted to the open barrier
    bool barrier_or_result = false;  // ... and their OR when it was released, read by each thread as it resumes
    unsigned grid_waiting = 0;
    unsigned flag_waiting = 0;
    GridBoard* grid = nullptr;    // set for cooperative launches: the grid barrier and the flags
    unsigned done = 0;
    std::string fault;            // set by a fiber that hit a kernel error
    // What an exception that escaped a fiber said, copied without allocating (the exception may be
    // bad_alloc); the scheduler turns it into the launch's error. Empty when none escaped.
    char escaped[160] = {};
    Kernel* kernel = nullptr;
    void** args = nullptr;
    uint3 index{0, 0, 0};
    uint32_t linear = 0;          // linear block index in the grid

    // Shared memory: one arena per block, [dynamic | red zone | static arrays with gaps | guard];
    // the red zone and the gaps belong to no array, so an overrun of one part into the next is caught.
    std::vector<unsigned char> smem;
    size_t smem_bytes = 0;        // dynamic shared memory
    size_t static_base = 0;       // where the static arrays start
    size_t static_used = 0;       // bytes of static arrays handed out (in this block)
    std::vector<std::pair<const void*, size_t>> static_sites;  // SEQK_SHARED_ARRAY site -> offset
    std::vector<std::pair<size_t, size_t>> static_arrays;      // [offset, offset + bytes) handed out

    // Checking: barrier and warp-sync counts, the shadow of the arena's words.
    uint32_t serial = 0;          // unique per block run: the owner of its shared shadow entries
    uint32_t epoch = 0;           // __syncthreads opened so far
    uint32_t grid_epoch = 0;      // grid syncs passed so far
    // Cooperative launches: per block q, the barrier epoch of q below which q's accesses are ordered
    // before this block's threads by flag releases and acquires (vector clock; empty otherwise).
    std::vector<uint32_t> known;
    std::vector<uint32_t> warp_syncs;  // per warp: __syncwarps completed (the stamp of an access)
    std::vector<uint32_t> warp_full;   // per warp: the stamp after its last __syncwarp naming every lane
    std::vector<uint32_t> pair_sync;   // [warp][lane][lane]: the stamp after the last __syncwarp naming both
                                       // (made at the first partial-mask __syncwarp)
    std::vector<WordShadow> shadow;    // per granule of the arena's dynamic part and handed-out static arrays
};

/** The fiber and block running on this OS thread (null outside a launch). */
extern SEQK_EMU_HOT_TLS Fiber* t_fiber;
extern SEQK_EMU_HOT_TLS Block* t_block;

/** Ends the running fiber's launch with `what` (from kernel code: never returns). */
[[noreturn]] void fault(const std::string& what);

/** "kernel K block (x,y,z) thread (a,b,c)" for the running fiber, or another thread of its block. */
std::string where(const Block& b, unsigned thread);

/** A code address as "file:line in function" when the debug info says, else "function+0xoffset". */
std::string site_name(const void* site);
/** A source site as "file:line". */
std::string site_name(Site site);
bool same_site(Site a, Site b);

// ---------------------------------------------------------------- hazards.cpp, called by the runtime

/** Whether the checks run (seqk_emu_set_checking): guards, shadow state, collectives, resources. */
extern int g_checking;
/**
 * Whether the checks include races (seqk_emu_set_race_checks): the shadow state of shared and
 * global memory, cp.async's pending copies and the flag barrier's clocks. Off, the other checks
 * (guards, bounds, alignment, collectives, resources) still run when g_checking is on.
 */
extern int g_race_checks;

/** A new launch starts: its serial, and the parameter bytes kernels may read. */
void hazards_begin_launch(void** args, const Kernel& k);
/** A device allocation is freed: its shadow goes too. */
void hazards_forget(Allocation& al);
/** A block starts: its shadow entries of the previous block are void (new serial). */
void hazards_begin_block(Block& b);
/** The arena's first `bytes` are in use (a static array was handed out): the shadow covers them. */
void hazards_cover(Block& b, size_t bytes);
/** cp.async of `bytes` from `src` (global) to `dst` (shared) issued by the running fiber at `site`. */
void hazards_cp_async_issue(void* dst, const void* src, unsigned bytes, unsigned src_bytes, const void* site);
/** The running fiber's cp.async copies up to `count` have been waited for: their hazard windows end. */
void hazards_cp_async_waited(Fiber& f, size_t count);
/**
 * Takes `bytes` of the checker's memory budget (its shadows, spans and flag clocks together stay
 * within half of the machine's memory); false, taking nothing, when they do not fit.
 */
bool hazards_reserve(size_t bytes);
/** Gives back what hazards_reserve took. */
void hazards_unreserve(size_t bytes);
/** A __syncwarp named `mask` in the warp at warp_base completed: orders the named lanes' accesses before and after. */
void hazards_syncwarp(Block& b, size_t warp_base, unsigned mask);

}  // namespace seqk_emu
