// The emulator's hazard checker: what compute-sanitizer's memcheck, racecheck and synccheck find
// on a GPU, found here on every launch while checking is on (racecheck's part only while the race
// checks are on too: seqk_emu_set_race_checks).
//
// Kernel sources are compiled with GCC's thread-sanitizer instrumentation and no sanitizer
// runtime (tools/build-emulator.sh): every load and store in kernel code calls one of the
// __tsan_* functions below with its address and size. Each access is classified:
//   - the thread's own fiber stack: private, nothing to check;
//   - the block's shared-memory arena: dynamic shared memory or a static array (anything else in
//     the arena is out of bounds); shadowed per 2-byte granule;
//   - a device allocation: shadowed per 2-byte granule (made at its first checked access);
//   - the launch's parameter bytes or this library's image (constants): readable only;
//   - anything else: out of bounds, reported like a write out of bounds.
// Vector accesses (2, 4, 8, 16 bytes) must be naturally aligned, as a GPU faults otherwise.
//
// Races. A granule remembers its last plain write, the atomic writes since and the reads since,
// each with the thread, the block's barrier epoch (__syncthreads opened so far), its warp's
// __syncwarp count, the bytes touched and the code address. Two accesses by different threads to
// a byte, at least one a write, race unless a __syncthreads opened between them, or both threads
// are in one warp and a __syncwarp naming both completed between them (shuffles, votes, ldmatrix
// and mma exchange values but, as in the PTX memory model, order no memory); in global memory,
// accesses by different blocks of one launch race unless a grid sync or flags (a release after a
// barrier, acquired before one: runtime.cpp's GridBoard keeps the vector clocks) order them. Atomics do
// not race with atomics, but a plain access does with either. A cp.async destination is written
// from its issue until its thread waits for it: any access to it in between, by another thread or
// its own, is a race, whatever barriers opened; its source (global only) is read at the issue and
// at the wait, and its own thread may not write it in between.
// Reports name the kernel, the block, both threads and both source lines.
//
// Limits (docs/ARCHITECTURE.md lists them all): a granule remembers one plain write, so a race on
// a byte whose neighbour any thread wrote since may go unseen; of the reads (or atomic writes)
// since that write, the first and those of the two latest threads are kept exactly, the others
// count as ordered before a write only after a whole-warp __syncwarp.
#include <dlfcn.h>
#include <link.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <mutex>
#include <unordered_map>

#include "emu/seqk_emu.h"
#include "runtime_internal.h"

