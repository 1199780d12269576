// The SIMT emulator's runtime: runs kernels compiled from cuda/*.cu by g++, with checks a GPU
// does not make.
//
// Execution: blocks run one after another on the calling OS thread (in index order, or reversed or
// in a seeded permutation under those schedules); inside a block every thread
// is a fiber with its own stack. A fiber runs until it reaches __syncthreads, a warp
// collective, or its end; the scheduler then runs the next, in the order of the schedule chosen
// (seqk_emu_set_schedule: round-robin, reverse, seeded random, or one warp running ahead until it
// blocks). A barrier opens when every live thread of the block waits at it; a warp collective
// completes when every lane named in its mask has arrived. If nothing can run and nothing can
// open, that is a deadlock, reported with who waits where (a __syncthreads that some threads never
// reach, a shuffle naming an exited lane).
//
// Cooperative launches (grid-wide sync) run every block at once, each on its own OS thread with
// its own fibers, meeting at a real grid barrier; a block that ends while others wait there is
// reported. cp.async copies are queued per thread and land at cp_async_wait (or at issue, by
// schedule); the checker reports any access to a destination before its wait.
//
// Checking (on by default): device allocations and each block's shared memory are filled with a
// NaN pattern and bracketed by guard zones holding the same pattern, compared after every fiber
// switch; every load and store of kernel code is checked by hazards.cpp (bounds, alignment,
// races); lanes meeting at a collective must agree on mask and call site, and a block's threads
// must meet at a __syncthreads from one site. Launch shapes are checked against sm_90 limits.
#include "runtime_internal.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <mutex>
#include <random>
#include <thread>

#include "emu/arch/mma.h"
#include "seqk_emu.h"

namespace seqk_emu {

SEQK_EMU_HOT_TLS ThreadContext* current = nullptr;
SEQK_EMU_HOT_TLS Fiber* t_fiber = nullptr;
SEQK_EMU_HOT_TLS Block* t_block = nullptr;

std::string format(const char* fmt, ...) {
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return buf;
}

namespace {

// ---------------------------------------------------------------- kernel registry

std::map<std::string, Kernel>& registry() {
    static std::map<std::string, Kernel> kernels;
    return kernels;
}

// ---------------------------------------------------------------- memory with guards

constexpr uint64_t kPoison = 0x7FF17FE27FD37FC4ull;  // NaN as f64, as both f32 halves, as every f16/bf16 quarter
constexpr size_t kGuard = 64;
constexpr size_t kRedZone = 16 * 1024;  // between dynamic shared memory and the static arrays: belongs to no array
constexpr size_t kAlign = 256;
constexpr size_t kStaticSharedLimit = 48 * 1024;  // static shared memory per block, as CUDA allows
constexpr size_t kArrayGap = 64;                   // between static arrays: belongs to none
constexpr size_t kStaticRegion = 2 * kStaticSharedLimit;  // room for the arrays and the gaps

/** The poison byte for an address: the pattern is laid by absolute address, so any sub-range checks alike. */
unsigned char poison_byte(const unsigned char* at) {
    return static_cast<unsigned char>(kPoison >> (8 * (reinterpret_cast<uintptr_t>(at) % 8)));
}

void poison(void* p, size_t bytes) {
    auto* b = static_cast<unsigned char*>(p);
    size_t i = 0;
    for (; i < bytes && (reinterpret_cast<uintptr_t>(b + i) % 8) != 0; i++) {
        b[i] = poison_byte(b + i);
    }
    for (; i + 8 <= bytes; i += 8) {  // the pattern is 8-byte periodic by address
        std::memcpy(b + i, &kPoison, 8);
    }
    for (; i < bytes; i++) {
        b[i] = poison_byte(b + i);
    }
}

/**
 * Offset of the first byte that differs from the poison pattern, or -1. Checked after every fiber
 * switch for every allocation's guards, so aligned words are compared whole (the pattern is
 * kPoison at every 8-byte-aligned address); bytes only up to the first aligned word, in the tail,
 * and within a word that differs.
 */
long first_changed(const void* p, size_t bytes) {
    auto* b = static_cast<const unsigned char*>(p);
    size_t i = 0;
    for (; i < bytes && (reinterpret_cast<uintptr_t>(b + i) % 8) != 0; i++) {
        if (b[i] != poison_byte(b + i)) {
            return static_cast<long>(i);
        }
    }
    for (; i + 8 <= bytes; i += 8) {
        uint64_t word;
        std::memcpy(&word, b + i, 8);
        if (word != kPoison) {
            break;
        }
    }
    for (; i < bytes; i++) {
        if (b[i] != poison_byte(b + i)) {
            return static_cast<long>(i);
        }
    }
    return -1;
}

std::map<uintptr_t, Allocation>& allocations() {  // keyed by payload address
    static std::map<uintptr_t, Allocation> m;
    return m;
}

uint64_t g_in_use = 0;  // bytes allocated and not freed
uint64_t g_peak = 0;    // the most g_in_use has been since the last reset

/** Describes damage to the guard after a block's shared-memory arena, or returns empty. */
std::string check_shared_guard(const Block& b) {
    if (b.smem.empty()) {
        return {};
    }
    size_t end = b.smem.size() - kGuard;
    long e = first_changed(b.smem.data() + end, kGuard);
    if (e >= 0) {
        return format("wrote past the end of shared memory (%zu bytes dynamic, %zu static), at arena offset %zu", b.smem_bytes,
                      b.static_used, end + e);
    }
    return {};
}

/** Describes a damaged guard zone of a device allocation (or of the block's arena, when given), or returns empty. */
std::string check_guards(const Block* b) {
    for (auto& [payload, a] : allocations()) {
        auto* front = reinterpret_cast<unsigned char*>(payload) - kGuard;
        long f = first_changed(front, kGuard);
        if (f >= 0) {
            return format("wrote %ld bytes before the start of device allocation 0x%lx (%zu bytes)",
                          static_cast<long>(kGuard) - f, static_cast<unsigned long>(payload), a.bytes);
        }
        long e = first_changed(reinterpret_cast<unsigned char*>(payload) + a.bytes, kGuard);
        if (e >= 0) {
            return format("wrote past the end of device allocation 0x%lx (%zu bytes), at byte offset %zu",
                          static_cast<unsigned long>(payload), a.bytes, a.bytes + e);
        }
    }
    return b != nullptr ? check_shared_guard(*b) : std::string();
}

// ---------------------------------------------------------------- fibers and the block scheduler

struct Schedule {
    int mode = SEQK_EMU_SCHEDULE_ROUND_ROBIN;
    uint64_t seed = 0;
    bool land_at_issue = false;  // cp.async copies land when issued (else when waited for)
} g_schedule;

/** A cp.async's effect: its source bytes, then zeros up to its size. */
void land(const PendingCopy& c) {
    std::memcpy(c.dst, c.src, c.src_bytes);
    std::memset(static_cast<unsigned char*>(c.dst) + c.src_bytes, 0, c.bytes - c.src_bytes);
}

void perform_copies(Fiber& f, size_t count) {
    hazards_cp_async_waited(f, count);
    for (size_t i = 0; i < count; i++) {
        if (!f.copies[i].landed) {
            land(f.copies[i]);
        }
    }
    f.copies.erase(f.copies.begin(), f.copies.begin() + static_cast<long>(count));
    for (size_t& end : f.group_ends) {
        end -= count;
    }
}

/** Fiber stacks, mapped once per OS thread that runs blocks and reused by every block it runs. */
struct StackPool {
    std::vector<unsigned char*> stacks;
    unsigned char* get(size_t i) {
        while (stacks.size() <= i) {
            void* s = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (s == MAP_FAILED) {
                throw EmuError("could not map a fiber stack");
            }
            stacks.push_back(static_cast<unsigned char*>(s));
        }
        return stacks[i];
    }
    ~StackPool() {
        for (unsigned char* s : stacks) {
            munmap(s, kStackBytes);
        }
    }
};

}  // namespace

namespace {

/** Joins clock `from` into `into` (entry-wise maximum; `into` grows to from's size). */
void join_clock(std::vector<uint32_t>& into, const std::vector<uint32_t>& from) {
    if (into.size() < from.size()) {
        into.resize(from.size(), 0);
    }
    for (size_t q = 0; q < from.size(); q++) {
        into[q] = std::max(into[q], from[q]);
    }
}

}  // namespace

/**
 * Where the blocks of a cooperative launch meet, each block on its own OS thread: the grid barrier,
 * and the flags (flag_release_add and flag_wait_geq: PTX's red.release.gpu.global.add and a spin
 * on ld.acquire.gpu). A block whose live threads all wait, some at a flag that does not yet hold
 * its target, sleeps here until a release. When every block sleeps, waits at the grid barrier or
 * has ended, nothing can wake them: that is a deadlock, reported with each flag and its target.
 *
 * Ordering (for the hazard checker, while checking is on): a release records the releaser's
 * knowledge, a vector clock (per block q, the barrier epoch of q below which q's accesses are
 * ordered before the release: the releasing block's own epoch, what its block knew, and what the
 * releasing thread acquired). An acquire joins the knowledge of the releases up to the first that
 * made the word reach the target (none if it held the target before any): the first value that
 * ends the spin, which the PTX memory model lets a GPU's spin return whenever the waiter was not
 * already ordered after a later release. So a wait whose target is too low orders too little, and
 * the checker reports what it leaves unordered, however the OS threads happen to interleave. The
 * history costs one clock (4 bytes a block) per release, counted in the checker's memory budget.
 * A flag's word must change only by flag_release_add during the launch: a plain store to it is
 * reported at the next release (a sleeper whose word reached its target some other way is still
 * woken, and ordered by nothing). With checking off no history is kept.
 */
class GridBoard {
public:
    explicit GridBoard(unsigned blocks) : blocks_(blocks) {}

