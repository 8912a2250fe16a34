#include "metasp/random_heads.hpp"

#include "metasp/parallel.hpp"
#include "metasp/row_kernels.hpp"
#include "metasp/small_cholesky.hpp"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace metasp {
namespace {

// Z_t = X_t U for one task's rows, four at a time.
template <class Scalar>
struct ProjectRows {
    const Scalar* X;
    Index pitch, d, s;
    const double* U;
    Index ldu;
    double* Z;  // (rows, s) row-major

    template <int R>
    METASP_ALWAYS_INLINE void operator()(Index i, std::integral_constant<int, R>) {
        const Scalar* x0 = X + i * pitch;
        prefetch_rows(x0 + rows::kPrefetchRows * pitch, R * pitch);
        rows::project<R>(x0, pitch, d, U, ldu, s, Z + i * s);
    }
};

// G[:, a] += X_t^T R[:, a] for every column a of R (rows x s, row-major), four rows at a time
// and two columns per sweep over them.
template <class Scalar>
struct AddColumns {
    const Scalar* X;
    Index pitch, d, s;
    const double* R;
    double* G;  // (d, s) column-major
    Index ldg;

    template <int K>
    METASP_ALWAYS_INLINE void operator()(Index i, std::integral_constant<int, K>) {
        const Scalar* x0 = X + i * pitch;
        Index a = 0;
        for (; a + 2 <= s; a += 2) {
            double* g[2] = {G + a * ldg, G + (a + 1) * ldg};
            rows::add_rows_to<K, 2>(x0, pitch, d, R + i * s + a, s, g);
        }
        if (a < s) {
            double* g[1] = {G + a * ldg};
            rows::add_rows_to<K, 1>(x0, pitch, d, R + i * s + a, s, g);
        }
    }
};

template <class Scalar>
METASP_CPU_DISPATCH void project_task(const Scalar* X, Index pitch, Index rows, Index d,
                                      const double* U, Index ldu, Index s, double* Z) {
    ProjectRows<Scalar> block{X, pitch, d, s, U, ldu, Z};
    rows::for_row_blocks<4>(rows, block);
}

template <class Scalar>
METASP_CPU_DISPATCH void add_task(const Scalar* X, Index pitch, Index rows, Index d, Index s,
                                  const double* R, double* G, Index ldg) {
    AddColumns<Scalar> block{X, pitch, d, s, R, G, ldg};
    rows::for_row_blocks<4>(rows, block);
}

struct TaskScratch {
    std::vector<double> Z, R, gram, cross, L, Linv, P, mean, second;
    void resize(Index rows, Index s) {
        Z.resize(size_t(rows * s));
        R.resize(size_t(rows * s));
        for (auto* v : {&gram, &L, &Linv, &P, &second}) v->resize(size_t(s * s));
        for (auto* v : {&cross, &mean}) v->resize(size_t(s));
    }
};

}  // namespace

void check_marginal_shape(const TasksView& tasks, Index rows, Index s, double noise) {
    if (rows != tasks.n_features() || s < 1 || s > tasks.n_features())
        throw std::invalid_argument(
            "U must have shape (d, s) with d = " + std::to_string(tasks.n_features()) +
            " and 1 <= s <= d; got (" + std::to_string(rows) + ", " + std::to_string(s) + ")");
    if (!(noise > 0) || !std::isfinite(noise))
        throw std::invalid_argument("noise must be positive and finite");
}

