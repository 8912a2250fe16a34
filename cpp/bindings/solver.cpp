#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <optional>

#include "common.hpp"
#include "metasp/solver.hpp"

namespace metasp::bindings {

void bind_solver(py::module_& m) {
    m.attr("VANISHING_PROJECTION") = kVanishingProjection;
    m.def(
        "solve",
        [](RowMatrixIn X, VectorIn y, OffsetsIn offsets, Index s, bool adaptive_step,
           double step, int max_iter, double tol, int n_threads, std::uint64_t seed,
           std::optional<RowMatrix> reference_B, double divergence_factor, double svd_tol, int svd_max_steps,
           double svd_relative_tol) {
            const TasksView tasks{X, y, offsets};
            SolveOptions options;
            options.adaptive_step = adaptive_step;
            options.step = step;
            options.max_iter = max_iter;
            options.tol = tol;
            options.n_threads = n_threads;
            options.seed = seed;
            options.reference_B = reference_B.value_or(RowMatrix());
            options.divergence_factor = divergence_factor;
            options.svd = SVDOptions{svd_tol, svd_max_steps, svd_relative_tol};
            SolveResult result;
            InterruptPoll poll;
            {
                py::gil_scoped_release release;
                result = solve(tasks, s, options, std::ref(poll));
            }
            poll.raise_if_interrupted();
            const auto array = [](const auto& values) {
                using T = typename std::decay_t<decltype(values)>::value_type;
                return py::array_t<T>(py::ssize_t(values.size()), values.data());
            };
            py::dict out;
            out["Theta"] = std::move(result.Theta);
            out["W"] = std::move(result.W);
            out["B"] = std::move(result.B);
            out["singular_values"] = std::move(result.singular_values);
            out["n_iter"] = result.n_iter;
            out["status"] = to_string(result.status);
            out["loss"] = array(result.loss);
            out["step"] = array(result.step);
            out["rel_change"] = array(result.rel_change);
            out["sin_angle"] = array(result.sin_angle);
            out["svd_steps"] = array(result.svd_steps);
            return out;
        },
        py::arg("X").noconvert(), py::arg("y").noconvert(), py::arg("offsets").noconvert(),
        py::arg("s"), py::arg("adaptive_step"), py::arg("step"), py::arg("max_iter"),
        py::arg("tol"), py::arg("n_threads"), py::arg("seed"), py::arg("reference_B"), py::arg("divergence_factor"),
        py::arg("svd_tol"), py::arg("svd_max_steps"), py::arg("svd_relative_tol") = 0.0);
}

}  // namespace metasp::bindings
