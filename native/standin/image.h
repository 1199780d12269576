// What the stand-in driver learns from a module image, as a real driver would: the kernels and
// their parameter lists from the PTX that nvcc put in the fatbin (the device ABI), and each
// kernel's registers and static shared memory from the SASS (cubin) for the device's architecture.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace seqk_standin {

/** One .param of a kernel entry: its byte offset in the parameter buffer, size and alignment. */
struct Param {
    size_t offset;
    size_t size;
    size_t align;
};

struct KernelImage {
    std::vector<Param> params;
    size_t param_bytes = 0;     // the parameter buffer's size: end of the last parameter
    int registers = -1;         // per thread, from the cubin; -1 when only PTX was found (a JIT build)
    size_t static_shared = 0;   // bytes of __shared__ declared in the kernel
    int max_threads = 0;        // the PTX's .maxntid (x * y * z, its __launch_bounds__); 0 when it has none
};

struct ModuleImage {
    std::map<std::string, KernelImage> kernels;
    std::string origin;  // "sm_90 SASS + compute_90 PTX", for diagnostics
};

/**
 * Reads a fatbin (nvcc -fatbin) or PTX text for a device of compute capability `arch` (major *
 * 10 + minor). Returns false with the reason in `error` when the image is malformed, holds no PTX
 * this code can read (compressed PTX needs libzstd.so.1), or nothing that runs on `arch` (the
 * driver's CUDA_ERROR_NO_BINARY_FOR_GPU).
 */
bool read_module_image(const void* image, int arch, ModuleImage& out, std::string& error, bool& no_binary_for_gpu);

/** The .entry parameter lists of PTX text, by kernel name; false with the reason on a syntax it does not know. */
bool parse_ptx_entries(const std::string& ptx, std::map<std::string, KernelImage>& out, std::string& error);

}  // namespace seqk_standin