    /** A block's threads all reached grid_sync: wait for every other block. */
    void arrive(const std::string& who) {
        std::unique_lock<std::mutex> lock(mutex_);
        uint64_t gen = grid_generation_;
        arrived_++;
        settle();
        cv_.wait(lock, [&] { return grid_generation_ != gen || !failure_.empty(); });
        if (!failure_.empty()) {
            throw EmuError(who + ": " + failure_);
        }
    }

    /** A block ended (all threads done, or an error): it will never arrive or release again. */
    void leave(const std::string& error) {
        std::lock_guard<std::mutex> lock(mutex_);
        finished_++;
        if (!error.empty() && failure_.empty()) {
            failure_ = "another block failed: " + error;
        }
        settle();
    }

    ~GridBoard() { hazards_unreserve(clock_bytes_); }

    /**
     * red.release.gpu.global.add: *word += value, the releaser's knowledge `clock` recorded (while
     * checking: empty otherwise). Returns Release::kDone; kNoMemory, adding nothing, when the
     * checker's memory budget has no room for the clock; kChangedElsewhere, adding nothing, when
     * the word no longer holds what the last release left (a plain store to it: the history, and
     * the bisection in acquire, would be wrong).
     */
    int release_add(uint32_t* word, uint32_t value, const std::vector<uint32_t>& clock) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!clock.empty()) {
            if (!hazards_reserve(blocks_ * sizeof(uint32_t))) {
                return Release::kNoMemory;
            }
            clock_bytes_ += blocks_ * sizeof(uint32_t);
        }
        auto [it, first] = flags_.try_emplace(word);
        if (first) {
            it->second.initial = *word;
        }
        std::vector<Release>& history = it->second.releases;
        if (*word != (history.empty() ? it->second.initial : history.back().value)) {
            return Release::kChangedElsewhere;
        }
        *word += value;
        if (clock.empty()) {  // checking off: no ordering to record, and no history to keep
            it->second.initial = *word;
            flag_generation_++;
            cv_.notify_all();
            return Release::kDone;
        }
        Release r{*word, history.empty() ? std::vector<uint32_t>() : history.back().clock};
        join_clock(r.clock, clock);
        history.push_back(std::move(r));
        flag_generation_++;
        cv_.notify_all();
        return Release::kDone;
    }

    /**
     * Block b can run nothing but has threads waiting at flags: makes runnable each whose flag
     * holds its target (its acquire joined into Fiber::acquired), sleeping until the next release
     * while none does. Throws on a deadlock, or when another block failed.
     */
    void wait_flags(Block& b, const std::string& who) {
        std::unique_lock<std::mutex> lock(mutex_);
        for (;;) {
            if (!failure_.empty()) {
                throw EmuError(who + ": " + failure_);
            }
            bool woke = false;
            for (Fiber& f : b.fibers) {
                if (f.state == State::AtFlag && reached(*f.flag, f.flag_target)) {
                    acquire(f);
                    f.state = State::Runnable;
                    b.flag_waiting--;
                    woke = true;
                }
            }
            if (woke) {
                return;
            }
            uint64_t gen = flag_generation_;
            Sleeper& me = sleepers_[b.linear];
            me.generation = gen;
            me.waits = describe_flag_waits(b, who);
            me.flags.clear();
            for (const Fiber& f : b.fibers) {
                if (f.state == State::AtFlag) {
                    me.flags.emplace_back(f.flag, f.flag_target);
                }
            }
            settle();
            cv_.wait(lock, [&] {
                return flag_generation_ != gen || !failure_.empty() ||
                       std::any_of(me.flags.begin(), me.flags.end(), [&](const auto& w) { return reached(*w.first, w.second); });
            });
            sleepers_.erase(b.linear);
        }
    }

private:
public:
    struct Release {
        enum Outcome { kDone, kNoMemory, kChangedElsewhere };
        uint32_t value;               // the word after this release
        std::vector<uint32_t> clock;  // the knowledge of this release and every earlier one of the word
    };

