// Reads module images for the stand-in driver. The fatbin layout (a container header, then one
// entry per PTX or cubin with its architecture and compression flags) is the one nvcc writes; the
// cubin resources (.nv.info register counts, .nv.shared sizes) are those cuobjdump reports.
#include "image.h"

#include <dlfcn.h>
#include <elf.h>

#include <cctype>
#include <cstring>
#include <mutex>

namespace seqk_standin {

namespace {

constexpr uint32_t kFatbinMagic = 0xBA55ED50u;
constexpr uint16_t kEntryPtx = 1;
constexpr uint16_t kEntryElf = 2;
constexpr uint64_t kCompressedLz4 = 0x2000;
constexpr uint64_t kCompressedZstd = 0x8000;
constexpr unsigned kReservedSharedBytes = 1024;  // sm_80+ keep 1 KB of each block's shared memory for the system

struct FatbinHeader {
    uint32_t magic;
    uint16_t version;
    uint16_t header_size;
    uint64_t fat_size;  // bytes of entries after the header
};

struct EntryHeader {
    uint16_t kind;
    uint16_t version;
    uint32_t header_size;
    uint64_t payload_size;  // padded
    uint32_t compressed_size;
    uint32_t unknown0;
    uint32_t code_version;
    uint32_t arch;  // 90 for sm_90 / compute_90
    uint32_t name_offset;
    uint32_t name_size;
    uint64_t flags;
    uint64_t unknown1;
    uint64_t uncompressed_size;
};

struct Entry {
    uint16_t kind;
    unsigned arch;
    std::string bytes;  // decompressed payload
};

/** libzstd's one-shot decompression, loaded on first use: nvcc 13 compresses the PTX in fatbins with zstd. */
bool zstd_decompress(const unsigned char* src, size_t size, size_t out_size, std::string& out, std::string& error) {
    using Decompress = size_t (*)(void*, size_t, const void*, size_t);
    using IsError = unsigned (*)(size_t);
    static std::once_flag once;
    static Decompress decompress = nullptr;
    static IsError is_error = nullptr;
    std::call_once(once, [] {
        void* lib = dlopen("libzstd.so.1", RTLD_NOW | RTLD_LOCAL);
        if (lib != nullptr) {
            decompress = reinterpret_cast<Decompress>(dlsym(lib, "ZSTD_decompress"));
            is_error = reinterpret_cast<IsError>(dlsym(lib, "ZSTD_isError"));
        }
    });
    if (decompress == nullptr || is_error == nullptr) {
        error = "the fatbin's PTX is zstd-compressed (nvcc 13) and libzstd.so.1 is not on this machine";
        return false;
    }
    out.assign(out_size, '\0');
    size_t n = decompress(out.data(), out_size, src, size);
    if (is_error(n) || n != out_size) {
        error = "a zstd-compressed fatbin entry does not decompress to its recorded size";
        return false;
    }
    return true;
}

bool read_entries(const unsigned char* image, std::vector<Entry>& entries, std::string& error) {
    FatbinHeader h;
    std::memcpy(&h, image, sizeof h);
    if (h.header_size < sizeof h || h.fat_size > (uint64_t(1) << 32)) {
        error = "the fatbin header is malformed";
        return false;
    }
    const unsigned char* p = image + h.header_size;
    const unsigned char* end = p + h.fat_size;
    while (static_cast<size_t>(end - p) >= sizeof(EntryHeader)) {
        EntryHeader e;
        std::memcpy(&e, p, sizeof e);
        size_t left = static_cast<size_t>(end - p);
        if (e.header_size < sizeof e || e.header_size > left || e.payload_size > left - e.header_size) {
            error = "a fatbin entry runs past the end of the image";
            return false;
        }
        const unsigned char* payload = p + e.header_size;
        Entry out{e.kind, e.arch, {}};
        if (e.flags & kCompressedZstd) {
            if (e.uncompressed_size > (uint64_t(1) << 32)) {
                error = "a compressed fatbin entry claims more than 4 GiB";
                return false;
            }
            if (e.compressed_size > e.payload_size || !zstd_decompress(payload, e.compressed_size, e.uncompressed_size, out.bytes, error)) {
                if (error.empty()) {
                    error = "a compressed fatbin entry is larger than its payload";
                }
                return false;
            }
        } else if (e.flags & kCompressedLz4) {
            error = "the fatbin is LZ4-compressed (nvcc before 12.8); the stand-in reads zstd or uncompressed fatbins";
            return false;
        } else {
            out.bytes.assign(reinterpret_cast<const char*>(payload), e.payload_size);
        }
        if (e.kind == kEntryPtx || e.kind == kEntryElf) {
            entries.push_back(std::move(out));
        }
        p += e.header_size + e.payload_size;
    }
    return true;
}

size_t type_size(const std::string& t) {
    static const std::map<std::string, size_t> sizes = {
        {".b8", 1},  {".u8", 1},  {".s8", 1},  {".b16", 2}, {".u16", 2}, {".s16", 2}, {".f16", 2},
        {".b32", 4}, {".u32", 4}, {".s32", 4}, {".f32", 4}, {".b64", 8}, {".u64", 8}, {".s64", 8}, {".f64", 8}};
    auto it = sizes.find(t);
    return it == sizes.end() ? 0 : it->second;
}

/** A decimal count in PTX ("16", "264"); false when it is not one (no exceptions cross the C ABI). */
bool parse_count(const std::string& text, size_t& out) {
    if (text.empty() || text.size() > 9) {
        return false;
    }
    out = 0;
    for (char c : text) {
        if (c < '0' || c > '9') {
            return false;
        }
        out = out * 10 + static_cast<size_t>(c - '0');
    }
    return true;
}

std::vector<std::string> words(const std::string& s) {
    std::vector<std::string> out;
    size_t i = 0;
    while (i < s.size()) {
        while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) {
            i++;
        }
        size_t j = i;
        while (j < s.size() && !std::isspace(static_cast<unsigned char>(s[j]))) {
            j++;
        }
        if (j > i) {
            out.push_back(s.substr(i, j - i));
        }
        i = j;
    }
    return out;
}

/** One `.param ...` declaration: `.param .u64 [.ptr [.space] .align N] name` or `.param .align A .b8 name[N]`. */
bool parse_param(const std::string& decl, Param& p, std::string& error) {
    std::vector<std::string> w = words(decl);
    if (w.size() < 3 || w[0] != ".param") {
        error = "unexpected parameter declaration '" + decl + "'";
        return false;
    }
    size_t explicit_align = 0;
    size_t elem = 0;
    bool pointer_attributes = false;
    for (size_t i = 1; i + 1 < w.size(); i++) {
        if (w[i] == ".align" && i + 2 < w.size()) {
            size_t a;
            if (!parse_count(w[++i], a) || a == 0 || (a & (a - 1)) != 0) {
                error = "a bad alignment in '" + decl + "'";
                return false;
            }
            if (!pointer_attributes) {
                explicit_align = a;  // after .ptr, .align is the pointee's alignment, not the parameter's
            }
        } else if (w[i] == ".ptr") {
            pointer_attributes = true;
        } else if (type_size(w[i]) > 0) {
            elem = type_size(w[i]);
        } else if (w[i] != ".global" && w[i] != ".shared" && w[i] != ".const" && w[i] != ".local") {
            error = "unknown parameter attribute '" + w[i] + "' in '" + decl + "'";
            return false;
        }
    }
    if (elem == 0) {
        error = "no type in parameter declaration '" + decl + "'";
        return false;
    }
    const std::string& name = w.back();
    size_t count = 1;
    size_t bracket = name.find('[');
    if (bracket != std::string::npos) {
        size_t close = name.find(']', bracket);
        if (close == std::string::npos || !parse_count(name.substr(bracket + 1, close - bracket - 1), count) || count == 0) {
            error = "a bad array size in '" + decl + "'";
            return false;
        }
    }
    p.size = elem * count;
    p.align = explicit_align ? explicit_align : elem;
    return true;
}

/** Registers and static shared memory of every kernel in a cubin, from .nv.info (REGCOUNT) and .nv.shared.<kernel>. */
bool read_cubin_resources(const std::string& elf, std::map<std::string, KernelImage>& kernels, std::string& error) {
    auto* base = reinterpret_cast<const unsigned char*>(elf.data());
    if (elf.size() < sizeof(Elf64_Ehdr) || std::memcmp(base, ELFMAG, SELFMAG) != 0) {
        error = "a cubin in the fatbin is not an ELF image";
        return false;
    }
    Elf64_Ehdr eh;
    std::memcpy(&eh, base, sizeof eh);
    if (eh.e_shoff > elf.size() || static_cast<uint64_t>(eh.e_shnum) * sizeof(Elf64_Shdr) > elf.size() - eh.e_shoff) {
        error = "a cubin's section table runs past its end";
        return false;
    }
    if (eh.e_shnum == 0 || eh.e_shentsize != sizeof(Elf64_Shdr) || eh.e_shstrndx >= eh.e_shnum) {
        error = "a cubin without a usable section table";
        return false;
    }
    std::vector<Elf64_Shdr> sections(eh.e_shnum);
    std::memcpy(sections.data(), base + eh.e_shoff, eh.e_shnum * sizeof(Elf64_Shdr));
    for (const Elf64_Shdr& s : sections) {
        if (s.sh_type != SHT_NOBITS && (s.sh_offset > elf.size() || s.sh_size > elf.size() - s.sh_offset)) {
            error = "a cubin section runs past its end";
            return false;
        }
    }
    /** A NUL-terminated string at `offset` of string table section `table`, or empty when out of bounds. */
    auto string_at = [&](size_t table, size_t offset) -> std::string {
        if (table >= sections.size() || sections[table].sh_type == SHT_NOBITS || offset >= sections[table].sh_size) {
            return {};
        }
        const char* start = reinterpret_cast<const char*>(base + sections[table].sh_offset + offset);
        return std::string(start, strnlen(start, sections[table].sh_size - offset));
    };
    std::vector<std::string> symbols;
    bool reserved_shared = false;
    for (const Elf64_Shdr& s : sections) {
        if (s.sh_type == SHT_SYMTAB) {
            for (size_t i = 0; i < s.sh_size / sizeof(Elf64_Sym); i++) {
                Elf64_Sym sym;
                std::memcpy(&sym, base + s.sh_offset + i * sizeof sym, sizeof sym);
                symbols.push_back(string_at(s.sh_link, sym.st_name));
            }
        }
        if (string_at(eh.e_shstrndx, s.sh_name).rfind(".nv.shared.reserved", 0) == 0) {
            reserved_shared = true;
        }
    }
    for (const Elf64_Shdr& s : sections) {
        std::string name = string_at(eh.e_shstrndx, s.sh_name);
        if (name == ".nv.info") {
            const unsigned char* p = base + s.sh_offset;
            const unsigned char* end = p + s.sh_size;
            while (end - p >= 4) {
                unsigned format = p[0];
                unsigned attribute = p[1];
                const unsigned char* value = p + 2;
                size_t value_size = 0;
                if (format == 0x04) {  // sized value: a 2-byte length, then the bytes
                    uint16_t n;
                    std::memcpy(&n, p + 2, 2);
                    if (n > end - p - 4) {
                        break;
                    }
                    value = p + 4;
                    value_size = n;
                    p += 4 + n;
                } else {
                    value_size = format == 0x01 ? 0 : 2;
                    p += 2 + value_size;
                }
                constexpr unsigned kRegCount = 0x2f;
                if (attribute == kRegCount && value_size == 8 && value + 8 <= end) {
                    uint32_t sym, regs;
                    std::memcpy(&sym, value, 4);
                    std::memcpy(&regs, value + 4, 4);
                    if (sym < symbols.size()) {
                        kernels[symbols[sym]].registers = static_cast<int>(regs);
                    }
                }
            }
        } else if (name.rfind(".nv.shared.", 0) == 0 && name.rfind(".nv.shared.reserved", 0) != 0) {
            size_t bytes = s.sh_size;
            if (reserved_shared) {
                bytes = bytes >= kReservedSharedBytes ? bytes - kReservedSharedBytes : 0;
            }
            kernels[name.substr(11)].static_shared = bytes;
        }
    }
    return true;
}

}  // namespace

