#include "metasp/head_prior.hpp"

#include "metasp/parallel.hpp"
#include "metasp/small_cholesky.hpp"

#include <Eigen/Cholesky>
#include <Eigen/LU>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace metasp {
namespace {

// What the E-step sums over tasks: posterior means, their outer products, posterior
// covariances, expected squared residuals, log-determinants of the posterior precisions, and
// the completed-square terms of the marginal likelihood.
struct EStepSums {
    Vector mean;
    Matrix outer, cov;
    double residual = 0, log_det = 0, quadratic = 0;

    explicit EStepSums(Index s)
        : mean(Vector::Zero(s)), outer(Matrix::Zero(s, s)), cov(Matrix::Zero(s, s)) {}

    void add(const EStepSums& other) {
        mean += other.mean;
        outer += other.outer;
        cov += other.cov;
        residual += other.residual;
        log_det += other.log_det;
        quadratic += other.quadratic;
    }
};

// The posterior of the heads of tasks first .. last - 1 given (mean, cov, noise), through
// cov_inv = cov^{-1} and shift = cov^{-1} mean, added to `sums`. Plain loops on row-major
// s x s buffers: with S = s known at compile time (S = 0: only at run time) they unroll, and
// the per-task algebra of a few dozen multiply-adds costs little more than that.
template <int S>
void add_posteriors(const Eigen::Ref<const RowMatrix>& gram,
                    const Eigen::Ref<const RowMatrix>& cross,
                    const Eigen::Ref<const Vector>& squares, const Matrix& cov_inv,
                    const Vector& shift, double noise, Index first, Index last, EStepSums& sums) {
    const Index s = S > 0 ? S : cross.cols(), ss = s * s;
    std::vector<double> buffer(static_cast<size_t>(6 * ss + 3 * s));
    double *precision = buffer.data(), *factor = precision + ss, *scratch = factor + ss,
           *posterior_cov = scratch + ss, *sum_outer = posterior_cov + ss,
           *sum_cov = sum_outer + ss, *rhs = sum_cov + ss, *posterior_mean = rhs + s,
           *sum_mean = posterior_mean + s;
    const double inverse_noise = 1 / noise;
    double residual = 0, log_det = 0, quadratic = 0;
    for (Index t = first; t < last; ++t) {
        const double* task_gram = gram.row(t).data();
        const double* task_cross = cross.row(t).data();
        for (Index i = 0; i < s; ++i)
            for (Index j = 0; j < s; ++j)
                precision[i * s + j] = task_gram[i * s + j] * inverse_noise + cov_inv(i, j);
        if (cholesky<S>(precision, s, factor)) {
            lower_inverse<S>(factor, s, scratch);
            inverse_from_lower_inverse<S>(scratch, s, posterior_cov);
            double diagonal = 1;  // product of the pivots: one logarithm per task
            for (Index j = 0; j < s; ++j) diagonal *= factor[j * s + j];
            if (std::isnormal(diagonal)) {
                log_det += 2 * std::log(diagonal);
            } else {
                for (Index j = 0; j < s; ++j) log_det += 2 * std::log(factor[j * s + j]);
            }
        } else {  // positive definite, but not numerically so for a Cholesky factor
            const Eigen::PartialPivLU<Matrix> lu(Eigen::Map<const RowMatrix>(precision, s, s));
            Eigen::Map<RowMatrix>(posterior_cov, s, s) = lu.inverse();
            log_det += lu.matrixLU().diagonal().array().abs().log().sum();
        }
        double mean_cross = 0, mean_gram_mean = 0, trace = 0, rhs_mean = 0;
        for (Index i = 0; i < s; ++i) rhs[i] = task_cross[i] * inverse_noise + shift[i];
        for (Index i = 0; i < s; ++i) {
            double value = 0;
            for (Index j = 0; j < s; ++j) value += posterior_cov[i * s + j] * rhs[j];
            posterior_mean[i] = value;
        }
        for (Index i = 0; i < s; ++i) {
            double fitted = 0;
            for (Index j = 0; j < s; ++j) {
                fitted += task_gram[i * s + j] * posterior_mean[j];
                trace += task_gram[i * s + j] * posterior_cov[i * s + j];
                sum_outer[i * s + j] += posterior_mean[i] * posterior_mean[j];
                sum_cov[i * s + j] += posterior_cov[i * s + j];
            }
            mean_gram_mean += posterior_mean[i] * fitted;
            mean_cross += posterior_mean[i] * task_cross[i];
            rhs_mean += rhs[i] * posterior_mean[i];
            sum_mean[i] += posterior_mean[i];
        }
        // ||y_t - Z_t m_t||^2 + tr(Z_t^T Z_t C_t): the expected squared residual.
        residual += squares[t] - 2 * mean_cross + mean_gram_mean + trace;
        quadratic += squares[t] * inverse_noise - rhs_mean;
    }
    sums.mean = Eigen::Map<const Vector>(sum_mean, s);
    sums.outer = Eigen::Map<const RowMatrix>(sum_outer, s, s);
    sums.cov = Eigen::Map<const RowMatrix>(sum_cov, s, s);
    sums.residual = residual;
    sums.log_det = log_det;
    sums.quadratic = quadratic;
}

// The E-step over all tasks in fixed chunks (n_row_chunks), summed in order.
template <int S>
EStepSums e_step(const Eigen::Ref<const RowMatrix>& gram, const Eigen::Ref<const RowMatrix>& cross,
                 const Eigen::Ref<const Vector>& squares, const Matrix& cov_inv,
                 const Vector& shift, double noise, int n_threads) {
    const Index T = cross.rows(), s = cross.cols(), n_chunks = n_row_chunks(T);
    std::vector<EStepSums> partial(static_cast<size_t>(n_chunks), EStepSums(s));
    const double work = double(T) * double(s) * double(s) * double(s + 4);
#pragma omp parallel for num_threads(thread_cap(n_threads)) if (run_parallel(n_threads, work)) \
    schedule(static)
    for (Index c = 0; c < n_chunks; ++c)
        add_posteriors<S>(gram, cross, squares, cov_inv, shift, noise, chunk_begin(c, n_chunks, T),
                          chunk_begin(c + 1, n_chunks, T), partial[c]);
    EStepSums sums = std::move(partial[0]);
    for (Index c = 1; c < n_chunks; ++c) sums.add(partial[c]);
    return sums;
}

void check_em_arguments(const Eigen::Ref<const RowMatrix>& gram,
                        const Eigen::Ref<const RowMatrix>& cross,
                        const Eigen::Ref<const Vector>& squares, const HeadPrior& prior, double n,
                        double floor) {
    const Index T = cross.rows(), s = cross.cols();
    if (T < 1 || s < 1) throw std::invalid_argument("cross must have shape (T, s) with T, s >= 1");
    if (gram.rows() != T || gram.cols() != s * s)
        throw std::invalid_argument("gram must have shape (T, s, s) = (" + std::to_string(T) +
                                    ", " + std::to_string(s) + ", " + std::to_string(s) + ")");
    if (squares.size() != T) throw std::invalid_argument("squares must have shape (T,)");
    if (prior.mean.size() != s || prior.cov.rows() != s || prior.cov.cols() != s)
        throw std::invalid_argument("mean and cov must have shapes (s,) and (s, s) with s = " +
                                    std::to_string(s));
    if (!(prior.noise > 0) || !std::isfinite(prior.noise))
        throw std::invalid_argument("noise must be positive and finite");
    if (!(n > 0) || !std::isfinite(n)) throw std::invalid_argument("n must be positive");
    if (!(floor >= 0) || !std::isfinite(floor))
        throw std::invalid_argument("floor must be non-negative and finite");
}

}  // namespace