private:

    unsigned blocks_;
    std::mutex mutex_;
    std::condition_variable cv_;
    unsigned arrived_ = 0;
    unsigned finished_ = 0;
    uint64_t grid_generation_ = 0;
    uint64_t flag_generation_ = 0;
    struct Flag {
        uint32_t initial = 0;           // the word before the launch's first release
        std::vector<Release> releases;
    };
    std::map<const uint32_t*, Flag> flags_;
    struct Sleeper {
        uint64_t generation = 0;  // the releases made when it found no wait satisfied
        std::string waits;        // what its threads wait for, then
        std::vector<std::pair<const uint32_t*, uint32_t>> flags;  // each wait's word and target
    };
    std::map<uint32_t, Sleeper> sleepers_;  // by block
    std::string failure_;
    size_t clock_bytes_ = 0;  // the release history's clocks, reserved in the checker's budget

    /** cuda/arch/flag.cuh's detail::reached: the signed 32-bit difference, so counters may wrap. */
    static bool reached(uint32_t value, uint32_t target) { return static_cast<int32_t>(value - target) >= 0; }

    void acquire(Fiber& f) {
        auto it = flags_.find(f.flag);
        if (it == flags_.end()) {
            return;  // the word held the target before any release of this launch: nothing to order
        }
        // A word only grows (modulo 2^32, compared wrap-safe as on the GPU), so the first release
        // reaching the target is found by bisection; none is needed if the word held it already.
        const Flag& flag = it->second;
        size_t reaching = 0;
        if (!reached(flag.initial, f.flag_target)) {
            reaching = static_cast<size_t>(std::partition_point(flag.releases.begin(), flag.releases.end(),
                                                                [&](const Release& r) { return !reached(r.value, f.flag_target); }) -
                                           flag.releases.begin()) + 1;
        }
        const std::vector<Release>& history = flag.releases;
        if (reaching > 0 && reaching <= history.size()) {  // past the end: the word reached it some other way
            join_clock(f.acquired, history[reaching - 1].clock);
        }
    }

    std::string describe_flag_waits(const Block& b, const std::string& who) const {
        std::string s;
        for (const Fiber& f : b.fibers) {
            if (f.state == State::AtFlag) {
                s += format("%s%s thread %u waits at %s for the flag at %p to reach %u (it holds %u)", s.empty() ? "" : "; ",
                            who.c_str(), f.coords.linear, site_name(f.wait_site).c_str(), static_cast<const void*>(f.flag),
                            f.flag_target, *f.flag);
            }
        }
        return s;
    }

    void settle() {
        unsigned sleeping = static_cast<unsigned>(sleepers_.size());
        // A sleeper that a release since has woken, and that has not run yet, may be able to go on;
        // so may one whose word reached its target without a release (its wait sees that itself).
        bool all_stuck = std::all_of(sleepers_.begin(), sleepers_.end(), [&](const auto& e) {
            return e.second.generation == flag_generation_ &&
                   std::none_of(e.second.flags.begin(), e.second.flags.end(),
                                [&](const auto& w) { return reached(*w.first, w.second); });
        });
        if (arrived_ > 0 && arrived_ + finished_ == blocks_) {
            if (finished_ > 0 && failure_.empty()) {
                failure_ = "grid sync reached by " + std::to_string(arrived_) + " of " + std::to_string(blocks_) +
                           " blocks; the others ended without reaching it";
            } else if (failure_.empty()) {
                arrived_ = 0;
                grid_generation_++;
            }
        } else if (sleeping > 0 && all_stuck && arrived_ + sleeping + finished_ == blocks_ && failure_.empty()) {
            failure_ = format("deadlock: no block can run (%u wait at flags, %u at the grid sync, %u ended): ", sleeping,
                              arrived_, finished_);
            unsigned named = 0;
            for (const auto& [block, sleeper] : sleepers_) {
                if (named++ == 3) {
                    failure_ += "; ...";
                    break;
                }
                failure_ += (named > 1 ? "; " : "") + sleeper.waits;
            }
        }
        cv_.notify_all();
    }
};

namespace {

// Fiber switches: a few instructions and no system call. glibc's swapcontext saved and restored
// the signal mask with a system call on every switch, about 18% of an attention test's time.
// switch_stack(save, next) pushes the callee-saved registers and the SSE and x87 control words on
// the running stack, stores the stack pointer in *save, loads next (a stack switch_stack saved,
// or one start_stack prepared) and pops the same frame from it; the caller-saved registers are the
// compiler's to save around the call, as for any call. x86-64 System V only, as the library is.
#if !defined(__x86_64__)
#error "the emulator's fiber switch is written for x86-64"
#endif
extern "C" void seqk_emu_switch_stack(void** save, void* next);
asm(R"(
    .text
    .p2align 4
    .globl seqk_emu_switch_stack
    .hidden seqk_emu_switch_stack
    .type seqk_emu_switch_stack, @function
seqk_emu_switch_stack:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size seqk_emu_switch_stack, .-seqk_emu_switch_stack
)");

void fiber_main();

/**
 * The stack pointer that starts a fiber on `stack` at fiber_main: the frame switch_stack pops
 * (the launching thread's SSE and x87 control words, zeroed callee-saved registers, fiber_main as
 * the return address) at the top, placed so that fiber_main starts with the stack aligned as after
 * a call. fiber_main never returns (a finished fiber is never switched to again).
 */
void* start_stack(unsigned char* stack) {
    uint64_t* top = reinterpret_cast<uint64_t*>(stack + kStackBytes);  // 16-byte aligned (page-aligned mapping)
    uint64_t* sp = top - 9;
    uint32_t mxcsr;
    uint16_t x87;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(x87));
    sp[0] = mxcsr | static_cast<uint64_t>(x87) << 32;
    for (int r = 1; r <= 6; r++) {
        sp[r] = 0;  // r15, r14, r13, r12, rbx, rbp
    }
    sp[7] = reinterpret_cast<uint64_t>(&fiber_main);  // after its ret: sp = top - 1, as after a call
    sp[8] = 0;  // where fiber_main's return address would be: none
    return sp;
}

void yield_to_scheduler() {
    seqk_emu_switch_stack(&t_fiber->sp, t_block->scheduler_sp);
}

void fiber_main() {
    Block* b = t_block;
    // An exception (bad_alloc, say) has no frame above this one to unwind into. Its message is
    // copied into the block without allocating, and the thread ends as a fault does: the scheduler
    // reports it (run_fiber), where allocation is safe again.
    bool threw = true;
    try {
        b->kernel->trampoline(b->kernel->fn, b->args);
        threw = false;
    } catch (const std::exception& e) {
        std::snprintf(b->escaped, sizeof b->escaped, "%s", e.what());
    } catch (...) {
        std::snprintf(b->escaped, sizeof b->escaped, "%s", "not a std::exception");
    }
    if (threw) {  // outside the handler: the switch away never returns
        t_fiber->state = State::Done;
        b->done++;
        yield_to_scheduler();
        __builtin_unreachable();
    }
    perform_copies(*t_fiber, t_fiber->copies.size());  // a thread's async copies complete before it is done
    t_fiber->state = State::Done;
    b->done++;
    yield_to_scheduler();
}

/**
 * Whether the collective lane i waits in can complete: every lane its mask names waits in one at
 * the same source line with the same mask. A named lane that waits elsewhere, or still runs, may
 * yet come (a helper called under different masks meets at one line in turn). While checking,
 * two lanes that name each other but wait at different lines or with different masks, and a
 * named lane that exited, are errors; otherwise a collective that can never complete ends as a
 * reported deadlock.
 */