MarginalPass marginal_pass(const TasksView& tasks, const Eigen::Ref<const Matrix>& U, double noise,
                           int n_threads) {
    check_tasks(tasks);
    check_threads(n_threads);
    const Index T = tasks.n_tasks(), d = tasks.n_features(), s = U.cols();
    check_marginal_shape(tasks, U.rows(), s, noise);
    MarginalPass out;
    out.heads.setZero(T, s);
    out.task_loss.setZero(T);
    const Index n_chunks = n_row_chunks(T), pitch = tasks.X.pitch();
    std::vector<Matrix> gradient(size_t(n_chunks), Matrix::Zero(d, s));
    std::vector<double> deviance(size_t(n_chunks), 0.0), expected(size_t(n_chunks), 0.0);
    std::vector<char> finite(size_t(n_chunks), 1);
    // The random-heads fit calls this hundreds of times per fit, mostly on fold-sized tasks: a
    // higher bar than run_parallel's keeps those passes serial, where spinning threads on a
    // busy machine made whole fits 5-10x slower (0.3-0.6 s with one thread, 3-4 s with two).
    const double work = 2.0 * double(tasks.n_samples()) * double(d) * double(s) / 16;
#pragma omp parallel for num_threads(thread_cap(n_threads)) if (run_parallel(n_threads, work)) \
    schedule(dynamic, 1)
    for (Index c = 0; c < n_chunks; ++c) {
        thread_local TaskScratch w;
        for (Index t = chunk_begin(c, n_chunks, T); t < chunk_begin(c + 1, n_chunks, T); ++t) {
            const Index rows = tasks.size(t), begin = tasks.begin(t);
            const double* y = tasks.y.data() + begin;
            w.resize(rows, s);
            tasks.X.visit([&](const auto* X) {
                project_task(X + begin * pitch, pitch, rows, d, U.data(), U.outerStride(), s,
                             w.Z.data());
            });
            // Posterior of z_t: precision A = I + Z^T Z / noise, mean A^-1 Z^T y / noise.
            double squares = 0;
            std::fill(w.gram.begin(), w.gram.end(), 0.0);
            std::fill(w.cross.begin(), w.cross.end(), 0.0);
            for (Index i = 0; i < rows; ++i) {
                const double* z = w.Z.data() + i * s;
                squares += y[i] * y[i];
                for (Index a = 0; a < s; ++a) {
                    w.cross[a] += z[a] * y[i];
                    for (Index b = 0; b <= a; ++b) w.gram[a * s + b] += z[a] * z[b];
                }
            }
            for (Index a = 0; a < s; ++a) {
                for (Index b = 0; b <= a; ++b) w.P[a * s + b] = w.gram[a * s + b] / noise;
                w.P[a * s + a] += 1;
            }
            if (!cholesky(w.P.data(), s, w.L.data())) {
                finite[c] = 0;
                continue;
            }
            lower_inverse(w.L.data(), s, w.Linv.data());
            inverse_from_lower_inverse(w.Linv.data(), s, w.P.data());
            double log_det = 0, explained = 0;
            for (Index a = 0; a < s; ++a) {
                log_det += 2 * std::log(w.L[a * s + a]);
                double mean = 0;
                for (Index b = 0; b < s; ++b) mean += w.P[a * s + b] * w.cross[b];
                w.mean[a] = mean / noise;
                explained += w.cross[a] * w.mean[a];
            }
            // ||y - Z mean||^2 and tr(Z^T Z P): the posterior's expected squared residual.
            double fitted = 0, spread = 0;
            for (Index a = 0; a < s; ++a)
                for (Index b = 0; b < s; ++b) {
                    const double g = a >= b ? w.gram[a * s + b] : w.gram[b * s + a];
                    fitted += w.mean[a] * g * w.mean[b];
                    spread += g * w.P[b * s + a];
                }
            const double residual = squares - 2 * explained + fitted;
            deviance[c] += (squares - explained) / noise + log_det + double(rows) * std::log(noise);
            expected[c] += residual + spread;
            for (Index a = 0; a < s; ++a) out.heads(t, a) = w.mean[a];
            out.task_loss[t] = residual / double(rows);
            // R = Z E[z z^T] - y E[z]^T; the deviance's gradient is 2 X^T R / noise.
            for (Index a = 0; a < s; ++a)
                for (Index b = 0; b < s; ++b)
                    w.second[a * s + b] = w.P[a * s + b] + w.mean[a] * w.mean[b];
            for (Index i = 0; i < rows; ++i) {
                const double* z = w.Z.data() + i * s;
                double* r = w.R.data() + i * s;
                for (Index b = 0; b < s; ++b) {
                    double value = -y[i] * w.mean[b];
                    for (Index a = 0; a < s; ++a) value += z[a] * w.second[a * s + b];
                    r[b] = value;
                }
            }
            tasks.X.visit([&](const auto* X) {
                add_task(X + begin * pitch, pitch, rows, d, s, w.R.data(), gradient[c].data(),
                         gradient[c].outerStride());
            });
        }
    }
    out.gradient = Matrix::Zero(d, s);
    bool defined = true;
    for (Index c = 0; c < n_chunks; ++c) {
        defined = defined && finite[c];
        out.deviance += deviance[c];
        out.expected += expected[c];
        out.gradient += gradient[c];
    }
    out.gradient *= 2 / noise;
    // Not defined, or beyond the range of double (U or the data too large): the deviance is
    // +inf and everything else zero, never NaN (a line search then steps back).
    if (!defined || !std::isfinite(out.deviance) || !std::isfinite(out.expected) ||
        !out.gradient.allFinite() || !out.heads.allFinite() || !out.task_loss.allFinite()) {
        out.deviance = std::numeric_limits<double>::infinity();
        out.expected = 0;
        out.gradient.setZero();
        out.heads.setZero();
        out.task_loss.setZero();
    }
    return out;
}

}  // namespace metasp
