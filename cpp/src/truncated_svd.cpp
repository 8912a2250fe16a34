#include "metasp/truncated_svd.hpp"

#include "metasp/linalg.hpp"
#include "metasp/parallel.hpp"
#include "metasp/row_kernels.hpp"

#include <Eigen/Eigenvalues>
#include <Eigen/QR>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <iomanip>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace metasp {
namespace {

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
                  int n_threads, const StopRequested& stop) {
    const Index rows = A.rows(), d = A.cols(), b = Q.cols(), n_chunks = n_row_chunks(rows);
    AQ.resize(rows, b);
    std::vector<Matrix> partial(static_cast<size_t>(n_chunks));
    for (Matrix& chunk : partial) chunk.setZero(d, b);
    chunked_pass(rows, n_chunks, 2.0 * double(d) * double(b), n_threads, stop,
                 [&](Index c, Index r0, Index r1) {
                     add_gram_times(A.row(r0).data(), A.outerStride(), r1 - r0, d, Q.data(), b,
                                    partial[c].data(), AQ.row(r0).data());
                 });
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

namespace {

// Bytes the chunks' d x d partial sums of gram_matrix may take together.
constexpr double kGramMemory = double(1 << 28);

// A^T A, chunked and summed in order like transposed_product, polling `stop` between pieces.
// For d in the thousands, fewer chunks (fixed by the shape) keep the partial sums within
// kGramMemory: 64 of them would take 2 GB at d = 2048.
Matrix gram_matrix(const Eigen::Ref<const RowMatrix>& A, int n_threads, const StopRequested& stop,
                   bool& stopped) {
    const Index rows = A.rows(), d = A.cols();
    const Index n_chunks = std::clamp<Index>(Index(kGramMemory / (8.0 * double(d) * double(d))), 1,
                                             n_row_chunks(rows));
    // Each chunk's d x d sum is allocated by its first piece: for d in the thousands the
    // chunks' sums take as long to zero as a piece to compute.
    std::vector<Matrix> partial(static_cast<size_t>(n_chunks));
    stopped = !chunked_pass(rows, n_chunks, double(d) * double(d), n_threads, stop,
                            [&](Index c, Index r0, Index r1) {
                                if (r0 == chunk_begin(c, n_chunks, rows)) partial[c].setZero(d, d);
                                const auto block = A.middleRows(r0, r1 - r0);
                                partial[c].noalias() += block.transpose() * block;
                            });
    if (stopped) return Matrix();
    Matrix sum = std::move(partial[0]);
    for (Index c = 1; c < n_chunks; ++c) sum += partial[c];
    return sum;
}

// Eigenvectors of the symmetric G, ascending. A dense eigensolve cannot be interrupted (about
// 11 s for d = 2048), so a large one runs on a helper thread while this one polls `stop`:
// when it is set, the helper is left to finish on its own (it owns its data) and this
// returns false at once.
constexpr Index kBackgroundEigensolve = 256;

bool eigenvectors(Matrix G, const StopRequested& stop, Matrix& vectors) {
    if (!stop || G.rows() < kBackgroundEigensolve) {
        vectors = Eigen::SelfAdjointEigenSolver<Matrix>(G).eigenvectors();
        return true;
    }
    struct Job {
        Matrix G, vectors;
        bool done = false, failed = false;
        std::mutex mutex;
        std::condition_variable finished;
    };
    auto job = std::make_shared<Job>();
    job->G = std::move(G);
    std::thread helper([job] {
        Matrix vectors;
        bool failed = false;
        try {
            vectors = Eigen::SelfAdjointEigenSolver<Matrix>(job->G).eigenvectors();
        } catch (...) {  // out of memory: reported below, never across the thread
            failed = true;
        }
        const std::lock_guard<std::mutex> lock(job->mutex);
        job->vectors = std::move(vectors);
        job->failed = failed;
        job->done = true;
        job->finished.notify_all();
    });
    std::unique_lock<std::mutex> lock(job->mutex);
    while (
        !job->finished.wait_for(lock, std::chrono::milliseconds(20), [&] { return job->done; })) {
        lock.unlock();
        const bool stopping = stop();
        lock.lock();
        if (stopping && !job->done) {
            helper.detach();
            return false;
        }
    }
    lock.unlock();
    helper.join();
    if (job->failed) throw std::bad_alloc();
    vectors = std::move(job->vectors);
    return true;
}

// What an interrupted truncated SVD returns: shapes right, nothing computed.
TruncatedSVD interrupted_svd(Index T, Index d, Index s, Index b, int n_steps) {
    TruncatedSVD out;
    out.V = Matrix::Identity(d, s);
    out.basis = Matrix::Identity(d, b);
    out.W = Matrix::Zero(T, s);
    out.singular_values = Vector::Zero(s);
    out.n_steps = n_steps;
    return out;
}

TruncatedSVD subspace_iteration(const Eigen::Ref<const RowMatrix>& A, Index s,
                                const Eigen::Ref<const Matrix>& warm_start, std::uint64_t seed,
                                int n_threads, const SVDOptions& options,
                                const StopRequested& stop_requested) {
    const Index T = A.rows(), d = A.cols();
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
        bool stopped = false;
        Matrix gram = gram_matrix(A, n_threads, stop_requested, stopped), vectors;
        if (stopped || !eigenvectors(std::move(gram), stop_requested, vectors))
            return interrupted_svd(T, d, s, b, n_steps);
        Matrix V = vectors.rowwise().reverse().leftCols(b);
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
        const Matrix Y = gram_times(A, Q, AQ, n_threads, stop_requested);
        if (stop_requested && stop_requested()) return interrupted_svd(T, d, s, b, step);
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
        if (converged || step >= options.max_steps) {
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

// Whether A^T A may have left the range of double: the top singular value outside
// [kSafeLow, kSafeHigh] (its square would be within 1e-200 of underflow or overflow, or
// the singular values are not finite at all).
constexpr double kSafeLow = 1e-100, kSafeHigh = 1e100;

// M * 2^exponent, exactly (in two halves: one factor 2^exponent may itself be out of range).
template <class Dense>
void scale_by_power_of_two(Dense& M, int exponent) {
    M *= std::ldexp(1.0, exponent / 2);
    M *= std::ldexp(1.0, exponent - exponent / 2);
}

bool out_of_range(const TruncatedSVD& svd) {
    const double top = svd.singular_values.size() > 0 ? svd.singular_values.maxCoeff() : 0.0;
    return !(top <= kSafeHigh) || (top < kSafeLow) || !svd.V.allFinite() || !svd.W.allFinite();
}

}  // namespace

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

    TruncatedSVD out =
        subspace_iteration(A, s, warm_start, seed, n_threads, options, stop_requested);
    if (!out_of_range(out) || (stop_requested && stop_requested())) return out;
    if (!A.allFinite()) throw std::invalid_argument("A contains NaN or inf");
    // The singular vectors do not change when A is scaled: scale it by the power of two
    // (exact) that brings its largest entry to [1, 2), and the singular values back.
    const double largest = A.cwiseAbs().maxCoeff();
    if (largest == 0) return out;  // A = 0: nothing under- or overflowed
    const int exponent = std::ilogb(largest);
    RowMatrix scaled = A;
    scale_by_power_of_two(scaled, -exponent);
    out = subspace_iteration(scaled, s, warm_start, seed, n_threads, options, stop_requested);
    scale_by_power_of_two(out.W, exponent);
    scale_by_power_of_two(out.singular_values, exponent);
    if (!out.W.allFinite() || !out.singular_values.allFinite()) {
        std::ostringstream message;
        message << "the top singular values of A exceed the float64 range (its largest entry "
                   "is "
                << std::setprecision(3) << largest << "); scale A down";
        throw std::overflow_error(message.str());
    }
    return out;
}

}  // namespace metasp
