// The adjoint linear solve of a circuit's equilibrium (the implicit and frozen rules).
// Derivation: docs/concepts.md, "Learning rules". The Jacobian is the fixed-point solver's
// (sample_system.hpp), in raw coordinates.
#include <Eigen/LU>
#include <algorithm>
#include <cmath>
#include <optional>

#include "eisim/models/error.hpp"
#include "eisim/sim/solver.hpp"
#include "gmres.hpp"
#include "sample_system.hpp"

namespace eisim::sim {

using models::Layer;

namespace {

// M^T a = rhs for a 2 x 2 M by Cramer's rule; returns the exact reciprocal condition number of
// M^T in the 1-norm (what PartialPivLU::rcond() estimates), 0 if M is singular. The pooled
// default circuit's system: no LU, no estimate. M is scaled to its largest entry first, so the
// products cannot overflow or underflow where LU would not (the rcond is scale-free; a
// failed solve is caught by the caller's residual and rcond tests either way).
template <class Mx, class V>
double solve_transposed_2x2(const Mx& M, const V& rhs, V& a) {
  const double big = M.cwiseAbs().maxCoeff();
  // A power of two: exact, so the result is Cramer's rule on M itself wherever that is finite.
  const double s = big > 0.0 && std::isfinite(big) ? std::ldexp(1.0, -std::ilogb(big)) : 1.0;
  const double m00 = s * M(0, 0), m01 = s * M(0, 1), m10 = s * M(1, 0), m11 = s * M(1, 1);
  const double det = m00 * m11 - m01 * m10;
  a.resize(2);
  a(0) = s * (rhs(0) * m11 - m10 * rhs(1)) / det;
  a(1) = s * (m00 * rhs(1) - m01 * rhs(0)) / det;
  const double n1 = std::max(std::abs(m00) + std::abs(m01), std::abs(m10) + std::abs(m11));
  const double ninv = std::max(std::abs(m11) + std::abs(m01), std::abs(m10) + std::abs(m00));
  return det != 0.0 ? std::abs(det) / (n1 * ninv) : 0.0;
}

template <bool Pooled, class S>
void solve_samples(detail::PooledLease* lease, const detail::SampleModel& model,
                   const CircuitInput<S>& in, const CircuitState<S>& z, const Mat<S>& g_v,
                   const AdjointParameters& params, AdjointStats& st, std::vector<Mat<S>>& w) {
  const bool through = params.through_inhibition;
  const Linearisation* saved = params.saved;
  using detail::Md;
  using detail::Vd;
  const int B = int(g_v.cols()), n = model.n, n_E = int(g_v.rows());
  const bool elim = model.st.eliminate_E;
  // E's block among the unknowns when it is not eliminated.
  const int oE = elim ? -1 : model.offset[0];
  std::vector<double> resid(B, 0.0), rcond(B, 1.0);
  std::vector<char> bad(B, 0), factorised(B, 1);  // 0: solved by GMRES
  std::vector<int> vectors(B, 0);
  std::vector<char> low_ranked(B, 0);  // solved by the low-rank formula
  // Every population a leaky unknown and every link uniform (SampleModel::low_rank): the
  // Woodbury identity on the diagonal-plus-low-rank M^T (E is then not eliminated).
  const bool low_rank = !Pooled && through && params.low_rank && model.low_rank && !elim;
  // GMRES for large systems (AdjointParameters::krylov_min_unknowns): a group's samples are
  // consecutive and on one thread (schedule static with chunk `share`), its first always
  // factorised; as in the fixed-point solver, so which LU preconditions which sample does not
  // depend on the team. Otherwise one contiguous block of samples per thread.
  //
  // GMRES only where every unknown has a leak (leaky units; integrating or multiplicative ones
  // with leak > 0): identical units without one make J singular (science.md), and where the LU
  // of such a system fails its tests below, GMRES would solve it (it is consistent) and pass.
  bool leak_everywhere = true;
  for (int p : model.st.core) {
    const auto& pop = model.c->populations[std::size_t(p)];
    leak_everywhere =
        leak_everywhere && (pop.dynamics == models::Dynamics::leaky || pop.leak > 0.0);
  }
  const bool iterative = !Pooled && through && leak_everywhere && params.krylov_min_unknowns > 0 &&
                         n >= params.krylov_min_unknowns;
  const int share = std::max(1, params.krylov_share);
  detail::parallel_region(B >= 128, [&] {
    using Sys = detail::SampleSystem<Pooled>;
    std::optional<Sys> local;
    Sys& sys = [&]() -> Sys& {
      if constexpr (Pooled)
        if (lease) return lease->system(Tolerance{}, local);  // cached where it can be
      return local.emplace(model, Tolerance{});
    }();
    typename Sys::State x;
    // Over the unknowns: fixed capacity when Pooled (no heap allocation per sample).
    typename Sys::SM M;
    typename Sys::SV rhs, a;
    Vd gv;
    Eigen::PartialPivLU<typename Sys::SM> lu;
    typename Sys::SM Mt;  // M^T
    detail::Gmres gmres;
    // The group (j / share) whose sample's M^T `lu` factorises, where that sample's solve
    // passed the tests below; -1 if none. A group's first sample never matches (lu is from an
    // earlier group or none), so it is always factorised, whatever the schedule.
    int prec_group = -1;
    Eigen::PartialPivLU<Md> lue;  // E's own block (frozen rule, E not eliminated)
    Vd ae;
    // The solver's last evaluations, where kept for this circuit (Linearisation).
    const bool restorable = saved && saved->stride > 0 && saved->pooled == Pooled &&
                            saved->stride == sys.saved_size() &&
                            saved->data.size() >= std::size_t(B) * std::size_t(saved->stride);
    const int team = detail::team_size();
    const int chunk = iterative ? share : std::max(1, (B + team - 1) / team);
#pragma omp for schedule(static, chunk)
    for (int j = 0; j < B; ++j) {
      const bool restored =
          restorable &&
          sys.restore(saved->data.data() + std::size_t(j) * std::size_t(saved->stride), z, j);
      if (!restored) {
        sys.load(in, z, j, x);
        sys.evaluate(x);
      }
      gv = g_v.col(j).template cast<double>();
      if constexpr (!Pooled) {
        // Every link uniform (ssn): M^T a = rhs by the Woodbury identity, O(n links); where it
        // misses its residual test, the LU or GMRES below.
        if (low_rank) {
          sys.form_low_rank();
          rhs.setZero(n);
          rhs.segment(oE, n_E) = -gv;
          double s_rcond = 0.0;
          // S near singular (its condition can exceed M's): the LU below decides instead.
          if (sys.low_rank_solve(0.0, rhs, a, true, sys.low_rank_rtol, &s_rcond) &&
              s_rcond > 1e-14) {
            // As for GMRES, ||rhs||_1 / (||M^T||_1 ||a||_1), here with an upper bound of
            // ||M^T||_1 (low_rank_norm1): an estimate, at most the upper bound of M^T's
            // reciprocal condition that the exact norm would give.
            const double an = a.template lpNorm<1>(), bn = rhs.template lpNorm<1>();
            rcond[j] = an > 0.0 ? std::min(1.0, bn / (sys.low_rank_norm1(true) * an)) : 1.0;
            resid[j] = sys.low_rank_residual;
            if (!(rcond[j] > 1e-14)) bad[j] = 1;
            factorised[j] = 0;
            low_ranked[j] = 1;
            for (int p : model.st.core)
              w[p].col(j) = a.segment(model.offset[p], w[p].rows()).template cast<S>();
            continue;
          }
        }
      }
      if (restored && sys.jacobian_restored()) {
        M = sys.J;  // kept by the stability check's blocks, the local terms included
      } else {
        sys.jacobian();
        M = sys.J;
        sys.add_local_terms(M);
      }
      if (!through) {
        // Inhibition held constant: E's own block only (E excites itself here).
        // (E is a core population here, so the circuit is not Pooled: dynamic sizes.)
        const Md ME = M.block(oE, oE, n_E, n_E);
        lue.compute(ME.transpose());
        ae = lue.solve(-gv);
        rcond[j] = lue.rcond();
        resid[j] = (ME.transpose() * ae + gv).norm() / std::max(gv.norm(), 1e-300);
        if (!ae.allFinite() || !(rcond[j] > 1e-14) || !(resid[j] < 1e-6)) bad[j] = 1;
        w[0].col(j) = ae.cast<S>();
        continue;
      }
      if (elim) {
        sys.At_times(gv, rhs);
        rhs = -rhs;
      } else {
        rhs.setZero(n);
        rhs.segment(oE, n_E) = -gv;
      }
      // A clamped integrator unit is a constant: identity row and column, zero cotangent.
      for (int i = 0; i < n; ++i)
        if (sys.clamped[i]) {
          M.row(i).setZero();
          M.col(i).setZero();
          M(i, i) = 1.0;
          rhs(i) = 0.0;
        }
      bool factorised_now = false;
      if (Pooled && n == 2) {
        rcond[j] = solve_transposed_2x2(M, rhs, a);
      } else {
        Mt = M.transpose();
        bool done = false;
        if constexpr (!Pooled) {
          if (iterative && prec_group == j / share) {
            const auto op = [&](const Vd& v, Vd& out) { out.noalias() = Mt * v; };
            const auto prec = [&](const auto& v, Vd& out) { out = lu.solve(v); };
            done = gmres.solve(op, prec, rhs, a, params.krylov_rtol, params.krylov_max);
            vectors[j] = gmres.iterations;
            factorised[j] = !done;
            // ||M^-T||_1 >= ||a||_1 / ||rhs||_1, so ||rhs||_1 / (||M^T||_1 ||a||_1) bounds
            // M^T's reciprocal condition from above: a sample it flags is near-singular for
            // certain (GMRES itself solves a consistent singular system without complaint).
            if (done) {
              const double an = a.template lpNorm<1>(), bn = rhs.template lpNorm<1>();
              const double mn = Mt.cwiseAbs().colwise().sum().maxCoeff();
              rcond[j] = an > 0.0 ? std::min(1.0, bn / (mn * an)) : 1.0;
            }
          }
        }
        if (!done) {
          lu.compute(Mt);
          a = lu.solve(rhs);
          rcond[j] = lu.rcond();
          factorised_now = true;
        }
      }
      const double rn = rhs.norm();
      resid[j] = (M.transpose() * a - rhs).norm() / (rn > 0 ? rn : 1.0);
      if (!a.allFinite() || !(rcond[j] > 1e-14) || !(resid[j] < 1e-6)) bad[j] = 1;
      // A factorisation whose own solve failed (a singular J: identical integrating
      // interneurons, science.md) preconditions nothing: the group's later samples are
      // factorised too and fail the same tests, where GMRES would solve a consistent singular
      // system and pass.
      if (factorised_now) prec_group = bad[j] ? -1 : j / share;
      for (int p : model.st.core)
        w[p].col(j) = a.segment(model.offset[p], w[p].rows()).template cast<S>();
      if (elim) {
        sys.add_Ct_times(a, gv);  // w_E = g_v + C^T a
        w[0].col(j) = gv.template cast<S>();
      }
    }
  });
  for (int j = 0; j < B; ++j) {
    ++st.solves;
    if (bad[j]) ++st.failed;
    st.factorisations += factorised[j];
    st.krylov_vectors += vectors[j];
    st.low_rank_solves += low_ranked[j];
    if (!(resid[j] <= st.worst_residual)) st.worst_residual = resid[j];
    st.worst_rcond = std::min(st.worst_rcond, rcond[j]);
  }
  if (st.failed > 0) st.status = SolverStatus::non_finite;
}

}  // namespace

template <class S>
AdjointStats solve_adjoint(const Layer<S>& layer, const CircuitInput<S>& in,
                           const CircuitState<S>& z, const CircuitTerms<S>& t, const Mat<S>& g_v,
                           const AdjointParameters& params, std::vector<Mat<S>>& w) {
  if (layer.spec.kind != models::LayerKind::circuit)
    throw internal_error("solve_adjoint called on a layer that is not a circuit");
  const auto& pops = layer.spec.circuit.populations;
  const int B = int(g_v.cols());
  AdjointStats st;
  if (!params.through_inhibition) {
    const models::CircuitStructure cs = models::analyse(layer.spec.circuit);
    if (std::find(cs.core.begin(), cs.core.end(), 0) == cs.core.end()) {
      // Inhibition held constant and E without recurrent input: dF_E/dv = -1, no solve (and
      // no model in double).
      w.resize(pops.size());
      w[0] = g_v;
      for (std::size_t p = 1; p < pops.size(); ++p) w[p].setZero(pops[p].size, B);
      return st;
    }
  }
  detail::PooledLease lease(layer);
  const detail::SampleModel& model = lease.model();
  const bool e_explicit = model.st.is_explicit(0);
  // E's cotangent, and the core populations' through the inhibition, are written for every
  // sample below; the others start at 0.
  const bool solved = !e_explicit && model.n > 0 && params.through_inhibition;
  w.resize(pops.size());
  for (std::size_t p = 0; p < pops.size(); ++p) {
    if (p == 0 || (solved && model.offset[p] >= 0))
      w[p].resize(pops[p].size, B);
    else
      w[p].setZero(pops[p].size, B);
  }
  if (e_explicit || (model.n == 0)) {
    w[0] = g_v;  // F_E = -v + rest + q / g with every source fixed: dF/dv = -1
  } else if (model.pooled && params.pooled_fast_path) {
    solve_samples<true>(&lease, model, in, z, g_v, params, st, w);
  } else {
    solve_samples<false>(nullptr, model, in, z, g_v, params, st, w);
  }
  if (!params.through_inhibition || model.st.explicit_order.empty()) return st;
  // Explicit populations (leaky, dF/dv = -1): w_x is what the populations they drive send back,
  // collected in reverse dependency order.
  std::vector<Mat<S>> dz(pops.size());
  vjp(layer, in, t, w, static_cast<models::LayerWeights<S>*>(nullptr), &dz,
      static_cast<std::vector<Mat<S>>*>(nullptr), static_cast<Mat<S>*>(nullptr));
  std::vector<Mat<S>> only(pops.size());
  for (auto it = model.st.explicit_order.rbegin(); it != model.st.explicit_order.rend(); ++it) {
    const int x = *it;
    if (x == 0) continue;
    if (dz[x].size() == 0) continue;  // drives nothing that matters
    w[x] = dz[x];
    for (auto& m : only) m.resize(0, 0);
    only[x] = w[x];
    std::vector<Mat<S>> more(pops.size());
    vjp(layer, in, t, only, static_cast<models::LayerWeights<S>*>(nullptr), &more,
        static_cast<std::vector<Mat<S>>*>(nullptr), static_cast<Mat<S>*>(nullptr));
    for (std::size_t p = 0; p < pops.size(); ++p)
      if (more[p].size() > 0 && int(p) != x) {
        if (dz[p].size() == 0)
          dz[p] = more[p];
        else
          dz[p] += more[p];
      }
  }
  return st;
}

template AdjointStats solve_adjoint<float>(const Layer<float>&, const CircuitInput<float>&,
                                           const CircuitState<float>&, const CircuitTerms<float>&,
                                           const Mat<float>&, const AdjointParameters&,
                                           std::vector<Mat<float>>&);
template AdjointStats solve_adjoint<double>(const Layer<double>&, const CircuitInput<double>&,
                                            const CircuitState<double>&,
                                            const CircuitTerms<double>&, const Mat<double>&,
                                            const AdjointParameters&, std::vector<Mat<double>>&);

}  // namespace eisim::sim
