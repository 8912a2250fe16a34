// Shared by the binding units: argument types and Ctrl-C handling.
#pragma once

#include <pybind11/eigen.h>
#include <pybind11/numpy.h>
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

}  // namespace metasp::bindings

namespace pybind11::detail {

// X as a metasp::DesignMatrix: a C-contiguous, aligned, native-byte-order 2-D float32 or
// float64 NumPy array, viewed in place; anything else does not match (pybind11's TypeError),
// whatever the convert flag: this caster never copies.
template <>
struct type_caster<metasp::DesignMatrix> {
    PYBIND11_TYPE_CASTER(
        metasp::DesignMatrix,
        const_name("numpy.ndarray[float32 | float64, [N, d], \"flags.c_contiguous\"]"));

    bool load(handle source, bool /*convert*/) {
        if (!array::check_(source)) return false;
        auto X = reinterpret_borrow<array>(source);
        constexpr int required = array::c_style | npy_api::NPY_ARRAY_ALIGNED_;
        if (X.ndim() != 2 || (X.flags() & required) != required) return false;
        const metasp::Index rows = X.shape(0), cols = X.shape(1);
        if (X.dtype().equal(dtype::of<double>()))
            value = metasp::DesignMatrix(static_cast<const double*>(X.data()), rows, cols, cols);
        else if (X.dtype().equal(dtype::of<float>()))
            value = metasp::DesignMatrix(static_cast<const float*>(X.data()), rows, cols, cols);
        else
            return false;
        array_ = std::move(X);  // keeps the data alive for the call
        return true;
    }

private:
    array array_;
};

}  // namespace pybind11::detail

namespace metasp::bindings {

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
