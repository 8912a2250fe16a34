// Building blocks of the per-row loops over X (gradient.cpp, statistics.cpp, task_gram.cpp,
// newton.cpp) and over the T x d iterate (truncated_svd.cpp, solver.cpp): dot products of a block of rows
// with shared vectors, and g += sum_k r_k x_k, on packs of four doubles.
//
// Why packs rather than `omp simd` loops: the passes are bound by arithmetic with X in cache.
// A dot product is a chain of dependent multiply-adds, so a block needs about 8 independent
// chains to keep both FMA units busy; the compiler's vectorisation of 8-way `omp simd`
// reductions fell back to 16-byte vectors, and float rows were widened through the stack. With
// explicit packs every block keeps R rows x U packs of partial sums in registers, and a float
// pack is widened in one instruction (vcvtps2pd). The helpers are forced inline, so they take
// the instruction set of the METASP_CPU_DISPATCH clone that calls them.
#pragma once

#include "metasp/types.hpp"

#include <cstring>
#include <type_traits>

namespace metasp {
namespace rows {

constexpr Index kPack = 4;

#if defined(__GNUC__)
#define METASP_ALWAYS_INLINE __attribute__((always_inline)) inline
typedef double Pack __attribute__((vector_size(32)));
typedef float FloatPack __attribute__((vector_size(16)));

METASP_ALWAYS_INLINE Pack load(const double* x) {
    Pack v;
    std::memcpy(&v, x, sizeof v);
    return v;
}
// Element by element: the compiler turns this into one vcvtps2pd, unlike
// __builtin_convertvector (GCC 12 splits that through the stack).
METASP_ALWAYS_INLINE Pack load(const float* x) {
    FloatPack v;
    std::memcpy(&v, x, sizeof v);
    return Pack{double(v[0]), double(v[1]), double(v[2]), double(v[3])};
}
METASP_ALWAYS_INLINE void store(double* x, Pack v) { std::memcpy(x, &v, sizeof v); }
METASP_ALWAYS_INLINE Pack broadcast(double a) { return Pack{a, a, a, a}; }
#else
#define METASP_ALWAYS_INLINE inline
struct Pack {
    double v[kPack] = {};
    double operator[](int i) const { return v[i]; }
    Pack& operator+=(const Pack& b) {
        for (int i = 0; i < kPack; ++i) v[i] += b.v[i];
        return *this;
    }
};
inline Pack operator*(const Pack& a, const Pack& b) {
    Pack c;
    for (int i = 0; i < kPack; ++i) c.v[i] = a.v[i] * b.v[i];
    return c;
}
inline Pack operator+(Pack a, const Pack& b) { return a += b; }
inline Pack operator-(Pack a, const Pack& b) {
    for (int i = 0; i < kPack; ++i) a.v[i] -= b.v[i];
    return a;
}
template <class Scalar>
inline Pack load(const Scalar* x) {
    Pack p;
    for (int i = 0; i < kPack; ++i) p.v[i] = x[i];
    return p;
}
inline void store(double* x, const Pack& p) { std::memcpy(x, p.v, sizeof p.v); }
inline Pack broadcast(double a) { return Pack{{a, a, a, a}}; }
#endif

METASP_ALWAYS_INLINE double sum(Pack v) { return (v[0] + v[1]) + (v[2] + v[3]); }

// dot[k][v] = x_k . p_v for the R rows x0 + k pitch and V vectors p_v (all of length d), each
// sum split over U interleaved packs: R * V * U independent chains of multiply-adds.
template <int R, int V, int U, class Scalar>
METASP_ALWAYS_INLINE void dots(const Scalar* x0, Index pitch, Index d, const double* const* p,
                               double (*dot)[V]) {
    Pack acc[R][V][U] = {};
    Index j = 0;
    for (; j + U * kPack <= d; j += U * kPack) {
#pragma GCC unroll 8
        for (int u = 0; u < U; ++u) {
            Pack x[R];
#pragma GCC unroll 8
            for (int k = 0; k < R; ++k) x[k] = load(x0 + k * pitch + j + u * kPack);
#pragma GCC unroll 8
            for (int v = 0; v < V; ++v) {
                const Pack pv = load(p[v] + j + u * kPack);
#pragma GCC unroll 8
                for (int k = 0; k < R; ++k) acc[k][v][u] += x[k] * pv;
            }
        }
    }
    for (; j + kPack <= d; j += kPack) {
#pragma GCC unroll 8
        for (int k = 0; k < R; ++k) {
            const Pack x = load(x0 + k * pitch + j);
#pragma GCC unroll 8
            for (int v = 0; v < V; ++v) acc[k][v][0] += x * load(p[v] + j);
        }
    }
#pragma GCC unroll 8
    for (int k = 0; k < R; ++k) {
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) {
            Pack a = acc[k][v][0];
#pragma GCC unroll 8
            for (int u = 1; u < U; ++u) a += acc[k][v][u];
            double s = sum(a);
            for (Index tail = j; tail < d; ++tail) s += double(x0[k * pitch + tail]) * p[v][tail];
            dot[k][v] = s;
        }
    }
}

// g_c += sum_k r[k * ldr + c] x_k over the R rows x0 + k pitch, for C vectors g_c at once:
// one load of each row pack for all C of them, one load and store of g_c per R rows.
template <int R, int C, class Scalar>
METASP_ALWAYS_INLINE void add_rows_to(const Scalar* x0, Index pitch, Index d, const double* r,
                                      Index ldr, double* const* g) {
    // Broadcast once, outside the loop: GCC 12 otherwise rebuilds every broadcast on every
    // pack (two shuffles each), which made the shuffle port this loop's bound.
    Pack coefficient[C][R];
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c)
#pragma GCC unroll 8
        for (int k = 0; k < R; ++k) coefficient[c][k] = broadcast(r[k * ldr + c]);
    Index j = 0;
    for (; j + kPack <= d; j += kPack) {
        Pack x[R];
#pragma GCC unroll 8
        for (int k = 0; k < R; ++k) x[k] = load(x0 + k * pitch + j);
#pragma GCC unroll 8
        for (int c = 0; c < C; ++c) {
            Pack t = x[0] * coefficient[c][0];
#pragma GCC unroll 8
            for (int k = 1; k < R; ++k) t += x[k] * coefficient[c][k];
            store(g[c] + j, load(g[c] + j) + t);
        }
    }
    for (; j < d; ++j)
        for (int c = 0; c < C; ++c) {
            double t = 0;
            for (int k = 0; k < R; ++k) t += double(x0[k * pitch + j]) * r[k * ldr + c];
            g[c][j] += t;
        }
}

