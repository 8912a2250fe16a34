#include "metasp/heads.hpp"

#include "metasp/linalg.hpp"
#include "metasp/parallel.hpp"
#include "metasp/task_gram.hpp"

#include <Eigen/QR>
#include <Eigen/SVD>

#include <stdexcept>
#include <vector>

namespace metasp {
namespace {

// Below this bound on cond(Z_t^T Z_t), the heads are solved from the normal equations by
// Cholesky: their error, about cond * 1e-16 relative, stays at rounding level (the orthogonal
// decomposition's own error grows with cond(Z_t)^2 too once the residual is not tiny).
constexpr double kHeadsCondition = 1e4;

}  // namespace

Factors canonical_factors(const Eigen::Ref<const RowMatrix>& W, const Eigen::Ref<const Matrix>& U) {
    const Index s = W.cols();
    if (U.cols() != s) throw std::invalid_argument("W and U must have the same number of columns");
    const Eigen::HouseholderQR<Matrix> qr_u(U);
    const Matrix Q = thin_q(qr_u, s);
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
                Eigen::Ref<Vector> task_loss, int n_threads, RowMatrix* Z_out) {
    check_tasks(tasks);
    check_threads(n_threads);
    const Index T = tasks.n_tasks(), s = V.cols();
    if (V.rows() != tasks.n_features()) throw std::invalid_argument("V must have d rows");
    if (W.rows() != T || W.cols() != s) throw std::invalid_argument("W must have shape (T, s)");
    if (task_loss.size() != T) throw std::invalid_argument("task_loss needs one entry per task");
    if (Z_out != nullptr) Z_out->resize(tasks.n_samples(), s);
    const Index d = V.rows();
    for_each_task(tasks, n_threads, 2.0 * d * s, [&](Index t) {
        const Index m = tasks.size(t), begin = tasks.begin(t);
        thread_local std::vector<double> Z_local, Zt, work;
        double* Z = Z_out != nullptr ? Z_out->data() + begin * s : nullptr;
        if (Z == nullptr) {
            Z_local.resize(static_cast<size_t>(m * s));
            Z = Z_local.data();
        }
        project_task_rows(tasks, t, V.data(), V.outerStride(), s, Z);
        const double* y = tasks.y.data() + begin;
        work.resize(static_cast<size_t>(3 * s * s + 3 * s));
        double *A = work.data(), *L = A + s * s, *L_inv = L + s * s, *b = L_inv + s * s, *c = b + s,
               *w = c + s;
        Zt.resize(static_cast<size_t>(m * s));
        scaled_gram(Z, m, s, 1.0, y, A, b, Zt.data());
        if (well_conditioned_cholesky(A, s, kHeadsCondition, L, L_inv)) {
            for (Index i = 0; i < s; ++i) {  // c = L^-1 b, w = L^-T c
                double sum = 0;
                for (Index k = 0; k <= i; ++k) sum += L_inv[i * s + k] * b[k];
                c[i] = sum;
            }
            for (Index a = 0; a < s; ++a) {
                double sum = 0;
                for (Index i = a; i < s; ++i) sum += L_inv[i * s + a] * c[i];
                w[a] = sum;
            }
        } else {  // ill-conditioned or rank deficient: the minimum-norm least-squares solution
            const Eigen::Map<const RowMatrix> Zt(Z, m, s);
            const Eigen::CompleteOrthogonalDecomposition<Matrix> cod(Zt);
            Eigen::Map<Vector>(w, s) = cod.solve(Eigen::Map<const Vector>(y, m));
        }
        double loss = 0;
        for (Index i = 0; i < m; ++i) {
            double r = y[i];
            for (Index k = 0; k < s; ++k) r -= Z[i * s + k] * w[k];
            loss += r * r;
        }
        for (Index k = 0; k < s; ++k) W(t, k) = w[k];
        task_loss[t] = loss / double(m);
    });
}

}  // namespace metasp
