#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "common.hpp"
#include "metasp/newton.hpp"
#include "metasp/polish.hpp"
#include "metasp/solver.hpp"

namespace metasp::bindings {
namespace {

// The options and results cross the boundary as classes over the C++ structs: their defaults
// are C++'s, set once in solver.hpp, polish.hpp and truncated_svd.hpp.

Init parse_init(const std::string& name) {
    if (name == "zero") return Init::zero;
    if (name == "spectral") return Init::spectral;
    if (name == "given") return Init::given;
    throw std::invalid_argument("init must be 'zero', 'spectral' or 'given'");
}

std::string init_name(Init init) {
    switch (init) {
        case Init::zero: return "zero";
        case Init::spectral: return "spectral";
        case Init::given: return "given";
    }
    return "zero";
}

NewtonSolve parse_newton_solve(const std::string& name) {
    if (name == "auto") return NewtonSolve::automatic;
    if (name == "dense") return NewtonSolve::dense;
    if (name == "cg") return NewtonSolve::iterative;
    throw std::invalid_argument("newton_solve must be 'auto', 'dense' or 'cg'");
}

std::string newton_solve_name(NewtonSolve how) {
    switch (how) {
        case NewtonSolve::automatic: return "auto";
        case NewtonSolve::dense: return "dense";
        case NewtonSolve::iterative: return "cg";
    }
    return "auto";
}

// A per-iteration history as a NumPy array (copied: the result is about to go away).
template <typename T>
py::array_t<T> to_array(const std::vector<T>& values) {
    return py::array_t<T>(py::ssize_t(values.size()), values.data());
}

// The history as a dict of NumPy arrays, one per field of IterationRecord; sin_angle is empty
// where no reference_B was tracked. The one conversion of the records.
py::dict history_dict(const std::vector<IterationRecord>& history, bool tracked) {
    const auto column = [&](auto field) {
        using Value = std::decay_t<decltype(field(history.front()))>;
        std::vector<Value> values;
        values.reserve(history.size());
        for (const IterationRecord& record : history) values.push_back(field(record));
        return to_array(values);
    };
    py::dict out;
    out["loss"] = column([](const IterationRecord& r) { return r.loss; });
    out["step"] = column([](const IterationRecord& r) { return r.step; });
    out["beta"] = column([](const IterationRecord& r) { return r.beta; });
    out["rel_change"] = column([](const IterationRecord& r) { return r.rel_change; });
    out["sin_angle"] = tracked ? column([](const IterationRecord& r) { return r.sin_angle; })
                               : py::array_t<double>(0);
    out["svd_steps"] = column([](const IterationRecord& r) { return r.svd_steps; });
    out["phase"] = column([](const IterationRecord& r) { return r.phase; });
    out["seconds"] = column([](const IterationRecord& r) { return r.seconds; });
    out["svd_seconds"] = column([](const IterationRecord& r) { return r.svd_seconds; });
    return out;
}

// An optional (s, d) matrix option: None is empty. Set from float64 arrays only
// (no-convert), so a complex or object array is a TypeError, never silently its real part.
template <class Options>
void def_optional_matrix(py::class_<Options>& cls, const char* name, RowMatrix Options::* member,
                         const char* doc) {
    cls.def_property(
        name,
        [member](const Options& options) -> py::object {
            if ((options.*member).size() == 0) return py::none();
            return py::cast(RowMatrix(options.*member));
        },
        py::cpp_function(
            [member](Options& options, std::optional<RowMatrix> value) {
                options.*member = value.value_or(RowMatrix());
            },
            py::is_method(cls), py::arg("value").noconvert()),
        doc);
}

void bind_option_classes(py::module_& m) {
    py::class_<SVDOptions>(m, "SVDOptions", "Truncated SVD options (metasp::SVDOptions).")
        .def(py::init<>())
        .def_readwrite("tol", &SVDOptions::tol, "Ritz residual tolerance, relative to lambda_1.")
        .def_readwrite("max_steps", &SVDOptions::max_steps, "Subspace-iteration steps at most.")
        .def_readwrite("relative_tol", &SVDOptions::relative_tol,
                       "Inside the solver: stop at this fraction of the last relative change.");

    py::class_<BasisSolveOptions>(m, "BasisSolveOptions",
                                  "Basis step options of the polish (metasp::BasisSolveOptions).")
        .def(py::init<>())
        .def_readwrite("max_dense", &BasisSolveOptions::max_dense,
                       "d * s above which the normal equations are solved iteratively.")
        .def_readwrite("cg_tol", &BasisSolveOptions::cg_tol,
                       "Relative residual of the conjugate-gradient solve.")
        .def_readwrite("cg_max_iter", &BasisSolveOptions::cg_max_iter,
                       "Conjugate-gradient iterations at most.")
        .def_property(
            "newton_solve",
            [](const BasisSolveOptions& o) { return newton_solve_name(o.newton_solve); },
            [](BasisSolveOptions& o, const std::string& name) {
                o.newton_solve = parse_newton_solve(name);
            },
            "'auto', 'dense' or 'cg': how the Newton system is solved.");

    py::class_<SolveOptions> solve_options(m, "SolveOptions",
                                           "Options of the solver (metasp::SolveOptions).");
    solve_options.def(py::init<>())
        .def_readwrite("adaptive_step", &SolveOptions::adaptive_step)
        .def_readwrite("step", &SolveOptions::step)
        .def_readwrite("conjugate", &SolveOptions::conjugate)
        .def_readwrite("polish", &SolveOptions::polish)
        .def_property(
            "init", [](const SolveOptions& o) { return init_name(o.init); },
            [](SolveOptions& o, const std::string& name) { o.init = parse_init(name); },
            "'zero', 'spectral' or 'given' (from init_B).")
        .def_property(
            "starts", [](const SolveOptions& o) { return o.starts; },
            py::cpp_function(
                [](SolveOptions& o, std::vector<Matrix> starts) { o.starts = std::move(starts); },
                py::is_method(solve_options), py::arg("value").noconvert()),
            "Further starts: (d, s) bases.")
        .def_readwrite("max_iter", &SolveOptions::max_iter)
        .def_readwrite("tol", &SolveOptions::tol)
        .def_readwrite("sin_tol", &SolveOptions::sin_tol)
        .def_readwrite("switch_tol", &SolveOptions::switch_tol)
        .def_readwrite("switch_window", &SolveOptions::switch_window)
        .def_readwrite("patience", &SolveOptions::patience)
        .def_readwrite("divergence_factor", &SolveOptions::divergence_factor)
        .def_readwrite("n_threads", &SolveOptions::n_threads)
        .def_readwrite("seed", &SolveOptions::seed)
        .def_readwrite("svd", &SolveOptions::svd)
        .def_readwrite("basis", &SolveOptions::basis);
    def_optional_matrix(solve_options, "init_B", &SolveOptions::init_B, "(s, d) or None.");
    def_optional_matrix(solve_options, "reference_B", &SolveOptions::reference_B,
                        "(s, d) orthonormal rows or None: no sin-angle history.");

    py::class_<PolishOptions> polish_options(m, "PolishOptions",
                                             "Options of the least-squares polish.");
    polish_options.def(py::init<>())
        .def_readwrite("max_iter", &PolishOptions::max_iter)
        .def_readwrite("tol", &PolishOptions::tol)
        .def_readwrite("sin_tol", &PolishOptions::sin_tol)
        .def_readwrite("n_threads", &PolishOptions::n_threads)
        .def_readwrite("newton", &PolishOptions::newton)
        .def_readwrite("basis", &PolishOptions::basis);
    def_optional_matrix(polish_options, "reference_B", &PolishOptions::reference_B,
                        "(s, d) orthonormal rows or None: no sin-angle history.");
}

void bind_solve_result(py::module_& m) {
    // Arrays are returned as copies: a result may be kept, changed and stored freely.
    py::class_<SolveResult>(m, "SolveResult", "What the solver returns (metasp::SolveResult).")
        .def_property_readonly("Theta", [](const SolveResult& r) { return RowMatrix(r.Theta); })
        .def_property_readonly("W", [](const SolveResult& r) { return RowMatrix(r.W); })
        .def_property_readonly("B", [](const SolveResult& r) { return RowMatrix(r.B); })
        .def_property_readonly("singular_values",
                               [](const SolveResult& r) { return Vector(r.singular_values); })
        .def_readonly("n_iter", &SolveResult::n_iter)
        .def_readonly("n_iht_iter", &SolveResult::n_iht_iter)
        .def_property_readonly("status", [](const SolveResult& r) { return to_string(r.status); })
        .def_readonly("initial_loss", &SolveResult::initial_loss)
        .def_property_readonly("start_loss",
                               [](const SolveResult& r) { return to_array(r.start_loss); })
        .def_property_readonly("start_iter",
                               [](const SolveResult& r) { return to_array(r.start_iter); })
        .def_readonly("best_start", &SolveResult::best_start)
        .def_property_readonly(
            "history",
            [](const SolveResult& r) {
                const bool tracked = !r.history.empty() && !std::isnan(r.history.front().sin_angle);
                return history_dict(r.history, tracked);
            },
            "One array per field of the per-iteration record (loss, step, beta, rel_change, "
            "sin_angle, svd_steps, phase, seconds, svd_seconds).");
}

py::dict constants() {
    py::dict out;
    out["vanishing_projection"] = kVanishingProjection;
    out["max_conjugacy"] = kMaxConjugacy;
    out["min_conjugate_share"] = kMinConjugateShare;
    out["max_retries"] = kMaxRetries;
    out["slow_polish_switch"] = kSlowPolishSwitch;
    out["switch_tol"] = kSwitchTol;
    out["switch_window"] = kSwitchWindow;
    out["patience"] = kPatience;
    out["divergence_factor"] = kDivergenceFactor;
    out["svd_tol"] = kSVDTol;
    out["svd_max_steps"] = kSVDMaxSteps;
    out["svd_relative_tol"] = kSVDRelativeTol;
    out["max_dense_normal"] = kMaxDenseNormal;
    out["newton_cg_tol"] = kNewtonCGTol;
    out["step_floor"] = kStepFloor;
    out["quadratic_floor"] = kQuadraticFloor;
    out["min_newton_cg"] = kMinNewtonCG;
    out["min_preconditioner"] = kMinPreconditioner;
    out["damping_attempts"] = kDampingAttempts;
    out["damping_factor"] = kDampingFactor;
    out["min_damping"] = kMinDamping;
    out["stationary_change"] = kStationaryChange;
    out["stagnation_window"] = kStagnationWindow;
    out["loss_stagnation"] = kLossStagnation;
    return out;
}

}  // namespace

void bind_solver(py::module_& m) {
    m.attr("constants") = constants();
    bind_option_classes(m);
    bind_solve_result(m);
    m.def(
        "solve",
        [](const DesignMatrix& X, VectorIn y, OffsetsIn offsets, Index s,
           const SolveOptions& options) {
            const TasksView tasks{X, y, offsets};
            SolveResult result;
            InterruptPoll poll;
            {
                ReleaseGIL release;
                result = solve(tasks, s, options, std::ref(poll));
            }
            poll.raise_if_interrupted();
            return result;
        },
        py::arg("X").noconvert(), py::arg("y").noconvert(), py::arg("offsets").noconvert(),
        py::arg("s"), py::arg("options") = SolveOptions(),
        "Meta Subspace Pursuit on the stacked tasks (X, y, offsets) at rank s.");
    m.def(
        "polish",
        [](const DesignMatrix& X, VectorIn y, OffsetsIn offsets, const Matrix& V0,
           const PolishOptions& options) {
            const TasksView tasks{X, y, offsets};
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
        py::arg("V0").noconvert(), py::arg("options") = PolishOptions(),
        "The least-squares polish from span(V0), V0 of shape (d, s).");
}

}  // namespace metasp::bindings
