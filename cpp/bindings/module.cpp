#include "common.hpp"

#include "metasp/parallel.hpp"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
    m.doc() = "metasp's compiled core; use the public functions of the metasp package instead.";
    m.def("max_threads", &metasp::max_threads,
          "Threads OpenMP uses by default (OMP_NUM_THREADS and the affinity mask).");
    // Before Python finalises: from then on no other thread may wait for the GIL (common.hpp).
    py::module_::import("atexit").attr("register")(
        py::cpp_function([] { metasp::bindings::prepare_for_exit(); }));
    metasp::bindings::bind_kernels(m);
    metasp::bindings::bind_solver(m);
}