bool collective_ready(const Block& b, size_t i) {
    const Fiber& f = b.fibers[i];
    size_t n = b.fibers.size();
    size_t warp_base = i & ~size_t(31);
    unsigned me = static_cast<unsigned>(i - warp_base);
    bool ready = true;
    for (unsigned lane = 0; lane < 32; lane++) {
        if (!(f.warp_mask >> lane & 1u) || warp_base + lane == i) {
            continue;
        }
        size_t j = warp_base + lane;
        if (j >= n) {
            throw EmuError(where(b, static_cast<unsigned>(i)) + ": a warp collective names lane " + std::to_string(lane) +
                           ", which does not exist (the block has " + std::to_string(n) + " threads)");
        }
        const Fiber& other = b.fibers[j];
        bool here = same_site(other.collective_site, f.collective_site);
        if (other.state == State::AtWarp) {
            if (here && other.warp_mask == f.warp_mask) {
                continue;
            }
            if (g_checking && (other.warp_mask >> me & 1u)) {
                throw EmuError(where(b, static_cast<unsigned>(j)) +
                               (here ? format(": lanes meet at a warp collective with different masks (0x%08x here, 0x%08x "
                                              "at lane %u)",
                                              other.warp_mask, f.warp_mask, me)
                                     : ": lanes of one warp meet at a collective from different sites: " +
                                           site_name(other.collective_site) + " and " + site_name(f.collective_site) +
                                           " (lane " + std::to_string(me) + ")"));
            }
        } else if (other.state == State::Done && g_checking) {
            std::string last;
            if (other.collective_site.file != nullptr) {
                last = format("; its last collective was at %s with mask 0x%08x", site_name(other.collective_site).c_str(),
                              other.warp_mask);
                if (here && other.warp_mask != f.warp_mask) {
                    last += " (lanes meeting at one line with different masks)";
                }
            }
            throw EmuError(where(b, static_cast<unsigned>(i)) + format(": a warp collective at %s with mask 0x%08x names "
                                                                        "lane %u, which exited without reaching it",
                                                                        site_name(f.collective_site).c_str(), f.warp_mask,
                                                                        lane) +
                           last);
        }
        ready = false;
    }
    return ready;
}

/**
 * Completes warp collectives whose named lanes have all arrived: each named lane receives every
 * named lane's value (0 for the others) and runs again; a __syncwarp also orders memory between
 * them. Returns whether any completed.
 */
bool release_warps(Block& b) {
    bool released = false;
    size_t n = b.fibers.size();
    for (size_t i = 0; i < n; i++) {
        Fiber& f = b.fibers[i];
        if (f.state != State::AtWarp || !collective_ready(b, i)) {
            continue;
        }
        size_t warp_base = i & ~size_t(31);
        unsigned mask = f.warp_mask;
        unsigned bytes = f.exchange_bytes;
        for (unsigned lane = 0; lane < 32; lane++) {
            if (!(mask >> lane & 1u)) {
                continue;
            }
            Fiber& p = b.fibers[warp_base + lane];
            if (p.exchange_bytes != bytes) {
                throw EmuError(where(b, static_cast<unsigned>(warp_base + lane)) +
                               format(": lanes exchange %u and %u bytes at one warp collective", p.exchange_bytes, bytes));
            }
            auto* out = static_cast<unsigned char*>(p.exchange_out);
            for (unsigned l = 0; l < 32 && out != nullptr; l++) {
                if (mask >> l & 1u) {
                    std::memcpy(out + l * bytes, b.fibers[warp_base + l].exchange_value, bytes);
                } else {
                    std::memset(out + l * bytes, 0, bytes);
                }
            }
        }
        if (f.orders_memory) {
            hazards_syncwarp(b, warp_base, mask);
        }
        for (unsigned lane = 0; lane < 32; lane++) {
            if (mask >> lane & 1u) {
                b.fibers[warp_base + lane].state = State::Runnable;
            }
        }
        released = true;
    }
    return released;
}

std::string describe_waiters(const Block& b) {
    unsigned at_barrier = 0, at_warp = 0, at_grid = 0, at_flag = 0;
    int example = -1;
    for (const Fiber& f : b.fibers) {
        if (f.state == State::AtBarrier) {
            at_barrier++;
        } else if (f.state == State::AtWarp) {
            at_warp++;
            example = example >= 0 ? example : static_cast<int>(f.coords.linear);
        } else if (f.state == State::AtGrid) {
            at_grid++;
        } else if (f.state == State::AtFlag) {
            at_flag++;
        }
    }
    std::string s = format("%u threads wait at __syncthreads, %u in warp collectives, %u at grid sync, %u at flags, %u exited",
                           at_barrier, at_warp, at_grid, at_flag, b.done);
    if (example >= 0) {
        s += "; e.g. " + where(b, static_cast<unsigned>(example)) + " waits in a warp collective";
    }
    return s;
}

/** The order in which a scheduling pass visits the block's threads. */
void pass_order(const Block& b, std::vector<unsigned>& order, std::mt19937_64& rng) {
    unsigned n = static_cast<unsigned>(b.fibers.size());
    order.resize(n);
    for (unsigned i = 0; i < n; i++) {
        order[i] = i;
    }
    if (g_schedule.mode == SEQK_EMU_SCHEDULE_REVERSE) {
        std::reverse(order.begin(), order.end());
    } else if (g_schedule.mode == SEQK_EMU_SCHEDULE_RANDOM) {
        std::shuffle(order.begin(), order.end(), rng);
    }
}

/** Runs fiber i until it blocks; throws on a fault or a damaged guard. */
void run_fiber(Block& b, unsigned i) {
    Fiber& f = b.fibers[i];
    t_fiber = &f;
    current = &f.coords;
    seqk_emu_switch_stack(&b.scheduler_sp, f.sp);
    t_fiber = nullptr;
    if (b.escaped[0] != '\0') {
        throw EmuError(where(b, i) + ": an exception escaped the kernel's thread: " + b.escaped);
    }
    if (!b.fault.empty()) {
        throw EmuError(where(b, i) + ": " + b.fault);
    }
    if (g_checking && b.grid == nullptr) {  // cooperative blocks run concurrently: checked after the launch
        std::string damage = check_guards(&b);
        if (!damage.empty()) {
            throw EmuError(where(b, i) + ": " + damage);
        }
    }
}

/** A barrier opened: what its threads acquired at flags before it is now known to the whole block. */
void share_acquired(Block& b) {
    for (Fiber& f : b.fibers) {
        if (!f.acquired.empty()) {
            join_clock(b.known, f.acquired);
            f.acquired.clear();
        }
    }
}

