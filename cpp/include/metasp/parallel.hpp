// OpenMP policy of the core, and products whose result does not depend on the thread count.
#pragma once

#include "metasp/types.hpp"

#include <algorithm>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

// Raw row loops marked with this are also compiled for AVX2/FMA (x86-64-v3) on x86-64 Linux,
// and the loader picks the version for the CPU at run time: the default build stays portable.
#if defined(__x86_64__) && defined(__linux__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define METASP_CPU_DISPATCH __attribute__((target_clones("default", "arch=x86-64-v3")))
#endif
#endif
#ifndef METASP_CPU_DISPATCH
#define METASP_CPU_DISPATCH
#endif

namespace metasp {

// Asks for the cache lines of `count` scalars from `start` ahead of use, for the blocked row
// loops: the hardware prefetcher alone leaves their four short row streams waiting on memory.
// Addresses past the end of the data are fine for a prefetch (it never faults). Forced inline:
// without it, GCC 12 emitted no prefetch at all in the forced-inline blocks of gradient.cpp.
template <class Scalar>
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
inline void prefetch_rows(const Scalar* start, Index count) {
    constexpr Index kLine = 64 / sizeof(Scalar);
    for (Index k = 0; k < count; k += kLine) __builtin_prefetch(start + k);
}

// Threads OpenMP would use by default (honours OMP_NUM_THREADS and the CPU affinity mask).
inline int max_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// Threads a parallel region may start: the requested count, at most the hardware's (the
// processors OpenMP may use, or OMP_NUM_THREADS when that is larger). libgomp allocates a team
// per request, so an unchecked count in the millions crashes the process.
inline int thread_cap(int requested) {
#ifdef _OPENMP
    static const int hardware = std::max(omp_get_num_procs(), omp_get_max_threads());
    return std::clamp(requested, 1, std::max(hardware, 1));
#else
    (void)requested;
    return 1;
#endif
}

// On a busy 2-core machine a parallel region over little work can be 100x slower than serial
// (threads spin waiting for a core), so work below this many multiply-adds runs serially.
constexpr double kMinParallelWork = 1 << 20;

inline bool run_parallel(int n_threads, double work) {
    return n_threads > 1 && work >= kMinParallelWork;
}

// body(t) for every task t, in parallel when the work (multiply-adds per sample times the
// samples) is worth it; dynamic chunks of 16 tasks balance tasks of different sizes. Each task
// writes only its own outputs, so results do not depend on the thread count.
template <class Body>
void for_each_task(const TasksView& tasks, int n_threads, double work_per_sample, Body body) {
    check_threads(n_threads);
    const Index T = tasks.n_tasks();
    const bool parallel = run_parallel(n_threads, double(tasks.n_samples()) * work_per_sample);
#pragma omp parallel for num_threads(thread_cap(n_threads)) if (parallel) schedule(dynamic, 16)
    for (Index t = 0; t < T; ++t) body(t);
}

// Row chunks of reductions over T: a fixed count, independent of the thread count, summed in
// order, so that 1 and n threads give bit-identical results.
inline Index n_row_chunks(Index rows) {
    constexpr Index kMaxChunks = 64, kMinChunkRows = 64;
    return std::max<Index>(1, std::min(kMaxChunks, rows / kMinChunkRows));
}

inline Index chunk_begin(Index chunk, Index n_chunks, Index rows) {
    return rows * chunk / n_chunks;
}

// A^T U for tall A (rows x p) and U (rows x q): deterministic chunked reduction over rows.
template <class Left, class Right>
Matrix transposed_product(const Left& A, const Right& U, int n_threads) {
    const Index rows = A.rows(), n_chunks = n_row_chunks(rows);
    std::vector<Matrix> partial(static_cast<size_t>(n_chunks));
    const bool parallel = run_parallel(n_threads, double(rows) * A.cols() * U.cols());
#pragma omp parallel for num_threads(thread_cap(n_threads)) if (parallel) schedule(static)
    for (Index c = 0; c < n_chunks; ++c) {
        const Index r0 = chunk_begin(c, n_chunks, rows), r1 = chunk_begin(c + 1, n_chunks, rows);
        partial[c].noalias() = A.middleRows(r0, r1 - r0).transpose() * U.middleRows(r0, r1 - r0);
    }
    Matrix sum = std::move(partial[0]);
    for (Index c = 1; c < n_chunks; ++c) sum += partial[c];
    return sum;
}

// Interruptible passes over `n_chunks` fixed row chunks: a chunk longer than kPieceWork
// multiply-adds is cut into pieces (at least kMinPieceRows rows, a multiple of 8, so the
// row-block kernels see the same blocks), taken in order, and the pieces run in rounds of one
// per thread with `stop` polled between rounds: a stop request waits for one piece, a few
// hundredths of a second. The pieces depend on the shape alone, so the sums still do not
// depend on the thread count. body(c, r0, r1) handles rows r0 .. r1-1 of chunk c; returns
// false when stopped (rows were then skipped).
constexpr double kPieceWork = double(1 << 26);
constexpr Index kMinPieceRows = 32;

template <class Body>
bool chunked_pass(Index rows, Index n_chunks, double work_per_row, int n_threads,
                  const StopRequested& stop, Body body) {
    const double total = double(rows) * work_per_row;
    const bool parallel = run_parallel(n_threads, total);
    const Index longest = (rows + n_chunks - 1) / n_chunks;
    const Index piece =
        std::max<Index>(kMinPieceRows, Index(kPieceWork / std::max(work_per_row, 1.0)) / 8 * 8);
    const Index n_pieces = (longest + piece - 1) / piece;
    if (n_pieces <= 1 && (!stop || total <= 4 * kPieceWork)) {
#pragma omp parallel for num_threads(thread_cap(n_threads)) if (parallel) schedule(static)
        for (Index c = 0; c < n_chunks; ++c)
            body(c, chunk_begin(c, n_chunks, rows), chunk_begin(c + 1, n_chunks, rows));
        return !(stop && stop());
    }
    const Index group = parallel ? thread_cap(n_threads) : 1;
    for (Index first = 0; first < n_chunks; first += group) {
        const Index last = std::min(n_chunks, first + group);
        for (Index p = 0; p < n_pieces; ++p) {
            if (stop && stop()) return false;
#pragma omp parallel for num_threads(thread_cap(n_threads)) if (parallel) schedule(static)
            for (Index c = first; c < last; ++c) {
                const Index begin = chunk_begin(c, n_chunks, rows) + p * piece;
                const Index end = std::min(chunk_begin(c + 1, n_chunks, rows), begin + piece);
                if (begin < end) body(c, begin, end);
            }
        }
    }
    return !(stop && stop());
}

// A^T (A Q) for tall A (rows x p) and thin Q (p x q), in one pass over A: each block of rows
// A_r Q is multiplied back by A_r^T while A_r is still in cache. A Q is written into AQ
// (resized to rows x q). Chunked and summed in order like transposed_product.
// Polls `stop` (see chunked_pass); when it stopped, the result is incomplete.
Matrix gram_times(const Eigen::Ref<const RowMatrix>& A, const Matrix& Q, RowMatrix& AQ,
                  int n_threads, const StopRequested& stop = {});

// out = A R for tall A (rows x p) and small R (p x q); rows are independent.
template <class Left, class Right, class Out>
void tall_product(const Left& A, const Right& R, Out& out, int n_threads) {
    const Index rows = A.rows(), n_chunks = n_row_chunks(rows);
    const bool parallel = run_parallel(n_threads, double(rows) * A.cols() * R.cols());
#pragma omp parallel for num_threads(thread_cap(n_threads)) if (parallel) schedule(static)
    for (Index c = 0; c < n_chunks; ++c) {
        const Index r0 = chunk_begin(c, n_chunks, rows), r1 = chunk_begin(c + 1, n_chunks, rows);
        out.middleRows(r0, r1 - r0).noalias() = A.middleRows(r0, r1 - r0) * R;
    }
}

}  // namespace metasp
