#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <optional>
#include <stdexcept>
#include <string>

#include "common.hpp"
#include "metasp/basis_system.hpp"
#include "metasp/gradient.hpp"
#include "metasp/head_prior.hpp"
#include "metasp/heads.hpp"
#include "metasp/newton.hpp"
#include "metasp/random_heads.hpp"
#include "metasp/statistics.hpp"
#include "metasp/truncated_svd.hpp"

namespace metasp::bindings {
namespace {

// Every binding checks the shapes of its arguments before it allocates its outputs, which
// may be much larger than the arguments (task_statistics' gram is T s^2). The kernels check
// again; the messages are theirs.
void check_gradient_arguments(const TasksView& tasks, const RowMatrixIn& Theta, const Matrix* V) {
    check_tasks(tasks);
    if (Theta.rows() != tasks.n_tasks() || Theta.cols() != tasks.n_features())
        throw std::invalid_argument("Theta has the wrong shape");
    if (V != nullptr && V->rows() != tasks.n_features())
        throw std::invalid_argument("V must have d rows");
}

void check_curvature_arguments(const TasksView& tasks, const RowMatrixIn& C, const Matrix& B) {
    check_tasks(tasks);
    if (C.rows() != tasks.n_tasks() || C.cols() != B.cols())
        throw std::invalid_argument("C has the wrong shape");
    if (B.rows() != tasks.n_features())
        throw std::invalid_argument("B must have one row per feature");
}

void check_statistics_arguments(const TasksView& tasks, const Matrix& V, const RowMatrix* W) {
    check_tasks(tasks);
    check_subspace_shape(tasks, V.rows(), V.cols());
    if (W != nullptr && (W->rows() != tasks.n_tasks() || W->cols() != V.cols()))
        throw std::invalid_argument("W must have shape (T, s) = (" +
                                    std::to_string(tasks.n_tasks()) + ", " +
                                    std::to_string(V.cols()) + ")");
}

void check_marginal_arguments(const TasksView& tasks, const Matrix& U, double noise) {
    check_tasks(tasks);
    check_marginal_shape(tasks, U.rows(), U.cols(), noise);
}

// W (T, s) and, for the Newton system, V (d, s); the dense system is (d s)^2 numbers, so d s
// is capped where the polish itself switches to conjugate gradients.
void check_basis_arguments(const TasksView& tasks, const RowMatrix& W, const Matrix* V) {
    check_tasks(tasks);
    const Index d = tasks.n_features(), s = W.cols();
    if (W.rows() != tasks.n_tasks() || s < 1 || s > d)
        throw std::invalid_argument("W must have shape (T, s) with T = " +
                                    std::to_string(tasks.n_tasks()) + " and 1 <= s <= d");
    if (V != nullptr) check_subspace_shape(tasks, V->rows(), V->cols());
    if (V != nullptr && V->cols() != s)
        throw std::invalid_argument("V and W must have the same number of columns");
    if (d * s > kMaxDenseNormal)
        throw std::invalid_argument("d * s = " + std::to_string(d * s) +
                                    " is above the dense basis system's limit of " +
                                    std::to_string(kMaxDenseNormal));
}

void bind_prior_kernels(py::module_& m);
void bind_polish_kernels(py::module_& m);

}  // namespace

void bind_kernels(py::module_& m) {
    m.def(
        "task_gradient",
        [](const DesignMatrix& X, VectorIn y, OffsetsIn offsets, RowMatrixIn Theta,
           std::optional<Matrix> V, int n_threads) -> py::tuple {
            const TasksView tasks{X, y, offsets};
            check_gradient_arguments(tasks, Theta, V ? &*V : nullptr);
            const Index T = tasks.n_tasks();
            // NumPy allocates G: it asks the kernel for huge pages, so a large G costs a few
            // page faults instead of one per 4 KiB (which, with malloc, cost more than the pass).
            py::array_t<double, py::array::c_style> G_array({Theta.rows(), Theta.cols()});
            Eigen::Map<RowMatrix> G(G_array.mutable_data(), Theta.rows(), Theta.cols());
            Vector loss(T);
            if (!V) {
                {
                    ReleaseGIL release;
                    task_gradient(tasks, Theta, G, loss, n_threads);
                }
                return py::make_tuple(std::move(G_array), std::move(loss), py::none(), py::none());
            }
            Vector projected(T), curvature(T);
            {
                ReleaseGIL release;
                task_gradient(tasks, Theta, G, loss, n_threads, *V, projected, curvature);
            }
            return py::make_tuple(std::move(G_array), std::move(loss), std::move(projected),
                                  std::move(curvature));
        },
        py::arg("X").noconvert(), py::arg("y").noconvert(), py::arg("offsets").noconvert(),
        py::arg("Theta").noconvert(), py::arg("V").noconvert(), py::arg("n_threads"));

    m.def(
        "task_curvature",
        [](const DesignMatrix& X, VectorIn y, OffsetsIn offsets, RowMatrixIn C, const Matrix& B,
           int n_threads) {
            const TasksView tasks{X, y, offsets};
            check_curvature_arguments(tasks, C, B);
            Vector curvature(tasks.n_tasks());
            {
                ReleaseGIL release;
                task_curvature(tasks, C, B, curvature, n_threads);
            }
            return curvature;
        },
        py::arg("X").noconvert(), py::arg("y").noconvert(), py::arg("offsets").noconvert(),
        py::arg("C").noconvert(), py::arg("B").noconvert(), py::arg("n_threads"));

    m.def(
        "task_statistics",
        [](const DesignMatrix& X, VectorIn y, OffsetsIn offsets, const Matrix& V,
           std::optional<RowMatrix> W, int n_threads) -> py::tuple {
            const TasksView tasks{X, y, offsets};
            // Before allocating: the (T, s, s) output grows with s squared.
            check_statistics_arguments(tasks, V, W ? &*W : nullptr);
            const Index T = tasks.n_tasks(), s = V.cols();
            py::array_t<double, py::array::c_style> gram_array({T, s, s});
            Eigen::Map<RowMatrix> gram(gram_array.mutable_data(), T, s * s);
            RowMatrix cross(T, s);
            Vector squares(T);
            if (!W) {
                {
                    ReleaseGIL release;
                    task_statistics(tasks, V, gram, cross, squares, n_threads);
                }
                return py::make_tuple(std::move(gram_array), std::move(cross), std::move(squares),
                                      py::none());
            }
            py::array_t<double, py::array::c_style> G_array({T, X.cols()});
            Eigen::Map<RowMatrix> G(G_array.mutable_data(), T, X.cols());
            {
                ReleaseGIL release;
                task_statistics(tasks, V, gram, cross, squares, n_threads, *W, G);
            }
            return py::make_tuple(std::move(gram_array), std::move(cross), std::move(squares),
                                  std::move(G_array));
        },
        py::arg("X").noconvert(), py::arg("y").noconvert(), py::arg("offsets").noconvert(),
        py::arg("V").noconvert(), py::arg("W").noconvert(), py::arg("n_threads"));
    bind_prior_kernels(m);
    bind_polish_kernels(m);
}

namespace {

// The head-prior passes and the truncated SVD.
void bind_prior_kernels(py::module_& m) {
    m.def(
        "marginal_pass",
        [](const DesignMatrix& X, VectorIn y, OffsetsIn offsets, const Matrix& U, double noise,
           int n_threads) {
            const TasksView tasks{X, y, offsets};
            check_marginal_arguments(tasks, U, noise);
            MarginalPass out;
            {
                ReleaseGIL release;
                out = marginal_pass(tasks, U, noise, n_threads);
            }
            return py::make_tuple(out.deviance, std::move(out.gradient), out.expected,
                                  std::move(out.heads), std::move(out.task_loss));
        },
        py::arg("X").noconvert(), py::arg("y").noconvert(), py::arg("offsets").noconvert(),
        py::arg("U").noconvert(), py::arg("noise"), py::arg("n_threads"));

    m.def(
        "head_prior_em_step",
        [](py::array_t<double, py::array::c_style> gram, RowMatrixIn cross, VectorIn squares,
           Vector mean, Matrix cov, double noise, double n, double floor, int n_threads) {
            if (gram.ndim() != 3 || gram.shape(1) != gram.shape(2))
                throw py::value_error("gram must have shape (T, s, s)");
            const Eigen::Map<const RowMatrix> gram_rows(gram.data(), gram.shape(0),
                                                        gram.shape(1) * gram.shape(2));
            const HeadPrior prior{std::move(mean), std::move(cov), noise};
            HeadPriorStep step;
            {
                ReleaseGIL release;
                step = head_prior_em_step(gram_rows, cross, squares, prior, n, floor, n_threads);
            }
            return py::make_tuple(std::move(step.next.mean), std::move(step.next.cov),
                                  step.next.noise, step.log_likelihood);
        },
        py::arg("gram").noconvert(), py::arg("cross").noconvert(), py::arg("squares").noconvert(),
        py::arg("mean").noconvert(), py::arg("cov").noconvert(), py::arg("noise"), py::arg("n"),
        py::arg("floor"), py::arg("n_threads"));

    m.def(
        "truncated_svd",
        [](RowMatrixIn A, Index s, std::optional<Matrix> warm_start, std::uint64_t seed,
           int n_threads, double tol, int max_steps) {
            TruncatedSVD svd;
            InterruptPoll poll;
            {
                ReleaseGIL release;
                svd = truncated_svd(A, s, warm_start.value_or(Matrix()), seed, n_threads,
                                    SVDOptions{tol, max_steps}, std::ref(poll));
            }
            poll.raise_if_interrupted();
            py::dict out;
            out["V"] = std::move(svd.V);
            out["singular_values"] = std::move(svd.singular_values);
            out["W"] = std::move(svd.W);
            out["basis"] = std::move(svd.basis);
            out["n_steps"] = svd.n_steps;
            out["converged"] = svd.converged;
            return out;
        },
        py::arg("A").noconvert(), py::arg("s"), py::arg("warm_start").noconvert(), py::arg("seed"),
        py::arg("n_threads"), py::arg("tol"), py::arg("max_steps"));
}

// The per-task pieces of the least-squares polish, for polishing tasks held in shards.
void bind_polish_kernels(py::module_& m) {
    m.def(
        "task_heads",
        [](const DesignMatrix& X, VectorIn y, OffsetsIn offsets, const Matrix& V, int n_threads) {
            const TasksView tasks{X, y, offsets};
            check_tasks(tasks);
            check_subspace_shape(tasks, V.rows(), V.cols());
            RowMatrix W(tasks.n_tasks(), V.cols());
            Vector loss(tasks.n_tasks());
            {
                ReleaseGIL release;
                task_heads(tasks, V, W, loss, n_threads);
            }
            return py::make_tuple(std::move(W), std::move(loss));
        },
        py::arg("X").noconvert(), py::arg("y").noconvert(), py::arg("offsets").noconvert(),
        py::arg("V").noconvert(), py::arg("n_threads"));

    m.def(
        "basis_system_sums",
        [](const DesignMatrix& X, VectorIn y, OffsetsIn offsets, const RowMatrix& W,
           std::optional<Matrix> V, int n_threads) {
            const TasksView tasks{X, y, offsets};
            check_basis_arguments(tasks, W, V ? &*V : nullptr);
            check_threads(n_threads);
            NormalSystem system;
            InterruptPoll poll;
            {
                ReleaseGIL release;
                system = basis_system_sums(tasks, W, V ? &*V : nullptr,
                                           V ? BasisStep::newton : BasisStep::als, n_threads,
                                           std::ref(poll));
            }
            poll.raise_if_interrupted();
            Matrix M = system.M.selfadjointView<Eigen::Lower>();
            return py::make_tuple(std::move(M), std::move(system.rhs));
        },
        py::arg("X").noconvert(), py::arg("y").noconvert(), py::arg("offsets").noconvert(),
        py::arg("W").noconvert(), py::arg("V").noconvert(), py::arg("n_threads"));

    m.def(
        "newton_sums",
        [](const DesignMatrix& X, VectorIn y, OffsetsIn offsets, const RowMatrix& W,
           const Matrix& V, std::optional<Matrix> D, int n_threads) -> py::object {
            const TasksView tasks{X, y, offsets};
            check_tasks(tasks);
            check_subspace_shape(tasks, V.rows(), V.cols());
            if (W.rows() != tasks.n_tasks() || W.cols() != V.cols())
                throw std::invalid_argument("W must have shape (T, s) = (" +
                                            std::to_string(tasks.n_tasks()) + ", " +
                                            std::to_string(V.cols()) + ")");
            if (D && (D->rows() != V.rows() || D->cols() != V.cols()))
                throw std::invalid_argument("D must have the shape of V");
            check_threads(n_threads);
            Matrix product;
            std::optional<NewtonOperator> op;
            {
                ReleaseGIL release;
                op.emplace(tasks, W, V, n_threads);
                if (D) product = op->apply_tasks(*D);
            }
            if (D) return py::cast(std::move(product));
            return py::make_tuple(Matrix(op->rhs()), Matrix(op->data_diagonal()));
        },
        py::arg("X").noconvert(), py::arg("y").noconvert(), py::arg("offsets").noconvert(),
        py::arg("W").noconvert(), py::arg("V").noconvert(), py::arg("D").noconvert(),
        py::arg("n_threads"));
}

}  // namespace

}  // namespace metasp::bindings