// g += sum_k r_k x_k over the R rows x0 + k pitch.
template <int R, class Scalar>
METASP_ALWAYS_INLINE void add_rows(const Scalar* x0, Index pitch, Index d, const double* r,
                                   double* g) {
    add_rows_to<R, 1>(x0, pitch, d, r, 1, &g);
}

// z_k = V^T x_k for the R rows x0 + k pitch (z: R x s, row-major) and V (d x s, column-major
// with column pitch ldv): V's columns two at a time (R rows x 2 columns x 4/R packs: 8
// independent chains), an odd last one alone; the block of rows stays in L1 across the pairs.
template <int R, class Scalar>
METASP_ALWAYS_INLINE void project(const Scalar* x0, Index pitch, Index d, const double* V,
                                  Index ldv, Index s, double* z) {
    Index c = 0;
    for (; c + 2 <= s; c += 2) {
        const double* columns[2] = {V + c * ldv, V + (c + 1) * ldv};
        double dot[R][2];
        dots<R, 2, 4 / R>(x0, pitch, d, columns, dot);
        for (int k = 0; k < R; ++k) {
            z[k * s + c] = dot[k][0];
            z[k * s + c + 1] = dot[k][1];
        }
    }
    if (c < s) {
        const double* column = V + c * ldv;
        double dot[R][1];
        dots<R, 1, 8 / R>(x0, pitch, d, &column, dot);
        for (int k = 0; k < R; ++k) z[k * s + c] = dot[k][0];
    }
}

// Each block of a pass over X asks for its own rows' lines this many rows ahead; the tasks'
// rows follow each other in X, so this runs on into the next task's rows at the end of a
// task: the hardware prefetcher alone leaves the short row streams waiting on memory.
constexpr Index kPrefetchRows = 16;

// Calls block(i, R) over the `rows` rows in blocks of R = Max (8 or 4), then one each of the
// smaller powers of two for the rest, so that every block runs with a compile-time R. `block`
// is a class whose templated call operator is METASP_ALWAYS_INLINE (a lambda would be compiled
// for the default target).
template <int Max, class Block>
METASP_ALWAYS_INLINE void for_row_blocks(Index rows, Block& block) {
    static_assert(Max == 8 || Max == 4, "blocks of 8 or 4 rows");
    Index i = 0;
    for (; i + Max <= rows; i += Max) block(i, std::integral_constant<int, Max>());
    if (Max == 8 && i + 4 <= rows) block(i, std::integral_constant<int, 4>()), i += 4;
    if (i + 2 <= rows) block(i, std::integral_constant<int, 2>()), i += 2;
    if (i < rows) block(i, std::integral_constant<int, 1>());
}

}  // namespace rows
}  // namespace metasp
