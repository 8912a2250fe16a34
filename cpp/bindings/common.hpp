// Shared by the binding units: argument types and Ctrl-C handling.
#pragma once

#include <pybind11/eigen.h>
#include <pybind11/pybind11.h>

#include <chrono>
#include <cstdint>

#include "metasp/types.hpp"

namespace metasp::bindings {

namespace py = pybind11;

// Zero-copy views: with .noconvert() pybind11 raises TypeError for any dtype or memory layout
// that would need a copy, so a copy can only ever happen, on purpose, in Python.
using RowMatrixIn = Eigen::Ref<const RowMatrix>;
using VectorIn = Eigen::Ref<const Vector>;
using OffsetsIn = Eigen::Ref<const Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>>;

// Polls for Ctrl-C at most every 100 ms while the GIL is released; once a signal handler has
// raised, it keeps answering true and the Python error stays set for `raise_if_interrupted`.
class InterruptPoll {
public:
    bool operator()() {
        if (interrupted_) return true;
        const auto now = std::chrono::steady_clock::now();
        if (now - last_ < std::chrono::milliseconds(100)) return false;
        last_ = now;
        py::gil_scoped_acquire gil;
        interrupted_ = PyErr_CheckSignals() != 0;
        return interrupted_;
    }
    void raise_if_interrupted() const {
        if (interrupted_) throw py::error_already_set();
    }

private:
    std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
    bool interrupted_ = false;
};

void bind_kernels(py::module_& m);
void bind_solver(py::module_& m);

}  // namespace metasp::bindings
