#include "metasp/solver.hpp"

#include "metasp/gradient.hpp"
#include "metasp/parallel.hpp"

#include <Eigen/Eigenvalues>

#include <cmath>
#include <stdexcept>
#include <utility>

namespace metasp {

std::string to_string(Status status) {
    switch (status) {
        case Status::converged: return "converged";
        case Status::max_iter: return "max_iter";
        case Status::diverged: return "diverged";
        case Status::interrupted: return "interrupted";
    }
    return "unknown";
}

double sin_angle(const Matrix& V, const RowMatrix& B) {
    const Matrix outside = V - B.transpose() * (B * V);
    const Eigen::SelfAdjointEigenSolver<Matrix> eig(outside.transpose() * outside,
                                                    Eigen::EigenvaluesOnly);
    return std::sqrt(std::max(eig.eigenvalues().maxCoeff(), 0.0));
}

namespace {

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
    check_threads(options.n_threads);
    if (!(options.divergence_factor > 1))
        throw std::invalid_argument("divergence_factor must be greater than 1");
    const auto& ref = options.reference_B;
    if (ref.size() > 0 && (ref.rows() != s || ref.cols() != d))
        throw std::invalid_argument("reference_B must have shape (s, d)");
}

// Summed in task order, so the value does not depend on the thread count.
double sum(const Vector& values) {
    double total = 0;
    for (Index t = 0; t < values.size(); ++t) total += values[t];
    return total;
}

double mean(const Vector& values) { return sum(values) / double(values.size()); }

}  // namespace

SolveResult solve(const TasksView& tasks, Index s, const SolveOptions& options,
                  const StopRequested& stop_requested) {
    check_options(tasks, s, options);
    const Index T = tasks.n_tasks(), d = tasks.n_features();
    const int n_threads = options.n_threads;
    const auto stop = [&] { return stop_requested && stop_requested(); };

    SolveResult out;
    RowMatrix theta = RowMatrix::Zero(T, d);
    RowMatrix work(T, d);  // gradient, then the step's target, then the next iterate
    Vector per_task(T);
    TruncatedSVD svd;      // its basis warm-starts the next truncated SVD
    bool have_subspace = false;
    out.status = Status::max_iter;

    const auto diverging = [&](double loss) {
        return !std::isfinite(loss) || loss > options.divergence_factor * out.initial_loss;
    };

    Vector projected(T), curvature(T);
    // Exact minimiser along the gradient projected on the row space. When that projection
    // vanishes (the gradient is orthogonal to the row space, e.g. when s = T), the ratio is
    // rounding noise: search along the whole gradient instead.
    const auto line_search = [&] {
        const double gradient_norm = work.squaredNorm();
        double numerator = sum(projected);
        if (numerator <= kVanishingProjection * gradient_norm) {
            task_curvature(tasks, work, curvature, n_threads);
            numerator = gradient_norm;
        }
        const double denominator = sum(curvature);
        return denominator > 0 ? numerator / denominator : 0.0;
    };

    for (int k = 0; k < options.max_iter; ++k) {
        // Normalized IHT: the step is an exact line search along the gradient projected on
        // the current row space, computed in the same pass over X as the gradient.
        const bool fused_step = options.adaptive_step && have_subspace;
        if (fused_step)
            task_gradient(tasks, theta, work, per_task, n_threads, svd.V, projected, curvature);
        else
            task_gradient(tasks, theta, work, per_task, n_threads);
        const double loss = mean(per_task);
        if (k == 0) {
            out.initial_loss = loss;
        } else {
            out.loss.push_back(loss);
            if (diverging(loss)) { out.status = Status::diverged; break; }
        }
        if (stop()) { out.status = Status::interrupted; break; }

        double step = options.step;
        if (fused_step) {
            step = line_search();
        } else if (options.adaptive_step) {
            // No subspace yet: take the top-s row space of the gradient itself.
            svd = truncated_svd(work, s, Matrix(), options.seed, n_threads, options.svd, stop_requested);
            have_subspace = true;
            RowMatrix C(T, s);
            tall_product(work, svd.V, C, n_threads);
            task_curvature(tasks, C, svd.V, curvature, n_threads);
            projected = C.rowwise().squaredNorm();
            step = line_search();
        }

        work = theta + step * work;  // the gradient step, before hard thresholding
        if (!std::isfinite(work.squaredNorm())) { out.status = Status::diverged; break; }
        if (stop()) { out.status = Status::interrupted; break; }

        const Matrix warm_start = have_subspace ? svd.basis : Matrix();
        svd = truncated_svd(work, s, warm_start, options.seed, n_threads,
                            options.svd.following(out.rel_change), stop_requested);
        have_subspace = true;
        if (stop()) { out.status = Status::interrupted; break; }
        tall_product(svd.W, svd.V.transpose(), work, n_threads);  // H_s: the rank-s iterate

        const double norm = work.norm();
        const double change = (work - theta).norm();
        std::swap(theta, work);
        out.n_iter = k + 1;
        out.step.push_back(step);
        out.rel_change.push_back(norm > 0 ? change / norm : 0.0);
        out.svd_steps.push_back(svd.n_steps);
        if (options.reference_B.size() > 0) out.sin_angle.push_back(sin_angle(svd.V, options.reference_B));
        if (options.tol > 0 && change <= options.tol * norm) { out.status = Status::converged; break; }
    }

    if (out.status == Status::converged || out.status == Status::max_iter) {
        task_loss(tasks, theta, per_task, n_threads);
        out.loss.push_back(mean(per_task));
        if (diverging(out.loss.back())) out.status = Status::diverged;
    }

    out.Theta = std::move(theta);
    if (out.n_iter > 0) {
        out.W = svd.W;
        out.B = svd.V.transpose();
        out.singular_values = svd.singular_values;
    } else {  // stopped before the first update: Theta is still zero
        out.W = RowMatrix::Zero(T, s);
        out.B = RowMatrix::Identity(s, d);
        out.singular_values = Vector::Zero(s);
    }
    return out;
}

}  // namespace metasp
