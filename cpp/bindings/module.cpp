#include "common.hpp"

#include "metasp/parallel.hpp"

PYBIND11_MODULE(_core, m) {
    m.doc() = "metasp's compiled core; use the public functions of the metasp package instead.";
    m.def("max_threads", &metasp::max_threads,
          "Threads OpenMP uses by default (OMP_NUM_THREADS and the affinity mask).");
    metasp::bindings::bind_kernels(m);
    metasp::bindings::bind_solver(m);
}