void run_block(Block& b, dim3 grid, dim3 block, uint3 block_idx, uint32_t linear, StackPool& pool) {
    unsigned n = block.x * block.y * block.z;
    b.fibers.assign(n, Fiber{});
    b.barrier_waiting = 0;
    b.barrier_or = b.barrier_or_result = false;
    b.grid_waiting = 0;
    b.flag_waiting = 0;
    b.done = 0;
    b.fault.clear();
    b.escaped[0] = '\0';
    b.index = block_idx;
    b.linear = linear;
    b.static_used = 0;
    b.static_sites.clear();
    b.static_arrays.clear();
    poison(b.smem.data(), b.smem_bytes);  // static arrays are poisoned when handed out; any access to the red zone is reported
    poison(b.smem.data() + b.smem.size() - kGuard, kGuard);
    hazards_begin_block(b);
    b.known.assign(b.grid != nullptr ? static_cast<size_t>(grid.x) * grid.y * grid.z : 0, 0);
    for (unsigned i = 0; i < n; i++) {
        Fiber& f = b.fibers[i];
        f.coords.thread_idx = {i % block.x, (i / block.x) % block.y, i / (block.x * block.y)};
        f.coords.block_idx = block_idx;
        f.coords.block_dim = block;
        f.coords.grid_dim = grid;
        f.coords.linear = i;
        f.stack = pool.get(i);
        f.sp = start_stack(f.stack);
    }
    std::mt19937_64 rng(g_schedule.seed ^ (0x9e3779b97f4a7c15ull * (linear + 1)));
    std::vector<unsigned> order;
    while (b.done < n) {
        bool ran = false;
        if (g_schedule.mode == SEQK_EMU_SCHEDULE_WARP_AHEAD) {
            // One warp runs until every lane of it blocks, then the next: warps drift far apart.
            for (unsigned w = 0; w < (n + 31) / 32; w++) {
                for (bool again = true; again;) {
                    again = false;
                    for (unsigned i = w * 32; i < std::min(n, w * 32 + 32); i++) {
                        if (b.fibers[i].state == State::Runnable) {
                            run_fiber(b, i);
                            ran = again = true;
                        }
                    }
                    if (release_warps(b)) {
                        again = true;
                    }
                }
            }
        } else {
            pass_order(b, order, rng);
            for (unsigned i : order) {
                if (b.fibers[i].state == State::Runnable) {
                    run_fiber(b, i);
                    ran = true;
                }
            }
        }
        if (b.done == n) {
            break;
        }
        bool released = release_warps(b);
        if (b.barrier_waiting > 0 && b.barrier_waiting + b.done == n) {
            if (b.done > 0) {
                throw EmuError(format("kernel %s block (%u,%u,%u): __syncthreads reached by %u of %u threads; %u exited "
                                      "before it (a barrier inside divergent code)",
                                      b.kernel->name.c_str(), block_idx.x, block_idx.y, block_idx.z, b.barrier_waiting, n,
                                      b.done));
            }
            if (g_checking) {
                for (const Fiber& f : b.fibers) {
                    if (!same_site(f.wait_site, b.fibers[0].wait_site)) {
                        throw EmuError(where(b, f.coords.linear) + ": __syncthreads reached from two sites, " +
                                       site_name(f.wait_site) + " and " + site_name(b.fibers[0].wait_site) +
                                       " (thread 0): a barrier in divergent code");
                    }
                }
            }
            for (Fiber& f : b.fibers) {
                f.state = State::Runnable;
            }
            b.barrier_or_result = b.barrier_or;
            b.barrier_or = false;
            b.barrier_waiting = 0;
            b.epoch++;
            share_acquired(b);
            released = true;
        }
        if (b.grid_waiting > 0 && b.grid_waiting + b.done == n) {
            if (b.done > 0) {
                throw EmuError(format("kernel %s block (%u,%u,%u): grid sync reached by %u of %u threads; %u exited before it",
                                      b.kernel->name.c_str(), block_idx.x, block_idx.y, block_idx.z, b.grid_waiting, n,
                                      b.done));
            }
            b.grid->arrive(format("kernel %s block (%u,%u,%u)", b.kernel->name.c_str(), block_idx.x, block_idx.y,
                                  block_idx.z));
            for (Fiber& f : b.fibers) {
                f.state = State::Runnable;
            }
            b.grid_waiting = 0;
            b.grid_epoch++;
            b.epoch++;  // a grid sync orders the block's threads too
            share_acquired(b);
            released = true;
        }
        if (!ran && !released && b.flag_waiting > 0) {
            b.grid->wait_flags(b, format("kernel %s block (%u,%u,%u)", b.kernel->name.c_str(), block_idx.x, block_idx.y,
                                         block_idx.z));
            continue;
        }
        if (!ran && !released) {
            throw EmuError(format("kernel %s block (%u,%u,%u): deadlock: ", b.kernel->name.c_str(), block_idx.x, block_idx.y,
                                  block_idx.z) +
                           describe_waiters(b));
        }
    }
}

thread_local std::string t_last_error;

int fail(const std::string& message) {
    t_last_error = message;
    return 1;
}

/** An f32 rounded to TF32 the way the tensor-core wrappers round it (cvt.rna.tf32.f32). */
float round_tf32(float v) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    bits = seqk::arch::emu_detail::tf32_round(bits);
    std::memcpy(&v, &bits, 4);
    return v;
}

}  // namespace

Allocation* find(uintptr_t p, size_t bytes) {
    auto& m = allocations();
    auto it = m.upper_bound(p);
    if (it == m.begin()) {
        return nullptr;
    }
    --it;
    if (p >= it->first && p + bytes <= it->first + it->second.bytes && p + bytes >= p) {
        return &it->second;
    }
    return nullptr;
}

std::string where(const Block& b, unsigned thread) {
    const Fiber& f = b.fibers[thread];
    return format("kernel %s block (%u,%u,%u) thread (%u,%u,%u)", b.kernel->name.c_str(), b.index.x, b.index.y, b.index.z,
                  f.coords.thread_idx.x, f.coords.thread_idx.y, f.coords.thread_idx.z);
}

void fault(const std::string& what) {
    t_block->fault = what;
    t_fiber->state = State::Done;
    t_block->done++;
    yield_to_scheduler();
    __builtin_unreachable();
}

// ---------------------------------------------------------------- device-side entry points

Registrar::Registrar(const char* name, void* fn, Trampoline trampoline, int arg_count, const ParamInfo* params) {
    registry()[name] = Kernel{name, fn, trampoline, arg_count, params};
}

void syncthreads(Site site) {
    t_fiber->wait_site = site;
    t_fiber->state = State::AtBarrier;
    t_block->barrier_waiting++;
    yield_to_scheduler();
}

int syncthreads_or(int predicate, Site site) {
    t_block->barrier_or = t_block->barrier_or || predicate != 0;
    syncthreads(site);
    return t_block->barrier_or_result ? 1 : 0;
}

void thread_fence() {
    std::atomic_thread_fence(std::memory_order_seq_cst);
}

unsigned lane_id() {
    return t_fiber->coords.linear & 31u;
}

uint3 thread_idx() {
    return t_fiber->coords.thread_idx;
}

uint3 block_idx() {
    return t_fiber->coords.block_idx;
}

dim3 block_dim() {
    return t_fiber->coords.block_dim;
}

dim3 grid_dim() {
    return t_fiber->coords.grid_dim;
}

namespace {

/** The warp rendezvous behind every collective; `site` is the kernel's call site. */
void exchange(unsigned mask, const void* value, unsigned bytes, void* all, Site site, bool orders_memory) {
    unsigned lane = lane_id();
    if (!(mask >> lane & 1u)) {
        kernel_error("a warp collective's mask does not include the calling lane");
    }
    if (bytes > kWideBytes) {
        kernel_error("a warp collective exchanges more than 64 bytes per lane");
    }
    Fiber& f = *t_fiber;
    f.warp_mask = mask;
    f.wait_site = site;
    f.collective_site = site;
    f.exchange_value = value;  // read by the scheduler while this fiber waits: its stack stays put
    f.exchange_out = all;
    f.exchange_bytes = bytes;
    f.orders_memory = orders_memory;
    f.state = State::AtWarp;
    yield_to_scheduler();
}

}  // namespace