namespace seqk_emu {

int g_checking = 1;
int g_race_checks = 1;

namespace {

constexpr unsigned kGranule = 2;  // bytes per shadow entry: 16-bit values written by different threads are not a race

uint32_t g_launch_serial = 0;  // wraps after 4 billion launches: old shadow entries would then look current
std::vector<std::pair<uintptr_t, uintptr_t>> g_params;  // the running launch's parameter bytes
std::mutex g_global_mutex;                              // global shadow, during cooperative launches
std::atomic<size_t> g_shadow_bytes{0};                  // the budget in use: live allocations' shadows, spans, flag clocks

/** The two allocations this OS thread touched last, in which launch: most accesses hit one. */
struct AllocationCache {
    Allocation* entries[2] = {nullptr, nullptr};
    uint32_t launch = 0;
};
SEQK_EMU_HOT_TLS AllocationCache t_allocations;

/** This library's mapped image: kernels may read its constants (tables, literals). */
struct Image {
    uintptr_t lo = UINTPTR_MAX;
    uintptr_t hi = 0;
};

const Image& image() {
    static const Image img = [] {
        Image i;
        Dl_info self{};
        dladdr(reinterpret_cast<void*>(&image), &self);
        std::pair<Image*, void*> target(&i, self.dli_fbase);
        dl_iterate_phdr(
            [](dl_phdr_info* info, size_t, void* data) {
                auto* p = static_cast<std::pair<Image*, void*>*>(data);
                if (reinterpret_cast<void*>(info->dlpi_addr) != p->second) {
                    return 0;
                }
                for (int k = 0; k < info->dlpi_phnum; k++) {
                    if (info->dlpi_phdr[k].p_type == PT_LOAD) {
                        uintptr_t lo = info->dlpi_addr + info->dlpi_phdr[k].p_vaddr;
                        p->first->lo = std::min(p->first->lo, lo);
                        p->first->hi = std::max(p->first->hi, lo + info->dlpi_phdr[k].p_memsz);
                    }
                }
                return 1;
            },
            &target);
        return i;
    }();
    return img;
}

/** A code address in this library as a shadow entry keeps it (0: elsewhere). */
uint32_t site_code(const void* site) {
    uintptr_t a = reinterpret_cast<uintptr_t>(site);
    return a >= image().lo && a < image().hi && a - image().lo < UINT32_MAX ? static_cast<uint32_t>(a - image().lo + 1) : 0;
}

std::string site_of(uint32_t code) {
    return code == 0 ? std::string("?") : site_name(reinterpret_cast<const void*>(image().lo + code - 1));
}

const char* kind_name(bool write, bool atomic) {
    return atomic ? (write ? "atomically writes" : "atomically reads") : (write ? "writes" : "reads");
}

/** Whether a __syncwarp naming lanes a and b of the warp completed after `stamp` (a warp_sync count). */
bool warp_synced_after(const Block& b, unsigned warp, unsigned lane_a, unsigned lane_b, uint32_t stamp) {
    if (b.warp_full[warp] > stamp) {
        return true;
    }
    if (b.pair_sync.empty()) {
        return false;
    }
    unsigned lo = std::min(lane_a, lane_b), hi = std::max(lane_a, lane_b);
    return b.pair_sync[(warp * 32 + lo) * 32 + hi] > stamp;
}

/** Whether an access by `thread` of now's block, in now's epoch, at warp-sync stamp `stamp` is ordered before now. */
bool ordered_in_epoch(const Block& b, uint16_t thread, uint32_t stamp, const Access& now) {
    return thread == now.thread ||
           (thread / 32 == now.thread / 32 && warp_synced_after(b, now.thread / 32, thread % 32, now.thread % 32, stamp));
}

/**
 * Whether the accesses of another block q in its barrier epochs up to `epoch` are ordered before
 * the running threads of block b by flags: a release of q after a barrier that closed that epoch,
 * acquired (directly or through other blocks) by a thread of b before b's last __syncthreads.
 */
bool flag_ordered(const Block& b, uint32_t q, uint32_t epoch) {
    return q < b.known.size() && b.known[q] > epoch;
}

/** Whether earlier access `prev` is ordered before an access by `now` (same block, or different blocks of one launch). */
bool ordered(const Block& b, const Access& prev, const Access& now) {
    if (prev.block != now.block) {  // different blocks: a grid sync, or a flag's release and acquire
        return prev.grid_epoch != now.grid_epoch || flag_ordered(b, prev.block, prev.epoch);
    }
    return prev.epoch != now.epoch || ordered_in_epoch(b, prev.thread, prev.warp_sync, now);
}

/**
 * A set's members in one block of a cooperative launch, once the set has members in several (its
 * span): enough to decide whether flags order them all before an access of another block, and,
 * conservatively, one of the same block.
 */
struct BlockMembers {
    uint32_t epoch = 0;        // the latest member's barrier epoch plus 1 (0: no member)
    uint32_t plain_epoch = 0;  // the same among the plain members
    uint32_t site = 0;         // the latest member, for a report
    uint16_t thread = 0;
    bool several_threads = false;  // members of more than one thread in the latest epoch
};

// The running cooperative launch's spans (AccessSet::span - 1 indexes them), guarded like the
// global shadow (g_global_mutex); a set emptied by a write gives its span back for reuse. Their
// memory is counted in the checker's budget (hazards_reserve) until the next launch begins.
std::vector<std::vector<BlockMembers>> g_spans;
std::vector<uint32_t> g_free_spans;
size_t g_span_bytes = 0;

void span_add(std::vector<BlockMembers>& span, uint32_t block, uint32_t epoch, uint16_t thread, uint32_t site, bool plain,
              bool several_threads) {
    BlockMembers& m = span[block];
    if (m.epoch == epoch + 1) {
        m.several_threads |= several_threads || m.thread != thread;
    } else {
        m.epoch = epoch + 1;
        m.several_threads = several_threads;
    }
    if (plain) {
        m.plain_epoch = epoch + 1;
    }
    m.thread = thread;
    m.site = site;
}

/** Gives the set's span back for reuse when the set belongs to the running launch (now's owner). */
void give_back_span(const AccessSet& r, uint32_t owner) {
    if (r.span != 0 && r.first.owner == owner) {
        g_free_spans.push_back(r.span);
    }
}

/** Empties the set, giving its span back. */
void clear_set(AccessSet& r, uint32_t owner) {
    give_back_span(r, owner);
    r = AccessSet{};
}

/** A member of the span not ordered before `now` by a barrier (now's block) or flags (another block), or null. */
const Access* unordered_span_member(const Block& b, const AccessSet& r, const Access& now, bool atomic_members_commute,
                                    Access& scratch) {
    const std::vector<BlockMembers>& span = g_spans[r.span - 1];
    for (uint32_t q = 0; q < span.size(); q++) {
        const BlockMembers& m = span[q];
        uint32_t e = atomic_members_commute ? m.plain_epoch : m.epoch;
        if (e == 0) {
            continue;
        }
        bool in_order = q == now.block ? e - 1 < now.epoch || (!m.several_threads && m.thread == now.thread)
                                       : flag_ordered(b, q, e - 1);
        if (!in_order) {
            scratch = r.first;
            scratch.block = q;
            scratch.thread = m.thread;
            scratch.site = m.site;
            scratch.atomic = m.plain_epoch != m.epoch;
            return &scratch;
        }
    }
    return nullptr;
}

/**
 * A member of the set (a read, or an atomic write) not ordered before `now`, for the report, or
 * null when all are. Members that touched none of now's bytes are skipped, and so are atomic
 * members when `atomic_members_commute` (an atomic write after atomic reads). The set is current:
 * its members share now's grid epoch, and when all are in now's block, its barrier epoch.
 */
const Access* unordered_member(const Block& b, const AccessSet& r, const Access& now, bool atomic_members_commute,
                               Access& scratch) {
    if (r.span != 0) {
        return unordered_span_member(b, r, now, atomic_members_commute, scratch);
    }
    if (r.first.block != now.block && !r.several_blocks && flag_ordered(b, r.first.block, r.first.epoch)) {
        return nullptr;  // every member, the carried ones too (earlier epochs), came before a release now's block acquired
    }
    if (r.first.block != now.block &&
        (now.bytes & (atomic_members_commute ? r.carried_plain : r.carried_bytes)) != 0) {
        scratch = r.first;  // a member from an earlier barrier epoch of first's block: not ordered for another block
        scratch.thread = r.carried_thread;
        scratch.site = r.carried_site;
        scratch.atomic = (r.carried_plain & now.bytes) == 0;
        return &scratch;
    }
    if (atomic_members_commute && !r.plain) {
        return nullptr;
    }
    if (r.first.block != now.block) {
        return &r.first;
    }
    if (r.several_blocks) {  // first in now's block, another block's member was not kept
        scratch = r.first;
        scratch.block = UINT32_MAX;
        return &scratch;
    }
    auto overlaps = [&](uint8_t bytes) { return (bytes & now.bytes) != 0; };
    if (overlaps(r.first.bytes) && !(atomic_members_commute && r.first.atomic) &&
        !ordered_in_epoch(b, r.first.thread, r.first.warp_sync, now)) {
        return &r.first;
    }
    auto kept = [&](uint16_t thread, uint32_t stamp, uint32_t site, uint8_t bytes, bool plain) -> const Access* {
        if (!overlaps(bytes) || (atomic_members_commute && !plain) || ordered_in_epoch(b, thread, stamp, now)) {
            return nullptr;
        }
        scratch = r.first;
        scratch.thread = thread;
        scratch.warp_sync = stamp;
        scratch.site = site;
        scratch.atomic = !plain;
        return &scratch;
    };
    if (const Access* a = kept(r.latest_thread, r.latest_sync, r.latest_site, r.latest_bytes, r.latest_plain)) {
        return a;
    }
    if (r.has_second) {
        if (const Access* a = kept(r.second_thread, r.second_sync, r.second_site, r.second_bytes, r.second_plain)) {
            return a;
        }
    }
    if (r.more && overlaps(r.older_bytes) && !(atomic_members_commute && !r.older_plain)) {
        // Members no longer kept: one in another warp is never ordered within the epoch; the others
        // are once a whole-warp __syncwarp followed the latest of them (of the plain ones, when
        // atomic members commute with now).
        uint32_t own_warp = 1u << (now.thread / 32 % 32);
        uint32_t latest = atomic_members_commute ? r.older_plain_sync : r.older_sync;
        if ((r.warps & ~own_warp) != 0 || b.warp_full[now.thread / 32] <= latest) {
            return &r.first;
        }
    }
    return nullptr;
}

/** Whether the set's members are all ordered before `now` by a barrier or grid sync (or it is empty). */
bool stale(const AccessSet& r, const Access& now) {
    return r.first.owner != now.owner || r.first.grid_epoch != now.grid_epoch ||
           (r.first.block == now.block && !r.several_blocks && r.first.epoch != now.epoch);
}

/**
 * Adds `now` to the set (emptied first when stale). In a cooperative launch (`blocks` > 0), a
 * set that gains a member in a second block gets a span that summarizes every block's members.
 * Returns false, adding nothing, when a new span does not fit in the checker's memory budget.
 */
bool add_member(AccessSet& r, const Access& now, uint32_t blocks) {
    if (!stale(r, now) && blocks > 0 && (r.span != 0 || now.block != r.first.block)) {
        if (r.span == 0) {  // first's block: its members share first's epoch (earlier ones were carried: lower epochs)
            if (g_free_spans.empty()) {
                if (!hazards_reserve(blocks * sizeof(BlockMembers))) {
                    return false;
                }
                g_span_bytes += blocks * sizeof(BlockMembers);
                g_spans.emplace_back();
                g_free_spans.push_back(static_cast<uint32_t>(g_spans.size()));
            }
            r.span = g_free_spans.back();
            g_free_spans.pop_back();
            std::vector<BlockMembers>& span = g_spans[r.span - 1];
            span.assign(blocks, BlockMembers{});
            span_add(span, r.first.block, r.first.epoch, r.latest_thread, r.latest_site, r.plain, r.has_second);
            if (r.carried_plain != 0) {  // a carried plain member: an earlier epoch, so at most first.epoch - 1 (plus 1)
                span[r.first.block].plain_epoch = std::max(span[r.first.block].plain_epoch, r.first.epoch);
            }
        }
        span_add(g_spans[r.span - 1], now.block, now.epoch, now.thread, now.site, !now.atomic, false);
    }
    if (stale(r, now)) {
        give_back_span(r, now.owner);
        AccessSet carried;
        if (r.first.owner == now.owner && r.first.grid_epoch == now.grid_epoch) {  // a barrier in first's block
            carried.carried_bytes = r.carried_bytes | r.bytes;
            carried.carried_plain = r.carried_plain | (r.plain ? r.bytes : 0);
            carried.carried_thread = r.carried_bytes != 0 ? r.carried_thread : r.first.thread;
            carried.carried_site = r.carried_bytes != 0 ? r.carried_site : r.first.site;
        }
        r = carried;
        r.first = now;
        r.latest_thread = now.thread;
        r.latest_sync = now.warp_sync;
        r.latest_site = now.site;
        r.latest_bytes = now.bytes;
        r.latest_plain = !now.atomic;
        r.warps = 1u << (now.thread / 32 % 32);
    } else if (now.block != r.first.block) {
        r.several_blocks = true;
    } else {
        r.warps |= 1u << (now.thread / 32 % 32);
        if (now.thread == r.latest_thread) {
            r.latest_bytes |= now.bytes;
            r.latest_plain |= !now.atomic;
        } else if (r.has_second && now.thread == r.second_thread) {
            std::swap(r.latest_sync, r.second_sync);  // second becomes latest, with its bytes
            std::swap(r.latest_site, r.second_site);
            std::swap(r.latest_bytes, r.second_bytes);
            std::swap(r.latest_plain, r.second_plain);
            std::swap(r.latest_thread, r.second_thread);
            r.latest_bytes |= now.bytes;
            r.latest_plain |= !now.atomic;
        } else {
            if (r.has_second) {  // the second leaves the kept pair
                r.more = true;
                r.older_sync = r.second_sync;
                r.older_bytes |= r.second_bytes;
                r.older_plain |= r.second_plain;
                if (r.second_plain) {
                    r.older_plain_sync = r.second_sync;
                }
            }
            r.second_thread = r.latest_thread;
            r.second_sync = r.latest_sync;
            r.second_site = r.latest_site;
            r.second_bytes = r.latest_bytes;
            r.second_plain = r.latest_plain;
            r.has_second = true;
            r.latest_thread = now.thread;
            r.latest_bytes = now.bytes;
            r.latest_plain = !now.atomic;
        }
        r.latest_sync = now.warp_sync;
        r.latest_site = now.site;
    }
    r.bytes |= now.bytes;
    r.plain |= !now.atomic;
    return true;
}

/** Where a granule lies, for a report (formatted only then). */
struct Memory {
    const char* space;   // "dynamic shared memory", "a static shared array", "global memory"
    uintptr_t base;      // the allocation (global memory), or 0
    size_t offset;       // byte offset of the granule in it
};

std::string memory_name(const Memory& m) {
    return m.base != 0 ? format("%s (allocation 0x%lx, byte offset %zu)", m.space, static_cast<unsigned long>(m.base), m.offset)
                       : format("%s at byte offset %zu", m.space, m.offset);
}

/**
 * Checks an access against a granule's history and records it; returns the hazard it finds
 * (empty: none), for the caller to report. History of another owner (an earlier block, or an
 * earlier launch) cannot race.
 *
 * Every access must be ordered after the last plain write; a plain access also after the atomic
 * writes since; a write (plain, or atomic unless all reads since were atomic) after the reads.
 */
std::string touch(Block& b, WordShadow& w, const Access& now, bool write, const Memory& where_) {
    uint32_t blocks = static_cast<uint32_t>(b.known.size());  // 0 unless cooperative
    auto race = [&](const Access& prev, const char* prev_did, const char* kind) {
        bool other_block = prev.block != now.block;
        Access named = prev;
        if (prev.block == UINT32_MAX) {
            named.block = now.block;  // several blocks: the first is named, another one races too
        }
        std::string who = named.block != b.linear ? format("block %u thread %u", named.block, named.thread)
                                                  : format("thread %u", named.thread);
        return format("%s on %s: thread %u %s it at %s, and ", kind, memory_name(where_).c_str(), now.thread,
                      kind_name(write, now.atomic), site_of(now.site).c_str()) +
               who + " " + prev_did + " it at " + site_of(named.site) +
               (other_block ? (prev.block == UINT32_MAX ? " (and other blocks too; no grid sync between)"
                                                        : " (another block, no grid sync between, nor a flag release "
                                                          "it made after a barrier and this block acquired before one)")
                            : " (no __syncthreads, or __syncwarp naming both, between)");
    };
    if (w.write.owner == now.owner) {
        if (w.pending && (w.write.thread != now.thread || w.write.block != now.block)) {
            return race(w.write, "wrote", "race with a cp.async in flight");
        }
        if (w.pending) {
            return format("thread %u %s %s at %s, a cp.async destination it has not waited for (issued at %s)", now.thread,
                          kind_name(write, now.atomic), memory_name(where_).c_str(), site_of(now.site).c_str(),
                          site_of(w.write.site).c_str());
        }
        if ((w.write.bytes & now.bytes) != 0 && !ordered(b, w.write, now)) {
            return race(w.write, "wrote", write ? "write-after-write race" : "read-after-write race");
        }
    }
    Access scratch;
    if (!now.atomic && !stale(w.atomics, now) && ((w.atomics.bytes | w.atomics.carried_bytes) & now.bytes) != 0) {
        if (const Access* prev = unordered_member(b, w.atomics, now, false, scratch)) {
            return race(*prev, "atomically wrote", write ? "write-after-atomic race" : "read-after-atomic race");
        }
    }
    const char* no_room = "the hazard checker has no memory left to track the blocks reading one word (all of its records "
                          "stay within half of this machine's memory); run this launch with checking off (seqk_emu_set_checking)";
    if (!write) {
        return add_member(w.reads, now, blocks) ? std::string() : std::string(no_room);
    }
    if (!stale(w.reads, now) && ((w.reads.bytes | w.reads.carried_bytes) & now.bytes) != 0) {
        if (const Access* prev = unordered_member(b, w.reads, now, now.atomic, scratch)) {
            return race(*prev, prev->atomic ? "atomically read" : "read", "write-after-read race");
        }
    }
    if (now.atomic) {
        return add_member(w.atomics, now, blocks) ? std::string() : std::string(no_room);
    }
    w.write = now;
    w.pending = false;
    if (((w.reads.bytes | w.reads.carried_bytes) & ~now.bytes) == 0) {
        clear_set(w.reads, now.owner);  // every byte read is overwritten: later writes race with later reads only
    }
    if (((w.atomics.bytes | w.atomics.carried_bytes) & ~now.bytes) == 0) {
        clear_set(w.atomics, now.owner);
    }
    return {};
}

/** The running thread's access, stamped with where and when it happens. */
Access now_access(const Block& b, const Fiber& f, uint32_t owner, const void* site, bool atomic) {
    Access a;
    a.owner = owner;
    a.block = b.linear;
    a.epoch = b.epoch;
    a.grid_epoch = b.grid_epoch;
    a.thread = static_cast<uint16_t>(f.coords.linear);
    a.warp_sync = b.warp_syncs[f.coords.linear / 32];
    a.site = site_code(site);
    a.atomic = atomic;
    return a;
}

/** Which bytes of granule g an access of [offset, offset + size) touches. */
uint8_t granule_bytes(size_t g, size_t offset, unsigned size) {
    uint8_t bytes = 0;
    for (unsigned k = 0; k < kGranule; k++) {
        size_t at = g * kGranule + k;
        if (at >= offset && at < offset + size) {
            bytes |= static_cast<uint8_t>(1u << k);
        }
    }
    return bytes;
}

/** The part of the arena [offset, offset + size) lies in (its space is null when it is not inside one part). */
Memory shared_part(const Block& b, size_t offset, size_t size) {
    if (offset + size <= b.smem_bytes) {
        return Memory{"dynamic shared memory", 0, 0};
    }
    for (const auto& [lo, hi] : b.static_arrays) {
        if (offset >= lo && offset + size <= hi) {
            return Memory{"a static shared array", 0, lo};
        }
    }
    return Memory{nullptr, 0, 0};
}

/** The dynamic shared memory or static shared array that holds the access, or a fault. */
Memory shared_bounds(const Block& b, const Fiber& f, size_t offset, unsigned size, bool write, bool atomic,
                     const void* site) {
    Memory part = shared_part(b, offset, size);
    if (part.space == nullptr) {
        fault(format("thread %u %s %u bytes of shared memory at arena offset %zu, outside the dynamic shared memory (%zu "
                     "bytes) and every static shared array, at %s",
                     f.coords.linear, kind_name(write, atomic), size, offset, b.smem_bytes, site_name(site).c_str()));
    }
    return part;
}

void shared_access(Block& b, Fiber& f, size_t offset, unsigned size, bool write, bool atomic, const void* site) {
    Memory part = shared_bounds(b, f, offset, size, write, atomic, site);
    Access now = now_access(b, f, b.serial, site, atomic);
    size_t start = part.offset;  // the static array's start (0 for dynamic shared memory)
    for (size_t g = offset / kGranule; g <= (offset + size - 1) / kGranule; g++) {
        part.offset = g * kGranule - start;
        now.bytes = granule_bytes(g, offset, size);
        std::string hazard = touch(b, b.shadow[g], now, write, part);
        if (!hazard.empty()) {
            fault(hazard);
        }
    }
}

void global_access(Block& b, Fiber& f, Allocation& al, size_t offset, unsigned size, bool write, bool atomic,
                   const void* site) {
    std::unique_lock<std::mutex> lock(g_global_mutex, std::defer_lock);
    if (b.grid != nullptr) {
        lock.lock();  // blocks of a cooperative launch run at once, on their own OS threads
    }
    if (!al.shadow) {
        // calloc: zero bytes are the empty state, and pages no access touches are never backed.
        // All shadows together stay within half of the machine's memory (unknown: no limit).
        size_t granules = (al.bytes + kGranule - 1) / kGranule;
        size_t in_use = g_shadow_bytes;
        bool reserved = granules <= SIZE_MAX / sizeof(WordShadow) && hazards_reserve(granules * sizeof(WordShadow));
        if (reserved) {
            al.shadow.reset(static_cast<WordShadow*>(std::calloc(granules, sizeof(WordShadow))));
            if (!al.shadow) {
                hazards_unreserve(granules * sizeof(WordShadow));
            }
        }
        if (!al.shadow) {
            if (lock.owns_lock()) {
                lock.unlock();
            }
            fault(format("the hazard checker cannot shadow device allocation 0x%lx (%zu bytes need %zu bytes of shadow; "
                         "%zu are in use, and all shadows stay within half of this machine's memory); run this launch "
                         "with checking off (seqk_emu_set_checking)",
                         static_cast<unsigned long>(reinterpret_cast<uintptr_t>(al.payload)), al.bytes,
                         granules * sizeof(WordShadow), in_use));
        }
        al.shadow_bytes = granules * sizeof(WordShadow);
    }
    Access now = now_access(b, f, g_launch_serial, site, atomic);
    for (size_t g = offset / kGranule; g <= (offset + size - 1) / kGranule; g++) {
        now.bytes = granule_bytes(g, offset, size);
        std::string hazard = touch(b, al.shadow.get()[g], now, write,
                                   Memory{"global memory", reinterpret_cast<uintptr_t>(al.payload), g * kGranule});
        if (!hazard.empty()) {
            if (lock.owns_lock()) {
                lock.unlock();  // the fiber never comes back from fault(): the other blocks still need the lock
            }
            fault(hazard);
        }
    }
}

Allocation* allocation_of(uintptr_t a, unsigned size) {
    AllocationCache& cache = t_allocations;
    if (cache.launch != g_launch_serial) {  // allocations may have been freed between launches
        cache = AllocationCache{};
        cache.launch = g_launch_serial;
    }
    for (Allocation* al : cache.entries) {
        uintptr_t payload = al != nullptr ? reinterpret_cast<uintptr_t>(al->payload) : 0;
        if (al != nullptr && a >= payload && a + size <= payload + al->bytes) {
            return al;
        }
    }
    Allocation* al = find(a, size);
    if (al != nullptr) {
        cache.entries[1] = cache.entries[0];
        cache.entries[0] = al;
    }
    return al;
}

/** An access that checked() lets through: alignment, bounds, pending copies and the race checks. */
__attribute__((noinline)) void checked_access(const void* p, unsigned size, bool write, bool atomic, const void* site) {
    Fiber* f = t_fiber;
    uintptr_t a = reinterpret_cast<uintptr_t>(p);
    if (size > 1 && a % size != 0) {
        fault(format("thread %u %s %u bytes at 0x%lx, which is not %u-byte aligned (a GPU faults: misaligned address), at %s",
                     f->coords.linear, kind_name(write, atomic), size, static_cast<unsigned long>(a), size,
                     site_name(site).c_str()));
    }
    if (write) {
        for (const PendingCopy& c : f->copies) {  // the thread's own copies still read their sources
            uintptr_t src = reinterpret_cast<uintptr_t>(c.src);
            if (a < src + c.src_bytes && src < a + size) {
                fault(format("thread %u writes %u bytes at 0x%lx, the source of a cp.async it has not waited for "
                             "(issued at %s), at %s",
                             f->coords.linear, size, static_cast<unsigned long>(a), site_name(c.site).c_str(),
                             site_name(site).c_str()));
            }
        }
    }
    Block& b = *t_block;
    uintptr_t arena = reinterpret_cast<uintptr_t>(b.smem.data());
    if (a - arena < b.smem.size()) {
        if (g_race_checks) {
            shared_access(b, *f, a - arena, size, write, atomic, site);
        } else {
            shared_bounds(b, *f, a - arena, size, write, atomic, site);
        }
        return;
    }
    if (Allocation* al = allocation_of(a, size)) {
        if (g_race_checks) {
            global_access(b, *f, *al, a - reinterpret_cast<uintptr_t>(al->payload), size, write, atomic, site);
        }
        return;
    }
    if (!write) {
        for (const auto& [lo, hi] : g_params) {
            if (a >= lo && a + size <= hi) {
                return;
            }
        }
        if (a >= image().lo && a + size <= image().hi) {
            return;
        }
    }
    fault(format("thread %u %s %u bytes at 0x%lx, outside every device allocation, the block's shared memory%s, at %s",
                 f->coords.linear, kind_name(write, atomic), size, static_cast<unsigned long>(a),
                 write ? "" : ", the kernel's parameters and constants", site_name(site).c_str()));
}

/**
 * Whether kernel code's access at p goes to the checker: checking is on, a fiber (a GPU thread)
 * makes it, and p is not on the fiber's own stack (its locals, registers on a GPU). Inlined into
 * every instrumentation hook: with scalar replacement off (build-emulator.sh) most of kernel code's
 * accesses are locals, and they return here without the checker's call and frame.
 */
inline bool checked(const void* p) {
    const Fiber* f = t_fiber;
    return f != nullptr && g_checking &&
           reinterpret_cast<uintptr_t>(p) - reinterpret_cast<uintptr_t>(f->stack) >= kStackBytes;
}

/** Every load and store of kernel code comes here. */
inline void access(const void* p, unsigned size, bool write, bool atomic, const void* site) {
    if (checked(p)) {
        checked_access(p, size, write, atomic, site);
    }
}

}  // namespace

bool hazards_reserve(size_t bytes) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    size_t budget = pages > 0 && page > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(page) / 2 : SIZE_MAX;
    size_t in_use = g_shadow_bytes.load();
    do {
        if (bytes > budget - std::min(budget, in_use)) {
            return false;
        }
    } while (!g_shadow_bytes.compare_exchange_weak(in_use, in_use + bytes));
    return true;
}

