#include "metasp/solver.hpp"

#include "metasp/gradient.hpp"
#include "metasp/linalg.hpp"
#include "metasp/parallel.hpp"
#include "metasp/row_kernels.hpp"

#include <Eigen/Eigenvalues>
#include <Eigen/QR>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <utility>

namespace metasp {

std::string to_string(Status status) {
    switch (status) {
        case Status::converged: return "converged";
        case Status::max_iter: return "max_iter";
        case Status::diverged: return "diverged";
        case Status::interrupted: return "interrupted";
        case Status::stalled: return "stalled";
    }
    return "unknown";
}

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// Factor on switch_tol when the polish has no Newton step (see run_start).
constexpr double kSlowPolishSwitch = 1e-6;
// Consecutive step halvings of CGIHT's backtracking before the loss counts as diverging.
constexpr int kMaxRetries = 40;
// Below this Frobenius norm the iterate's sums of squares may have underflowed.
constexpr double kTinyNorm = 1e-100;

// Whether X_t^T y_t = 0 for every task: Theta = 0 is then stationary.
bool zero_gradient(const TasksView& tasks, int n_threads) {
    RowMatrix G(tasks.n_tasks(), tasks.n_features());
    Vector loss(tasks.n_tasks());
    task_gradient(tasks, RowMatrix::Zero(tasks.n_tasks(), tasks.n_features()), G, loss, n_threads);
    return G.isZero(0);
}

void check_options(const TasksView& tasks, Index s, const SolveOptions& options) {
    check_tasks(tasks);
    const Index T = tasks.n_tasks(), d = tasks.n_features();
    if (s < 1 || s > std::min(T, d))
        throw std::invalid_argument("rank s must satisfy 1 <= s <= min(T, d)");
    if (!options.adaptive_step && !(options.step > 0 && std::isfinite(options.step)))
        throw std::invalid_argument("a fixed step must be positive and finite");
    if (options.max_iter < 1) throw std::invalid_argument("max_iter must be at least 1");
    if (!(options.tol >= 0) || !std::isfinite(options.tol))
        throw std::invalid_argument("tol must be non-negative and finite");
    if (!(options.sin_tol >= 0) || !std::isfinite(options.sin_tol))
        throw std::invalid_argument("sin_tol must be non-negative and finite");
    for (const Matrix& start : options.starts)
        if (start.rows() != d || start.cols() != s)
            throw std::invalid_argument("every extra start must have shape (d, s)");
    if (!(options.switch_tol >= 0) || options.switch_window < 1 || options.patience < 1)
        throw std::invalid_argument("switch_tol >= 0, switch_window >= 1 and patience >= 1 are required");
    check_threads(options.n_threads);
    if (!(options.divergence_factor > 1))
        throw std::invalid_argument("divergence_factor must be greater than 1");
    const auto& ref = options.reference_B;
    if (ref.size() > 0 && (ref.rows() != s || ref.cols() != d))
        throw std::invalid_argument("reference_B must have shape (s, d)");
    if (options.init == Init::given && (options.init_B.rows() != s || options.init_B.cols() != d))
        throw std::invalid_argument("init_B must have shape (s, d)");
}

// Sums over the fixed row chunks of n_row_chunks of body(r0, r1) (K partial sums each), added
// in chunk order: the same value with any number of threads. For the passes over the T x d
// iterate, which would otherwise be the serial part of an iteration.
template <size_t K, class Body>
std::array<double, K> chunk_sums(Index rows, Index cols, int n_threads, Body body) {
    const Index n_chunks = n_row_chunks(rows);
    std::vector<std::array<double, K>> partial(static_cast<size_t>(n_chunks));
    const bool parallel = run_parallel(n_threads, double(rows) * cols);
#pragma omp parallel for num_threads(thread_cap(n_threads)) if (parallel) schedule(static)
    for (Index c = 0; c < n_chunks; ++c)
        partial[c] = body(chunk_begin(c, n_chunks, rows), chunk_begin(c + 1, n_chunks, rows));
    std::array<double, K> total{};
    for (const auto& sums : partial)
        for (size_t k = 0; k < K; ++k) total[k] += sums[k];
    return total;
}

double squared_norm(const RowMatrix& A, int n_threads) {
    return chunk_sums<1>(A.rows(), A.cols(), n_threads, [&](Index r0, Index r1) {
        return std::array<double, 1>{A.middleRows(r0, r1 - r0).squaredNorm()};
    })[0];
}

// out = base + step * direction (out may alias either); returns ||out||_F^2.
double add_scaled(const RowMatrix& base, double step, const RowMatrix& direction, RowMatrix& out,
                  int n_threads) {
    out.resize(base.rows(), base.cols());
    return chunk_sums<1>(base.rows(), base.cols(), n_threads, [&](Index r0, Index r1) {
        auto rows = out.middleRows(r0, r1 - r0);
        rows = base.middleRows(r0, r1 - r0) + step * direction.middleRows(r0, r1 - r0);
        return std::array<double, 1>{rows.squaredNorm()};
    })[0];
}

// The CGIHT update in one pass over the row chunks: direction = G + beta C B^T (the new
// direction: the gradient plus beta times the old direction's part in span(B), C: T x r,
// B: d x r), then out = theta + step * direction; returns ||out||_F^2. out may alias G.
double conjugate_update(const RowMatrix& theta, double step, const RowMatrix& G, double beta,
                        const RowMatrix& C, const Matrix& B, RowMatrix& direction, RowMatrix& out,
                        int n_threads) {
    direction.resize(G.rows(), G.cols());
    out.resize(G.rows(), G.cols());
    const Matrix Bt = beta * B.transpose();
    return chunk_sums<1>(G.rows(), G.cols(), n_threads, [&](Index r0, Index r1) {
        const Index n = r1 - r0;
        auto p = direction.middleRows(r0, n);
        if (beta != 0) {
            p.noalias() = C.middleRows(r0, n) * Bt;
            p += G.middleRows(r0, n);
        } else {
            p = G.middleRows(r0, n);
        }
        auto rows = out.middleRows(r0, n);
        rows = theta.middleRows(r0, n) + step * p;
        return std::array<double, 1>{rows.squaredNorm()};
    })[0];
}

// H_s's rows: out_i = sum_k W(i, k) Vt_k for `rows` rows (W column-major with column pitch
// ldw, Vt: s x d row-major), with ||out||^2 and ||out - theta||^2 summed in the same sweep.
// A plain row loop: Eigen's GEMM path for an inner dimension of s ~ 5 packs both operands for
// little work, and the norms would be two more sweeps.
METASP_CPU_DISPATCH
void expand_rows(const double* W, Index ldw, const double* Vt, Index s, Index d,
                 const double* theta, Index rows, double* out, double* sums) {
    using rows::Pack;
    double norm = 0, change = 0;
    for (Index i = 0; i < rows; ++i) {
        const double* t = theta + i * d;
        double* o = out + i * d;
        Pack norm_pack = rows::broadcast(0), change_pack = rows::broadcast(0);
        Index j = 0;
        for (; j + rows::kPack <= d; j += rows::kPack) {
            Pack value = rows::broadcast(0);
            for (Index k = 0; k < s; ++k) value += rows::broadcast(W[i + k * ldw]) * rows::load(Vt + k * d + j);
            rows::store(o + j, value);
            const Pack difference = value - rows::load(t + j);
            norm_pack += value * value;
            change_pack += difference * difference;
        }
        norm += rows::sum(norm_pack);
        change += rows::sum(change_pack);
        for (; j < d; ++j) {
            double value = 0;
            for (Index k = 0; k < s; ++k) value += W[i + k * ldw] * Vt[k * d + j];
            o[j] = value;
            norm += value * value;
            change += (value - t[j]) * (value - t[j]);
        }
    }
    sums[0] = norm;
    sums[1] = change;
}

// out = A, copied over the same row chunks in parallel.
void copy_rows(const RowMatrix& A, RowMatrix& out, int n_threads) {
    out.resize(A.rows(), A.cols());
    chunk_sums<0>(A.rows(), A.cols(), n_threads, [&](Index r0, Index r1) {
        out.middleRows(r0, r1 - r0) = A.middleRows(r0, r1 - r0);
        return std::array<double, 0>{};
    });
}

// The loss stopped improving: over the last `window` entries it fell by at most a relative rtol
// (or rose).
bool plateau(const std::vector<double>& loss, int window, double rtol) {
    const size_t n = loss.size();
    if (n <= size_t(window)) return false;
    return loss[n - 1 - window] - loss[n - 1] <= rtol * std::abs(loss[n - 1]);
}

// Neither the best loss nor the best relative change improved over the last `patience`
// iterations (checked every `patience` iterations, so the cost stays linear).
bool stalled(const std::vector<double>& loss, const std::vector<double>& rel_change, int patience) {
    const size_t n = rel_change.size(), p = size_t(patience);
    if (n < 2 * p || n % p != 0 || loss.size() < n) return false;
    const auto best = [](const std::vector<double>& v, size_t begin, size_t end) {
        return *std::min_element(v.begin() + begin, v.begin() + end);
    };
    const double loss_before = best(loss, 0, n - p), loss_now = best(loss, n - p, n);
    const double change_before = best(rel_change, 0, n - p), change_now = best(rel_change, n - p, n);
    return loss_now >= loss_before * (1 - 1e-12) && change_now >= 0.5 * change_before;
}

Status status_of(PolishStatus status) {
    switch (status) {
        case PolishStatus::converged: return Status::converged;
        case PolishStatus::max_iter: return Status::max_iter;
        case PolishStatus::stalled: return Status::stalled;
        case PolishStatus::interrupted: return Status::interrupted;
    }
    return Status::stalled;
}

// One start: hard thresholding from `init` (V0 for a given or random start), then the
// least-squares polish when options.refine.
SolveResult run_start(const TasksView& tasks, Index s, const SolveOptions& options, Init init,
                      const Matrix& V0, std::uint64_t seed, const StopRequested& stop_requested) {
    const Index T = tasks.n_tasks(), d = tasks.n_features();
    const int n_threads = options.n_threads;
    const bool conjugate = options.adaptive_step && options.conjugate;
    const bool track = options.reference_B.size() > 0;
    const auto stop = [&] { return stop_requested && stop_requested(); };

    SolveResult out;
    RowMatrix theta = RowMatrix::Zero(T, d);
    RowMatrix work(T, d);  // gradient, then the step's target, then the next iterate
    RowMatrix direction;  // CGIHT only
    RowMatrix Cr(T, s), Cp(T, s);  // V^T g_t and V^T (direction)_t, rows t, from its pass
    Vector per_task(T);
    TruncatedSVD svd;      // its basis warm-starts the next truncated SVD
    bool have_subspace = false, have_direction = false, done = false;
    out.status = Status::max_iter;

    {   // loss at Theta = 0, as the gradient pass would sum it
        double total = 0;
        for (Index t = 0; t < T; ++t) {
            double loss = 0;
            for (Index i = tasks.begin(t), end = i + tasks.size(t); i < end; ++i) loss += tasks.y[i] * tasks.y[i];
            total += loss / double(tasks.size(t));
        }
        out.initial_loss = total / double(T);
    }
    const auto diverging = [&](double loss) {
        return !std::isfinite(loss) || loss > options.divergence_factor * out.initial_loss;
    };

    if (init != Init::zero) {
        Matrix V = V0;
        if (init == Init::spectral) {  // top-s row space of the stacked X_t^T y_t / m_t
            task_gradient(tasks, theta, work, per_task, n_threads);
            V = truncated_svd(work, s, Matrix(), seed, n_threads, options.svd, stop_requested).V;
        }
        RowMatrix W(T, s);
        task_heads(tasks, V, W, per_task, n_threads);
        const Factors start = canonical_factors(W, V);
        tall_product(start.W, start.V.transpose(), theta, n_threads);
        svd.V = start.V;
        svd.W = start.W;
        svd.singular_values = start.singular_values;
        svd.basis = start.V;
        have_subspace = true;
    }

    Vector projected(T), curvature(T), aa(T), ad(T), dd(T);
    // Exact minimiser along the gradient projected on the row space. When that projection
    // vanishes (the gradient is orthogonal to the row space, e.g. when s = T), the ratio is
    // rounding noise: search along the whole gradient instead.
    const auto line_search = [&] {
        const double gradient_norm = squared_norm(work, n_threads);
        double numerator = sum(projected);
        if (numerator <= kVanishingProjection * gradient_norm) {
            task_curvature(tasks, work, curvature, n_threads);
            numerator = gradient_norm;
        }
        const double denominator = sum(curvature);
        return denominator > 0 ? numerator / denominator : 0.0;
    };

    // CGIHT: p = G + beta p_prev with beta making P p conjugate to P p_prev (P: projection on
    // the current row space), then the exact line search along p restricted to the row space.
    // Uses Cr, Cp, aa, ad and dd from the pass over X (task_gradient_conjugate); returns the
    // step and sets beta (conjugate_update then forms p).
    double beta = kNaN;
    const auto conjugate_step = [&] {
        const double gradient_norm = squared_norm(work, n_threads), rr = Cr.squaredNorm();
        double numerator, denominator;
        beta = 0;
        if (rr <= kVanishingProjection * gradient_norm) {  // as in line_search
            task_curvature(tasks, work, curvature, n_threads);
            numerator = gradient_norm;
            denominator = sum(curvature);
        } else {
            const double Saa = sum(aa), Sad = sum(ad), Sdd = sum(dd);
            const double rp = (Cr.array() * Cp.array()).sum();
            const double b = -Sad / Sdd;
            numerator = rr + b * rp;
            denominator = Saa + 2 * b * Sad + b * b * Sdd;
            const bool restart = !(Sdd > 0) || !std::isfinite(b) ||
                                 std::abs(b) * std::sqrt(Cp.squaredNorm()) > kMaxConjugacy * std::sqrt(rr) ||
                                 !(numerator > kMinConjugateShare * rr) ||
                                 !(denominator > kMinConjugateShare * Saa);
            if (restart) {
                numerator = rr;
                denominator = Saa;
            } else {
                beta = b;
            }
        }
        return denominator > 0 ? numerator / denominator : 0.0;
    };

    // Backtracking state of CGIHT: the last iterate that lowered the loss.
    RowMatrix accepted_theta;
    TruncatedSVD accepted_svd;
    double accepted_loss = 0;
    int retries = 0;
    const int iht_budget = options.refine ? std::max(1, options.max_iter / 2) : options.max_iter;
    // Without the Newton step (d * s too large for dense normal equations) the polish is plain
    // alternating least squares, which converges slowly: hard thresholding then runs much
    // longer before handing over.
    const bool newton_polish = d * s <= options.basis.max_dense;
    const double switch_tol = newton_polish ? options.switch_tol : kSlowPolishSwitch * options.switch_tol;
    for (int k = 0; k < iht_budget; ++k) {
        const Clock::time_point started = Clock::now();
        const bool cg_step = conjugate && have_direction && have_subspace;
        // Normalized IHT: the step is an exact line search along the gradient projected on
        // the current row space, computed in the same pass over X as the gradient.
        const bool fused_step = options.adaptive_step && have_subspace && !cg_step;
        if (cg_step)
            task_gradient_conjugate(tasks, theta, direction, work, per_task, svd.V, Cr, Cp, aa, ad,
                                    dd, n_threads);
        else if (fused_step)
            task_gradient(tasks, theta, work, per_task, n_threads, svd.V, projected, curvature);
        else
            task_gradient(tasks, theta, work, per_task, n_threads);
        const double loss = mean(per_task);
        // CGIHT is safeguarded by backtracking: an update that raised the loss is undone and
        // retried with half the step along the same direction, then the directions restart.
        const bool retry = conjugate && k > 0 && !(loss <= accepted_loss) && retries < kMaxRetries;
        if (k > 0) {
            out.loss.push_back(loss);
            if (!retry && diverging(loss)) { out.status = Status::diverged; break; }
        }
        if (stop()) { out.status = Status::interrupted; break; }

        double step = options.step, target_norm = 0;
        beta = conjugate ? 0.0 : kNaN;
        if (retry) {
            ++retries;
            copy_rows(accepted_theta, theta, n_threads);
            svd = accepted_svd;
            step = 0.5 * out.step.back();
            target_norm = add_scaled(theta, step, direction, work, n_threads);
        } else {
            if (conjugate) {
                retries = 0;
                accepted_loss = k > 0 ? loss : (init == Init::zero ? out.initial_loss : loss);
                copy_rows(theta, accepted_theta, n_threads);
                accepted_svd = svd;
            }
            if (cg_step) {
                step = conjugate_step();
            } else if (fused_step) {
                step = line_search();
            } else if (options.adaptive_step) {
                // No subspace yet: take the top-s row space of the gradient itself.
                svd = truncated_svd(work, s, Matrix(), seed, n_threads, options.svd, stop_requested);
                have_subspace = true;
                RowMatrix C(T, s);
                tall_product(work, svd.V, C, n_threads);
                task_curvature(tasks, C, svd.V, curvature, n_threads);
                projected = C.rowwise().squaredNorm();
                step = line_search();
            }
            if (cg_step) {
                // Only the old direction's part inside the row space carries over: that is
                // where the line search measured it; its outside part would be an unmeasured
                // step.
                target_norm = conjugate_update(theta, step, work, beta, Cp, svd.V, direction, work,
                                               n_threads);
            } else {
                if (conjugate) copy_rows(work, direction, n_threads);  // a restart: the gradient
                // the gradient step, before hard thresholding
                target_norm = add_scaled(theta, step, work, work, n_threads);
            }
        }
        have_direction = conjugate && !retry;
        if (!std::isfinite(target_norm)) { out.status = Status::diverged; break; }
        if (stop()) { out.status = Status::interrupted; break; }

        const Matrix warm_start = have_subspace ? svd.basis : Matrix();
        const Clock::time_point svd_started = Clock::now();
        svd = truncated_svd(work, s, warm_start, seed, n_threads,
                            options.svd.following(out.rel_change), stop_requested);
        const double svd_seconds = seconds_since(svd_started);
        have_subspace = true;
        if (stop()) { out.status = Status::interrupted; break; }
        // H_s: the rank-s iterate, with its norm and its change in the same pass.
        const RowMatrix Vt = svd.V.transpose();
        const auto sums = chunk_sums<2>(T, d, n_threads, [&](Index r0, Index r1) {
            std::array<double, 2> chunk;
            expand_rows(svd.W.data() + r0, svd.W.outerStride(), Vt.data(), s, d,
                        theta.row(r0).data(), r1 - r0, work.row(r0).data(), chunk.data());
            return chunk;
        });
        double norm = std::sqrt(sums[0]), change = std::sqrt(sums[1]);
        if (norm < kTinyNorm) {
            // The squares underflowed (a tiny step on small data): measured again, by norms
            // that scale before they square. Rare, so the extra passes do not matter.
            norm = work.stableNorm();
            change = (work - theta).stableNorm();
        }
        std::swap(theta, work);
        out.n_iter = k + 1;
        out.step.push_back(step);
        out.beta.push_back(beta);
        out.rel_change.push_back(norm > 0 ? change / norm : 0.0);
        out.svd_steps.push_back(svd.n_steps);
        out.phase.push_back(0);
        out.seconds.push_back(seconds_since(started));
        out.svd_seconds.push_back(svd_seconds);
        if (track) out.sin_angle.push_back(sin_angle(svd.V, options.reference_B));
        if (track && options.sin_tol > 0 && out.sin_angle.back() <= options.sin_tol) {
            out.status = Status::converged;
            done = true;
            break;
        }
        // A zero iterate has converged only where the gradient at it vanishes (as for all-zero
        // targets); else the step was too small to move it at all.
        const bool stationary =
            norm > 0 ? change <= options.tol * norm : zero_gradient(tasks, n_threads);
        if (options.tol > 0 && stationary) {
            out.status = Status::converged;
            break;
        }
        if (options.refine) {
            if (out.rel_change.back() <= switch_tol ||
                plateau(out.loss, options.switch_window, switch_tol * switch_tol))
                break;
        } else if (options.tol > 0 && stalled(out.loss, out.rel_change, options.patience)) {
            out.status = Status::stalled;
            break;
        }
    }
    out.n_iht_iter = out.n_iter;

    if (out.status != Status::diverged && out.status != Status::interrupted) {
        task_loss(tasks, theta, per_task, n_threads);
        out.loss.push_back(mean(per_task));
        if (diverging(out.loss.back())) out.status = Status::diverged;
    }

    bool refined = false;
    if (options.refine && !done && have_subspace && out.status != Status::diverged &&
        out.status != Status::interrupted) {
        PolishOptions refine_options;
        refine_options.max_iter = options.max_iter - out.n_iter;
        refine_options.tol = options.tol;
        refine_options.sin_tol = options.sin_tol;
        refine_options.n_threads = n_threads;
        refine_options.reference_B = options.reference_B;
        refine_options.basis = options.basis;
        PolishResult polished = polish(tasks, svd.V, refine_options, stop_requested);
        out.status = status_of(polished.status);
        if (polished.n_iter > 0) {
            refined = true;
            out.n_iter += polished.n_iter;
            for (int k = 0; k < polished.n_iter; ++k) {
                out.loss.push_back(polished.loss[k]);
                out.rel_change.push_back(polished.rel_change[k]);
                if (track) out.sin_angle.push_back(polished.sin_angle[k]);
                out.step.push_back(kNaN);
                out.beta.push_back(kNaN);
                out.svd_steps.push_back(0);
                out.phase.push_back(1);
                out.seconds.push_back(polished.seconds[k]);
                out.svd_seconds.push_back(0);
            }
            out.Theta = std::move(polished.Theta);
            out.W = std::move(polished.factors.W);
            out.B = polished.factors.V.transpose();
            out.singular_values = std::move(polished.factors.singular_values);
        }
    }

    if (!refined) {
        out.Theta = std::move(theta);
        if (have_subspace) {
            out.W = svd.W;
            out.B = svd.V.transpose();
            out.singular_values = svd.singular_values;
        } else {  // stopped before the first update: Theta is still zero
            out.W = RowMatrix::Zero(T, s);
            out.B = RowMatrix::Identity(s, d);
            out.singular_values = Vector::Zero(s);
        }
    }
    return out;
}

double final_loss(const SolveResult& result) {
    return result.loss.empty() ? result.initial_loss : result.loss.back();
}

}  // namespace