void warp_exchange_wide(unsigned mask, const void* value, unsigned bytes, void* all, Site site) {
    exchange(mask, value, bytes, all, site, false);
}

void warp_exchange(unsigned mask, uint64_t value, uint64_t out[32], Site site) {
    exchange(mask, &value, sizeof value, out, site, false);
}

void syncwarp(unsigned mask, Site site) {
    exchange(mask, nullptr, 0, nullptr, site, true);
}

void cp_async(void* shared_dst, const void* global_src, unsigned bytes, unsigned src_bytes) {
    if (reinterpret_cast<uintptr_t>(shared_dst) % bytes != 0 || reinterpret_cast<uintptr_t>(global_src) % bytes != 0) {
        kernel_error("cp.async addresses must be aligned to the copy size");
    }
    if (src_bytes > bytes) {
        kernel_error("cp.async's source size exceeds its copy size");
    }
    const void* site = __builtin_return_address(0);
    hazards_cp_async_issue(shared_dst, global_src, bytes, src_bytes, site);
    PendingCopy copy{shared_dst, global_src, bytes, src_bytes, g_schedule.land_at_issue, site};
    if (copy.landed) {
        land(copy);
    }
    t_fiber->copies.push_back(copy);
}

void cp_async_commit() {
    t_fiber->group_ends.push_back(t_fiber->copies.size());
}

void cp_async_wait(int pending_groups_allowed) {
    Fiber& f = *t_fiber;
    size_t groups = f.group_ends.size();
    size_t keep = static_cast<size_t>(std::max(0, pending_groups_allowed));
    if (groups > keep) {
        size_t complete = groups - keep;
        perform_copies(f, f.group_ends[complete - 1]);
        f.group_ends.erase(f.group_ends.begin(), f.group_ends.begin() + static_cast<long>(complete));
    }
}

void grid_sync(Site site) {
    if (t_block->grid == nullptr) {
        kernel_error("grid sync outside a cooperative launch");
    }
    t_fiber->wait_site = site;
    t_fiber->state = State::AtGrid;
    t_block->grid_waiting++;
    yield_to_scheduler();
}

namespace {

/** A flag's word must be 4 bytes of one device allocation, 4-byte aligned, in a cooperative launch. */
void check_flag(const uint32_t* word, const char* op) {
    if (t_block->grid == nullptr) {
        fault(format("%s outside a cooperative launch (flags order the co-resident blocks of one only)", op));
    }
    if (reinterpret_cast<uintptr_t>(word) % 4 != 0 || find(reinterpret_cast<uintptr_t>(word), 4) == nullptr) {
        fault(format("%s at %p: not 4 aligned bytes of one device allocation", op, static_cast<const void*>(word)));
    }
}

}  // namespace

void flag_release_add(uint32_t* word, uint32_t value) {
    check_flag(word, "a flag release");
    Block& b = *t_block;
    std::vector<uint32_t> clock;
    if (g_checking && g_race_checks) {
        clock = b.known;
        join_clock(clock, t_fiber->acquired);
        clock[b.linear] = b.epoch;  // the block's accesses before its last barrier; this thread's since, conservatively not
    }
    int outcome = b.grid->release_add(word, value, clock);
    if (outcome == GridBoard::Release::kNoMemory) {
        fault("the hazard checker has no memory left to record a flag release's ordering (all of its records stay "
              "within half of this machine's memory); run this launch with checking off (seqk_emu_set_checking)");
    }
    if (outcome == GridBoard::Release::kChangedElsewhere) {
        fault(format("a flag release at %p: the word changed since the launch's last release of it, other than by "
                     "flag_release_add (flags' words may change only by releases during a launch)",
                     static_cast<const void*>(word)));
    }
}

void flag_wait_geq(const uint32_t* word, uint32_t target, Site site) {
    check_flag(word, "a flag wait");
    Fiber& f = *t_fiber;
    f.flag = word;
    f.flag_target = target;
    f.wait_site = site;
    f.state = State::AtFlag;
    t_block->flag_waiting++;
    yield_to_scheduler();
}

void kernel_error(const char* what) {
    fault(what);
}

namespace {
// Atomic: a cooperative launch runs its blocks on threads of their own.
std::atomic<uint64_t> g_ldmatrix_instructions{0};
std::atomic<uint64_t> g_ldmatrix_matrices{0};
std::atomic<uint64_t> g_ldmatrix_wavefronts{0};
}  // namespace

void count_ldmatrix(const void* const* rows, unsigned count) {
    const unsigned char* base = t_block->smem.data();
    g_ldmatrix_instructions++;
    for (unsigned m = 0; m < count; m++) {
        uintptr_t seen[8][8];  // per 16-byte bank group: the distinct row offsets in it
        unsigned held[8] = {};
        unsigned wavefronts = 1;
        for (unsigned r = 0; r < 8; r++) {
            uintptr_t offset = static_cast<const unsigned char*>(rows[8 * m + r]) - base;
            unsigned group = static_cast<unsigned>(offset / 16 % 8);
            bool repeated = false;
            for (unsigned i = 0; i < held[group]; i++) {
                repeated = repeated || seen[group][i] == offset;
            }
            if (!repeated) {
                seen[group][held[group]++] = offset;
                wavefronts = held[group] > wavefronts ? held[group] : wavefronts;
            }
        }
        g_ldmatrix_matrices++;
        g_ldmatrix_wavefronts += wavefronts;
    }
}

void* dynamic_shared() {
    return t_block->smem_bytes ? t_block->smem.data() : nullptr;
}

void* static_shared(const void* site, unsigned bytes, unsigned align) {
    Block& b = *t_block;
    for (const auto& [s, offset] : b.static_sites) {
        if (s == site) {
            return b.smem.data() + offset;
        }
    }
    size_t declared = bytes;
    for (const auto& [lo, hi] : b.static_arrays) {
        declared += hi - lo;
    }
    if (declared > kStaticSharedLimit) {
        kernel_error("static shared arrays exceed the 48 KB a block may declare");
    }
    // A gap that belongs to no array follows each one, so an overrun into the next is reported.
    size_t start = b.static_base + b.static_used + (b.static_arrays.empty() ? 0 : kArrayGap);
    size_t offset = (start + align - 1) / align * align;
    if (offset + bytes > b.static_base + kStaticRegion) {
        kernel_error("static shared arrays and the emulator's gaps between them exceed its arena");
    }
    b.static_sites.emplace_back(site, offset);
    b.static_arrays.emplace_back(offset, offset + bytes);
    b.static_used = offset + bytes - b.static_base;
    poison(b.smem.data() + offset, bytes);
    hazards_cover(b, offset + bytes);
    return b.smem.data() + offset;
}

}  // namespace seqk_emu

// ---------------------------------------------------------------- C ABI for the Java emu binding

using namespace seqk_emu;

