// Shared by the binding units: argument types, Ctrl-C handling and the GIL at exit.
#pragma once

#include <pybind11/eigen.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

#include "metasp/types.hpp"

namespace metasp::bindings {

namespace py = pybind11;

// Zero-copy views: with .noconvert() pybind11 raises TypeError for any dtype or memory layout
// that would need a copy, so a copy can only ever happen, on purpose, in Python. The small
// owned arguments (V, B, mean, cov, ...) take .noconvert() too: they are copied, but only from
// float64 arrays, so a complex or object array is a TypeError, never silently its real part.
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

// Interpreter exit. Once Python finalises, a thread that waits for the GIL is ended by
// pthread_exit, an unwind that aborts the process (std::terminate) when it crosses a C++
// destructor or an OpenMP region. So no thread may start waiting for the GIL then: at exit
// (an atexit callback, which runs before finalising) the module sets `exiting` and waits,
// with the GIL released, until the threads already on their way to it (`acquiring`) have it;
// from then on only the exiting thread takes the GIL, and the others park until the process
// ends (as Python 3.14 parks its own daemon threads).
struct ExitState {
    std::atomic<bool> exiting{false};
    std::atomic<int> acquiring{0};
    std::atomic<std::thread::id> exiting_thread{};
};

inline ExitState& exit_state() {
    static ExitState state;
    return state;
}

inline bool interpreter_finalizing() {
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing() != 0;
#else
    return _Py_IsFinalizing() != 0;
#endif
}

// Called without the GIL: true when this thread may take it, and it then counts as on its
// way (call `arrived` once it holds the GIL). Sequentially consistent with `prepare_for_exit`:
// either this thread sees `exiting`, or the exiting thread sees it in `acquiring` and waits.
inline bool may_acquire_gil() {
    ExitState& state = exit_state();
    state.acquiring.fetch_add(1);
    const bool exiting =
        state.exiting.load() && state.exiting_thread.load() != std::this_thread::get_id();
    if (exiting || interpreter_finalizing()) {
        state.acquiring.fetch_sub(1);
        return false;
    }
    return true;
}

inline void arrived() { exit_state().acquiring.fetch_sub(1); }

[[noreturn]] inline void park_until_exit() {
    for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}

// The atexit callback (with the GIL held).
inline void prepare_for_exit() {
    ExitState& state = exit_state();
    state.exiting_thread.store(std::this_thread::get_id());
    state.exiting.store(true);
    while (state.acquiring.load() > 0) {
        PyThreadState* saved = PyEval_SaveThread();
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        PyEval_RestoreThread(saved);
    }
}

// Releases the GIL for a computation, like py::gil_scoped_release, but takes it back only
// while the interpreter is not exiting; otherwise the thread parks (see ExitState).
class ReleaseGIL {
public:
    ReleaseGIL() : saved_(PyEval_SaveThread()) {}
    ReleaseGIL(const ReleaseGIL&) = delete;
    ReleaseGIL& operator=(const ReleaseGIL&) = delete;
    ~ReleaseGIL() {
        if (!may_acquire_gil()) park_until_exit();
        PyEval_RestoreThread(saved_);
        arrived();
    }

private:
    PyThreadState* saved_;
};

// Polls for Ctrl-C at most every 100 ms while the GIL is released. Any thread may call it
// (from inside OpenMP regions too): only the thread that created it, the one Python runs the
// call on, takes the GIL to poll; the others read the answer. It never throws. Once a signal
// handler has raised, it keeps answering true and the Python error stays set for
// `raise_if_interrupted`; at interpreter exit it answers true without polling.
class InterruptPoll {
public:
    bool operator()() {
        if (stop_.load(std::memory_order_relaxed)) return true;
        if (std::this_thread::get_id() != owner_) return false;
        const auto now = std::chrono::steady_clock::now();
        if (now - last_ < std::chrono::milliseconds(100)) return false;
        last_ = now;
        if (!may_acquire_gil()) {
            stop_.store(true);
            return true;
        }
        const PyGILState_STATE gil = PyGILState_Ensure();
        arrived();
        const bool interrupted = PyErr_CheckSignals() != 0;
        PyGILState_Release(gil);
        if (interrupted) {
            interrupted_ = true;
            stop_.store(true);
        }
        return interrupted;
    }
    void raise_if_interrupted() const {
        if (interrupted_) throw py::error_already_set();
    }

private:
    const std::thread::id owner_ = std::this_thread::get_id();
    std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
    std::atomic<bool> stop_{false};
    bool interrupted_ = false;
};

void bind_kernels(py::module_& m);
void bind_solver(py::module_& m);

}  // namespace metasp::bindings
