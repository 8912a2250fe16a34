#include "metasp/refine.hpp"

#include "metasp/gradient.hpp"
#include "metasp/parallel.hpp"
#include "metasp/solver.hpp"

#include <Eigen/Cholesky>
#include <Eigen/Eigenvalues>
#include <Eigen/QR>
#include <Eigen/SVD>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace metasp {
namespace {

// Summed in task order, so the value does not depend on the thread count.
double mean(const Vector& values) {
    double total = 0;
    for (Index t = 0; t < values.size(); ++t) total += values[t];
    return total / double(values.size());
}

template <class Body>
void for_each_task(const TasksView& tasks, int n_threads, double work_per_sample, Body body) {
    const Index T = tasks.n_tasks();
    const bool parallel = run_parallel(n_threads, double(tasks.n_samples()) * work_per_sample);
#pragma omp parallel for num_threads(n_threads) if (parallel) schedule(dynamic, 16)
    for (Index t = 0; t < T; ++t) body(t);
}

// Task chunks of the dense normal-equation accumulation: fixed by the shape alone (never by
// the thread count, so sums are identical with any number of threads), and few enough that
// the per-chunk (d s) x (d s) accumulators stay within about 64 MB.
Index normal_chunks(Index T, Index n) {
    const double bytes = 8.0 * double(n) * double(n);
    const Index by_memory = std::max<Index>(1, Index(64e6 / bytes));
    return std::clamp<Index>(T / 32, 1, std::min<Index>(16, by_memory));
}

enum class BasisStep { als, newton };

struct NormalSystem {
    Matrix M;      // lower triangle: sum over tasks, plus the gauge penalty for newton
    Vector rhs;
    double scale;  // mean diagonal entry: the unit of the damping shift
};

// Dense normal equations of a basis step, accumulated over a fixed number of task chunks.
// als: the exact least squares of the basis for fixed heads, U = argmin sum_t ||y_t - X_t U
// w_t||^2 / m_t. newton (V: d x s orthonormal, W: the exact least-squares heads in span(V)):
// the Newton system for the correction D of the basis V, in (heads, basis) jointly with the
// head increments eliminated task by task (a Schur complement). Blocks (a, b):
// w_a w_b (S_t - K_t^T A_t^+ K_t) + w_a u_b g_t^T + w_b g_t u_a^T - (A_t^+)_ab g_t g_t^T, with
// Z_t = X_t V, A_t = Z_t^T Z_t / m_t, K_t = Z_t^T X_t / m_t, u = K_t^T A_t^+ and g_t =
// X_t^T r_t / m_t; the first term alone is Gauss-Newton. Directions D = V G change nothing
// (the heads absorb them): a penalty on V^T D pins them to 0.
NormalSystem assemble_basis_system(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& W,
                                   const Matrix* V, BasisStep kind, int n_threads) {
    const Index T = tasks.n_tasks(), d = tasks.n_features(), s = W.cols(), n = d * s;
    const Index n_chunks = normal_chunks(T, n);
    std::vector<Matrix> normal(static_cast<size_t>(n_chunks));
    std::vector<Vector> rhs(static_cast<size_t>(n_chunks));
    const double work = double(tasks.n_samples()) * d * d + double(T) * s * s * d * d;
    const bool parallel = run_parallel(n_threads, work);
#pragma omp parallel for num_threads(n_threads) if (parallel) schedule(static)
    for (Index c = 0; c < n_chunks; ++c) {
        Matrix& M = normal[c];
        Vector& r = rhs[c];
        M.setZero(n, n);
        r.setZero(n);
        Matrix gram(d, d), full(d, d), K, Ainv, u;
        Vector xty(d), g;
        RowMatrix scratch;
        for (Index t = chunk_begin(c, n_chunks, T); t < chunk_begin(c + 1, n_chunks, T); ++t) {
            const Index m = tasks.size(t);
            const double inv_m = 1.0 / double(m);
            const auto Xt = tasks.task_rows(t, scratch);
            const auto yt = tasks.y.segment(tasks.begin(t), m);
            gram.setZero();
            gram.selfadjointView<Eigen::Lower>().rankUpdate(Xt.transpose(), inv_m);
            if (kind == BasisStep::als) {
                xty.noalias() = inv_m * (Xt.transpose() * yt);
            } else {
                const Matrix Z = Xt * (*V);
                const Vector w = W.row(t).transpose();
                g.noalias() = inv_m * (Xt.transpose() * (yt - Z * w));
                xty = g;
                // Pseudo-inverse of A_t: tasks with fewer samples than s have a singular A_t.
                const Eigen::SelfAdjointEigenSolver<Matrix> eig(inv_m * (Z.transpose() * Z));
                const Vector& lambda = eig.eigenvalues();
                const double cutoff = 1e-12 * std::max(lambda.maxCoeff(), 0.0);
                Vector inv_lambda(s);
                for (Index j = 0; j < s; ++j) inv_lambda[j] = lambda[j] > cutoff ? 1.0 / lambda[j] : 0.0;
                Ainv.noalias() = eig.eigenvectors() * inv_lambda.asDiagonal() * eig.eigenvectors().transpose();
                K.noalias() = inv_m * (Z.transpose() * Xt);
                u.noalias() = K.transpose() * Ainv;
                gram.noalias() -= u * K;  // symmetric: K^T A^+ K
            }
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
    if (V != nullptr) {  // penalty scale * (I_s kron V V^T)
        const Matrix VVt = out.scale * (*V) * V->transpose();
        for (Index a = 0; a < s; ++a) out.M.block(a * d, a * d, d, d) += VVt;
    }
    return out;
}

// Solves (M + shift I) x = rhs by Cholesky, as a d x s matrix; empty when not positive
// definite and `definite` is required, else a least-squares solution by LDLT.
Matrix solve_basis_system(const NormalSystem& system, Index d, Index s, double shift, bool definite) {
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

Matrix cg_basis_solve(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& W,
                      const Eigen::Ref<const Matrix>& U0, int n_threads,
                      const BasisSolveOptions& options) {
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
    for (int k = 0; k < options.cg_max_iter && rr > target; ++k) {
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

// Damping of the Newton step: attempts per sweep before the ALS step, the factor it grows
// by after a failure (and shrinks by after a success), and its smallest non-zero value.
constexpr int kDampingAttempts = 6;
constexpr double kDampingFactor = 10;
constexpr double kMinDamping = 1e-6;

// Below this relative change, a sweep whose loss did not decrease is rounding at a
// stationary point: converged rather than stalled.
constexpr double kStationaryChange = 1e-6;

// The loss has stagnated when the last kStagnationWindow sweeps together lowered it by less
// than kLossStagnation of its value: a flat valley (a direction the data barely identify)
// where the iterate creeps for many sweeps while the fit no longer improves measurably.
constexpr int kStagnationWindow = 10;
constexpr double kLossStagnation = 1e-5;

}  // namespace

Factors canonical_factors(const Eigen::Ref<const RowMatrix>& W, const Eigen::Ref<const Matrix>& U) {
    const Index s = W.cols();
    if (U.cols() != s) throw std::invalid_argument("W and U must have the same number of columns");
    const Eigen::HouseholderQR<Matrix> qr_u(U);
    const Matrix Q = qr_u.householderQ() * Matrix::Identity(U.rows(), s);
    const Matrix R = qr_u.matrixQR().topRows(s).triangularView<Eigen::Upper>();
    const Matrix heads = W * R.transpose();  // Theta = heads Q^T
    // SVD of the T x s heads through a thin QR: heads = Q2 R2, R2 = P S Z^T.
    const Eigen::HouseholderQR<Matrix> qr_w(heads);
    const Matrix R2 = qr_w.matrixQR().topRows(s).triangularView<Eigen::Upper>();
    const Eigen::JacobiSVD<Matrix> svd(R2, Eigen::ComputeFullV);
    Factors out;
    out.V = Q * svd.matrixV();
    out.W = heads * svd.matrixV();
    out.singular_values = svd.singularValues();
    return out;
}

void task_heads(const TasksView& tasks, const Eigen::Ref<const Matrix>& V, Eigen::Ref<RowMatrix> W,
                Eigen::Ref<Vector> task_loss, int n_threads) {
    check_tasks(tasks);
    check_threads(n_threads);
    const Index T = tasks.n_tasks(), s = V.cols();
    if (V.rows() != tasks.n_features()) throw std::invalid_argument("V must have d rows");
    if (W.rows() != T || W.cols() != s) throw std::invalid_argument("W must have shape (T, s)");
    if (task_loss.size() != T) throw std::invalid_argument("task_loss needs one entry per task");
    for_each_task(tasks, n_threads, 2.0 * tasks.n_features() * s, [&](Index t) {
        const Index m = tasks.size(t);
        thread_local RowMatrix scratch;
        const Matrix Z = tasks.task_rows(t, scratch) * V;
        const auto y = tasks.y.segment(tasks.begin(t), m);
        const Eigen::CompleteOrthogonalDecomposition<Matrix> cod(Z);
        const Vector w = cod.solve(y);
        W.row(t) = w.transpose();
        task_loss[t] = (y - Z * w).squaredNorm() / double(m);
    });
}

Matrix basis_least_squares(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& W,
                           const Eigen::Ref<const Matrix>& U0, int n_threads,
                           const BasisSolveOptions& options) {
    check_tasks(tasks);
    check_threads(n_threads);
    const Index d = tasks.n_features(), s = W.cols();
    if (W.rows() != tasks.n_tasks() || s < 1) throw std::invalid_argument("W must have shape (T, s)");
    if (U0.size() > 0 && (U0.rows() != d || U0.cols() != s))
        throw std::invalid_argument("U0 must have shape (d, s)");
    if (d * s <= options.max_dense)
        return solve_basis_system(assemble_basis_system(tasks, W, nullptr, BasisStep::als, n_threads), d, s, 0.0, false);
    return cg_basis_solve(tasks, W, U0, n_threads, options);
}

RefineResult refine(const TasksView& tasks, const Eigen::Ref<const Matrix>& V0,
                    const RefineOptions& options, const StopRequested& stop_requested) {
    check_tasks(tasks);
    check_threads(options.n_threads);
    const Index T = tasks.n_tasks(), d = tasks.n_features(), s = V0.cols();
    if (V0.rows() != d || s < 1 || s > std::min(T, d))
        throw std::invalid_argument("the starting basis must have shape (d, s), 1 <= s <= min(T, d)");
    if (options.max_iter < 0) throw std::invalid_argument("max_iter must be non-negative");
    const auto& ref = options.reference_B;
    if (ref.size() > 0 && (ref.rows() != s || ref.cols() != d))
        throw std::invalid_argument("reference_B must have shape (s, d)");
    const int n_threads = options.n_threads;

    RefineResult out;
    RowMatrix W(T, s);
    Vector per_task(T);
    const Eigen::HouseholderQR<Matrix> qr(V0);
    const Matrix V = qr.householderQ() * Matrix::Identity(d, s);  // orthonormal basis of span(V0)
    task_heads(tasks, V, W, per_task, n_threads);
    Factors current = canonical_factors(W, V);
    out.start_loss = mean(per_task);
    RowMatrix theta(T, d), next(T, d);
    tall_product(current.W, current.V.transpose(), theta, n_threads);
    double loss = out.start_loss;
    double damping = 0;  // of the Newton step, relative to the mean diagonal of its matrix
    out.status = RefineStatus::max_iter;

    for (int k = 0; k < options.max_iter; ++k) {
        if (stop_requested && stop_requested()) { out.status = RefineStatus::interrupted; break; }
        double next_loss = loss;
        Factors candidate;
        bool accepted = false;
        if (options.newton && d * s <= options.basis.max_dense) {
            // Damped Newton (Levenberg-Marquardt on the Newton system): basis V + D with the
            // heads re-fitted exactly, kept only if it lowers the loss; the damping shrinks
            // after a success and grows after a failure (flat, curved valleys need it).
            const NormalSystem system = assemble_basis_system(tasks, current.W, &current.V, BasisStep::newton, n_threads);
            for (int attempt = 0; attempt < kDampingAttempts && !accepted; ++attempt) {
                const Matrix D = solve_basis_system(system, d, s, damping * system.scale, true);
                if (D.size() > 0) {
                    const Eigen::HouseholderQR<Matrix> qr_step(current.V + D);
                    const Matrix V_step = qr_step.householderQ() * Matrix::Identity(d, s);
                    task_heads(tasks, V_step, W, per_task, n_threads);
                    next_loss = mean(per_task);
                    if (next_loss < loss) {
                        candidate = canonical_factors(W, V_step);
                        accepted = true;
                        ++out.n_newton;
                        damping = damping / kDampingFactor < kMinDamping ? 0.0 : damping / kDampingFactor;
                        break;
                    }
                }
                damping = std::max(damping * kDampingFactor, kMinDamping);
            }
        }
        if (!accepted) {  // the exact least-squares step of the basis for fixed heads (ALS)
            const Matrix U = basis_least_squares(tasks, current.W, current.V, n_threads, options.basis);
            const Factors rotated = canonical_factors(current.W, U);
            task_heads(tasks, rotated.V, W, per_task, n_threads);
            next_loss = mean(per_task);
            candidate = canonical_factors(W, rotated.V);
        }
        tall_product(candidate.W, candidate.V.transpose(), next, n_threads);
        const double norm = next.norm(), change = (next - theta).norm();
        const double rel_change = norm > 0 ? change / norm : 0.0;
        if (!(next_loss < loss) && !(rel_change <= options.tol)) {
            // Exact half-steps cannot increase the loss: this is rounding (or an inexact
            // iterative solve), so keep the better iterate we have.
            out.status = rel_change <= kStationaryChange ? RefineStatus::converged : RefineStatus::stalled;
            break;
        }
        current = std::move(candidate);
        std::swap(theta, next);
        loss = next_loss;
        out.n_iter = k + 1;
        out.loss.push_back(loss);
        out.rel_change.push_back(rel_change);
        if (ref.size() > 0) out.sin_angle.push_back(sin_angle(current.V, ref));
        if (rel_change <= options.tol) { out.status = RefineStatus::converged; break; }
        if (options.sin_tol > 0 && ref.size() > 0 && out.sin_angle.back() <= options.sin_tol) {
            out.status = RefineStatus::converged;
            break;
        }
        const auto n = out.loss.size();
        if (options.tol > 0 && n > size_t(kStagnationWindow) &&
            out.loss[n - 1 - kStagnationWindow] - loss <= kLossStagnation * loss) {
            out.status = RefineStatus::stalled;
            break;
        }
    }
    out.factors = std::move(current);
    out.Theta = std::move(theta);
    return out;
}

}  // namespace metasp
