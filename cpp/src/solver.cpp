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
#include <optional>
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
        throw std::invalid_argument(
            "switch_tol >= 0, switch_window >= 1 and patience >= 1 are required");
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
            for (Index k = 0; k < s; ++k)
                value += rows::broadcast(W[i + k * ldw]) * rows::load(Vt + k * d + j);
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

// The loss stopped improving: over the last `window` iterations it fell by at most a relative
// rtol (or rose).
bool plateau(const std::vector<IterationRecord>& history, int window, double rtol) {
    const size_t n = history.size();
    if (n <= size_t(window)) return false;
    const double last = history[n - 1].loss;
    return history[n - 1 - window].loss - last <= rtol * std::abs(last);
}

// Neither the best loss nor the best relative change improved over the last `patience`
// iterations (checked every `patience` iterations, so the cost stays linear). The relative
// changes are those of `history` and `current`; the losses must cover all of them, but the
// current iterate's loss is only known at the next pass over X, so as called from the stop
// test this is never true (see reference._stalled, which agrees).
bool stalled(const std::vector<IterationRecord>& history, const IterationRecord& current,
             int patience) {
    const size_t n = history.size() + 1, p = size_t(patience);
    const size_t n_losses = history.size();
    if (n < 2 * p || n % p != 0 || n_losses < n) return false;
    const auto at = [&](size_t i) -> const IterationRecord& {
        return i < history.size() ? history[i] : current;
    };
    const auto best = [&](auto field, size_t begin, size_t end) {
        double out = field(at(begin));
        for (size_t i = begin + 1; i < end; ++i) out = std::min(out, field(at(i)));
        return out;
    };
    const auto loss = [](const IterationRecord& r) { return r.loss; };
    const auto change = [](const IterationRecord& r) { return r.rel_change; };
    const double loss_before = best(loss, 0, n - p), loss_now = best(loss, n - p, n);
    const double change_before = best(change, 0, n - p), change_now = best(change, n - p, n);
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

// Mean over tasks of ||y_t||^2 / m_t, the loss at Theta = 0 as the gradient pass sums it.
double zero_loss(const TasksView& tasks) {
    double total = 0;
    for (Index t = 0; t < tasks.n_tasks(); ++t) {
        double loss = 0;
        for (Index i = tasks.begin(t), end = i + tasks.size(t); i < end; ++i)
            loss += tasks.y[i] * tasks.y[i];
        total += loss / double(tasks.size(t));
    }
    return total / double(tasks.n_tasks());
}

// Which pass over X an iteration makes: the plain gradient; the gradient with the sums of the
// exact step along its projection on the row space (normalized IHT); or with the sums of the
// conjugate step too (CGIHT).
enum class Pass { plain, fused, conjugate };

// The iterate's norm and its change, measured when it is formed.
struct Movement {
    double norm = 0, change = 0;
};

// One start: hard thresholding from its first iterate, then the least-squares polish when
// options.polish. An iteration is: pass_over_x, then step_rule (or backtrack, CGIHT's undo
// of a step that raised the loss), threshold and stop_test; reference._Start has the same
// steps under the same names.
class Start {
public:
    Start(const TasksView& tasks, Index s, const SolveOptions& options, std::uint64_t seed,
          const StopRequested& stop_requested)
        : tasks_(tasks), s_(s), options_(options), seed_(seed), stop_requested_(stop_requested),
          T_(tasks.n_tasks()), d_(tasks.n_features()), n_threads_(options.n_threads),
          conjugate_(options.adaptive_step && options.conjugate),
          track_(options.reference_B.size() > 0) {}

    SolveResult run(Init init, const Matrix& V0);

private:
    void start(Init init, const Matrix& V0);
    double pass_over_x();
    double step_rule(int k, double loss, IterationRecord& record);
    double line_search();
    double conjugate_step(double& beta);
    double backtrack(IterationRecord& record);
    std::optional<Movement> threshold(IterationRecord& record);
    bool stop_test(const IterationRecord& record, const Movement& movement);
    bool polish();
    void finish_factors(bool polished);

    // The one place an iteration's record joins the history.
    void append(const IterationRecord& record) { out_.history.push_back(record); }
    bool stop() const { return stop_requested_ && stop_requested_(); }
    bool diverging(double loss) const {
        return !std::isfinite(loss) || loss > options_.divergence_factor * out_.initial_loss;
    }

    const TasksView& tasks_;
    const Index s_;
    const SolveOptions& options_;
    const std::uint64_t seed_;
    const StopRequested& stop_requested_;
    const Index T_, d_;
    const int n_threads_;
    const bool conjugate_, track_;
    Init init_ = Init::zero;

    SolveResult out_;
    RowMatrix theta_;
    RowMatrix work_;       // gradient, then the step's target, then the next iterate
    RowMatrix direction_;  // CGIHT only
    RowMatrix Cr_, Cp_;    // V^T g_t and V^T (direction)_t, rows t, from the conjugate pass
    Vector per_task_, projected_, curvature_, aa_, ad_, dd_;
    TruncatedSVD svd_;  // its basis warm-starts the next truncated SVD
    bool have_subspace_ = false, have_direction_ = false, done_ = false;
    Pass pass_ = Pass::plain;
    // Backtracking state of CGIHT: the last iterate that lowered the loss.
    RowMatrix accepted_theta_;
    TruncatedSVD accepted_svd_;
    double accepted_loss_ = 0;
    int retries_ = 0;
};

// The start: the loss at Theta = 0 and, unless from zero, the first iterate with
// least-squares heads in the given or spectral row space.
void Start::start(Init init, const Matrix& V0) {
    init_ = init;
    theta_ = RowMatrix::Zero(T_, d_);
    work_.resize(T_, d_);
    Cr_.resize(T_, s_);
    Cp_.resize(T_, s_);
    per_task_.resize(T_);
    projected_.resize(T_);
    curvature_.resize(T_);
    aa_.resize(T_);
    ad_.resize(T_);
    dd_.resize(T_);
    out_.status = Status::max_iter;
    out_.initial_loss = zero_loss(tasks_);
    if (init == Init::zero) return;
    Matrix V = V0;
    if (init == Init::spectral) {  // top-s row space of the stacked X_t^T y_t / m_t
        task_gradient(tasks_, theta_, work_, per_task_, n_threads_);
        V = truncated_svd(work_, s_, Matrix(), seed_, n_threads_, options_.svd, stop_requested_).V;
    }
    RowMatrix W(T_, s_);
    task_heads(tasks_, V, W, per_task_, n_threads_);
    const Factors first = canonical_factors(W, V);
    tall_product(first.W, first.V.transpose(), theta_, n_threads_);
    svd_.V = first.V;
    svd_.W = first.W;
    svd_.singular_values = first.singular_values;
    svd_.basis = first.V;
    have_subspace_ = true;
}

// The pass over X: the gradient into work_ and the loss of the current iterate; with a row
// space, also the sums of the exact step along the gradient projected on it (normalized
// IHT) or along the conjugate direction (CGIHT), in the same pass.
double Start::pass_over_x() {
    const bool cg_step = conjugate_ && have_direction_ && have_subspace_;
    pass_ = cg_step ? Pass::conjugate
                    : (options_.adaptive_step && have_subspace_ ? Pass::fused : Pass::plain);
    if (pass_ == Pass::conjugate)
        task_gradient_conjugate(tasks_, theta_, direction_, work_, per_task_, svd_.V, Cr_, Cp_, aa_,
                                ad_, dd_, n_threads_);
    else if (pass_ == Pass::fused)
        task_gradient(tasks_, theta_, work_, per_task_, n_threads_, svd_.V, projected_, curvature_);
    else
        task_gradient(tasks_, theta_, work_, per_task_, n_threads_);
    return mean(per_task_);
}

// Exact minimiser along the gradient projected on the row space. When that projection
// vanishes (the gradient is orthogonal to the row space, e.g. when s = T), the ratio is
// rounding noise: search along the whole gradient instead.
double Start::line_search() {
    const double gradient_norm = squared_norm(work_, n_threads_);
    double numerator = sum(projected_);
    if (numerator <= kVanishingProjection * gradient_norm) {
        task_curvature(tasks_, work_, curvature_, n_threads_);
        numerator = gradient_norm;
    }
    const double denominator = sum(curvature_);
    return denominator > 0 ? numerator / denominator : 0.0;
}

// CGIHT: p = G + beta p_prev with beta making P p conjugate to P p_prev (P: projection on the
// current row space), then the exact line search along p restricted to the row space. Uses
// the sums of the conjugate pass over X; returns the step and sets beta (0: a restart).
double Start::conjugate_step(double& beta) {
    const double gradient_norm = squared_norm(work_, n_threads_), rr = Cr_.squaredNorm();
    double numerator, denominator;
    beta = 0;
    if (rr <= kVanishingProjection * gradient_norm) {  // as in line_search
        task_curvature(tasks_, work_, curvature_, n_threads_);
        numerator = gradient_norm;
        denominator = sum(curvature_);
    } else {
        const double Saa = sum(aa_), Sad = sum(ad_), Sdd = sum(dd_);
        const double rp = (Cr_.array() * Cp_.array()).sum();
        const double b = -Sad / Sdd;
        numerator = rr + b * rp;
        denominator = Saa + 2 * b * Sad + b * b * Sdd;
        const bool restart =
            !(Sdd > 0) || !std::isfinite(b) ||
            std::abs(b) * std::sqrt(Cp_.squaredNorm()) > kMaxConjugacy * std::sqrt(rr) ||
            !(numerator > kMinConjugateShare * rr) || !(denominator > kMinConjugateShare * Saa);
        if (restart) {
            numerator = rr;
            denominator = Saa;
        } else {
            beta = b;
        }
    }
    return denominator > 0 ? numerator / denominator : 0.0;
}

// The step rule: the step (fixed, the exact line search, or CGIHT's), then the step's target
// Theta + step * direction in work_; returns ||target||_F^2. With CGIHT the iterate it
// leaves is kept first, for backtracking.
double Start::step_rule(int k, double loss, IterationRecord& record) {
    record.beta = conjugate_ ? 0.0 : kNaN;
    if (conjugate_) {
        retries_ = 0;
        accepted_loss_ = k > 0 ? loss : (init_ == Init::zero ? out_.initial_loss : loss);
        copy_rows(theta_, accepted_theta_, n_threads_);
        accepted_svd_ = svd_;
    }
    double step = options_.step;
    if (pass_ == Pass::conjugate) {
        step = conjugate_step(record.beta);
    } else if (pass_ == Pass::fused) {
        step = line_search();
    } else if (options_.adaptive_step) {
        // No subspace yet: take the top-s row space of the gradient itself.
        svd_ = truncated_svd(work_, s_, Matrix(), seed_, n_threads_, options_.svd, stop_requested_);
        have_subspace_ = true;
        RowMatrix C(T_, s_);
        tall_product(work_, svd_.V, C, n_threads_);
        task_curvature(tasks_, C, svd_.V, curvature_, n_threads_);
        projected_ = C.rowwise().squaredNorm();
        step = line_search();
    }
    record.step = step;
    if (pass_ == Pass::conjugate) {
        // Only the old direction's part inside the row space carries over: that is where the
        // line search measured it; its outside part would be an unmeasured step.
        return conjugate_update(theta_, step, work_, record.beta, Cp_, svd_.V, direction_, work_,
                                n_threads_);
    }
    if (conjugate_) copy_rows(work_, direction_, n_threads_);   // a restart: the gradient
    return add_scaled(theta_, step, work_, work_, n_threads_);  // before hard thresholding
}

// CGIHT's safeguard: the update raised the loss, so it is undone and retried with half the
// step along the same direction; returns ||target||_F^2 as step_rule does.
double Start::backtrack(IterationRecord& record) {
    ++retries_;
    copy_rows(accepted_theta_, theta_, n_threads_);
    svd_ = accepted_svd_;
    record.beta = 0;
    record.step = 0.5 * out_.history.back().step;
    return add_scaled(theta_, record.step, direction_, work_, n_threads_);
}

// Hard thresholding: the truncated SVD of the target in work_ (warm-started from the last
// basis), and H_s, the rank-s iterate, with its norm and its change in the same pass. Fills
// the record's SVD fields, relative change and sin angle; nullopt when interrupted.
std::optional<Movement> Start::threshold(IterationRecord& record) {
    const Matrix warm_start = have_subspace_ ? svd_.basis : Matrix();
    // The paper's fixed step takes every SVD to the strict tolerance, so its iterates are the
    // exact-SVD iterates to rounding; the adaptive steps may stop an SVD at a share of the
    // iterate's own movement.
    std::optional<double> last_change;
    if (options_.adaptive_step && !out_.history.empty()) {
        last_change = out_.history.back().rel_change;
    }
    const Clock::time_point svd_started = Clock::now();
    svd_ = truncated_svd(work_, s_, warm_start, seed_, n_threads_,
                         options_.svd.following(last_change), stop_requested_);
    record.svd_seconds = seconds_since(svd_started);
    record.svd_steps = svd_.n_steps;
    have_subspace_ = true;
    if (stop()) return std::nullopt;
    const RowMatrix Vt = svd_.V.transpose();
    const auto sums = chunk_sums<2>(T_, d_, n_threads_, [&](Index r0, Index r1) {
        std::array<double, 2> chunk;
        expand_rows(svd_.W.data() + r0, svd_.W.outerStride(), Vt.data(), s_, d_,
                    theta_.row(r0).data(), r1 - r0, work_.row(r0).data(), chunk.data());
        return chunk;
    });
    Movement movement{std::sqrt(sums[0]), std::sqrt(sums[1])};
    if (movement.norm < kTinyNorm) {
        // The squares underflowed (a tiny step on small data): measured again, by norms that
        // scale before they square. Rare, so the extra passes do not matter.
        movement.norm = work_.stableNorm();
        movement.change = (work_ - theta_).stableNorm();
    }
    std::swap(theta_, work_);
    record.phase = 0;
    record.rel_change = movement.norm > 0 ? movement.change / movement.norm : 0.0;
    record.sin_angle = track_ ? sin_angle(svd_.V, options_.reference_B) : kNaN;
    return movement;
}

// The stop test after an iteration: converged (the sin angle to the reference, or the
// relative change, below its tolerance), the hand-over to the polish, or stalled. Sets the
// status; true: leave hard thresholding.
bool Start::stop_test(const IterationRecord& record, const Movement& movement) {
    if (track_ && options_.sin_tol > 0 && record.sin_angle <= options_.sin_tol) {
        out_.status = Status::converged;
        done_ = true;
        return true;
    }
    // A zero iterate has converged only where the gradient at it vanishes (as for all-zero
    // targets); else the step was too small to move it at all.
    const bool stationary = movement.norm > 0 ? movement.change <= options_.tol * movement.norm
                                              : zero_gradient(tasks_, n_threads_);
    if (options_.tol > 0 && stationary) {
        out_.status = Status::converged;
        return true;
    }
    if (options_.polish) {
        const bool newton_polish = d_ * s_ <= options_.basis.max_dense;
        const double switch_tol =
            newton_polish ? options_.switch_tol : kSlowPolishSwitch * options_.switch_tol;
        return record.rel_change <= switch_tol ||
               plateau(out_.history, options_.switch_window, switch_tol * switch_tol);
    }
    if (options_.tol > 0 && stalled(out_.history, record, options_.patience)) {
        out_.status = Status::stalled;
        return true;
    }
    return false;
}

SolveResult Start::run(Init init, const Matrix& V0) {
    start(init, V0);
    std::optional<IterationRecord> pending;  // the last iteration's, until its loss is known
    const int iht_budget = options_.polish ? std::max(1, options_.max_iter / 2) : options_.max_iter;
    for (int k = 0; k < iht_budget; ++k) {
        const Clock::time_point started = Clock::now();
        const double loss = pass_over_x();
        const bool retry =
            conjugate_ && k > 0 && !(loss <= accepted_loss_) && retries_ < kMaxRetries;
        if (pending) {
            pending->loss = loss;
            append(*pending);
            pending.reset();
            if (!retry && diverging(loss)) {
                out_.status = Status::diverged;
                break;
            }
        }
        if (stop()) {
            out_.status = Status::interrupted;
            break;
        }
        IterationRecord record;
        const double target_norm = retry ? backtrack(record) : step_rule(k, loss, record);
        have_direction_ = conjugate_ && !retry;
        if (!std::isfinite(target_norm)) {
            out_.status = Status::diverged;
            break;
        }
        if (stop()) {
            out_.status = Status::interrupted;
            break;
        }
        const std::optional<Movement> movement = threshold(record);
        if (!movement) {
            out_.status = Status::interrupted;
            break;
        }
        record.seconds = seconds_since(started);
        out_.n_iter = k + 1;
        pending = record;
        if (stop_test(record, *movement)) break;
    }
    out_.n_iht_iter = out_.n_iter;
    if (pending) {  // the last iterate's loss, once more over X
        task_loss(tasks_, theta_, per_task_, n_threads_);
        pending->loss = mean(per_task_);
        append(*pending);
        if (diverging(pending->loss)) out_.status = Status::diverged;
    }
    finish_factors(polish());
    return std::move(out_);
}

// The least-squares polish from the hard-thresholding subspace, when asked for and it can
// help; its sweeps join the history as phase 1. True if it took at least one sweep.
bool Start::polish() {
    if (!options_.polish || done_ || !have_subspace_ || out_.status == Status::diverged ||
        out_.status == Status::interrupted)
        return false;
    PolishOptions polish_options;
    polish_options.max_iter = options_.max_iter - out_.n_iter;
    polish_options.tol = options_.tol;
    polish_options.sin_tol = options_.sin_tol;
    polish_options.n_threads = n_threads_;
    polish_options.reference_B = options_.reference_B;
    polish_options.basis = options_.basis;
    PolishResult polished = metasp::polish(tasks_, svd_.V, polish_options, stop_requested_);
    out_.status = status_of(polished.status);
    if (polished.n_iter == 0) return false;
    out_.n_iter += polished.n_iter;
    for (int k = 0; k < polished.n_iter; ++k) {
        IterationRecord record;
        record.loss = polished.loss[k];
        record.step = kNaN;
        record.beta = kNaN;
        record.rel_change = polished.rel_change[k];
        record.sin_angle = track_ ? polished.sin_angle[k] : kNaN;
        record.svd_steps = 0;
        record.phase = 1;
        record.seconds = polished.seconds[k];
        record.svd_seconds = 0;
        append(record);
    }
    out_.Theta = std::move(polished.Theta);
    out_.W = std::move(polished.factors.W);
    out_.B = polished.factors.V.transpose();
    out_.singular_values = std::move(polished.factors.singular_values);
    return true;
}

// The returned factors, from the hard-thresholding iterate where the polish did not run.
void Start::finish_factors(bool polished) {
    if (polished) return;
    out_.Theta = std::move(theta_);
    if (have_subspace_) {
        out_.W = svd_.W;
        out_.B = svd_.V.transpose();
        out_.singular_values = svd_.singular_values;
    } else {  // stopped before the first update: Theta is still zero
        out_.W = RowMatrix::Zero(T_, s_);
        out_.B = RowMatrix::Identity(s_, d_);
        out_.singular_values = Vector::Zero(s_);
    }
}

double final_loss(const SolveResult& result) {
    return result.history.empty() ? result.initial_loss : result.history.back().loss;
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
        SolveResult run =
            Start(tasks, s, options, options.seed + std::uint64_t(start), stop_requested)
                .run(init, V0);
        start_loss.push_back(final_loss(run));  // a diverged start: its last finite iterate
        start_iter.push_back(run.n_iter);
        const bool interrupted = run.status == Status::interrupted;
        const bool better =
            start == 0 || (run.status != Status::diverged &&
                           (best.status == Status::diverged || final_loss(run) < final_loss(best)));
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
