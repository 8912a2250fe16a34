#include "metasp/types.hpp"

#include <cstdint>
#include <stdexcept>
#include <string>

namespace metasp {

Eigen::Ref<const RowMatrix> DesignMatrix::middle_rows(Index begin, Index count,
                                                      RowMatrix& scratch) const {
    using Stride = Eigen::OuterStride<>;
    if (!is_float())
        return Eigen::Map<const RowMatrix, 0, Stride>(double_data_ + begin * pitch_, count, cols_,
                                                      Stride(pitch_));
    scratch = Eigen::Map<const RowMatrixF, 0, Stride>(float_data_ + begin * pitch_, count, cols_,
                                                      Stride(pitch_))
                  .cast<double>();
    return scratch;
}

namespace {
template <class Scalar>
bool aligned(const Scalar* data) {
    return reinterpret_cast<std::uintptr_t>(data) % alignof(Scalar) == 0;
}
}  // namespace

void check_tasks(const TasksView& tasks) {
    // A misaligned view (e.g. of a byte buffer) cannot be read element by element: check it
    // before anything is read.
    if (!aligned(tasks.offsets.data()) || !aligned(tasks.y.data()))
        throw std::invalid_argument(
            "offsets and y must be aligned arrays; np.ascontiguousarray copies a misaligned view "
            "into an aligned one (metasp.Tasks does this for you)");
    const Index T = tasks.n_tasks();
    if (T < 1) throw std::invalid_argument("offsets must have at least 2 entries (one task)");
    if (tasks.y.size() != tasks.n_samples())
        throw std::invalid_argument("X has " + std::to_string(tasks.n_samples()) +
                                    " rows but y has " + std::to_string(tasks.y.size()));
    if (tasks.offsets[0] != 0) throw std::invalid_argument("offsets[0] must be 0");
    if (tasks.offsets[T] != tasks.n_samples())
        throw std::invalid_argument("offsets[-1] must equal the number of rows of X");
    for (Index t = 0; t < T; ++t)
        if (tasks.offsets[t + 1] <= tasks.offsets[t])
            throw std::invalid_argument("offsets must increase strictly (task " +
                                        std::to_string(t) + " is empty or reversed)");
}

void check_threads(int n_threads) {
    if (n_threads < 1) throw std::invalid_argument("n_threads must be at least 1");
}

}  // namespace metasp
