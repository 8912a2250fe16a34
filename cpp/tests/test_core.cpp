// Tests of the C++ core without Python: the kernels against direct Eigen computations, and a
// small solve that must recover a planted subspace. Run by ctest (METASP_BUILD_TESTS=ON).
#include "metasp/basis_system.hpp"
#include "metasp/gradient.hpp"
#include "metasp/heads.hpp"
#include "metasp/linalg.hpp"
#include "metasp/polish.hpp"
#include "metasp/solver.hpp"
#include "metasp/truncated_svd.hpp"

#include <Eigen/QR>
#include <Eigen/SVD>

#include <cmath>
#include <cstdint>
#include <iostream>
#include <random>
#include <vector>

namespace {

int g_failures = 0;

#define CHECK(condition)                                                                       \
    do {                                                                                       \
        if (!(condition)) {                                                                    \
            ++g_failures;                                                                      \
            std::cerr << __FILE__ << ":" << __LINE__ << ": CHECK failed: " #condition << "\n"; \
        }                                                                                      \
    } while (false)

// |actual - expected| <= tol * max(1, |expected|), elementwise over matrices.
#define CHECK_CLOSE(actual, expected, tol)                                            \
    do {                                                                              \
        const double error_ = relative_error((actual), (expected));                   \
        if (!(error_ <= (tol))) {                                                     \
            ++g_failures;                                                             \
            std::cerr << __FILE__ << ":" << __LINE__ << ": " #actual " vs " #expected \
                      << ": error " << error_ << " > " << (tol) << "\n";              \
        }                                                                             \
    } while (false)

using metasp::Index;
using metasp::Matrix;
using metasp::RowMatrix;
using metasp::Vector;

template <class A, class B>
double relative_error(const A& actual, const B& expected) {
    const Matrix a = actual, e = expected;
    if (a.rows() != e.rows() || a.cols() != e.cols()) return INFINITY;
    return (a - e).cwiseAbs().maxCoeff() / std::max(1.0, e.cwiseAbs().maxCoeff());
}

double relative_error(double actual, double expected) {
    return std::abs(actual - expected) / std::max(1.0, std::abs(expected));
}

Matrix gaussian(Index rows, Index cols, std::mt19937_64& engine) {
    std::normal_distribution<double> normal;
    Matrix out(rows, cols);
    for (Index j = 0; j < cols; ++j)
        for (Index i = 0; i < rows; ++i) out(i, j) = normal(engine);
    return out;
}

// T stacked tasks of different sizes with a view on them: the data outlive the view.
struct Tasks {
    RowMatrix X;
    Vector y;
    Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1> offsets;

