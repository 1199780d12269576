// The emulator's hazard checker: what compute-sanitizer's memcheck, racecheck and synccheck find
// on a GPU, found here on every launch while checking is on.
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
// Races. A granule remembers its last write and the reads since (one reader, or several), each
// with the thread, the block's barrier epoch (__syncthreads opened so far), its warp's collective
// count and the code address. Two accesses by different threads, at least one a write, race
// unless a __syncthreads opened between them, or both threads are in one warp and both have
// completed a warp collective (__syncwarp, shuffle, vote, ldmatrix, mma) since the first; in global
// memory, accesses by different blocks of one launch race unless a grid sync separates them.
// Atomics do not race with atomics. A cp.async destination is written from its issue until its
// thread waits for it: any access by another thread in between, or a read by its own thread
// before the wait, is a race, whatever barriers opened. Reports name the kernel, the block, both
// threads and both source lines.
#include <dlfcn.h>
#include <link.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <mutex>
#include <unordered_map>

#include "emu/seqk_emu.h"
#include "runtime_internal.h"

namespace seqk_emu {

int g_checking = 1;

namespace {

constexpr unsigned kGranule = 2;  // bytes per shadow entry: 16-bit values written by different threads are not a race

uint32_t g_launch_serial = 0;  // wraps after 4 billion launches: old shadow entries would then look current
std::vector<std::pair<uintptr_t, uintptr_t>> g_params;  // the running launch's parameter bytes
std::mutex g_global_mutex;                              // global shadow, during cooperative launches
thread_local Allocation* t_last_allocation = nullptr;
thread_local uint64_t t_last_allocation_launch = 0;

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

const char* kind_name(bool write, bool atomic) {
    return atomic ? (write ? "atomically writes" : "atomically reads") : (write ? "writes" : "reads");
}

/** "thread (t) writes at SITE" for an earlier access. */
std::string describe(const Block& b, const Access& a, bool write) {
    std::string who = a.block != b.linear ? format("block %u thread %u", a.block, a.thread) : format("thread %u", a.thread);
    return who + " " + (write ? "wrote" : "read") + " it at " + site_name(a.site);
}

/** Whether earlier access `prev` is ordered before an access by `now` (same block, or different blocks of one launch). */
bool ordered(const Block& b, const Access& prev, const Access& now) {
    if (prev.block != now.block) {
        return prev.grid_epoch != now.grid_epoch;  // different blocks: only a grid sync orders them
    }
    if (prev.thread == now.thread || prev.epoch != now.epoch) {
        return true;
    }
    if (prev.thread / 32 != now.thread / 32 || prev.thread >= b.fibers.size()) {
        return false;
    }
    return b.fibers[prev.thread].synced > prev.warp_sync && b.fibers[now.thread].synced > prev.warp_sync;
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
 * (empty: none), for the caller to report once it holds no lock. History of another owner (an
 * earlier block, or an earlier launch) cannot race.
 */
std::string touch(Block& b, WordShadow& w, const Access& now, bool write, const Memory& where_) {
    auto race = [&](const Access& prev, bool prev_write, const char* kind) {
        return format("%s on %s: thread %u %s it at %s, and ", kind, memory_name(where_).c_str(), now.thread,
                      kind_name(write, now.atomic), site_name(now.site).c_str()) +
               describe(b, prev, prev_write) +
               (prev.block != now.block ? " (another block, no grid sync between)" : " (no __syncthreads or warp sync between)");
    };
    if (w.write.owner == now.owner) {
        if (w.pending && w.write.thread != now.thread) {
            return race(w.write, true, "race with a cp.async in flight");
        }
        if (w.pending && !write) {
            return format("thread %u reads %s at %s, a cp.async destination it has not waited for (issued at %s)", now.thread,
                          memory_name(where_).c_str(), site_name(now.site).c_str(), site_name(w.write.site).c_str());
        }
        if (!(w.write.atomic && now.atomic) && !ordered(b, w.write, now)) {
            return race(w.write, true, write ? "write-after-write race" : "read-after-write race");
        }
    }
    ReadSet& r = w.reads;
    bool current = r.first.owner == now.owner;
    if (write) {
        if (current && !(r.first.atomic && now.atomic)) {
            bool other_block = r.several_blocks || r.first.block != now.block;
            if (other_block && r.first.grid_epoch == now.grid_epoch) {
                return race(r.first, false, "write-after-read race");
            }
            if (!other_block && r.first.epoch == now.epoch) {
                uint32_t own_warp = 1u << (now.thread / 32 % 32);
                bool other_warp = (r.warps & ~own_warp) != 0;
                bool other_thread = r.several_threads || r.first.thread != now.thread;
                bool synced_since = b.fibers[now.thread].synced > r.earliest_sync;
                if (other_warp || (other_thread && !synced_since)) {
                    return race(r.first, false, "write-after-read race");
                }
            }
        }
        w.write = now;
        w.reads = ReadSet{};
        w.pending = false;
        return {};
    }
    bool stale = !current || (r.first.block == now.block && !r.several_blocks && r.first.epoch != now.epoch) ||
                 (r.first.block != now.block && r.first.grid_epoch != now.grid_epoch);
    if (stale) {
        r = ReadSet{};
        r.first = now;
        r.earliest_sync = now.warp_sync;
    } else {
        r.several_threads |= r.first.thread != now.thread || r.first.block != now.block;
        r.several_blocks |= r.first.block != now.block;
        r.earliest_sync = std::min(r.earliest_sync, now.warp_sync);
    }
    if (now.block == r.first.block) {
        r.warps |= 1u << (now.thread / 32 % 32);
    }
    return {};
}

/** The running thread's access, stamped with where and when it happens. */
Access now_access(const Block& b, const Fiber& f, uint64_t owner, const void* site, bool atomic) {
    Access a;
    a.owner = owner;
    a.block = b.linear;
    a.epoch = b.epoch;
    a.grid_epoch = b.grid_epoch;
    a.thread = static_cast<uint16_t>(f.coords.linear);
    a.warp_sync = b.warp_syncs[f.coords.linear / 32];
    a.site = site;
    a.atomic = atomic;
    return a;
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

void shared_access(Block& b, Fiber& f, size_t offset, unsigned size, bool write, bool atomic, const void* site) {
    Memory part = shared_part(b, offset, size);
    if (part.space == nullptr) {
        fault(format("thread %u %s %u bytes of shared memory at arena offset %zu, outside the dynamic shared memory (%zu "
                     "bytes) and every static shared array, at %s",
                     f.coords.linear, kind_name(write, atomic), size, offset, b.smem_bytes, site_name(site).c_str()));
    }
    Access now = now_access(b, f, b.serial, site, atomic);
    size_t start = part.offset;  // the static array's start (0 for dynamic shared memory)
    for (size_t g = offset / kGranule; g <= (offset + size - 1) / kGranule; g++) {
        part.offset = g * kGranule - start;
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
        al.shadow = std::make_unique<WordShadow[]>((al.bytes + kGranule - 1) / kGranule);
    }
    Access now = now_access(b, f, g_launch_serial, site, atomic);
    for (size_t g = offset / kGranule; g <= (offset + size - 1) / kGranule; g++) {
        std::string hazard = touch(b, al.shadow[g], now, write,
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
    Allocation* al = t_last_allocation;
    if (al != nullptr && t_last_allocation_launch == g_launch_serial) {
        uintptr_t payload = reinterpret_cast<uintptr_t>(al->payload);
        if (a >= payload && a + size <= payload + al->bytes) {
            return al;
        }
    }
    al = find(a, size);
    t_last_allocation = al;
    t_last_allocation_launch = g_launch_serial;
    return al;
}

/** Every checked load and store of kernel code comes here. */
void access(const void* p, unsigned size, bool write, bool atomic, const void* site) {
    Fiber* f = t_fiber;
    if (f == nullptr || !g_checking) {
        return;
    }
    uintptr_t a = reinterpret_cast<uintptr_t>(p);
    if (a - reinterpret_cast<uintptr_t>(f->stack) < kStackBytes) {
        return;  // the thread's own locals
    }
    if (size > 1 && a % size != 0) {
        fault(format("thread %u %s %u bytes at 0x%lx, which is not %u-byte aligned (a GPU faults: misaligned address), at %s",
                     f->coords.linear, kind_name(write, atomic), size, static_cast<unsigned long>(a), size,
                     site_name(site).c_str()));
    }
    Block& b = *t_block;
    uintptr_t arena = reinterpret_cast<uintptr_t>(b.smem.data());
    if (a - arena < b.smem.size()) {
        shared_access(b, *f, a - arena, size, write, atomic, site);
        return;
    }
    if (Allocation* al = allocation_of(a, size)) {
        global_access(b, *f, *al, a - reinterpret_cast<uintptr_t>(al->payload), size, write, atomic, site);
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

}  // namespace

void hazards_begin_launch(void** args, const Kernel& k) {
    g_launch_serial++;
    g_params.clear();
    uintptr_t array = reinterpret_cast<uintptr_t>(args);  // the void** the trampoline reads, and each value
    g_params.emplace_back(array, array + sizeof(void*) * static_cast<size_t>(k.arg_count));
    for (int i = 0; i < k.arg_count; i++) {
        uintptr_t lo = reinterpret_cast<uintptr_t>(args[i]);
        g_params.emplace_back(lo, lo + k.params[i].size);
    }
}

void hazards_begin_block(Block& b) {
    static std::atomic<uint32_t> serials{0};
    b.serial = ++serials;
    b.epoch = 0;
    b.grid_epoch = 0;
    b.warp_syncs.assign((b.fibers.size() + 31) / 32, 0);
    hazards_cover(b, b.smem_bytes);
}

void hazards_cover(Block& b, size_t bytes) {
    size_t granules = (bytes + kGranule - 1) / kGranule;
    if (b.shadow.size() < granules) {
        b.shadow.resize(granules);  // entries of earlier blocks carry their serial: no clearing needed
    }
}

void hazards_cp_async_issue(void* dst, const void* src, unsigned bytes, const void* site) {
    Fiber* f = t_fiber;
    Block& b = *t_block;
    uintptr_t d = reinterpret_cast<uintptr_t>(dst);
    uintptr_t arena = reinterpret_cast<uintptr_t>(b.smem.data());
    if (d - arena >= b.smem.size() || shared_part(b, d - arena, bytes).space == nullptr) {
        fault(format("thread %u issues a cp.async of %u bytes to 0x%lx, which is not inside the block's shared memory, at %s",
                     f->coords.linear, bytes, static_cast<unsigned long>(d), site_name(site).c_str()));
    }
    if (!g_checking) {
        return;
    }
    access(src, bytes, false, false, site);
    shared_access(b, *f, d - arena, bytes, true, false, site);
    for (size_t g = (d - arena) / kGranule; g <= (d - arena + bytes - 1) / kGranule; g++) {
        b.shadow[g].pending = true;
    }
}

void hazards_cp_async_waited(Fiber& f, size_t count) {
    if (!g_checking || t_block == nullptr) {
        return;
    }
    Block& b = *t_block;
    uintptr_t arena = reinterpret_cast<uintptr_t>(b.smem.data());
    for (size_t i = 0; i < count; i++) {
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

void hazards_collective_released(Block& b, size_t warp_base, unsigned mask, const Fiber& first) {
    if (!g_checking) {
        return;
    }
    for (unsigned lane = 0; lane < 32; lane++) {
        if (!(mask >> lane & 1u)) {
            continue;
        }
        const Fiber& other = b.fibers[warp_base + lane];
        if (other.warp_seq != first.warp_seq) {
            continue;
        }
        if (other.warp_mask != mask) {
            throw EmuError(where(b, warp_base + lane) + format(": lanes meet at a warp collective with different masks "
                                                                "(0x%08x here, 0x%08x at lane %u)",
                                                                other.warp_mask, mask,
                                                                static_cast<unsigned>(first.coords.linear % 32)));
        }
        if (!same_site(other.wait_site, first.wait_site)) {
            throw EmuError(where(b, warp_base + lane) + ": lanes of one warp meet at a collective from different sites: " +
                           site_name(other.wait_site) + " and " + site_name(first.wait_site) + " (lane " +
                           std::to_string(first.coords.linear % 32) + ")");
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
        // addr2line (binutils) turns the address into lines: the innermost is the access itself,
        // the outermost the kernel it was inlined into.
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
            auto base = [](const std::string& path) { return path.substr(path.find_last_of('/') + 1); };
            if (lines.size() >= 2 && lines[1].find("??") == std::string::npos) {
                name = base(lines[1]);
                if (lines.size() >= 4) {
                    name += " in " + lines[lines.size() - 2] + " (" + base(lines.back()) + ")";
                } else {
                    name += " in " + lines[0];
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

// Atomics: checked as atomic accesses, then performed (sequentially consistent, whatever was asked).
#define SEQK_TSAN_ATOMIC(bits, type)                                                                                   \
    extern "C" type __tsan_atomic##bits##_load(const volatile type* a, int) {                                         \
        access(const_cast<type*>(a), sizeof(type), false, true, __builtin_return_address(0));                          \
        return __atomic_load_n(a, __ATOMIC_SEQ_CST);                                                                    \
    }                                                                                                                  \
    extern "C" void __tsan_atomic##bits##_store(volatile type* a, type v, int) {                                      \
        access(const_cast<type*>(a), sizeof(type), true, true, __builtin_return_address(0));                           \
        __atomic_store_n(a, v, __ATOMIC_SEQ_CST);                                                                       \
    }                                                                                                                  \
    extern "C" type __tsan_atomic##bits##_exchange(volatile type* a, type v, int) {                                   \
        access(const_cast<type*>(a), sizeof(type), true, true, __builtin_return_address(0));                           \
        return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST);                                                             \
    }                                                                                                                  \
    extern "C" type __tsan_atomic##bits##_fetch_add(volatile type* a, type v, int) {                                  \
        access(const_cast<type*>(a), sizeof(type), true, true, __builtin_return_address(0));                           \
        return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST);                                                              \
    }                                                                                                                  \
    extern "C" int __tsan_atomic##bits##_compare_exchange_strong(volatile type* a, type* expected, type desired, int,  \
                                                                 int) {                                                \
        access(const_cast<type*>(a), sizeof(type), true, true, __builtin_return_address(0));                           \
        return __atomic_compare_exchange_n(a, expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);            \
    }                                                                                                                  \
    extern "C" int __tsan_atomic##bits##_compare_exchange_weak(volatile type* a, type* expected, type desired, int,    \
                                                               int) {                                                  \
        access(const_cast<type*>(a), sizeof(type), true, true, __builtin_return_address(0));                           \
        return __atomic_compare_exchange_n(a, expected, desired, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);             \
    }

SEQK_TSAN_ATOMIC(32, int)
SEQK_TSAN_ATOMIC(64, long)
