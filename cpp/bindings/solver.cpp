#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <optional>
#include <stdexcept>
#include <string>

#include "common.hpp"
#include "metasp/solver.hpp"

namespace metasp::bindings {
namespace {

Init parse_init(const std::string& name) {
    if (name == "zero") return Init::zero;
    if (name == "spectral") return Init::spectral;
    if (name == "given") return Init::given;
    throw std::invalid_argument("init must be 'zero', 'spectral' or 'given'");
}

NewtonSolve parse_newton_solve(const std::string& name) {
    if (name == "auto") return NewtonSolve::automatic;
    if (name == "dense") return NewtonSolve::dense;
    if (name == "cg") return NewtonSolve::iterative;
    throw std::invalid_argument("newton_solve must be 'auto', 'dense' or 'cg'");
}

// A per-iteration history as a NumPy array (copied: the result is about to go away).
template <typename T>
py::array_t<T> to_array(const std::vector<T>& values) {
    return py::array_t<T>(py::ssize_t(values.size()), values.data());
}

}  // namespace

void bind_solver(py::module_& m) {
    m.attr("VANISHING_PROJECTION") = kVanishingProjection;
    m.def(
        "solve",
        [](const DesignMatrix& X, VectorIn y, OffsetsIn offsets, Index s, bool adaptive_step,
           double step, int max_iter, double tol, int n_threads, std::uint64_t seed,
           std::optional<RowMatrix> reference_B, double divergence_factor, double svd_tol, int svd_max_steps,
           double svd_relative_tol,
           bool conjugate, bool refine, const std::string& init, std::optional<RowMatrix> init_B,
           std::vector<Matrix> starts, double sin_tol, double switch_tol, int switch_window, int patience,
           Index max_dense) {
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
            options.conjugate = conjugate;
            options.refine = refine;
            options.init = parse_init(init);
            options.init_B = init_B.value_or(RowMatrix());
            options.starts = std::move(starts);
            options.sin_tol = sin_tol;
            options.switch_tol = switch_tol;
            options.switch_window = switch_window;
            options.patience = patience;
            options.basis.max_dense = max_dense;
            SolveResult result;
            InterruptPoll poll;
            {
                ReleaseGIL release;
                result = solve(tasks, s, options, std::ref(poll));
            }
            poll.raise_if_interrupted();
            py::dict out;
            out["Theta"] = std::move(result.Theta);
            out["W"] = std::move(result.W);
            out["B"] = std::move(result.B);
            out["singular_values"] = std::move(result.singular_values);
            out["n_iter"] = result.n_iter;
            out["n_iht_iter"] = result.n_iht_iter;
            out["beta"] = to_array(result.beta);
            out["phase"] = to_array(result.phase);
            out["start_loss"] = to_array(result.start_loss);
            out["start_iter"] = to_array(result.start_iter);
            out["best_start"] = result.best_start;
            out["status"] = to_string(result.status);
            out["loss"] = to_array(result.loss);
            out["step"] = to_array(result.step);
            out["rel_change"] = to_array(result.rel_change);
            out["sin_angle"] = to_array(result.sin_angle);
            out["svd_steps"] = to_array(result.svd_steps);
            out["seconds"] = to_array(result.seconds);
            out["svd_seconds"] = to_array(result.svd_seconds);
            return out;
        },
        py::arg("X").noconvert(), py::arg("y").noconvert(), py::arg("offsets").noconvert(),
        py::arg("s"), py::arg("adaptive_step"), py::arg("step"), py::arg("max_iter"),
        py::arg("tol"), py::arg("n_threads"), py::arg("seed"), py::arg("reference_B").noconvert(), py::arg("divergence_factor"),
        py::arg("svd_tol"), py::arg("svd_max_steps"), py::arg("svd_relative_tol") = 0.0,
        py::arg("conjugate") = false,
        py::arg("refine") = false, py::arg("init") = "zero", py::arg("init_B").noconvert() = py::none(),
        py::arg("starts").noconvert() = std::vector<Matrix>(), py::arg("sin_tol") = 0.0, py::arg("switch_tol") = 1e-2,
        py::arg("switch_window") = 10, py::arg("patience") = 100,
        py::arg("max_dense") = kMaxDenseNormal);
    m.attr("MAX_DENSE_NORMAL") = kMaxDenseNormal;
    m.def(
        "refine",
        [](const DesignMatrix& X, VectorIn y, OffsetsIn offsets, const Matrix& V0, int max_iter, double tol,
           int n_threads, std::optional<RowMatrix> reference_B, double sin_tol, Index max_dense,
           bool newton, const std::string& newton_solve) {
            const TasksView tasks{X, y, offsets};
            PolishOptions options;
            options.max_iter = max_iter;
            options.tol = tol;
            options.sin_tol = sin_tol;
            options.n_threads = n_threads;
            options.reference_B = reference_B.value_or(RowMatrix());
            options.basis.max_dense = max_dense;
            options.newton = newton;
            options.basis.newton_solve = parse_newton_solve(newton_solve);
            PolishResult result;
            InterruptPoll poll;
            {
                ReleaseGIL release;
                result = polish(tasks, V0, options, std::ref(poll));
            }
            poll.raise_if_interrupted();
            static const char* names[] = {"converged", "max_iter", "stalled", "interrupted"};
            py::dict out;
            out["Theta"] = std::move(result.Theta);
            out["W"] = std::move(result.factors.W);
            out["B"] = RowMatrix(result.factors.V.transpose());
            out["singular_values"] = std::move(result.factors.singular_values);
            out["n_iter"] = result.n_iter;
            out["status"] = names[static_cast<int>(result.status)];
            out["start_loss"] = result.start_loss;
            out["n_newton"] = result.n_newton;
            out["loss"] = to_array(result.loss);
            out["rel_change"] = to_array(result.rel_change);
            out["sin_angle"] = to_array(result.sin_angle);
            out["seconds"] = to_array(result.seconds);
            return out;
        },
        py::arg("X").noconvert(), py::arg("y").noconvert(), py::arg("offsets").noconvert(),
        py::arg("V0").noconvert(), py::arg("max_iter"), py::arg("tol"), py::arg("n_threads"),
        py::arg("reference_B").noconvert() = py::none(), py::arg("sin_tol") = 0.0,
        py::arg("max_dense") = kMaxDenseNormal, py::arg("newton") = true,
        py::arg("newton_solve") = "auto");
}

}  // namespace metasp::bindings