void hazards_unreserve(size_t bytes) {
    g_shadow_bytes -= bytes;
}

void hazards_begin_launch(void** args, const Kernel& k) {
    g_launch_serial++;
    g_spans.clear();
    g_free_spans.clear();
    hazards_unreserve(g_span_bytes);
    g_span_bytes = 0;
    g_params.clear();
    uintptr_t array = reinterpret_cast<uintptr_t>(args);  // the void** the trampoline reads, and each value
    g_params.emplace_back(array, array + sizeof(void*) * static_cast<size_t>(k.arg_count));
    for (int i = 0; i < k.arg_count; i++) {
        uintptr_t lo = reinterpret_cast<uintptr_t>(args[i]);
        g_params.emplace_back(lo, lo + k.params[i].size);
    }
}

void hazards_forget(Allocation& al) {
    hazards_unreserve(al.shadow_bytes);
    al.shadow.reset();
    al.shadow_bytes = 0;
}

void hazards_begin_block(Block& b) {
    static std::atomic<uint32_t> serials{0};
    b.serial = ++serials;
    b.epoch = 0;
    b.grid_epoch = 0;
    b.warp_syncs.assign((b.fibers.size() + 31) / 32, 0);
    b.warp_full.assign(b.warp_syncs.size(), 0);
    b.pair_sync.clear();
    hazards_cover(b, b.smem_bytes);
}