extern "C" {

const char* seqk_emu_last_error() {
    return t_last_error.c_str();
}

void seqk_emu_set_checking(int on) {
    g_checking = on;
}

void seqk_emu_set_race_checks(int on) {
    g_race_checks = on;
}

int seqk_emu_set_schedule(int mode, uint64_t seed, int cp_async_land_at_issue) {
    if (mode < SEQK_EMU_SCHEDULE_ROUND_ROBIN || mode > SEQK_EMU_SCHEDULE_WARP_AHEAD) {
        return fail(format("unknown schedule %d", mode));
    }
    g_schedule.mode = mode;
    g_schedule.seed = seed;
    g_schedule.land_at_issue = cp_async_land_at_issue != 0;
    return 0;
}

int seqk_emu_kernel_count() {
    return static_cast<int>(registry().size());
}

const char* seqk_emu_kernel_name(int i) {
    auto it = registry().begin();
    std::advance(it, i);
    return it->first.c_str();
}

int seqk_emu_kernel_arity(const char* name) {
    auto it = registry().find(name);
    return it == registry().end() ? -1 : it->second.arg_count;
}

int seqk_emu_kernel_param(const char* name, int i, unsigned* size, unsigned* align, int* pointer) {
    auto it = registry().find(name);
    if (it == registry().end() || i < 0 || i >= it->second.arg_count) {
        return fail(format("no parameter %d of a kernel named %s", i, name));
    }
    *size = it->second.params[i].size;
    *align = it->second.params[i].align;
    *pointer = it->second.params[i].pointer ? 1 : 0;
    return 0;
}

int seqk_emu_contains(uint64_t ptr, uint64_t bytes) {
    return find(ptr, bytes) != nullptr ? 1 : 0;
}

int seqk_emu_malloc(uint64_t bytes, uint64_t* out) {
    size_t total = kAlign + ((bytes + kAlign - 1) / kAlign) * kAlign + kAlign;
    auto* base = static_cast<unsigned char*>(aligned_alloc(kAlign, total));
    if (base == nullptr) {
        return fail(format("out of memory allocating %lu bytes", static_cast<unsigned long>(bytes)));
    }
    unsigned char* payload = base + kAlign;
    poison(payload - kGuard, bytes + 2 * kGuard);
    allocations()[reinterpret_cast<uintptr_t>(payload)] = Allocation{base, payload, bytes, nullptr, 0};
    g_in_use += bytes;
    g_peak = std::max(g_peak, g_in_use);
    *out = reinterpret_cast<uintptr_t>(payload);
    return 0;
}

int seqk_emu_free(uint64_t ptr) {
    auto it = allocations().find(ptr);
    if (it == allocations().end()) {
        return fail(format("free of 0x%lx, which is not the start of a device allocation", static_cast<unsigned long>(ptr)));
    }
    g_in_use -= it->second.bytes;
    hazards_forget(it->second);
    free(it->second.base);
    allocations().erase(it);
    return 0;
}

void seqk_emu_memory_in_use(uint64_t* bytes, uint64_t* count) {
    uint64_t total = 0;
    for (auto& [p, a] : allocations()) {
        total += a.bytes;
    }
    *bytes = total;
    *count = allocations().size();
}

void seqk_emu_take_ldmatrix_counts(uint64_t* instructions, uint64_t* matrices, uint64_t* wavefronts) {
    *instructions = g_ldmatrix_instructions.exchange(0);
    *matrices = g_ldmatrix_matrices.exchange(0);
    *wavefronts = g_ldmatrix_wavefronts.exchange(0);
}

uint64_t seqk_emu_take_peak() {
    uint64_t peak = g_peak;
    g_peak = g_in_use;
    return peak;
}

int seqk_emu_memcpy(uint64_t dst, uint64_t src, uint64_t bytes, int kind) {
    if ((kind == 0 || kind == 2) && !find(dst, bytes)) {
        return fail(format("copy destination 0x%lx..+%lu is not inside a device allocation", static_cast<unsigned long>(dst),
                           static_cast<unsigned long>(bytes)));
    }
    if ((kind == 1 || kind == 2) && !find(src, bytes)) {
        return fail(format("copy source 0x%lx..+%lu is not inside a device allocation", static_cast<unsigned long>(src),
                           static_cast<unsigned long>(bytes)));
    }
    std::memmove(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), bytes);
    return 0;
}

int seqk_emu_copy_to_device(uint64_t dst, const void* src, uint64_t bytes) {
    return seqk_emu_memcpy(dst, reinterpret_cast<uint64_t>(src), bytes, 0);
}

int seqk_emu_copy_to_host(void* dst, uint64_t src, uint64_t bytes) {
    return seqk_emu_memcpy(reinterpret_cast<uint64_t>(dst), src, bytes, 1);
}

int seqk_emu_memset(uint64_t dst, int value, uint64_t bytes) {
    if (!find(dst, bytes)) {
        return fail(format("memset range 0x%lx..+%lu is not inside a device allocation", static_cast<unsigned long>(dst),
                           static_cast<unsigned long>(bytes)));
    }
    std::memset(reinterpret_cast<void*>(dst), value, bytes);
    return 0;
}

/** Limits of an sm_90 device, which the emulator stands in for. */
constexpr unsigned kMaxThreads = 1024;
constexpr unsigned kMaxDynamicShared = 232448;
constexpr unsigned kMaxCooperativeBlocks = 264;  // 132 SMs x 2, an H100's co-residency at modest occupancy

