// Shared types of the metasp core: a read-only view of T stacked regression tasks.
#pragma once

#include <Eigen/Core>

#include <chrono>
#include <cstdint>
#include <functional>

namespace metasp {

using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowMatrixF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Matrix = Eigen::MatrixXd;  // column-major: small d x b and T x b blocks
using Vector = Eigen::VectorXd;
using Index = Eigen::Index;

// The (N, d) design matrix, read-only, stored as float or double with rows `pitch` scalars
// apart. Nothing is copied: it points into the caller's memory, which must outlive it. The
// kernels read float data natively and do all arithmetic in double, so float X costs half the
// memory traffic, and only its rounding to float, in accuracy.
class DesignMatrix {
public:
    DesignMatrix() = default;
    DesignMatrix(const double* data, Index rows, Index cols, Index pitch)
        : double_data_(data), rows_(rows), cols_(cols), pitch_(pitch) {}
    DesignMatrix(const float* data, Index rows, Index cols, Index pitch)
        : float_data_(data), is_float_(true), rows_(rows), cols_(cols), pitch_(pitch) {}

    Index rows() const { return rows_; }
    Index cols() const { return cols_; }
    Index pitch() const { return pitch_; }
    bool is_float() const { return is_float_; }

    // Returns body(data), with data the `const float*` or `const double*` the matrix holds:
    // the row kernels are templates on the scalar, instantiated for both.
    template <class Body>
    decltype(auto) visit(Body&& body) const {
        return is_float() ? body(float_data_) : body(double_data_);
    }

    // Rows begin .. begin + count - 1 as a double matrix: a view when X is double, else
    // converted into `scratch` (for the per-task dense algebra of the polish, whose cost is
    // not the read of X).
    Eigen::Ref<const RowMatrix> middle_rows(Index begin, Index count, RowMatrix& scratch) const;

private:
    const double* double_data_ = nullptr;
    const float* float_data_ = nullptr;
    bool is_float_ = false;
    Index rows_ = 0, cols_ = 0, pitch_ = 0;
};

// Task t owns rows offsets[t] .. offsets[t+1]-1 of X and y. Nothing is copied: the view
// points into the caller's memory, which must outlive it.
struct TasksView {
    DesignMatrix X;              // (N, d), float or double
    Eigen::Ref<const Vector> y;  // (N,)
    Eigen::Ref<const Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>> offsets;  // (T+1,)

    Index n_tasks() const { return offsets.size() - 1; }
    Index n_features() const { return X.cols(); }
    Index n_samples() const { return X.rows(); }
    Index begin(Index t) const { return static_cast<Index>(offsets[t]); }
    Index size(Index t) const { return static_cast<Index>(offsets[t + 1] - offsets[t]); }
    // X_t (m_t, d) in double: see DesignMatrix::middle_rows.
    Eigen::Ref<const RowMatrix> task_rows(Index t, RowMatrix& scratch) const {
        return X.middle_rows(begin(t), size(t), scratch);
    }
};

// Throws std::invalid_argument unless the view is consistent: offsets start at 0, end at N,
// and strictly increase (no empty task). Every kernel calls it, so no input reads out of bounds.
void check_tasks(const TasksView& tasks);

// Throws std::invalid_argument unless n_threads >= 1.
void check_threads(int n_threads);

// Called between phases of long computations; returning true abandons the computation.
// The core knows nothing about Python: the bindings turn Ctrl-C into `true` here.
using StopRequested = std::function<bool()>;

// Wall-clock seconds since `start`, for the per-iteration times of the solvers' histories.
using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace metasp