void hazards_cover(Block& b, size_t bytes) {
    size_t granules = (bytes + kGranule - 1) / kGranule;
    if (b.shadow.size() < granules) {
        bool refused = false;
        try {
            b.shadow.resize(granules);  // entries of earlier blocks carry their serial: no clearing needed
        } catch (const std::bad_alloc&) {
            refused = true;  // acted on after the handler: fault() switches away and never returns
        }
        if (refused) {
            std::string what = format("the hazard checker has no memory to shadow %zu bytes of shared memory", bytes);
            if (t_fiber != nullptr) {
                fault(what);  // a static array handed out in kernel code
            }
            throw EmuError(what);
        }
    }
}

void hazards_cp_async_issue(void* dst, const void* src, unsigned bytes, unsigned src_bytes, const void* site) {
    Fiber* f = t_fiber;
    Block& b = *t_block;
    uintptr_t d = reinterpret_cast<uintptr_t>(dst);
    uintptr_t arena = reinterpret_cast<uintptr_t>(b.smem.data());
    if (d - arena >= b.smem.size() || shared_part(b, d - arena, bytes).space == nullptr) {
        fault(format("thread %u issues a cp.async of %u bytes to 0x%lx, which is not inside the block's shared memory, at %s",
                     f->coords.linear, bytes, static_cast<unsigned long>(d), site_name(site).c_str()));
    }
    if (reinterpret_cast<uintptr_t>(src) - arena < b.smem.size()) {
        fault(format("thread %u issues a cp.async from shared memory (0x%lx); its source must be global memory, at %s",
                     f->coords.linear, static_cast<unsigned long>(reinterpret_cast<uintptr_t>(src)), site_name(site).c_str()));
    }
    if (!g_checking) {
        return;
    }
    if (src_bytes > 0) {
        access(src, src_bytes, false, false, site);
    }
    if (!g_race_checks) {
        return;
    }
    shared_access(b, *f, d - arena, bytes, true, false, site);
    for (size_t g = (d - arena) / kGranule; g <= (d - arena + bytes - 1) / kGranule; g++) {
        b.shadow[g].pending = true;
    }
}