    metasp::TasksView view() const {
        return {metasp::DesignMatrix(X.data(), X.rows(), X.cols(), X.cols()), y, offsets};
    }
    Index begin(Index t) const { return Index(offsets[t]); }
    Index size(Index t) const { return Index(offsets[t + 1] - offsets[t]); }
};

// y_t = X_t B^T w_t + noise * e_t with B (s x d) orthonormal rows and W (T x s) Gaussian.
Tasks make_tasks(Index T, Index d, const std::vector<Index>& sizes, const RowMatrix& B,
                 double noise, std::mt19937_64& engine, RowMatrix* W_out = nullptr) {
    Tasks out;
    out.offsets.resize(T + 1);
    out.offsets[0] = 0;
    for (Index t = 0; t < T; ++t)
        out.offsets[t + 1] = out.offsets[t] + sizes[size_t(t) % sizes.size()];
    const Index N = Index(out.offsets[T]);
    out.X = gaussian(N, d, engine);
    const RowMatrix W = gaussian(T, B.rows(), engine);
    const Vector e = gaussian(N, 1, engine);
    out.y.resize(N);
    for (Index t = 0; t < T; ++t) {
        const Vector theta = B.transpose() * W.row(t).transpose();
        out.y.segment(out.begin(t), out.size(t)) =
            out.X.middleRows(out.begin(t), out.size(t)) * theta +
            noise * e.segment(out.begin(t), out.size(t));
    }
    if (W_out != nullptr) *W_out = W;
    return out;
}

void test_truncated_svd() {
    std::mt19937_64 engine(1);
    const Index T = 60, d = 40, s = 5;
    // A spectrum with a clear gap after s, so the top-s subspace is well defined.
    const Matrix U = metasp::orthonormal_columns(gaussian(T, d, engine));
    const Matrix V = metasp::orthonormal_columns(gaussian(d, d, engine));
    Vector sigma(d);
    for (Index i = 0; i < d; ++i) sigma[i] = i < s ? 10.0 - i : 0.5 * std::pow(0.9, double(i));
    const RowMatrix A = U * sigma.asDiagonal() * V.transpose();

    const metasp::TruncatedSVD svd = metasp::truncated_svd(A, s, Matrix(), 7, 1);
    const Eigen::JacobiSVD<Matrix> jacobi(Matrix(A), Eigen::ComputeThinV);
    const Eigen::BDCSVD<Matrix> bdc(Matrix(A), Eigen::ComputeThinV);
    CHECK(svd.converged);
    CHECK_CLOSE(svd.singular_values, jacobi.singularValues().head(s), 1e-10);
    CHECK_CLOSE(svd.singular_values, bdc.singularValues().head(s), 1e-10);
    const RowMatrix top = jacobi.matrixV().leftCols(s).transpose();
    CHECK(metasp::sin_angle(svd.V, top) < 1e-8);
    CHECK_CLOSE(svd.W, Matrix(A * svd.V), 1e-12);
}

void test_task_gradient() {
    std::mt19937_64 engine(2);
    const Index T = 9, d = 13;
    const RowMatrix B = metasp::orthonormal_columns(gaussian(d, 2, engine)).transpose();
    const Tasks tasks = make_tasks(T, d, {5, 17, 30, 1}, B, 0.1, engine);
    const RowMatrix theta = gaussian(T, d, engine);
    RowMatrix G(T, d);
    Vector loss(T);
    metasp::task_gradient(tasks.view(), theta, G, loss, 1);
    for (Index t = 0; t < T; ++t) {
        const auto Xt = tasks.X.middleRows(tasks.begin(t), tasks.size(t));
        const Vector r =
            tasks.y.segment(tasks.begin(t), tasks.size(t)) - Xt * theta.row(t).transpose();
        const double m = double(tasks.size(t));
        CHECK_CLOSE(Matrix(G.row(t).transpose()), Matrix(Xt.transpose() * r / m), 1e-12);
        CHECK_CLOSE(loss[t], r.squaredNorm() / m, 1e-12);
    }
    // Bit-identical with more threads: the kernels never depend on the thread count.
    RowMatrix G2(T, d);
    Vector loss2(T);
    metasp::task_gradient(tasks.view(), theta, G2, loss2, 3);
    CHECK(G2 == G && loss2 == loss);
}

void test_heads_and_basis() {
    std::mt19937_64 engine(3);
    const Index T = 11, d = 8, s = 3;
    const RowMatrix B = metasp::orthonormal_columns(gaussian(d, s, engine)).transpose();
    // Tasks of 2 samples have fewer samples than s: their heads are minimum-norm solutions.
    const Tasks tasks = make_tasks(T, d, {12, 2, 25}, B, 0.3, engine);
    const Matrix V = gaussian(d, s, engine);  // any full-rank basis
    RowMatrix W(T, s);
    Vector loss(T);
    metasp::task_heads(tasks.view(), V, W, loss, 1);
    for (Index t = 0; t < T; ++t) {
        const Matrix Z = tasks.X.middleRows(tasks.begin(t), tasks.size(t)) * V;
        const auto yt = tasks.y.segment(tasks.begin(t), tasks.size(t));
        const Vector w = Z.completeOrthogonalDecomposition().solve(yt);
        CHECK_CLOSE(Matrix(W.row(t).transpose()), w, 1e-9);
        CHECK_CLOSE(loss[t], (yt - Z * w).squaredNorm() / double(tasks.size(t)), 1e-9);
    }

    // The basis step against the vectorised normal equations solved directly:
    // sum_t (w_t w_t^T kron X_t^T X_t / m_t) vec(U) = vec(sum_t X_t^T y_t w_t^T / m_t).
    Matrix M = Matrix::Zero(d * s, d * s);
    Vector rhs = Vector::Zero(d * s);
    for (Index t = 0; t < T; ++t) {
        const auto Xt = tasks.X.middleRows(tasks.begin(t), tasks.size(t));
        const double m = double(tasks.size(t));
        const Matrix gram = Xt.transpose() * Xt / m;
        const Vector xty = Xt.transpose() * tasks.y.segment(tasks.begin(t), tasks.size(t)) / m;
        for (Index a = 0; a < s; ++a) {
            rhs.segment(a * d, d) += W(t, a) * xty;
            for (Index b = 0; b < s; ++b) M.block(a * d, b * d, d, d) += W(t, a) * W(t, b) * gram;
        }
    }
    const Vector direct = M.colPivHouseholderQr().solve(rhs);
    const Matrix expected = Eigen::Map<const Matrix>(direct.data(), d, s);
    const Matrix dense = metasp::basis_least_squares(tasks.view(), W, Matrix(), 1);
    CHECK_CLOSE(dense, expected, 1e-9);
    metasp::BasisSolveOptions iterative;
    iterative.max_dense = 0;  // conjugate gradients
    const Matrix cg = metasp::basis_least_squares(tasks.view(), W, Matrix(), 1, iterative);
    CHECK_CLOSE(cg, expected, 1e-7);
}

void test_solve_recovers_subspace() {
    std::mt19937_64 engine(4);
    const Index T = 40, d = 20, s = 3;
    const RowMatrix B = metasp::orthonormal_columns(gaussian(d, s, engine)).transpose();
    const Tasks tasks = make_tasks(T, d, {30, 25, 40}, B, 0.0, engine);
    // Hard thresholding alone (the default options): noise-free data, so the planted subspace
    // is the exact solution and the iterates converge to it.
    metasp::SolveOptions options;
    options.max_iter = 1000;
    options.reference_B = B;
    const metasp::SolveResult result = metasp::solve(tasks.view(), s, options);
    CHECK(result.status == metasp::Status::converged);
    CHECK(metasp::sin_angle(result.B.transpose(), B) < 1e-6);
    CHECK(!result.history.empty() && result.history.back().loss < 1e-10 * result.initial_loss);

    // The polish alone, from a basis near the planted one, reaches it too.
    metasp::PolishOptions polish_options;
    polish_options.reference_B = B;
    const Matrix V0 = B.transpose() + 0.1 * gaussian(d, s, engine);
    const metasp::PolishResult polished = metasp::polish(tasks.view(), V0, polish_options);
    CHECK(polished.status == metasp::PolishStatus::converged);
    CHECK(!polished.sin_angle.empty() && polished.sin_angle.back() < 1e-6);
}

}  // namespace

int main() {
    test_truncated_svd();
    test_task_gradient();
    test_heads_and_basis();
    test_solve_recovers_subspace();
    if (g_failures > 0) {
        std::cerr << g_failures << " check(s) failed\n";
        return 1;
    }
    std::cout << "all checks passed\n";
    return 0;
}
