#include "metasp/task_gram.hpp"

#include "metasp/parallel.hpp"
#include "metasp/row_kernels.hpp"
#include "metasp/small_cholesky.hpp"

namespace metasp {
namespace {

using rows::kPrefetchRows;

// Z = X V (rows x s, row-major) for the `rows` rows starting at X (row pitch `pitch`) and V
// (d x s, column-major with column pitch ldv), in blocks of up to 4 rows (rows::project),
// asking for the lines kPrefetchRows rows ahead: this is a first pass over X_t.
template <class Scalar>
struct ProjectRows {
    const Scalar* X;
    Index pitch, d;
    const double* V;
    Index ldv, s;
    double* Z;

    template <int R>
    METASP_ALWAYS_INLINE void operator()(Index i, std::integral_constant<int, R>) {
        prefetch_rows(X + (i + kPrefetchRows) * pitch, R * pitch);
        rows::project<R>(X + i * pitch, pitch, d, V, ldv, s, Z + i * s);
    }
};

template <class Scalar>
METASP_CPU_DISPATCH void project_rows(const Scalar* X, Index pitch, Index rows, Index d,
                                      const double* V, Index ldv, Index s, double* Z) {
    ProjectRows<Scalar> block{X, pitch, d, V, ldv, s, Z};
    rows::for_row_blocks<4>(rows, block);
}

}  // namespace

bool well_conditioned_cholesky(const double* A, Index s, double max_condition, double* L,
                               double* L_inv) {
    if (!cholesky(A, s, L)) return false;
    lower_inverse(L, s, L_inv);
    double trace = 0, inverse_norm = 0;
    for (Index i = 0; i < s; ++i) {
        trace += A[i * s + i];
        for (Index j = 0; j <= i; ++j) inverse_norm += L_inv[i * s + j] * L_inv[i * s + j];
    }
    return trace * inverse_norm < max_condition;
}

METASP_CPU_DISPATCH
void scaled_gram(const double* Z, Index m, Index s, double scale, const double* y, double* G,
                 double* b, double* Zt) {
    for (Index i = 0; i < m; ++i)
        for (Index a = 0; a < s; ++a) Zt[a * m + i] = Z[i * s + a];
    for (Index a = 0; a < s; ++a) {
        const double* za = Zt + a * m;
        for (Index c = 0; c <= a; ++c) {
            const double* zc = Zt + c * m;
            double dot[1][1];
            rows::dots<1, 1, 2>(za, m, m, &zc, dot);
            G[a * s + c] = G[c * s + a] = scale * dot[0][0];
        }
        if (y != nullptr) {
            double dot[1][1];
            rows::dots<1, 1, 2>(za, m, m, &y, dot);
            b[a] = dot[0][0];
        }
    }
}

void project_task_rows(const TasksView& tasks, Index t, const double* V, Index ldv, Index s,
                       double* Z) {
    const Index m = tasks.size(t), begin = tasks.begin(t), d = tasks.n_features();
    const Index pitch = tasks.X.pitch();
    tasks.X.visit(
        [&](const auto* X) { project_rows(X + begin * pitch, pitch, m, d, V, ldv, s, Z); });
}

}  // namespace metasp