void hazards_cp_async_waited(Fiber& f, size_t count) {
    if (!g_checking || !g_race_checks || t_block == nullptr) {
        return;  // without race checks the sources were checked at the issue, and no granule is pending
    }
    Block& b = *t_block;
    uintptr_t arena = reinterpret_cast<uintptr_t>(b.smem.data());
    for (size_t i = 0; i < count; i++) {
        // The copy reads its source at some time before the wait: checked again now, so a write
        // another thread made to it since the issue is a race too.
        if (f.copies[i].src_bytes > 0) {
            access(f.copies[i].src, f.copies[i].src_bytes, false, false, f.copies[i].site);
        }
        size_t offset = reinterpret_cast<uintptr_t>(f.copies[i].dst) - arena;
        for (size_t g = offset / kGranule; g <= (offset + f.copies[i].bytes - 1) / kGranule; g++) {
            WordShadow& w = b.shadow[g];
            if (w.write.owner == b.serial && w.write.thread == f.coords.linear && w.pending) {
                w.pending = false;  // landed: from here on it is an ordinary write, in this epoch
                w.write.epoch = b.epoch;
                w.write.warp_sync = b.warp_syncs[f.coords.linear / 32];
            }
        }
    }
}

void hazards_syncwarp(Block& b, size_t warp_base, unsigned mask) {
    size_t warp = warp_base / 32;
    uint32_t stamp = ++b.warp_syncs[warp];
    size_t lanes = std::min<size_t>(32, b.fibers.size() - warp_base);
    unsigned existing = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
    if ((mask & existing) == existing) {
        b.warp_full[warp] = stamp;
        return;
    }
    if (b.pair_sync.empty()) {
        b.pair_sync.assign(b.warp_syncs.size() * 32 * 32, 0);
    }
    for (unsigned lo = 0; lo < 32; lo++) {
        for (unsigned hi = lo + 1; hi < 32 && (mask >> lo & 1u); hi++) {
            if (mask >> hi & 1u) {
                b.pair_sync[(warp * 32 + lo) * 32 + hi] = stamp;
            }
        }
    }
}

