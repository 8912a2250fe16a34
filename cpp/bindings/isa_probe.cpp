// Which x86-64 ISA level (microarchitecture level of the x86-64 psABI) this CPU and operating
// system run. Compiled for the baseline x86-64 only, so importing it is safe on any x86-64 CPU;
// metasp/_core.py asks it which of the per-level core modules to import.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#if defined(_MSC_VER)
#include <intrin.h>
#else
#include <cpuid.h>
#endif

namespace py = pybind11;

namespace {

struct CpuidRegisters {
    std::uint32_t eax = 0, ebx = 0, ecx = 0, edx = 0;
};

CpuidRegisters cpuid(std::uint32_t leaf, std::uint32_t subleaf) {
    CpuidRegisters r;
#if defined(_MSC_VER)
    int values[4];
    __cpuidex(values, static_cast<int>(leaf), static_cast<int>(subleaf));
    r = {static_cast<std::uint32_t>(values[0]), static_cast<std::uint32_t>(values[1]),
         static_cast<std::uint32_t>(values[2]), static_cast<std::uint32_t>(values[3])};
#else
    __cpuid_count(leaf, subleaf, r.eax, r.ebx, r.ecx, r.edx);
#endif
    return r;
}

// The register state the operating system saves on a context switch (XCR0). Only valid to ask
// when CPUID reports OSXSAVE.
std::uint64_t enabled_register_state() {
#if defined(_MSC_VER)
    return _xgetbv(0);
#else
    std::uint32_t low = 0, high = 0;
    __asm__ volatile("xgetbv" : "=a"(low), "=d"(high) : "c"(0));
    return (static_cast<std::uint64_t>(high) << 32) | low;
#endif
}

bool bit(std::uint32_t value, int position) { return ((value >> position) & 1U) != 0; }

// Every feature the levels need, by the names the x86-64 psABI and Linux's cpuinfo use. AVX and
// AVX-512 also need the operating system to save their registers (XCR0); macOS enables the
// AVX-512 state lazily, so there this reports at most v3, which is safe.
std::vector<std::pair<std::string, bool>> cpu_features() {
    const std::uint32_t max_leaf = cpuid(0, 0).eax;
    const std::uint32_t max_extended_leaf = cpuid(0x80000000U, 0).eax;
    const CpuidRegisters leaf1 = max_leaf >= 1 ? cpuid(1, 0) : CpuidRegisters{};
    const CpuidRegisters leaf7 = max_leaf >= 7 ? cpuid(7, 0) : CpuidRegisters{};
    const CpuidRegisters extended =
        max_extended_leaf >= 0x80000001U ? cpuid(0x80000001U, 0) : CpuidRegisters{};
    const std::uint64_t xcr0 = bit(leaf1.ecx, 27) ? enabled_register_state() : 0;
    const bool avx_state = (xcr0 & 0x6U) == 0x6U;       // SSE and AVX registers
    const bool avx512_state = (xcr0 & 0xE6U) == 0xE6U;  // plus opmask and ZMM registers
    return {
        // x86-64-v2
        {"cx16", bit(leaf1.ecx, 13)},
        {"lahf_lm", bit(extended.ecx, 0)},
        {"popcnt", bit(leaf1.ecx, 23)},
        {"sse3", bit(leaf1.ecx, 0)},
        {"sse4_1", bit(leaf1.ecx, 19)},
        {"sse4_2", bit(leaf1.ecx, 20)},
        {"ssse3", bit(leaf1.ecx, 9)},
        // x86-64-v3
        {"avx", bit(leaf1.ecx, 28) && avx_state},
        {"avx2", bit(leaf7.ebx, 5) && avx_state},
        {"bmi1", bit(leaf7.ebx, 3)},
        {"bmi2", bit(leaf7.ebx, 8)},
        {"f16c", bit(leaf1.ecx, 29) && avx_state},
        {"fma", bit(leaf1.ecx, 12) && avx_state},
        {"abm", bit(extended.ecx, 5)},  // LZCNT
        {"movbe", bit(leaf1.ecx, 22)},
        // x86-64-v4
        {"avx512f", bit(leaf7.ebx, 16) && avx512_state},
        {"avx512bw", bit(leaf7.ebx, 30) && avx512_state},
        {"avx512cd", bit(leaf7.ebx, 28) && avx512_state},
        {"avx512dq", bit(leaf7.ebx, 17) && avx512_state},
        {"avx512vl", bit(leaf7.ebx, 31) && avx512_state},
    };
}

}  // namespace

PYBIND11_MODULE(_isa_probe, m) {
    m.doc() = "The x86-64 CPU features metasp's per-level core modules need.";
    m.def(
        "cpu_features",
        [] {
            py::dict features;
            for (const auto& [name, present] : cpu_features()) features[name.c_str()] = present;
            return features;
        },
        "CPU features the x86-64 ISA levels need, each True when the CPU and OS support it.");
}