bool parse_ptx_entries(const std::string& ptx, std::map<std::string, KernelImage>& out, std::string& error) {
    size_t pos = 0;
    while ((pos = ptx.find(".entry", pos)) != std::string::npos) {
        size_t name_start = pos + 6;
        while (name_start < ptx.size() && std::isspace(static_cast<unsigned char>(ptx[name_start]))) {
            name_start++;
        }
        size_t open = ptx.find('(', name_start);
        if (open == std::string::npos) {
            error = "a PTX .entry without a parameter list";
            return false;
        }
        std::string name = ptx.substr(name_start, open - name_start);
        while (!name.empty() && std::isspace(static_cast<unsigned char>(name.back()))) {
            name.pop_back();
        }
        size_t close = ptx.find(')', open);
        if (close == std::string::npos) {
            error = "the parameter list of PTX entry " + name + " does not end";
            return false;
        }
        KernelImage k;
        std::string list = ptx.substr(open + 1, close - open - 1);
        size_t start = 0;
        size_t offset = 0;
        while (start < list.size()) {
            size_t comma = list.find(',', start);
            std::string decl = list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
            start = comma == std::string::npos ? list.size() : comma + 1;
            if (words(decl).empty()) {
                continue;
            }
            Param p{};
            if (!parse_param(decl, p, error)) {
                error = "PTX entry " + name + ": " + error;
                return false;
            }
            offset = (offset + p.align - 1) / p.align * p.align;
            p.offset = offset;
            offset += p.size;
            k.params.push_back(p);
        }
        k.param_bytes = offset;
        // Performance directives sit between the parameter list and the body: .maxntid x[, y[, z]].
        size_t body = ptx.find('{', close);
        size_t maxntid = ptx.find(".maxntid", close);
        if (maxntid != std::string::npos && (body == std::string::npos || maxntid < body)) {
            // One to three positive numbers separated by commas (spaces optional); whatever follows
            // the last of them (another directive, a comment) is not ours.
            long threads = 1;
            int dims = 0;
            const char* p = ptx.c_str() + maxntid + 8;
            while (dims < 3) {
                while (*p == ' ' || *p == '\t') {
                    p++;
                }
                char* end = nullptr;
                long v = std::strtol(p, &end, 10);
                if (end == p || v <= 0 || v > 1024) {
                    break;
                }
                threads *= v;
                dims++;
                p = end;
                while (*p == ' ' || *p == '\t') {
                    p++;
                }
                if (*p != ',') {
                    break;
                }
                p++;
            }
            if (dims == 0) {
                error = "PTX entry " + name + ": unreadable .maxntid";
                return false;
            }
            k.max_threads = static_cast<int>(std::min<long>(threads, 1 << 20));
        }
        out[name] = k;
        pos = close;
    }
    return true;
}