bool same_site(Site a, Site b) {
    return a.line == b.line && (a.file == b.file || (a.file != nullptr && b.file != nullptr && std::strcmp(a.file, b.file) == 0));
}

std::string site_name(Site site) {
    if (site.file == nullptr) {
        return "?";
    }
    const char* slash = std::strrchr(site.file, '/');
    return format("%s:%u", slash != nullptr ? slash + 1 : site.file, site.line);
}

std::string site_name(const void* site) {
    static std::mutex mutex;
    static std::unordered_map<const void*, std::string> names;
    std::lock_guard<std::mutex> lock(mutex);
    auto known = names.find(site);
    if (known != names.end()) {
        return known->second;
    }
    Dl_info info{};
    std::string name = format("%p", site);
    if (site != nullptr && dladdr(site, &info) != 0 && info.dli_fname != nullptr) {
        uintptr_t offset = reinterpret_cast<uintptr_t>(site) - reinterpret_cast<uintptr_t>(info.dli_fbase) - 1;
        name = info.dli_sname != nullptr
                   ? format("%s+0x%lx", info.dli_sname,
                            static_cast<unsigned long>(reinterpret_cast<uintptr_t>(site) -
                                                       reinterpret_cast<uintptr_t>(info.dli_saddr)))
                   : name;
        // addr2line (binutils) turns the address into (function, file:line) pairs, innermost first:
        // the access itself, then each call site it was inlined from, out to the kernel. A report
        // names the innermost line, the kernel, and the innermost line in a kernel source (.cu)
        // when the access itself is in a header (an atomic, a cp.async wrapper).
        std::string command = format("addr2line -f -i -C -e '%s' 0x%lx 2>/dev/null", info.dli_fname,
                                     static_cast<unsigned long>(offset));
        if (FILE* p = popen(command.c_str(), "r")) {
            std::vector<std::string> lines;
            char buf[1024];
            while (fgets(buf, sizeof buf, p) != nullptr) {
                std::string l(buf);
                while (!l.empty() && (l.back() == '\n' || l.back() == '\r')) {
                    l.pop_back();
                }
                lines.push_back(l);
            }
            pclose(p);
            auto base = [](std::string path) {
                size_t note = path.find(" (discriminator");
                if (note != std::string::npos) {
                    path.erase(note);
                }
                return path.substr(path.find_last_of('/') + 1);
            };
            auto in_kernel_source = [&](const std::string& location) {
                std::string file = base(location);
                file = file.substr(0, file.find(':'));
                return file.size() > 3 && file.compare(file.size() - 3, 3, ".cu") == 0;
            };
            if (lines.size() >= 2 && lines[1].find("??") == std::string::npos) {
                name = base(lines[1]) + " in " + lines[lines.size() - 2];
                if (!in_kernel_source(lines[1])) {
                    for (size_t k = 3; k < lines.size(); k += 2) {
                        if (in_kernel_source(lines[k])) {
                            name += " (" + base(lines[k]) + ")";
                            break;
                        }
                    }
                }
            }
        }
    }
    names[site] = name;
    return name;
}

}  // namespace seqk_emu

