#include "metasp/basis_system.hpp"

#include "metasp/gradient.hpp"
#include "metasp/newton.hpp"
#include "metasp/parallel.hpp"

#include <Eigen/Cholesky>

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <vector>

namespace metasp {
namespace {

// Task chunks of the dense normal-equation accumulation: fixed by the shape alone (never by
// the thread count, so sums are identical with any number of threads), and few enough that
// the per-chunk (d s) x (d s) accumulators stay within about 64 MB.
Index normal_chunks(Index T, Index n) {
    const double bytes = 8.0 * double(n) * double(n);
    const Index by_memory = std::max<Index>(1, Index(64e6 / bytes));
    return std::clamp<Index>(T / 32, 1, std::min<Index>(16, by_memory));
}

// Applies the normal operator U -> sum_t X_t^T X_t U w_t w_t^T / m_t, never forming it: per-task
// rows q_t = X_t^T X_t (U w_t) / m_t, then Q^T W by the deterministic chunked product.
Matrix normal_operator(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& W,
                       const Matrix& U, RowMatrix& Q, int n_threads) {
    const Index d = tasks.n_features();
    for_each_task(tasks, n_threads, 2.0 * d, [&](Index t) {
        thread_local Vector theta;
        thread_local RowMatrix scratch;
        theta.noalias() = U * W.row(t).transpose();
        auto q = Q.row(t);
        q.setZero();
        const auto Xt = tasks.task_rows(t, scratch);
        for (Index i = 0; i < Xt.rows(); ++i) {
            const auto x = Xt.row(i);
            q += x.dot(theta) * x;
        }
        q /= double(tasks.size(t));
    });
    return transposed_product(Q, W, n_threads);
}

// Conjugate gradients on the normal equations of the basis step, from U0 (or 0), with the
// operator applied matrix-free.
Matrix cg_basis_solve(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& W,
                      const Eigen::Ref<const Matrix>& U0, int n_threads,
                      const BasisSolveOptions& options, const StopRequested& stop) {
    const Index T = tasks.n_tasks(), d = tasks.n_features(), s = W.cols();
    RowMatrix Q(T, d);
    Vector loss(T);
    // X_t^T y_t / m_t is the negative gradient at Theta = 0.
    task_gradient(tasks, RowMatrix::Zero(T, d), Q, loss, n_threads);
    const Matrix rhs = transposed_product(Q, W, n_threads);
    Matrix U = U0.size() > 0 ? Matrix(U0) : Matrix::Zero(d, s);
    Matrix residual = rhs - normal_operator(tasks, W, U, Q, n_threads);
    Matrix direction = residual;
    double rr = residual.squaredNorm();
    const double target = options.cg_tol * options.cg_tol * rhs.squaredNorm();
    for (int k = 0; k < options.cg_max_iter && rr > target && !(stop && stop()); ++k) {
        const Matrix applied = normal_operator(tasks, W, direction, Q, n_threads);
        const double curvature = (direction.array() * applied.array()).sum();
        if (!(curvature > 0)) break;
        const double alpha = rr / curvature;
        U += alpha * direction;
        residual -= alpha * applied;
        const double rr_next = residual.squaredNorm();
        direction = residual + (rr_next / rr) * direction;
        rr = rr_next;
    }
    return U;
}

}  // namespace

NormalSystem basis_system_sums(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& W,
                               const Matrix* V, BasisStep kind, int n_threads,
                               const StopRequested& stop) {
    const Index T = tasks.n_tasks(), d = tasks.n_features(), s = W.cols(), n = d * s;
    const Index n_chunks = normal_chunks(T, n);
    std::vector<Matrix> normal(static_cast<size_t>(n_chunks));
    std::vector<Vector> rhs(static_cast<size_t>(n_chunks));
    const double work = double(tasks.n_samples()) * d * d + double(T) * s * s * d * d;
    const bool parallel = run_parallel(n_threads, work);
#pragma omp parallel for num_threads(thread_cap(n_threads)) if (parallel) schedule(static)
    for (Index c = 0; c < n_chunks; ++c) {
        Matrix& M = normal[c];
        Vector& r = rhs[c];
        M.setZero(n, n);
        r.setZero(n);
        Matrix gram(d, d), full(d, d);
        Vector xty(d);  // X_t^T y_t / m_t (als), g_t (newton)
        NewtonTaskTerms terms;
        RowMatrix scratch;
        for (Index t = chunk_begin(c, n_chunks, T); t < chunk_begin(c + 1, n_chunks, T); ++t) {
            if (stop && stop()) break;
            const Index m = tasks.size(t);
            const double inv_m = 1.0 / double(m);
            const auto Xt = tasks.task_rows(t, scratch);
            const auto yt = tasks.y.segment(tasks.begin(t), m);
            gram.setZero();
            gram.selfadjointView<Eigen::Lower>().rankUpdate(Xt.transpose(), inv_m);
            if (kind == BasisStep::als) {
                xty.noalias() = inv_m * (Xt.transpose() * yt);
            } else {
                newton_task_terms(tasks, t, *V, W.row(t).data(), terms);
                xty = terms.g();
                gram.noalias() -= terms.u * terms.Kt().transpose();  // symmetric: K^T A^+ K
            }
            const Vector& g = xty;
            const Matrix &u = terms.u, &Ainv = terms.Ainv;
            full = gram.selfadjointView<Eigen::Lower>();
            for (Index a = 0; a < s; ++a) {
                r.segment(a * d, d) += W(t, a) * xty;
                // Blocks (a, b), a >= b: the lower triangle that Cholesky reads.
                for (Index b = 0; b <= a; ++b) {
                    auto block = M.block(a * d, b * d, d, d);
                    block += (W(t, a) * W(t, b)) * full;
                    if (kind == BasisStep::newton) {
                        block.noalias() += W(t, a) * u.col(b) * g.transpose();
                        block.noalias() += W(t, b) * g * u.col(a).transpose();
                        block.noalias() -= Ainv(a, b) * g * g.transpose();
                    }
                }
            }
        }
    }
    for (Index c = 1; c < n_chunks; ++c) {
        normal[0].triangularView<Eigen::Lower>() += normal[c];
        rhs[0] += rhs[c];
    }
    NormalSystem out{std::move(normal[0]), std::move(rhs[0]), 0.0};
    out.scale = std::max(out.M.diagonal().mean(), std::numeric_limits<double>::min());
    return out;
}

void add_gauge_penalty(NormalSystem& system, const Matrix& V) {
    const Index d = V.rows(), s = V.cols();
    const Matrix VVt = system.scale * V * V.transpose();
    for (Index a = 0; a < s; ++a) system.M.block(a * d, a * d, d, d) += VVt;
}

NormalSystem assemble_basis_system(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& W,
                                   const Matrix* V, BasisStep kind, int n_threads,
                                   const StopRequested& stop) {
    NormalSystem out = basis_system_sums(tasks, W, V, kind, n_threads, stop);
    if (V != nullptr) add_gauge_penalty(out, *V);
    return out;
}

Matrix solve_basis_system(const NormalSystem& system, Index d, Index s, double shift,
                          bool definite) {
    Matrix M = system.M;
    M.diagonal().array() += shift;
    Vector solution;
    const Eigen::LLT<Matrix> llt(M);
    if (llt.info() == Eigen::Success) {
        solution = llt.solve(system.rhs);
    } else if (definite) {
        return Matrix();
    } else {  // singular heads (e.g. a zero column of W): any least-squares solution will do
        const Eigen::LDLT<Matrix> ldlt(M.selfadjointView<Eigen::Lower>());
        solution = ldlt.solve(system.rhs);
    }
    return Eigen::Map<const Matrix>(solution.data(), d, s);
}

Matrix basis_least_squares(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& W,
                           const Eigen::Ref<const Matrix>& U0, int n_threads,
                           const BasisSolveOptions& options, const StopRequested& stop) {
    check_tasks(tasks);
    check_threads(n_threads);
    const Index d = tasks.n_features(), s = W.cols();
    if (W.rows() != tasks.n_tasks() || s < 1)
        throw std::invalid_argument("W must have shape (T, s)");
    if (U0.size() > 0 && (U0.rows() != d || U0.cols() != s))
        throw std::invalid_argument("U0 must have shape (d, s)");
    if (d * s <= options.max_dense) {
        NormalSystem system =
            assemble_basis_system(tasks, W, nullptr, BasisStep::als, n_threads, stop);
        if (stop && stop()) return Matrix::Zero(d, s);
        return solve_basis_system(system, d, s, 0.0, false);
    }
    return cg_basis_solve(tasks, W, U0, n_threads, options, stop);
}

}  // namespace metasp