bool read_module_image(const void* image, int arch, ModuleImage& out, std::string& error, bool& no_binary_for_gpu) {
    no_binary_for_gpu = false;
    uint32_t magic;
    std::memcpy(&magic, image, 4);
    if (magic != kFatbinMagic) {
        const char* text = static_cast<const char*>(image);
        if (std::strstr(text, ".version") == nullptr || std::strstr(text, ".target") == nullptr) {
            error = "the image is neither a fatbin nor PTX text (the stand-in does not load bare cubins)";
            return false;
        }
        out.origin = "PTX text";
        return parse_ptx_entries(text, out.kernels, error);
    }
    std::vector<Entry> entries;
    if (!read_entries(static_cast<const unsigned char*>(image), entries, error)) {
        return false;
    }
    const Entry* sass = nullptr;  // the best cubin: same major version, highest minor not above the device's
    const Entry* ptx = nullptr;   // the newest PTX the device can JIT
    for (const Entry& e : entries) {
        if (e.kind == kEntryElf && static_cast<int>(e.arch) / 10 == arch / 10 && static_cast<int>(e.arch) <= arch &&
            (sass == nullptr || e.arch > sass->arch)) {
            sass = &e;
        }
        if (e.kind == kEntryPtx && static_cast<int>(e.arch) <= arch && (ptx == nullptr || e.arch > ptx->arch)) {
            ptx = &e;
        }
    }
    if (sass == nullptr && ptx == nullptr) {
        no_binary_for_gpu = true;
        error = "the fatbin has no SASS for sm_" + std::to_string(arch) + " and no PTX at or below compute_" +
                std::to_string(arch);
        return false;
    }
    if (ptx == nullptr) {
        error = "the fatbin has SASS but no PTX; the stand-in reads kernel parameter lists from PTX";
        return false;
    }
    std::string text(ptx->bytes.c_str());  // PTX payloads are NUL-padded
    if (!parse_ptx_entries(text, out.kernels, error)) {
        return false;
    }
    out.origin = "compute_" + std::to_string(ptx->arch) + " PTX";
    if (sass != nullptr) {
        std::map<std::string, KernelImage> resources;
        if (!read_cubin_resources(sass->bytes, resources, error)) {
            return false;
        }
        for (auto& [name, k] : out.kernels) {
            auto it = resources.find(name);
            if (it != resources.end()) {
                k.registers = it->second.registers;
                k.static_shared = it->second.static_shared;
            }
        }
        out.origin = "sm_" + std::to_string(sass->arch) + " SASS + " + out.origin;
    }
    return true;
}

}  // namespace seqk_standin
