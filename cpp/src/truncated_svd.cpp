#include "metasp/truncated_svd.hpp"

#include "metasp/parallel.hpp"
#include "metasp/row_kernels.hpp"

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

// Y += A^T (A Q) over the `rows` rows of A starting at A (row pitch `pitch`, d columns), and
// the rows of A Q into AQ (row-major, b columns); Q and Y are d x b, column-major. Blocks of
// up to 4 rows: their dot products with two columns of Q at a time run as 8 independent
// chains on the packs of row_kernels.hpp, and each column of Y is loaded and stored once per
// block. Plain loops rather than Eigen products: with b ~ 10 columns, packing A for a GEMM
// costs as much as the multiply.
struct GramRows {
    const double* A;
    Index pitch, d;
    const double* Q;
    Index b;
    double *Y, *AQ;

    template <int R>
    METASP_ALWAYS_INLINE void operator()(Index i, std::integral_constant<int, R>) {
        const double* a0 = A + i * pitch;
        prefetch_rows(a0 + 8 * pitch, R * pitch);
        double* z = AQ + i * b;
        Index j = 0;
        for (; j + 2 <= b; j += 2) {
            const double* columns[2] = {Q + j * d, Q + (j + 1) * d};
            double dot[R][2];
            rows::dots<R, 2, 4 / R>(a0, pitch, d, columns, dot);
            for (int k = 0; k < R; ++k) z[k * b + j] = dot[k][0], z[k * b + j + 1] = dot[k][1];
        }
        if (j < b) {
            const double* column = Q + j * d;
            double dot[R][1];
            rows::dots<R, 1, 8 / R>(a0, pitch, d, &column, dot);
            for (int k = 0; k < R; ++k) z[k * b + j] = dot[k][0];
        }
        for (j = 0; j < b; ++j) {
            double c[R];
            for (int k = 0; k < R; ++k) c[k] = z[k * b + j];
            rows::add_rows<R>(a0, pitch, d, c, Y + j * d);
        }
    }
};

METASP_CPU_DISPATCH
void add_gram_times(const double* A, Index pitch, Index rows, Index d, const double* Q, Index b,
                    double* Y, double* AQ) {
    GramRows block{A, pitch, d, Q, b, Y, AQ};
    rows::for_row_blocks<4>(rows, block);
}

}  // namespace

Matrix gram_times(const Eigen::Ref<const RowMatrix>& A, const Matrix& Q, RowMatrix& AQ,
                  int n_threads) {
    const Index rows = A.rows(), d = A.cols(), b = Q.cols(), n_chunks = n_row_chunks(rows);
    AQ.resize(rows, b);
    std::vector<Matrix> partial(static_cast<size_t>(n_chunks));
    const bool parallel = run_parallel(n_threads, double(rows) * d * b);
#pragma omp parallel for num_threads(n_threads) if (parallel) schedule(static)
    for (Index c = 0; c < n_chunks; ++c) {
        const Index r0 = chunk_begin(c, n_chunks, rows), r1 = chunk_begin(c + 1, n_chunks, rows);
        partial[c].setZero(d, b);
        add_gram_times(A.row(r0).data(), A.outerStride(), r1 - r0, d, Q.data(), b,
                       partial[c].data(), AQ.row(r0).data());
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
    RowMatrix AQ;
    for (int step = 1;; ++step) {
        // Rayleigh-Ritz on span(Q), from Y = A^T A Q: the Ritz matrix is Q^T Y, the Ritz
        // vectors V = Q R, and A^T A V = Y R; the pass also leaves A Q, so A V = (A Q) R at
        // the end needs no further pass over A.
        const Matrix Y = gram_times(A, Q, AQ, n_threads);
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
            tall_product(AQ, ritz.leftCols(s), W, n_threads);
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
