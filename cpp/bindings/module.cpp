#include "common.hpp"

#include <Eigen/Core>

#include <string>

#include "metasp/parallel.hpp"

namespace py = pybind11;

// One source, several modules: CMake compiles these bindings once per x86-64 ISA level and
// names each module (_core_x86_64_v3, ...) and its instruction set through these macros.
#ifndef METASP_MODULE_NAME
#define METASP_MODULE_NAME _core_generic
#endif
#ifndef METASP_ISA_DESCRIPTION
#define METASP_ISA_DESCRIPTION "compiler default"
#endif

namespace {

std::string compiler_description() {
#if defined(__clang__)
    return std::string("Clang ") + __clang_version__;
#elif defined(__GNUC__)
    return std::string("GCC ") + __VERSION__;
#elif defined(_MSC_VER)
    return "MSVC " + std::to_string(_MSC_FULL_VER);
#else
    return "unknown";
#endif
}

// The vector instruction sets Eigen was compiled to use in this module (its own summary,
// SimdInstructionSetsInUse, does not tell AVX from AVX2 and FMA).
std::string eigen_simd() {
    std::string simd;
    auto add = [&simd](const char* name) {
        simd += simd.empty() ? std::string(name) : std::string(", ") + name;
    };
#ifdef EIGEN_VECTORIZE_SSE2
    add("SSE2");
#endif
#ifdef EIGEN_VECTORIZE_SSE4_2
    add("SSE4.2");
#endif
#ifdef EIGEN_VECTORIZE_AVX
    add("AVX");
#endif
#ifdef EIGEN_VECTORIZE_AVX2
    add("AVX2");
#endif
#ifdef EIGEN_VECTORIZE_FMA
    add("FMA");
#endif
#ifdef EIGEN_VECTORIZE_AVX512
    add("AVX512");
#endif
#ifdef EIGEN_VECTORIZE_NEON
    add("NEON");
#endif
    return simd.empty() ? "none" : simd;
}

py::dict build_info() {
    py::dict info;
    info["module"] = PYBIND11_TOSTRING(METASP_MODULE_NAME);
    info["isa"] = METASP_ISA_DESCRIPTION;
    info["simd"] = eigen_simd();
    info["compiler"] = compiler_description();
    info["eigen"] = std::to_string(EIGEN_WORLD_VERSION) + "." +
                    std::to_string(EIGEN_MAJOR_VERSION) + "." + std::to_string(EIGEN_MINOR_VERSION);
    info["pybind11"] = std::to_string(PYBIND11_VERSION_MAJOR) + "." +
                       std::to_string(PYBIND11_VERSION_MINOR) + "." +
                       std::to_string(PYBIND11_VERSION_PATCH);
#ifdef _OPENMP
    info["openmp"] = static_cast<long>(_OPENMP);
#else
    info["openmp"] = py::none();
#endif
    return info;
}

}  // namespace

PYBIND11_MODULE(METASP_MODULE_NAME, m) {
    m.doc() = "metasp's compiled core; use the public functions of the metasp package instead.";
    m.def("max_threads", &metasp::max_threads,
          "Threads OpenMP uses by default (OMP_NUM_THREADS and the affinity mask).");
    m.def("build_info", &build_info,
          "How this module was built: its name, instruction set, compiler, Eigen, OpenMP.");
    // Before Python finalises: from then on no other thread may wait for the GIL (common.hpp).
    py::module_::import("atexit").attr("register")(
        py::cpp_function([] { metasp::bindings::prepare_for_exit(); }));
    metasp::bindings::bind_kernels(m);
    metasp::bindings::bind_solver(m);
}