SolveResult solve(const TasksView& tasks, Index s, const SolveOptions& options,
                  const StopRequested& stop_requested) {
    check_options(tasks, s, options);
    SolveResult best;
    std::vector<double> start_loss;
    std::vector<int> start_iter;
    int best_start = 0;
    const int n_starts = 1 + int(options.starts.size());
    for (int start = 0; start < n_starts; ++start) {
        Init init = options.init;
        Matrix V0;
        if (start > 0) {
            init = Init::given;
            V0 = orthonormal_columns(options.starts[start - 1]);
        } else if (init == Init::given) {
            V0 = orthonormal_columns(options.init_B.transpose());
        }
        SolveResult run = run_start(tasks, s, options, init, V0, options.seed + std::uint64_t(start),
                                    stop_requested);
        start_loss.push_back(final_loss(run));  // a diverged start: its last finite iterate
        start_iter.push_back(run.n_iter);
        const bool interrupted = run.status == Status::interrupted;
        const bool better = start == 0 || (run.status != Status::diverged &&
                                           (best.status == Status::diverged ||
                                            final_loss(run) < final_loss(best)));
        if (better || interrupted) {
            best = std::move(run);
            best_start = start;
        }
        if (interrupted) break;
    }
    best.start_loss = std::move(start_loss);
    best.start_iter = std::move(start_iter);
    best.best_start = best_start;
    return best;
}

}  // namespace metasp