// ---------------------------------------------------------------- the instrumentation's entry points

using seqk_emu::access;

#define SEQK_TSAN_ACCESS(n)                                                                  \
    extern "C" void __tsan_read##n(void* p) { access(p, n, false, false, __builtin_return_address(0)); }  \
    extern "C" void __tsan_write##n(void* p) { access(p, n, true, false, __builtin_return_address(0)); }  \
    extern "C" void __tsan_unaligned_read##n(void* p) { access(p, n, false, false, __builtin_return_address(0)); } \
    extern "C" void __tsan_unaligned_write##n(void* p) { access(p, n, true, false, __builtin_return_address(0)); }

SEQK_TSAN_ACCESS(1)
SEQK_TSAN_ACCESS(2)
SEQK_TSAN_ACCESS(4)
SEQK_TSAN_ACCESS(8)
SEQK_TSAN_ACCESS(16)

extern "C" void __tsan_init() {}
extern "C" void __tsan_func_entry(void*) {}
extern "C" void __tsan_func_exit() {}
// A virtual table pointer set in kernel code (a C++ object's constructor, such as an exception's).
// Deliberately unchecked: our kernels construct no polymorphic object in shared or global memory
// (such a store there would go unseen by the hazard checks); the emulator's own objects are not
// device memory.
extern "C" void __tsan_vptr_update(void**, void*) {}
extern "C" void __tsan_read_range(void* p, unsigned long n) {
    for (unsigned long i = 0; i < n; i++) {
        access(static_cast<char*>(p) + i, 1, false, false, __builtin_return_address(0));
    }
}
extern "C" void __tsan_write_range(void* p, unsigned long n) {
    for (unsigned long i = 0; i < n; i++) {
        access(static_cast<char*>(p) + i, 1, true, false, __builtin_return_address(0));
    }
}