HeadPriorStep head_prior_em_step(const Eigen::Ref<const RowMatrix>& gram,
                                 const Eigen::Ref<const RowMatrix>& cross,
                                 const Eigen::Ref<const Vector>& squares, const HeadPrior& prior,
                                 double n, double floor, int n_threads) {
    check_em_arguments(gram, cross, squares, prior, n, floor);
    check_threads(n_threads);
    const Index T = cross.rows(), s = cross.cols();
    const Eigen::LLT<Matrix> cov_cholesky(prior.cov);
    if (cov_cholesky.info() != Eigen::Success)
        throw std::invalid_argument("cov must be symmetric positive definite");
    const Matrix cov_inv = cov_cholesky.solve(Matrix::Identity(s, s));
    const Vector shift = cov_inv * prior.mean;
    const double cov_log_det = 2 * cov_cholesky.matrixLLT().diagonal().array().log().sum();

    EStepSums sums(s);
    const auto run = [&](auto size) {
        sums = e_step<decltype(size)::value>(gram, cross, squares, cov_inv, shift, prior.noise,
                                             n_threads);
    };
    switch (s) {
        case 1: run(std::integral_constant<int, 1>()); break;
        case 2: run(std::integral_constant<int, 2>()); break;
        case 3: run(std::integral_constant<int, 3>()); break;
        case 4: run(std::integral_constant<int, 4>()); break;
        case 5: run(std::integral_constant<int, 5>()); break;
        case 6: run(std::integral_constant<int, 6>()); break;
        case 7: run(std::integral_constant<int, 7>()); break;
        case 8: run(std::integral_constant<int, 8>()); break;
        default: run(std::integral_constant<int, 0>());
    }

    HeadPriorStep out;
    // y_t ~ N(Z_t mean, noise I + Z_t cov Z_t^T): determinant lemma and completed square.
    out.log_likelihood =
        -0.5 * (sums.quadratic + double(T) * prior.mean.dot(shift) + n * std::log(prior.noise) +
                double(T) * cov_log_det + sums.log_det);
    out.next.mean = sums.mean / double(T);
    Matrix cov = (sums.outer + sums.cov) / double(T) - out.next.mean * out.next.mean.transpose();
    out.next.cov = (cov + cov.transpose()) / 2;
    out.next.cov.diagonal().array() += floor;
    out.next.noise = std::max(sums.residual / n, floor);
    return out;
}

}  // namespace metasp
