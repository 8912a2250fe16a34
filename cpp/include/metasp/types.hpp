// Shared types of the metasp core: a read-only view of T stacked regression tasks.
#pragma once

#include <Eigen/Core>

#include <cstdint>
#include <functional>

namespace metasp {

using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Matrix = Eigen::MatrixXd;  // column-major: small d x b and T x b blocks
using Vector = Eigen::VectorXd;
using Index = Eigen::Index;

// Task t owns rows offsets[t] .. offsets[t+1]-1 of X and y. Nothing is copied: the view
// points into the caller's memory, which must outlive it.
struct TasksView {
    Eigen::Ref<const RowMatrix> X;                 // (N, d), C-contiguous
    Eigen::Ref<const Vector> y;                    // (N,)
    Eigen::Ref<const Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>> offsets;  // (T+1,)

    Index n_tasks() const { return offsets.size() - 1; }
    Index n_features() const { return X.cols(); }
    Index n_samples() const { return X.rows(); }
    Index begin(Index t) const { return static_cast<Index>(offsets[t]); }
    Index size(Index t) const { return static_cast<Index>(offsets[t + 1] - offsets[t]); }
};

// Throws std::invalid_argument unless the view is consistent: offsets start at 0, end at N,
// and strictly increase (no empty task). Every kernel calls it, so no input reads out of bounds.
void check_tasks(const TasksView& tasks);

// Throws std::invalid_argument unless n_threads >= 1.
void check_threads(int n_threads);

// Called between phases of long computations; returning true abandons the computation.
// The core knows nothing about Python: the bindings turn Ctrl-C into `true` here.
using StopRequested = std::function<bool()>;

}  // namespace metasp