// Atomics: checked as atomic accesses, then performed (sequentially consistent, whatever was
// asked). Every variant GCC's instrumentation may call for 1- to 8-byte atomics is defined: the
// library links with -z defs, so one missing would fail the build rather than a launch.
#define SEQK_TSAN_ATOMIC_RMW(bits, type, op, builtin)                                                   \
    extern "C" type __tsan_atomic##bits##_##op(volatile type* a, type v, int) {                         \
        access(const_cast<type*>(a), sizeof(type), true, true, __builtin_return_address(0));            \
        return builtin(a, v, __ATOMIC_SEQ_CST);                                                          \
    }

#define SEQK_TSAN_ATOMIC(bits, type)                                                                                   \
    extern "C" type __tsan_atomic##bits##_load(const volatile type* a, int) {                                         \
        access(const_cast<type*>(a), sizeof(type), false, true, __builtin_return_address(0));                          \
        return __atomic_load_n(a, __ATOMIC_SEQ_CST);                                                                    \
    }                                                                                                                  \
    extern "C" void __tsan_atomic##bits##_store(volatile type* a, type v, int) {                                      \
        access(const_cast<type*>(a), sizeof(type), true, true, __builtin_return_address(0));                           \
        __atomic_store_n(a, v, __ATOMIC_SEQ_CST);                                                                       \
    }                                                                                                                  \
    SEQK_TSAN_ATOMIC_RMW(bits, type, exchange, __atomic_exchange_n)                                                    \
    SEQK_TSAN_ATOMIC_RMW(bits, type, fetch_add, __atomic_fetch_add)                                                    \
    SEQK_TSAN_ATOMIC_RMW(bits, type, fetch_sub, __atomic_fetch_sub)                                                    \
    SEQK_TSAN_ATOMIC_RMW(bits, type, fetch_and, __atomic_fetch_and)                                                    \
    SEQK_TSAN_ATOMIC_RMW(bits, type, fetch_or, __atomic_fetch_or)                                                      \
    SEQK_TSAN_ATOMIC_RMW(bits, type, fetch_xor, __atomic_fetch_xor)                                                    \
    SEQK_TSAN_ATOMIC_RMW(bits, type, fetch_nand, __atomic_fetch_nand)                                                  \
    extern "C" int __tsan_atomic##bits##_compare_exchange_strong(volatile type* a, type* expected, type desired, int,  \
                                                                 int) {                                                \
        access(const_cast<type*>(a), sizeof(type), true, true, __builtin_return_address(0));                           \
        return __atomic_compare_exchange_n(a, expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);            \
    }                                                                                                                  \
    extern "C" int __tsan_atomic##bits##_compare_exchange_weak(volatile type* a, type* expected, type desired, int,    \
                                                               int) {                                                  \
        access(const_cast<type*>(a), sizeof(type), true, true, __builtin_return_address(0));                           \
        return __atomic_compare_exchange_n(a, expected, desired, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);             \
    }                                                                                                                  \
    extern "C" type __tsan_atomic##bits##_compare_exchange_val(volatile type* a, type expected, type desired, int,     \
                                                               int) {                                                  \
        access(const_cast<type*>(a), sizeof(type), true, true, __builtin_return_address(0));                           \
        __atomic_compare_exchange_n(a, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                  \
        return expected;                                                                                               \
    }

SEQK_TSAN_ATOMIC(8, signed char)
SEQK_TSAN_ATOMIC(16, short)
SEQK_TSAN_ATOMIC(32, int)
SEQK_TSAN_ATOMIC(64, long)

extern "C" void __tsan_atomic_thread_fence(int) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
extern "C" void __tsan_atomic_signal_fence(int) { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
