// Top-s singular triplets of a tall or wide T x d matrix without a full SVD.
#pragma once

#include "metasp/types.hpp"

#include <algorithm>
#include <cstdint>
#include <optional>

namespace metasp {

// Ritz residual tolerance (relative to lambda_1) and step budget of a truncated SVD: within
// ~1e-10 of an exact SVD's iterates inside the solver.
constexpr double kSVDTol = 1e-12;
constexpr int kSVDMaxSteps = 300;

struct SVDOptions {
    // Stop when every top-s Ritz pair satisfies ||A^T A v_i - lambda_i v_i|| <= tol * lambda_1.
    double tol = kSVDTol;
    int max_steps = kSVDMaxSteps;
    // Inside an adaptive-step outer iteration (a fixed step always uses `tol`): also stop once
    // the residual is below relative_tol times the outer iterate's last relative change (see
    // `following`). 0: always `tol`.
    double relative_tol = 0;

    // The options for the next SVD of an outer iteration whose last relative change is
    // `last_change` (none before the first): an SVD far more accurate than the iterate's own
    // movement is wasted work, and as the iteration converges the tolerance tightens down to
    // `tol` by itself.
    SVDOptions following(std::optional<double> last_change) const {
        SVDOptions out = *this;
        if (last_change) out.tol = std::max(tol, relative_tol * *last_change);
        return out;
    }
};

struct TruncatedSVD {
    Matrix V;                // (d, s) top right singular vectors, as columns
    Vector singular_values;  // (s,), descending
    Matrix W;                // (T, s) = A V = U diag(singular_values)
    Matrix basis;            // (d, b) orthonormal Ritz basis: the warm start of the next call
    int n_steps = 0;         // subspace-iteration steps taken
    bool converged = false;
};

// Columns of the search block: s plus oversampling, at most min(T, d).
Index svd_block_size(Index s, Index n_rows, Index n_cols);

// Block subspace iteration with Rayleigh-Ritz on A^T A, started from `warm_start` (d x k,
// any k >= 1; completed with random columns) or, when it is empty, from a random block:
// a randomized range finder. Tiny d (at most twice the block size) takes the exact path, an
// eigensolve of the d x d Gram matrix; so does moderate d (<= 2048) once iterating has cost
// as much as that eigensolve without converging. Deterministic for a given seed, whatever the
// thread count.
TruncatedSVD truncated_svd(const Eigen::Ref<const RowMatrix>& A, Index s,
                           const Eigen::Ref<const Matrix>& warm_start, std::uint64_t seed,
                           int n_threads, const SVDOptions& options = {},
                           const StopRequested& stop_requested = {});

}  // namespace metasp
