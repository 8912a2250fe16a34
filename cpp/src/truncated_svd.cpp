#include "metasp/truncated_svd.hpp"

#include "metasp/parallel.hpp"

#include <Eigen/Eigenvalues>
#include <Eigen/QR>

#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>

namespace metasp {
namespace {

Matrix orthonormal_columns(const Matrix& Y) {
    const Eigen::HouseholderQR<Matrix> qr(Y);
    return qr.householderQ() * Matrix::Identity(Y.rows(), Y.cols());
}

Matrix gaussian_matrix(Index rows, Index cols, std::uint64_t seed) {
    std::mt19937_64 engine(seed);
    std::normal_distribution<double> normal;
    Matrix G(rows, cols);
    for (Index j = 0; j < cols; ++j)
        for (Index i = 0; i < rows; ++i) G(i, j) = normal(engine);
    return G;
}

// Y += A^T (A Q) over `rows` rows of A (row pitch `pitch`, d columns); Q and Y are d x b,
// column-major. Four rows at a time: each load of a column of Q or Y serves four rows, and
// four independent dot products hide each one's reduction latency. Plain loops rather than
// Eigen products: with b ~ 10 columns, packing A for a GEMM costs as much as the multiply.
METASP_CPU_DISPATCH
void add_gram_times(const double* A, Index pitch, Index rows, Index d, const double* Q, Index b,
                    double* Y) {
    Index i = 0;
    for (; i + 4 <= rows; i += 4) {
        const double *a0 = A + i * pitch, *a1 = a0 + pitch, *a2 = a1 + pitch, *a3 = a2 + pitch;
        prefetch_rows(A + (i + 8) * pitch, 4 * pitch);
        for (Index j = 0; j < b; ++j) {
            const double* q = Q + j * d;
            double z0 = 0, z1 = 0, z2 = 0, z3 = 0;
#pragma omp simd reduction(+ : z0, z1, z2, z3)
            for (Index k = 0; k < d; ++k) {
                z0 += a0[k] * q[k];
                z1 += a1[k] * q[k];
                z2 += a2[k] * q[k];
                z3 += a3[k] * q[k];
            }
            double* y = Y + j * d;
#pragma omp simd
            for (Index k = 0; k < d; ++k) y[k] += (z0 * a0[k] + z1 * a1[k]) + (z2 * a2[k] + z3 * a3[k]);
        }
    }
    for (; i < rows; ++i) {
        const double* a0 = A + i * pitch;
        for (Index j = 0; j < b; ++j) {
            const double* q = Q + j * d;
            double z0 = 0;
#pragma omp simd reduction(+ : z0)
            for (Index k = 0; k < d; ++k) z0 += a0[k] * q[k];
            double* y = Y + j * d;
#pragma omp simd
            for (Index k = 0; k < d; ++k) y[k] += z0 * a0[k];
        }
    }
}

}  // namespace

Matrix gram_times(const Eigen::Ref<const RowMatrix>& A, const Matrix& Q, int n_threads) {
    const Index rows = A.rows(), d = A.cols(), b = Q.cols(), n_chunks = n_row_chunks(rows);
    std::vector<Matrix> partial(static_cast<size_t>(n_chunks));
    const bool parallel = run_parallel(n_threads, double(rows) * d * b);
#pragma omp parallel for num_threads(n_threads) if (parallel) schedule(static)
    for (Index c = 0; c < n_chunks; ++c) {
        const Index r0 = chunk_begin(c, n_chunks, rows), r1 = chunk_begin(c + 1, n_chunks, rows);
        partial[c].setZero(d, b);
        add_gram_times(A.row(r0).data(), A.outerStride(), r1 - r0, d, Q.data(), b,
                       partial[c].data());
    }
    Matrix sum = std::move(partial[0]);
    for (Index c = 1; c < n_chunks; ++c) sum += partial[c];
    return sum;
}

Index svd_block_size(Index s, Index n_rows, Index n_cols) {
    // Oversampling makes the convergence rate (sigma_{b+1} / sigma_s)^2 per step instead of
    // (sigma_{s+1} / sigma_s)^2, which matters when the gap after sigma_s is small.
    const Index oversampling = std::max<Index>(s, 5);
    return std::min(std::min(n_rows, n_cols), s + oversampling);
}

TruncatedSVD truncated_svd(const Eigen::Ref<const RowMatrix>& A, Index s,
                           const Eigen::Ref<const Matrix>& warm_start, std::uint64_t seed,
                           int n_threads, const SVDOptions& options,
                           const StopRequested& stop_requested) {
    const Index T = A.rows(), d = A.cols();
    if (s < 1 || s > std::min(T, d))
        throw std::invalid_argument("rank s must satisfy 1 <= s <= min(T, d)");
    if (warm_start.size() > 0 && warm_start.rows() != d)
        throw std::invalid_argument("warm_start must have one row per column of A");
    if (!(options.tol >= 0) || options.max_steps < 1)
        throw std::invalid_argument("SVD options need tol >= 0 and max_steps >= 1");
    check_threads(n_threads);

    const Index b = svd_block_size(s, T, d);
    TruncatedSVD out;
    // W: (T, s) = A V.leftCols(s).
    const auto finish = [&](Matrix V, Matrix& W, int n_steps, bool converged) {
        out.n_steps = n_steps;
        out.converged = converged;
        out.V = V.leftCols(s);
        out.W = std::move(W);
        out.singular_values = out.W.colwise().norm().transpose();
        out.basis = std::move(V);
        return out;
    };
    // Exact top eigenvectors of the d x d Gram matrix A^T A: T d^2 work, about d / (4 b)
    // subspace-iteration steps' worth. Used for tiny d, and when iteration is slow (small
    // gaps) and d is moderate.
    const auto exact = [&](int n_steps) {
        const Eigen::SelfAdjointEigenSolver<Matrix> eig(transposed_product(A, A, n_threads));
        Matrix V = eig.eigenvectors().rowwise().reverse().leftCols(b);
        Matrix W(T, s);
        tall_product(A, V.leftCols(s), W, n_threads);
        return finish(std::move(V), W, n_steps, true);
    };
    if (d <= 2 * b) return exact(1);
    // Multiply-adds of one iteration step (A^T A Q) and of the exact path (A^T A, then a
    // dense symmetric eigensolve, ~9 d^3): iterate while the observed convergence rate
    // predicts the tolerance within the exact path's cost.
    constexpr Index kMaxGramSize = 2048;
    const double step_cost = 2.0 * double(T) * d * b;
    const double exact_cost = d <= kMaxGramSize ? double(T) * d * d + 9.0 * double(d) * d * d
                                                : std::numeric_limits<double>::infinity();

    Matrix Q = gaussian_matrix(d, b, seed);
    const Index k = std::min(b, warm_start.cols());
    Q.leftCols(k) = warm_start.leftCols(k);
    Q = orthonormal_columns(Q);
    // Below this the residual is rounding error in forming A^T A v.
    const double tol = std::max(options.tol, 32 * std::numeric_limits<double>::epsilon() *
                                                 std::sqrt(double(std::max(T, d))));
    double previous_residual = std::numeric_limits<double>::infinity();
    for (int step = 1;; ++step) {
        // Rayleigh-Ritz on span(Q), from Y = A^T A Q alone: the Ritz matrix is Q^T Y, the
        // Ritz vectors V = Q R, and A^T A V = Y R, so no T x b block is kept.
        const Matrix Y = gram_times(A, Q, n_threads);
        Matrix H = Q.transpose() * Y;
        H = (0.5 * (H + H.transpose())).eval();
        const Eigen::SelfAdjointEigenSolver<Matrix> eig(H);
        const Matrix ritz = eig.eigenvectors().rowwise().reverse();
        const Vector lambda = eig.eigenvalues().reverse();
        Matrix V = Q * ritz;
        Matrix AtAV = Y * ritz;

        double residual = 0;
        for (Index i = 0; i < s; ++i)
            residual = std::max(residual, (AtAV.col(i) - lambda(i) * V.col(i)).norm());
        const double target = tol * std::max(lambda(0), 0.0);
        const bool converged = residual <= target;
        if (converged || step >= options.max_steps || (stop_requested && stop_requested())) {
            Matrix W(T, s);
            tall_product(A, V.leftCols(s), W, n_threads);
            return finish(std::move(V), W, step, converged);
        }
        // Residuals shrink geometrically, by (sigma_{b+1} / sigma_s)^2 per step.
        const double rate = residual / previous_residual;
        previous_residual = residual;
        if (step >= 2) {
            const double steps_left = rate < 1 && residual > 0
                                          ? std::ceil(std::log(target / residual) / std::log(rate))
                                          : std::numeric_limits<double>::infinity();
            if (steps_left * step_cost > exact_cost) return exact(step + 1);
        }
        Q = orthonormal_columns(AtAV);
    }
}

}  // namespace metasp