int seqk_emu_launch(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                    unsigned shared_bytes, void** args, int arg_count, int cooperative) {
    auto it = registry().find(name);
    if (it == registry().end()) {
        return fail(format("no kernel named %s in the emulator library", name));
    }
    if (arg_count != it->second.arg_count) {
        return fail(format("kernel %s takes %d arguments, %d were passed", name, it->second.arg_count, arg_count));
    }
    if (bx == 0 || by == 0 || bz == 0 || gx == 0 || gy == 0 || gz == 0) {
        return fail(format("kernel %s: grid (%u,%u,%u) and block (%u,%u,%u) must be positive", name, gx, gy, gz, bx, by, bz));
    }
    if (static_cast<uint64_t>(bx) * by * bz > kMaxThreads || bx > 1024 || by > 1024 || bz > 64) {
        return fail(format("kernel %s: block (%u,%u,%u) exceeds the limits (x, y <= 1024, z <= 64, x*y*z <= %u)", name,
                           bx, by, bz, kMaxThreads));
    }
    if (gx > 0x7fffffffu || gy > 65535 || gz > 65535) {
        return fail(format("kernel %s: grid (%u,%u,%u) exceeds the limits (x < 2^31, y, z <= 65535)", name, gx, gy, gz));
    }
    if (shared_bytes > kMaxDynamicShared) {
        return fail(format("kernel %s: %u bytes of dynamic shared memory exceed the sm_90 limit of %u", name,
                           shared_bytes, kMaxDynamicShared));
    }
    uint64_t blocks = static_cast<uint64_t>(gx) * gy * gz;
    if (cooperative && blocks > kMaxCooperativeBlocks) {
        return fail(format("kernel %s: a cooperative launch of %lu blocks exceeds the emulator's %u co-resident blocks",
                           name, static_cast<unsigned long>(blocks), kMaxCooperativeBlocks));
    }
    hazards_begin_launch(args, it->second);
    dim3 grid{gx, gy, gz};
    dim3 block{bx, by, bz};
    auto setup = [&](Block& b, GridBoard* barrier) {
        b.kernel = &it->second;
        b.args = args;
        b.grid = barrier;
        b.smem_bytes = shared_bytes;
        b.static_base = (shared_bytes + 15) / 16 * 16 + kRedZone;
        b.smem.resize(b.static_base + kStaticRegion + kGuard);  // reused across launches: only ever grows
    };
    auto coords = [&](uint64_t i) { return uint3{static_cast<unsigned>(i % gx), static_cast<unsigned>((i / gx) % gy),
                                                 static_cast<unsigned>(i / (static_cast<uint64_t>(gx) * gy))}; };
    if (!cooperative) {
        // Reused: the stacks, the arena and the shadow memory outlive one launch. Held by pointer, so
        // that this library's TLS segment, all of it static once any variable is initial-exec
        // (SEQK_EMU_HOT_TLS), stays a few pointers and strings.
        static thread_local std::unique_ptr<StackPool> pool_held;
        static thread_local std::unique_ptr<Block> block_held;
        if (!block_held) {
            pool_held = std::make_unique<StackPool>();
            block_held = std::make_unique<Block>();
        }
        StackPool& pool = *pool_held;
        Block& b = *block_held;
        setup(b, nullptr);
        t_block = &b;
        int rc = 0;
        try {
            // Blocks run one after another, in the schedule's order too (index order, reversed, or a
            // seeded permutation): a kernel whose blocks rely on running in index order fails here.
            std::vector<uint64_t> order;
            if (g_schedule.mode == SEQK_EMU_SCHEDULE_RANDOM) {
                order.resize(blocks);
                for (uint64_t i = 0; i < blocks; i++) {
                    order[i] = i;
                }
                std::mt19937_64 rng(g_schedule.seed ^ 0x5851f42d4c957f2dull);
                std::shuffle(order.begin(), order.end(), rng);
            }
            for (uint64_t k = 0; k < blocks; k++) {
                uint64_t i = g_schedule.mode == SEQK_EMU_SCHEDULE_REVERSE ? blocks - 1 - k
                             : g_schedule.mode == SEQK_EMU_SCHEDULE_RANDOM ? order[k] : k;
                run_block(b, grid, block, coords(i), static_cast<uint32_t>(i), pool);
            }
        } catch (const EmuError& e) {
            rc = fail(e.what());
        }
        t_block = nullptr;
        current = nullptr;
        t_fiber = nullptr;
        return rc;
    }
    GridBoard barrier(static_cast<unsigned>(blocks));
    std::vector<std::string> errors(blocks);
    std::vector<std::thread> workers;
    for (uint64_t i = 0; i < blocks; i++) {
        workers.emplace_back([&, i] {
            StackPool pool;
            auto b = std::make_unique<Block>();
            setup(*b, &barrier);
            t_block = b.get();
            try {
                run_block(*b, grid, block, coords(i), static_cast<uint32_t>(i), pool);
                std::string damage = g_checking ? check_shared_guard(*b) : std::string();
                if (!damage.empty()) {  // the device allocations' guards are checked after the launch
                    errors[i] = format("kernel %s block (%u,%u,%u): ", name, b->index.x, b->index.y, b->index.z) + damage;
                }
            } catch (const std::exception& e) {  // EmuError, or bad_alloc: either way the block leaves the board
                errors[i] = format("kernel %s block (%u,%u,%u): ", name, b->index.x, b->index.y, b->index.z) + e.what();
            }
            barrier.leave(errors[i]);
            t_block = nullptr;
            t_fiber = nullptr;
            current = nullptr;
        });
    }
    for (std::thread& w : workers) {
        w.join();
    }
    for (const std::string& e : errors) {  // the first error that is not only a consequence of another's
        if (!e.empty() && e.find("another block failed") == std::string::npos) {
            return fail(e);
        }
    }
    for (const std::string& e : errors) {
        if (!e.empty()) {
            return fail(e);
        }
    }
    if (g_checking) {
        std::string damage = check_guards(nullptr);
        if (!damage.empty()) {
            return fail(format("kernel %s (cooperative launch; the thread is not known): ", name) + damage);
        }
    }
    return 0;
}

int seqk_emu_gemm(int trans_a, int trans_b, int m, int n, int k, float alpha, uint64_t a, int lda, long stride_a,
                  uint64_t b, int ldb, long stride_b, float beta, uint64_t c, int ldc, long stride_c, int batch,
                  int dtype, int c_dtype, int tf32) {
    auto load = [tf32](uint64_t base, long idx, int dt) -> double {
        switch (dt) {
            case 0: return tf32 ? round_tf32(reinterpret_cast<const float*>(base)[idx])
                                : reinterpret_cast<const float*>(base)[idx];
            case 1: return __half2float(reinterpret_cast<const __half*>(base)[idx]);
            default: return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(base)[idx]);
        }
    };
    auto store = [](uint64_t base, long idx, int dt, float v) {
        switch (dt) {
            case 0: reinterpret_cast<float*>(base)[idx] = v; break;
            case 1: reinterpret_cast<__half*>(base)[idx] = __float2half_rn(v); break;
            default: reinterpret_cast<__nv_bfloat16*>(base)[idx] = __float2bfloat16_rn(v); break;
        }
    };
    auto load_c = [](uint64_t base, long idx, int dt) -> double {
        switch (dt) {
            case 0: return reinterpret_cast<const float*>(base)[idx];
            case 1: return __half2float(reinterpret_cast<const __half*>(base)[idx]);
            default: return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(base)[idx]);
        }
    };
    if (m < 0 || n < 0 || k < 0 || batch < 0) {
        return fail("gemm: negative size");
    }
    size_t es = dtype == 0 ? 4 : 2;
    size_t cs = c_dtype == 0 ? 4 : 2;
    for (int p = 0; p < batch; p++) {
        long rows_a = trans_a ? k : m, cols_a = trans_a ? m : k;
        long rows_b = trans_b ? n : k, cols_b = trans_b ? k : n;
        if ((cols_a > 0 && !find(a + es * (p * stride_a), es * ((cols_a - 1) * lda + rows_a))) ||
            (cols_b > 0 && !find(b + es * (p * stride_b), es * ((cols_b - 1) * ldb + rows_b))) ||
            (n > 0 && !find(c + cs * (p * stride_c), cs * (static_cast<long>(n - 1) * ldc + m)))) {
            return fail(format("gemm: batch %d reaches outside a device allocation", p));
        }
        for (int j = 0; j < n; j++) {
            for (int i = 0; i < m; i++) {
                float s = 0;  // fp32 accumulation, one fused multiply-add per term, as cuBLAS's COMPUTE_32F
                for (int l = 0; l < k; l++) {
                    float av = trans_a ? load(a, p * stride_a + l + static_cast<long>(i) * lda, dtype)
                                        : load(a, p * stride_a + i + static_cast<long>(l) * lda, dtype);
                    float bv = trans_b ? load(b, p * stride_b + j + static_cast<long>(l) * ldb, dtype)
                                        : load(b, p * stride_b + l + static_cast<long>(j) * ldb, dtype);
                    s = fmaf(av, bv, s);
                }
                long ci = p * stride_c + i + static_cast<long>(j) * ldc;
                float prev = beta == 0.0f ? 0.0f : static_cast<float>(load_c(c, ci, c_dtype));
                store(c, ci, c_dtype, fmaf(beta, prev, alpha * s));
            }
        }
    }
    return 0;
}

}  // extern "C"
