#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <optional>

#include "common.hpp"
#include "metasp/gradient.hpp"
#include "metasp/truncated_svd.hpp"

namespace metasp::bindings {

void bind_kernels(py::module_& m) {
    m.def(
        "task_gradient",
        [](const DesignMatrix& X, VectorIn y, OffsetsIn offsets, RowMatrixIn Theta,
           std::optional<Matrix> V, int n_threads) -> py::tuple {
            const TasksView tasks{X, y, offsets};
            const Index T = offsets.size() > 0 ? offsets.size() - 1 : 0;
            // NumPy allocates G: it asks the kernel for huge pages, so a large G costs a few
            // page faults instead of one per 4 KiB (which, with malloc, cost more than the pass).
            py::array_t<double, py::array::c_style> G_array({Theta.rows(), Theta.cols()});
            Eigen::Map<RowMatrix> G(G_array.mutable_data(), Theta.rows(), Theta.cols());
            Vector loss(T);
            if (!V) {
                {
                    py::gil_scoped_release release;
                    task_gradient(tasks, Theta, G, loss, n_threads);
                }
                return py::make_tuple(std::move(G_array), std::move(loss), py::none(), py::none());
            }
            Vector projected(T), curvature(T);
            {
                py::gil_scoped_release release;
                task_gradient(tasks, Theta, G, loss, n_threads, *V, projected, curvature);
            }
            return py::make_tuple(std::move(G_array), std::move(loss), std::move(projected),
                                  std::move(curvature));
        },
        py::arg("X").noconvert(), py::arg("y").noconvert(), py::arg("offsets").noconvert(),
        py::arg("Theta").noconvert(), py::arg("V"), py::arg("n_threads"));

    m.def(
        "task_curvature",
        [](const DesignMatrix& X, VectorIn y, OffsetsIn offsets, RowMatrixIn C, const Matrix& B,
           int n_threads) {
            const TasksView tasks{X, y, offsets};
            Vector curvature(offsets.size() > 0 ? offsets.size() - 1 : 0);
            {
                py::gil_scoped_release release;
                task_curvature(tasks, C, B, curvature, n_threads);
            }
            return curvature;
        },
        py::arg("X").noconvert(), py::arg("y").noconvert(), py::arg("offsets").noconvert(),
        py::arg("C").noconvert(), py::arg("B"), py::arg("n_threads"));

    m.def(
        "truncated_svd",
        [](RowMatrixIn A, Index s, std::optional<Matrix> warm_start, std::uint64_t seed,
           int n_threads, double tol, int max_steps) {
            TruncatedSVD svd;
            InterruptPoll poll;
            {
                py::gil_scoped_release release;
                svd = truncated_svd(A, s, warm_start.value_or(Matrix()), seed, n_threads,
                                    SVDOptions{tol, max_steps}, std::ref(poll));
            }
            poll.raise_if_interrupted();
            py::dict out;
            out["V"] = std::move(svd.V);
            out["singular_values"] = std::move(svd.singular_values);
            out["W"] = std::move(svd.W);
            out["basis"] = std::move(svd.basis);
            out["n_steps"] = svd.n_steps;
            out["converged"] = svd.converged;
            return out;
        },
        py::arg("A").noconvert(), py::arg("s"), py::arg("warm_start"), py::arg("seed"),
        py::arg("n_threads"), py::arg("tol"), py::arg("max_steps"));
}

}  // namespace metasp::bindings
