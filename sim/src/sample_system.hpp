#pragma once
// One sample of a circuit as Newton's method and the adjoint solve see it (private to sim/).
//
// The populations whose equilibrium is explicit (driven only by the input) are constants here;
// the E potentials are eliminated exactly when E has no recurrent input (v = rest + q / g);
// the unknowns are the remaining ("core") populations' states. Every F and partial derivative
// comes from population_terms / population_rate / projection_signal (sim/circuit.hpp), the one
// definition of the equations. Multiplicative populations are solved in u = log r with the
// residual log(gain q + leak / r) - log(gain setpoint + leak): the same positive roots as F,
// no spurious root at r = 0, nearly linear in u for the homeostatic divisive unit.
//
// `Pooled` is the compile-time specialisation for core populations of one unit each (the default
// circuit): every projection between E and the core is then a vector, and its products are
// dot products and scaled copies instead of general matrix-vector products. Same source, the
// same iterates to rounding (sums over E are added in another order; tests/sim/
// fixed_point_test.cpp checks both instantiations against each other to 1e-12).
#include <Eigen/LU>
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <numeric>
#include <optional>
#include <utility>
#include <vector>

#include "eisim/models/error.hpp"
#include "eisim/sim/circuit.hpp"
#include "eisim/sim/solver.hpp"
#include "gmres.hpp"
#include "spectrum.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace eisim::sim::detail {

using Md = Eigen::MatrixXd;
using Vd = Eigen::VectorXd;
constexpr double kTinyRate = 1e-300;

/// Pooled circuits with at most this many unknowns keep their Jacobian, residual and LU in
/// fixed-capacity storage (no heap allocation per sample); larger ones take the dynamic path.
constexpr int kMaxPooled = 8;

/// The matrices and vectors over the unknowns: dynamic, or of capacity kMaxPooled when Pooled.
template <bool Pooled>
struct Small {
  using M = Md;
  using V = Vd;
};
template <>
struct Small<true> {
  using M = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, 0, kMaxPooled, kMaxPooled>;
  using V = Eigen::Matrix<double, Eigen::Dynamic, 1, 0, kMaxPooled, 1>;
};

/// The circuit's structure and weights in double, shared read-only by every thread.
struct SampleModel {
  const models::LayerSpec* spec = nullptr;
  const models::CircuitSpec* c = nullptr;
  models::CircuitStructure st;
  std::vector<Md> W;  ///< per projection from a population (empty for input projections)
  /// Projections with one row or one column, as contiguous vectors (the pooled kernels).
  std::vector<Vd> Wv;
  std::vector<int> offset;    ///< per population: offset among the unknowns, -1 if not core
  std::vector<int> links;     ///< projections between dynamic populations (core or eliminated E)
  std::vector<int> fixed_in;  ///< projections from explicit populations into dynamic ones
  std::vector<std::vector<int>> links_into;  ///< per population: its incoming `links`
  /// Per multiplicative population: log(gain setpoint + leak), the constant of its Newton
  /// residual log(h) - log(c) (evaluated once here, not per evaluation).
  std::vector<double> log_c;
  int n = 0;            ///< unknowns
  bool pooled = false;  ///< every core population has one unit, E is eliminated, n <= kMaxPooled
  std::vector<char> rate_used;  ///< per population: some projection carries its rate
  /// Pooled and E eliminated with exactly one subtractive and at most one divisive link: E is
  /// computed in fused passes (e_sub, e_div: those links, -1 if none; one pass where
  /// n_e_out >= 0, below).
  bool e_fused = false;
  int e_sub = -1, e_div = -1;
  /// e_fused with a divisive link: the links from E into core populations whose drives E's
  /// one pass sums (e_out[0 .. n_e_out)); n_e_out = -1 where they are not fused.
  int e_out[2] = {-1, -1};
  int n_e_out = -1;
  /// Per projection from a population: every weight the same (a `pooled` projection), and that
  /// weight (set with the weights, refresh()).
  std::vector<char> uniform;
  std::vector<double> w_uniform;
  /// Low-rank steps (docs/numerics.md, "Low-rank steps"): every population a leaky Newton
  /// unknown (E not eliminated: ssn) and at most kMaxLowRank links between them, all uniform.
  /// A uniform link's Jacobian block coef(i) w ds(j) is of rank one, so Newton's Jacobian is
  /// its diagonal plus a matrix of rank at most links.size(): Newton steps, the stability
  /// check and the adjoint solve take O(n links) instead of an n x n LU or eigensolve.
  /// `low_rank_shape`: the structure allows it; `low_rank`: the weights too (refresh()).
  bool low_rank_shape = false, low_rank = false;
  static constexpr int kMaxLowRank = 16;
  /// Low-rank steps: links with the same source and signal share their signal derivative, the
  /// V column of their rank-one blocks, and are merged into one column (U's columns summed):
  /// per link of `links` its column, and per column its source population.
  std::vector<int> lr_column, lr_source;
  /// E eliminated: the columns of A = dv_E / dz that can be nonzero, as (first, count) runs of
  /// the unknowns: the core populations with a link into E (pv_sst_vip's VIP has none). C A is
  /// formed over these columns only (the others are 0).
  std::vector<std::pair<int, int>> e_source_cols;

  bool dynamic(int p) const { return offset[p] >= 0 || (p == 0 && st.eliminate_E); }

  /// uniform, w_uniform and low_rank from the weights W.
  void find_uniform() {
    uniform.assign(W.size(), 0);
    w_uniform.assign(W.size(), 0.0);
    for (std::size_t k = 0; k < W.size(); ++k)
      if (W[k].size() > 0) {
        w_uniform[k] = W[k](0, 0);
        uniform[k] = (W[k].array() == w_uniform[k]).all() && std::isfinite(w_uniform[k]);
      }
    low_rank = low_rank_shape;
    for (int k : links) low_rank = low_rank && uniform[std::size_t(k)];
  }

  /// The weights of `layer` (whose circuit and weight indices equal this model's) cast afresh;
  /// the structure stays.
  template <class S>
  void refresh(const models::Layer<S>& layer) {
    for (std::size_t k = 0; k < c->projections.size(); ++k) {
      if (c->projections[k].src < 0) continue;
      W[k] = layer.w.at(spec->projection_weight[k]).template cast<double>();
      if (W[k].rows() == 1) Wv[k] = W[k].row(0).transpose();
      if (W[k].cols() == 1) Wv[k] = W[k].col(0);
    }
    find_uniform();
  }

  template <class S>
  explicit SampleModel(const models::Layer<S>& layer)
      : spec(&layer.spec), c(&layer.spec.circuit), st(models::analyse(layer.spec.circuit)) {
    const auto& pops = c->populations;
    offset.assign(pops.size(), -1);
    for (int p : st.core) {
      offset[p] = n;
      n += pops[p].size;
    }
    W.resize(c->projections.size());
    Wv.resize(c->projections.size());
    for (std::size_t k = 0; k < c->projections.size(); ++k) {
      const auto& pr = c->projections[k];
      if (pr.src < 0) continue;
      W[k] = layer.w.at(spec->projection_weight[k]).template cast<double>();
      if (W[k].rows() == 1) Wv[k] = W[k].row(0).transpose();
      if (W[k].cols() == 1) Wv[k] = W[k].col(0);
      if (dynamic(pr.tgt)) (dynamic(pr.src) ? links : fixed_in).push_back(int(k));
    }
    links_into.resize(pops.size());
    for (int k : links) links_into[c->projections[k].tgt].push_back(k);
    log_c.assign(pops.size(), 0.0);
    for (std::size_t p = 0; p < pops.size(); ++p)
      if (pops[p].dynamics == models::Dynamics::multiplicative)
        log_c[p] = std::log(pops[p].gain * pops[p].setpoint + pops[p].leak);
    rate_used.assign(pops.size(), 0);
    for (const auto& pr : c->projections)
      if (pr.src >= 0 && pr.signal == models::Signal::rate) rate_used[pr.src] = 1;
    pooled = st.eliminate_E && !st.core.empty() && n <= kMaxPooled;
    for (int p : st.core) pooled = pooled && pops[p].size == 1;
    int n_sub = 0, n_div = 0;
    for (int k : links)
      if (c->projections[k].tgt == 0) {
        if (c->projections[k].action == models::Action::subtractive) {
          e_sub = k;
          ++n_sub;
        } else {
          e_div = k;
          ++n_div;
        }
      }
    e_fused = pooled && n_sub == 1 && n_div <= 1;
    if (!e_fused) e_sub = e_div = -1;
    // With a divisive link too, E's drives of the core populations join E's pass when they are
    // at most two and carry E's potential or its square (the default circuit).
    if (e_fused && e_div >= 0) {
      bool ok = true;
      n_e_out = 0;
      for (int k : links)
        if (c->projections[k].src == 0) {
          const auto sig = c->projections[k].signal;
          ok = ok && n_e_out < 2 &&
               (sig == models::Signal::potential || sig == models::Signal::squared_potential);
          if (ok) e_out[n_e_out++] = k;
        }
      if (!ok) n_e_out = -1;
    }
    for (int p : st.core) {
      const auto& into_E = links_into[0];
      if (std::none_of(into_E.begin(), into_E.end(),
                       [&](int k) { return c->projections[k].src == p; }))
        continue;
      if (!e_source_cols.empty() &&
          e_source_cols.back().first + e_source_cols.back().second == offset[p])
        e_source_cols.back().second += pops[p].size;
      else
        e_source_cols.emplace_back(offset[p], pops[p].size);
    }
    low_rank_shape = !st.eliminate_E && st.explicit_order.empty() &&
                     st.core.size() == pops.size() && !links.empty() &&
                     links.size() <= std::size_t(kMaxLowRank);
    for (const auto& pop : pops)
      low_rank_shape = low_rank_shape && pop.dynamics == models::Dynamics::leaky;
    for (int k : links) {
      const auto& pr = c->projections[std::size_t(k)];
      int col = -1;
      for (std::size_t b = 0; b < lr_column.size() && col < 0; ++b) {
        const auto& pb = c->projections[std::size_t(links[b])];
        if (pb.src == pr.src && pb.signal == pr.signal) col = lr_column[b];
      }
      if (col < 0) {
        col = int(lr_source.size());
        lr_source.push_back(pr.src);
      }
      lr_column.push_back(col);
    }
    find_uniform();
  }
};

/// out += sign * W s for projection k, with the product kernel chosen at compile time for pooled
/// circuits (a dot product or a scaled copy of a contiguous vector).
template <bool Pooled>
inline void accumulate(const SampleModel& m, int k, const Vd& s, double sign, Vd& out) {
  const Md& W = m.W[k];
  if (!Pooled && m.uniform[std::size_t(k)] && W.rows() > 1 && W.cols() > 1) {
    // Every weight w: W s = w sum(s) on every row (O(n), not a dense product).
    out.array() += sign * m.w_uniform[std::size_t(k)] * s.sum();
    return;
  }
  if constexpr (Pooled) {
    if (W.rows() == 1) {
      out(0) += sign * m.Wv[k].dot(s);
      return;
    }
    if (W.cols() == 1) {
      out += (sign * s(0)) * m.Wv[k];
      return;
    }
  }
  if (sign > 0)
    out.noalias() += W * s;
  else
    out.noalias() -= W * s;
}

template <bool Pooled>
class SampleSystem {
 public:
  using SM = typename Small<Pooled>::M;  ///< a matrix over the unknowns
  using SV = typename Small<Pooled>::V;  ///< a vector over the unknowns
  static constexpr bool pooled_instance = Pooled;
  const SampleModel& m;
  Tolerance tol;  ///< set per call (a cached system serves several calls)
  // Per population (index as in the circuit): state, rate, drive, conductance, F, partials.
  std::vector<Vd> z, r, dr, q, g, F, dF_dz, dF_dq, dF_dg, q0, g0;
  std::vector<char> has_g;
  std::vector<Vd> s, ds;      // per projection from a population: signal and derivative
  SV G;                       // Newton residual over the unknowns
  SM J;                       // Jacobian of F over the unknowns (raw coordinates), see jacobian()
  SM CA;                      // jacobian(.., split = true): the part C A that E mediates
  Md A, C;                    // E eliminated, not Pooled: dv_E / dz_core and dF_core / dv_E
  std::vector<char> clamped;  // per unknown: integrator unit held at 0
  std::vector<char> degenerate_unit;  // per unknown: multiplicative unit with h <= floor
  bool degenerate = false, finite = true;

  SampleSystem(const SampleModel& model, const Tolerance& t) : m(model), tol(t) {
    const auto& pops = m.c->populations;
    const std::size_t P = pops.size();
    for (auto* v : {&z, &r, &dr, &q, &g, &F, &dF_dz, &dF_dq, &dF_dg, &q0, &g0}) v->resize(P);
    has_g.assign(P, 0);
    for (const auto& pr : m.c->projections)
      if (pr.action == models::Action::divisive) has_g[pr.tgt] = 1;
    for (std::size_t p = 0; p < P; ++p) {
      const int n = pops[p].size;
      for (auto* v : {&z, &r, &dr, &q, &g, &F, &dF_dz, &dF_dq, &dF_dg, &q0, &g0})
        (*v)[p].setZero(n);
    }
    // A conductance without divisive input from explicit populations is the baseline for every
    // sample: set once here, not in load().
    g0_per_sample_.assign(P, 0);
    for (int k : m.fixed_in)
      if (m.c->projections[k].action == models::Action::divisive)
        g0_per_sample_[m.c->projections[k].tgt] = 1;
    for (std::size_t p = 0; p < P; ++p)
      if (has_g[p]) g0[p].setConstant(pops[p].conductance);
    s.resize(m.c->projections.size());
    ds.resize(m.c->projections.size());
    for (std::size_t k = 0; k < s.size(); ++k)
      if (m.c->projections[k].src >= 0) {
        s[k].setZero(pops[m.c->projections[k].src].size);
        ds[k].setZero(pops[m.c->projections[k].src].size);
      }
    G.resize(m.n);
    J.resize(m.n, m.n);
    ks_.resize(P);
    kt_.resize(P);
    coef_.resize(P);
    for (std::size_t p = 0; p < P; ++p) {
      ks_[p].setZero(pops[p].size);
      kt_[p].setZero(pops[p].size);
      coef_[p].setZero(pops[p].size);
    }
    if (m.st.eliminate_E && !Pooled) {
      A.resize(pops[0].size, m.n);
      C.resize(m.n, pops[0].size);
    }
    clamped.assign(m.n, 0);
    degenerate_unit.assign(m.n, 0);
    for (int p : m.st.core)
      if (pops[p].dynamics == models::Dynamics::integrator)
        for (int i = 0; i < pops[p].size; ++i) block_idx_.push_back(m.offset[p] + i);
    in_block_.assign(m.n, 0);
    for (int i : block_idx_) in_block_[i] = 1;
  }

  /// Unknowns of a state (u = log r for multiplicative populations).
  struct State {
    SV u;
  };

  /// Sample j of the batch: the constants (external drives and explicit populations) and the
  /// current state of the core populations as the unknowns.
  template <class S>
  void load(const CircuitInput<S>& in, const CircuitState<S>& zs, int j, State& x) {
    const auto& pops = m.c->populations;
    // A new sample: the lagged LU belongs to another, which the caller may let it precondition
    // this sample's steps too (FixedPointParameters::krylov_share).
    if (!carry_preconditioner) prec_valid_ = false;
    for (std::size_t p = 0; p < pops.size(); ++p) {
      if (in.ext[p].size() > 0)
        q0[p] = in.ext[p].col(j).template cast<double>();
      else
        q0[p].setZero();
      if (g0_per_sample_[p]) g0[p].setConstant(pops[p].conductance);
      if (!m.dynamic(int(p))) {
        z[p] = zs.z[p].col(j).template cast<double>();
        population_rate(pops[p], z[p], r[p], &dr[p]);
      }
    }
    for (int k : m.fixed_in) {
      const auto& pr = m.c->projections[k];
      projection_signal(pr, z[pr.src], r[pr.src], dr[pr.src], s[k], static_cast<Vd*>(nullptr));
      if (pr.action == models::Action::subtractive)
        accumulate<false>(m, k, s[k], models::source_sign(pr), q0[pr.tgt]);
      else
        accumulate<false>(m, k, s[k], 1.0, g0[pr.tgt]);
    }
    x.u.resize(m.n);
    for (int p : m.st.core) {
      const auto col = zs.z[p].col(j).template cast<double>();
      auto u = x.u.segment(m.offset[p], pops[p].size);
      switch (pops[p].dynamics) {
        case models::Dynamics::multiplicative:
          u = col.cwiseMax(kTinyRate).array().log().matrix();
          break;
        case models::Dynamics::integrator:
          u = col.cwiseMax(0.0);
          break;
        case models::Dynamics::leaky:
          u = col;
          break;
      }
    }
  }

  template <class S>
  void store(const State& x, int j, CircuitState<S>& zs) {
    set_state(x);
    for (std::size_t p = 0; p < z.size(); ++p)
      if (m.dynamic(int(p))) zs.z[p].col(j) = z[p].template cast<S>();
  }

  bool drive_finite() const {
    for (const auto& v : q0)
      if (!all_finite(v)) return false;
    return true;
  }

  /// Evaluate every dynamic population at the unknowns u: F, partials and the Newton residual.
  void evaluate(const State& x) {
    const auto& pops = m.c->populations;
    pairs_valid_ = false;
    set_state(x);
    for (int p : m.st.core) {
      if constexpr (Pooled) {
        // One unit: the same function on fixed-size 1 x 1 views compiles to scalar code.
        One rr = one(r[p]), drr = one(dr[p]);
        population_rate(pops[p], one(z[p]), rr, &drr);
      } else {
        population_rate(pops[p], z[p], r[p], &dr[p]);
      }
    }
    signals_from_core();
    if (m.st.eliminate_E) {
      // v = rest + q / g exactly.
      if (Pooled && m.e_fused) {
        // One subtractive and at most one divisive link into E, each a vector (the default
        // circuit): 1/g and v in fused passes (one, e_pass, with the drives E sends to the
        // core where n_e_out >= 0); q and g are not materialised.
        const auto& E = pops[0];
        const int ks = m.e_sub, kd = m.e_div;
        // The links' signals (s) come from signals_from_core(); g0 holds the baseline and any
        // divisive input from explicit populations.
        const double a = models::source_sign(m.c->projections[ks]) * s[ks](0);
        if (m.n_e_out >= 0) {
          e_pass(a, s[kd](0));
        } else {
          if (kd >= 0)
            dF_dq[0] = (g0[0] + m.Wv[kd] * s[kd](0)).cwiseInverse();
          else if (has_g[0])
            dF_dq[0] = g0[0].cwiseInverse();
          else
            dF_dq[0].setConstant(1.0 / E.conductance);
          z[0] = (E.rest + (q0[0] + a * m.Wv[ks]).array() * dF_dq[0].array()).matrix();
        }
      } else {
        drives(0);
        if (has_g[0])
          z[0] = (pops[0].rest + q[0].array() / g[0].array()).matrix();
        else
          z[0] = (pops[0].rest + q[0].array() / pops[0].conductance).matrix();
      }
      if (m.rate_used[0]) population_rate(pops[0], z[0], r[0], &dr[0]);
      if (!Pooled)
        for (int k : m.links)
          if (m.c->projections[k].src == 0) signal(k);
    }
    // Pooled with E eliminated: a non-finite potential makes the drives of the core
    // populations non-finite (checked below through F), so E needs no pass of its own.
    finite = (Pooled && m.st.eliminate_E) || all_finite(z[0]);
    degenerate = false;
    for (int p : m.st.core) {
      drives(p);
      if constexpr (Pooled) {
        One F1 = one(F[p]), dz1 = one(dF_dz[p]), dq1 = one(dF_dq[p]), dg1 = one(dF_dg[p]);
        if (has_g[p]) {
          const One g1 = one(g[p]);
          population_terms(pops[p], one(z[p]), one(q[p]), &g1, F1, dz1, dq1, &dg1);
        } else {
          population_terms(pops[p], one(z[p]), one(q[p]), static_cast<const One*>(nullptr), F1, dz1,
                           dq1, &dg1);
        }
      } else {
        population_terms(pops[p], z[p], q[p], has_g[p] ? &g[p] : static_cast<Vd*>(nullptr), F[p],
                         dF_dz[p], dF_dq[p], &dF_dg[p]);
      }
      auto Gp = G.segment(m.offset[p], pops[p].size);
      if (pops[p].dynamics == models::Dynamics::multiplicative) {
        const auto& P = pops[p];
        const double c = P.gain * P.setpoint + P.leak, floor = 1e-30 * c;
        for (int i = 0; i < P.size; ++i) {
          const double h = P.gain * q[p](i) + P.leak / r[p](i);
          degenerate_unit[m.offset[p] + i] = !(h > floor);
          degenerate = degenerate || !(h > floor);
          Gp(i) = std::log(std::max(h, floor)) - m.log_c[p];
        }
      } else {
        Gp = F[p];
        if (pops[p].dynamics == models::Dynamics::integrator)
          for (int i = 0; i < pops[p].size; ++i)
            clamped[m.offset[p] + i] = z[p](i) <= 0.0 && dF_dq[p](i) == 0.0;
      }
      finite = finite && all_finite(F[p]);
    }
  }

  /// Worst |F| over the dynamic populations and the scaled residual (<= 1: converged). With E
  /// eliminated its F is 0 by construction.
  std::pair<double, double> ode_residual() const {
    double res = 0, sc = 0;
    for (int p : m.st.core)
      for (int i = 0; i < F[p].size(); ++i) {
        const double a = std::abs(F[p](i));
        res = std::max(res, a);
        sc = std::max(sc, a / (tol.abs_tol + tol.rel_tol * std::abs(z[p](i))));
      }
    if (!std::isfinite(res) || !finite)
      return {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::quiet_NaN()};
    return {res, sc};
  }

  /// J = dF/dz over the unknowns in raw coordinates (z, not log r), at the last evaluation,
  /// without the populations' local terms dF_dz (added by callers: Newton and the adjoint use
  /// them differently). With E eliminated J includes C A; not Pooled, A = dv_E/dz and
  /// C = dF/dv_E are formed for it, except in a Krylov step (form_ca_ false: J holds the direct
  /// links only and A, C stay as they were; apply_A and apply_C act without them).
  /// `block_only` (Pooled): only the entries among the integrator populations (block_start);
  /// the others are left 0. `split` (E eliminated): C A goes to CA instead of into J, which
  /// then holds the direct links only (the stability check's blocks).
  void jacobian(bool block_only = false, bool split = false) {
    if (m.st.eliminate_E) e_partials();
    J.setZero();
    if (split) CA.setZero(m.n, m.n);
    SM& JE = split ? CA : J;  // where C A goes
    if (Pooled) {
      // One unit per core population: J += C A as one fused sum over E per pair of links
      // (population <- E, E <- population); A and C are never formed (see At_times, add_Ct_times).
      const auto wanted = [&](int row, int col) {
        return !block_only || (in_block_[row] && in_block_[col]);
      };
      for (int k : m.links) {
        const auto& pr = m.c->projections[k];
        if (pr.tgt != 0 && pr.src != 0 && wanted(m.offset[pr.tgt], m.offset[pr.src]))
          J(m.offset[pr.tgt], m.offset[pr.src]) += coefficient(pr)(0) * m.W[k](0, 0) * ds[k](0);
      }
      for (int kp : m.links) {
        const auto& pp = m.c->projections[kp];
        if (pp.src != 0) continue;  // population <- E
        if (block_only && !in_block_[m.offset[pp.tgt]]) continue;
        const double cp = coefficient(pp)(0);
        if (m.e_fused && m.e_div >= 0) {
          // E's two links (the default circuit): both sums in one pass over E.
          const auto& ps = m.c->projections[m.e_sub];
          const auto& pd = m.c->projections[m.e_div];
          const int t = m.offset[pp.tgt];
          const bool ws = wanted(t, m.offset[ps.src]), wd = wanted(t, m.offset[pd.src]);
          if (ws || wd) {
            // Summed in E's pass at this evaluation (e_pass) where it ran, else a pass here.
            const auto [sub, div] =
                pairs_valid_ ? e_pass_pairs_[kp == m.e_out[0] ? 0 : 1] : e_pair_sums(pp, kp);
            if (ws) JE(t, m.offset[ps.src]) += cp * ds[m.e_sub](0) * models::source_sign(ps) * sub;
            if (wd) JE(t, m.offset[pd.src]) += cp * ds[m.e_div](0) * div;
          }
          continue;
        }
        for (int kq : m.links) {
          const auto& pq = m.c->projections[kq];
          if (pq.tgt != 0) continue;  // E <- population
          if (!wanted(m.offset[pp.tgt], m.offset[pq.src])) continue;
          JE(m.offset[pp.tgt], m.offset[pq.src]) += cp * ds[kq](0) * e_pair_sum(pp, kp, pq, kq);
        }
      }
      return;
    }
    // A and C only where C A is formed here; the Krylov operator applies them link by link
    // (apply_A, apply_C), and add_ca() forms them when it needs them.
    if (m.st.eliminate_E && form_ca_) form_ac();
    for (int k : m.links) {
      const auto& pr = m.c->projections[k];
      if (m.st.eliminate_E && (pr.tgt == 0 || pr.src == 0)) continue;  // A or C
      const Vd& coef = coefficient(pr);
      J.block(m.offset[pr.tgt], m.offset[pr.src], coef.size(), ds[k].size()).array() +=
          link_block(k, coef);
    }
    if (!m.st.eliminate_E || !form_ca_) return;
    if (block_only) {
      // block_start reads the integrator block only: C A there, not the whole product.
      const Md block = C(block_idx_, Eigen::all) * A(Eigen::all, block_idx_);
      JE(block_idx_, block_idx_) += block;
      return;
    }
    add_C_times_A(JE);
  }

  /// out += C A over the columns where A can be nonzero (SampleModel::e_source_cols).
  void add_C_times_A(SM& out) const {
    for (const auto& [first, count] : m.e_source_cols)
      out.middleCols(first, count).noalias() += C * A.middleCols(first, count);
  }

  // E eliminated: the partials of E's F at the current point.
  void e_partials() {
    const auto& E = m.c->populations[0];
    if (Pooled && m.e_fused) {
      // dF_dq = 1 / g is already there; dF_dg = -(v - rest) / g is folded into the sums.
    } else if (has_g[0]) {
      dF_dq[0] = g[0].cwiseInverse();
      dF_dg[0] = (-(z[0].array() - E.rest) / g[0].array()).matrix();
    } else {
      dF_dq[0].setConstant(1.0 / E.conductance);
    }
  }

  // Link k's block of the Jacobian: coef(i) W(i, j) ds(j) (target coefficient, source
  // signal derivative).
  auto link_block(int k, const Vd& coef) const {
    return (m.W[k].array().colwise() * coef.array()).rowwise() * ds[k].transpose().array();
  }

  // E eliminated, not Pooled: A = dv_E / dz_core and C = dF_core / dv_E at the last
  // evaluation, from the links into and out of E.
  void form_ac() {
    A.setZero();
    C.setZero();
    for (int k : m.links) {
      const auto& pr = m.c->projections[k];
      if (pr.tgt == 0)
        A.middleCols(m.offset[pr.src], ds[k].size()).array() += link_block(k, coefficient(pr));
      else if (pr.src == 0)
        C.middleRows(m.offset[pr.tgt], m.c->populations[pr.tgt].size).array() +=
            link_block(k, coefficient(pr));
    }
  }

  // out = A v and out = C v without forming A or C: one product with each link's weights
  // (the same multiply-adds as the dense product, none of the forming).
  void apply_A(const Vd& v, Vd& out) {
    out.setZero(m.c->populations[0].size);
    for (int k : m.links) {
      const auto& pr = m.c->projections[k];
      if (pr.tgt != 0) continue;
      Vd &ks = ks_[pr.src], &kt = kt_[0];
      ks = ds[k].cwiseProduct(v.segment(m.offset[pr.src], ds[k].size()));
      kt.noalias() = m.W[k] * ks;
      out.array() += coefficient(pr).array() * kt.array();
    }
  }
  void apply_C(const Vd& v, Vd& out) {
    out.setZero(m.n);
    for (int k : m.links) {
      const auto& pr = m.c->projections[k];
      if (pr.src != 0) continue;
      Vd &ks = ks_[0], &kt = kt_[pr.tgt];
      ks = ds[k].cwiseProduct(v);
      kt.noalias() = m.W[k] * ks;
      out.segment(m.offset[pr.tgt], kt.size()).array() += coefficient(pr).array() * kt.array();
    }
  }

  // Pooled, E eliminated: sum over E of (population <- E weights * d signal / dv) times
  // (E <- population weights * dF_E / d drive or conductance), without forming either vector.
  double e_pair_sum(const models::Projection& pp, int kp, const models::Projection& pq, int kq) {
    const auto wp = m.Wv[kp].array();
    const double rest = m.c->populations[0].rest;
    if (pq.action == models::Action::subtractive) {
      const auto wq = (models::source_sign(pq) * m.Wv[kq].array()) * dF_dq[0].array();
      return signal_sum(pp, wp, wq);
    }
    if (m.e_fused) {  // dF_dg = -(v - rest) / g, with 1 / g in dF_dq
      const auto wq = -m.Wv[kq].array() * (z[0].array() - rest) * dF_dq[0].array();
      return signal_sum(pp, wp, wq);
    }
    return signal_sum(pp, wp, m.Wv[kq].array() * dF_dg[0].array());
  }

  // Pooled, E fused with a divisive link: e_pair_sum of population <- E link kp with E's
  // subtractive link (without its source sign) and with E's divisive link, in one pass.
  std::pair<double, double> e_pair_sums(const models::Projection& pp, int kp) const {
    const int n = int(z[0].size());
    const double rest = m.c->populations[0].rest;
    const double *wp = m.Wv[kp].data(), *ig = dF_dq[0].data(), *v = z[0].data();
    const double *ws = m.Wv[m.e_sub].data(), *wd = m.Wv[m.e_div].data();
    const auto sums = [&](auto sig) {
      double a = 0.0, b = 0.0;
#pragma omp simd reduction(+ : a, b)
      for (int i = 0; i < n; ++i) {
        const double f = wp[i] * sig(i) * ig[i];
        a += f * ws[i];
        b -= f * wd[i] * (v[i] - rest);  // dF_E/dg = -(v - rest) / g
      }
      return std::pair{a, b};
    };
    switch (pp.signal) {
      case models::Signal::rate: {
        const double* d = dr[0].data();
        return sums([d](int i) { return d[i]; });
      }
      case models::Signal::potential:
        return sums([](int) { return 1.0; });
      default:  // squared_potential: d(v^2) = 2 v
        return sums([v](int i) { return 2.0 * v[i]; });
    }
  }

  template <class P, class Q>
  double signal_sum(const models::Projection& pp, const P& wp, const Q& wq) const {
    switch (pp.signal) {
      case models::Signal::rate:
        return (wp * dr[0].array() * wq).sum();
      case models::Signal::potential:
        return (wp * wq).sum();
      default:  // squared_potential: d(v^2) = 2 v
        return 2.0 * (wp * z[0].array() * wq).sum();
    }
  }

  /// E eliminated: A^T y with A = dv_E / dz_core (after jacobian(), or restore()); not Pooled,
  /// through each link's weights (A is not formed).
  template <class V>
  void At_times(const Vd& y, V& out) {
    if constexpr (!Pooled) {
      out.setZero(m.n);
      for (int k : m.links) {
        const auto& pr = m.c->projections[k];
        if (pr.tgt != 0) continue;
        Vd &ks = ks_[pr.src], &kt = kt_[0];
        kt = coefficient(pr).cwiseProduct(y);
        ks.noalias() = m.W[k].transpose() * kt;
        out.segment(m.offset[pr.src], ks.size()) += ds[k].cwiseProduct(ks);
      }
      return;
    }
    out.setZero(m.n);
    for (int k : m.links) {
      const auto& pr = m.c->projections[k];
      if (pr.tgt != 0) continue;
      double sum;
      if (pr.action == models::Action::subtractive)
        sum = models::source_sign(pr) * (dF_dq[0].array() * m.Wv[k].array() * y.array()).sum();
      else if (m.e_fused)
        sum = -((z[0].array() - m.c->populations[0].rest) * dF_dq[0].array() * m.Wv[k].array() *
                y.array())
                   .sum();
      else
        sum = (dF_dg[0].array() * m.Wv[k].array() * y.array()).sum();
      out(m.offset[pr.src]) += ds[k](0) * sum;
    }
  }

  /// E eliminated: out += C^T a with C = dF_core / dv_E (after jacobian(), or restore()); not
  /// Pooled, through each link's weights (C is not formed).
  template <class V>
  void add_Ct_times(const V& a, Vd& out) {
    if constexpr (!Pooled) {
      for (int k : m.links) {
        const auto& pr = m.c->projections[k];
        if (pr.src != 0) continue;
        const Vd& coef = coefficient(pr);
        Vd &ks = ks_[0], &kt = kt_[pr.tgt];
        kt = coef.cwiseProduct(a.segment(m.offset[pr.tgt], coef.size()));
        ks.noalias() = m.W[k].transpose() * kt;
        out += ds[k].cwiseProduct(ks);
      }
      return;
    }
    for (int k : m.links) {
      const auto& pr = m.c->projections[k];
      if (pr.src != 0) continue;
      const double f = a(m.offset[pr.tgt]) * coefficient(pr)(0);
      switch (pr.signal) {
        case models::Signal::rate:
          out.array() += f * m.Wv[k].array() * dr[0].array();
          break;
        case models::Signal::potential:
          out += f * m.Wv[k];
          break;
        default:
          out.array() += (2.0 * f) * m.Wv[k].array() * z[0].array();
          break;
      }
    }
  }

  /// The populations' local derivatives dF/dz on the diagonal (raw coordinates).
  template <class Mx>
  void add_local_terms(Mx& M) const {
    for (int p : m.st.core) M.diagonal().segment(m.offset[p], dF_dz[p].size()) += dF_dz[p];
  }

  /// The stability check's blocks at the last evaluation (E eliminated and leaky; every
  /// dynamic population other than E is a core population): over the unknowns not held at a
  /// rectification boundary (`free_idx`), in 1/ms, D = d(dz_I/dt)/dz_I (direct links and local
  /// terms) and CB = (d(dz_I/dt)/dv)(d(dv/dt)/dz_I) (through E). The full Jacobian's spectrum is
  /// then -1/tau_E and that of [[D, I], [CB, -I/tau_E]] (sim/stability.hpp).
  template <class Mx>
  void stability_blocks(Mx& D, Mx& CB, std::vector<int>& free_idx) {
    jacobian(false, true);
    const auto& pops = m.c->populations;
    free_idx.clear();
    inv_tau_.resize(m.n);
    for (int p : m.st.core)
      for (int i = 0; i < pops[p].size; ++i) {
        const int u = m.offset[p] + i;
        inv_tau_[u] = 1.0 / pops[p].tau;
        // As sim::stability: an integrator unit at r <= 0 whose partials vanish.
        if (!(pops[p].dynamics == models::Dynamics::integrator && z[p](i) <= 0.0 &&
              dF_dq[p](i) == 0.0 && dF_dz[p](i) == 0.0))
          free_idx.push_back(u);
      }
    add_local_terms(J);
    const int f = int(free_idx.size());
    const double inv_tau_E = 1.0 / pops[0].tau;
    D.resize(f, f);
    CB.resize(f, f);
    for (int r = 0; r < f; ++r)
      for (int k = 0; k < f; ++k) {
        const int a = free_idx[r], b = free_idx[k];
        D(r, k) = inv_tau_[a] * J(a, b);
        CB(r, k) = (inv_tau_[a] * inv_tau_E) * CA(a, b);
      }
  }

  /// The full Jacobian d(dz/dt)/dz (1/ms) at the last evaluation, for circuits whose every
  /// population is a leaky Newton unknown (E not eliminated, none explicit: ssn); the unknowns
  /// are then the raw states and none is clamped. Rows in population order, each population's
  /// first row in `start` (start.back() = n) and its leak -1/tau in `lam`, as full_stability
  /// wants them. Overwrites J.
  void full_jacobian(Md& Jt, std::vector<Eigen::Index>& start, std::vector<double>& lam) {
    jacobian();
    add_local_terms(J);
    const auto& pops = m.c->populations;
    start.clear();
    lam.clear();
    Jt = J;
    for (std::size_t p = 0; p < pops.size(); ++p) {
      // models::analyse lists the core in population order: with every population core, the
      // unknowns are in population order already.
      if (m.offset[p] != (p == 0 ? 0 : start.back() + pops[p - 1].size))
        throw internal_error("full_jacobian: the unknowns are not in population order");
      start.push_back(m.offset[p]);
      lam.push_back(-1.0 / pops[p].tau);
      Jt.middleRows(m.offset[p], pops[p].size) /= pops[p].tau;
    }
    start.push_back(m.n);
  }

  // --- The last evaluation, kept for the adjoint ----------------------------------------------
  //
  // The adjoint needs the partials at the equilibrium the solver has just evaluated; keeping
  // them saves it a load and an evaluation per sample (sim/solver.hpp, Linearisation). Kept:
  // exactly what jacobian(), At_times, add_Ct_times and add_local_terms read of an evaluation,
  // and the clamped flags; a restored system serves those and nothing else (not Newton). The
  // core states come first: restore() checks them against the stored state. Pooled: the part
  // of E's size is two or three vectors. Not pooled (E eliminated): also each link's signal
  // derivative, and where the stability check formed J + C A, that matrix (the adjoint's most
  // expensive product, m x n_E x m, is then not formed twice).

  /// Doubles per sample that save() writes.
  int saved_size() const {
    int k = m.n + 1 + m.n * m.n;  // the clamped flags, and the Jacobian with its flag
    visit_saved(*this, [&](const Vd& v) { k += int(v.size()); });
    return k;
  }

  /// `blocks`: stability_blocks() ran at this evaluation, so J + CA is the adjoint's matrix
  /// (the Jacobian with the local terms) and is kept too (E fused: the adjoint then needs no
  /// other product of jacobian()).
  void save(double* out, bool blocks) {
    visit_saved(*this, [&](const Vd& v) {
      if (v.size() == 1)
        *out++ = v(0);
      else
        out = std::copy(v.data(), v.data() + v.size(), out);
    });
    for (int i = 0; i < m.n; ++i) *out++ = clamped[i];
    const bool with_J = blocks && (!Pooled || m.e_fused);
    *out++ = with_J;
    if (with_J)
      for (int b = 0; b < m.n; ++b)
        for (int a = 0; a < m.n; ++a) *out++ = J(a, b) + CA(a, b);
  }

  /// The evaluation save() wrote for sample j, if the core states stored in zs are still the
  /// ones saved (false, nothing restored, otherwise: the caller loads and evaluates instead).
  template <class S>
  bool restore(const double* in, const CircuitState<S>& zs, int j) {
    const double* at = in;
    for (int p : m.st.core)
      for (int i = 0; i < m.c->populations[p].size; ++i)
        if (!(S(*at++) == zs.z[p](i, j))) return false;  // also false for NaN
    visit_saved(*this, [&](Vd& v) {
      if (v.size() == 1) {
        v(0) = *in++;
      } else {
        std::copy(in, in + v.size(), v.data());
        in += v.size();
      }
    });
    for (int i = 0; i < m.n; ++i) clamped[i] = *in++ != 0.0;
    jacobian_restored_ = *in++ != 0.0;
    pairs_valid_ = false;  // E's pass did not run at the restored point
    if (jacobian_restored_) J = Eigen::Map<const Md>(in, m.n, m.n);
    prec_valid_ = false;
    if (!Pooled && jacobian_restored_) e_partials();  // what At_times and add_Ct_times read
    return true;
  }

  /// Drop what is kept of the last evaluation (a cached system serving a new call).
  void forget_evaluation() {
    pairs_valid_ = jacobian_restored_ = prec_valid_ = false;
  }

  /// After restore(): J holds the Jacobian at the equilibrium with the local terms added (the
  /// adjoint's matrix), so jacobian() need not run.
  bool jacobian_restored() const {
    return jacobian_restored_;
  }

  // --- Newton ---------------------------------------------------------------------------------

  SV delta;
  SM JG;
  Eigen::PartialPivLU<SM> lu;
  Eigen::PartialPivLU<Eigen::Matrix2d> lu2_;  // direction(), Pooled with two unknowns

  double merit() const {
    double s2 = 0;
    for (int i = 0; i < m.n; ++i)
      if (!clamped[i]) s2 += G(i) * G(i);
    return s2;
  }

  /// Newton direction at the last evaluation (multiplicative steps capped); false if not finite.
  /// With a pseudo-time step dt > 0 (continuation) the direction of one implicit Euler step of
  /// the circuit's flow instead: (JG - diag(sigma) / dt) delta = -G, sigma = tau for raw rows
  /// and tau / h for log rows (u = log r, G = log(h / c): the same linearisation as the ODE's
  /// tau dr/dt = r (h - c) at the fixed point). dt -> infinity is Newton.
  bool direction(double max_log_step, double dt = 0.0) {
    // Large circuits (`krylov`): with a lagged LU at hand (this sample's, or the last one of
    // its group of krylov_share samples), GMRES on the exact Jacobian applied matrix-free (C A
    // through E's links, apply_A and apply_C; neither A, C nor C A formed), preconditioned by
    // that LU; where it needs more than krylov_max vectors, the Jacobian is formed and factorised
    // anew (and becomes the preconditioner). A degenerate unit's residual of 1e300 stays direct.
    if constexpr (!Pooled) {
      // Every link uniform (ssn): the Woodbury formula, O(n links), no n x n matrix. Where it
      // misses its residual test (S or the diagonal near singular), the steps below.
      if (m.low_rank && low_rank_steps) {
        form_low_rank();
        rhs_ = -G;
        if (low_rank_solve(dt, rhs_, delta, false, low_rank_rtol)) {
          ++low_rank_solves;
          return true;
        }
      }
    }
    const bool iterative = krylov && prec_valid_ && !degenerate;
    form_ca_ = !iterative;
    newton_jacobian();
    form_ca_ = true;
    if (dt > 0.0) {
      const auto& pops = m.c->populations;
      for (int p : m.st.core)
        for (int i = 0; i < pops[p].size; ++i) {
          const int k = m.offset[p] + i;
          if (clamped[k] || degenerate_unit[k]) continue;
          double sigma = pops[p].tau;
          if (pops[p].dynamics == models::Dynamics::multiplicative)
            sigma /= std::max(pops[p].gain * q[p](i) + pops[p].leak / r[p](i), 1e-300);
          JG(k, k) -= sigma / dt;
        }
    }
    if (!iterative || !krylov_step()) {
      if (iterative) add_ca();
      if (Pooled && m.n == 2) {
        // The same partial-pivoting LU on Eigen's fixed-size 2 x 2 kernel (the default
        // circuit), without the dynamic-size setup.
        lu2_.compute(JG.template topLeftCorner<2, 2>());
        delta = -lu2_.solve(G.template head<2>());
      } else {
        lu.compute(JG);
        delta = -lu.solve(G);
      }
      prec_valid_ = krylov;
      ++factorisations;
    }
    if (!delta.allFinite()) return false;
    for (int p : m.st.core)
      if (m.c->populations[p].dynamics == models::Dynamics::multiplicative) {
        auto d = delta.segment(m.offset[p], m.c->populations[p].size);
        d = d.cwiseMax(-max_log_step).cwiseMin(max_log_step);
      }
    return true;
  }

  // Krylov counters of this system: LU factorisations in direction() and GMRES vectors; and
  // the steps solved by the low-rank formula.
  long factorisations = 0, krylov_vectors = 0, low_rank_solves = 0;

  // --- Low-rank steps (SampleModel::low_rank) -------------------------------------------------

  /// The last form_low_rank()'s V (for the tests).
  const Md& lr_V() const {
    return lr_V_;
  }
  /// Relative residual the low-rank solves must meet (else the dense path solves).
  double low_rank_rtol = 1e-10;
  /// ||M x - b|| / ||b|| of the last low_rank_solve (its independent residual test).
  double low_rank_residual = 0.0;

  /// At the last evaluation, Newton's Jacobian (raw coordinates, local terms included) as
  /// diag(lr_d0_) + U V^T: column a of U and V from link a of m.links, U the link's weight times
  /// its target coefficient on the target's rows, V its signal derivative on the source's rows.
  void form_low_rank() {
    const int K = int(m.lr_source.size());
    lr_U_.setZero(m.n, K);
    lr_V_.setZero(m.n, K);
    for (std::size_t a = 0; a < m.links.size(); ++a) {
      const int k = m.links[a], col = m.lr_column[a];
      const auto& pr = m.c->projections[std::size_t(k)];
      lr_U_.col(col).segment(m.offset[pr.tgt], m.c->populations[pr.tgt].size) +=
          m.w_uniform[std::size_t(k)] * coefficient(pr);
      lr_V_.col(col).segment(m.offset[pr.src], ds[k].size()) = ds[k];
    }
    lr_d0_.resize(m.n);
    lr_tau_.resize(m.n);
    for (int p : m.st.core) {
      lr_d0_.segment(m.offset[p], dF_dz[p].size()) = dF_dz[p];
      lr_tau_.segment(m.offset[p], dF_dz[p].size()).setConstant(m.c->populations[p].tau);
    }
  }

  /// After form_low_rank(): x solving M x = b, or M^T x = b (`transposed`), M = diag(d) +
  /// U V^T, d = lr_d0_ - tau / dt (dt > 0: the continuation's implicit Euler step; 0: none), by
  /// the Woodbury identity: with P Q^T = U V^T (or V U^T), S = I + Q^T D^-1 P (links x links),
  /// x = D^-1 b - D^-1 P S^-1 Q^T D^-1 b. false where d has a zero, x is not finite or
  /// ||M x - b|| > rtol ||b|| (M applied as d x + P (Q^T x), independent of S's solve).
  /// `s_rcond`: the estimate of S's reciprocal condition (M is singular exactly where S is).
  bool low_rank_solve(double dt, const Vd& b, Vd& x, bool transposed, double rtol,
                      double* s_rcond = nullptr) {
    const Md& P = transposed ? lr_V_ : lr_U_;
    const Md& Q = transposed ? lr_U_ : lr_V_;
    lr_d_ = lr_d0_;
    if (dt > 0.0) lr_d_ -= lr_tau_ / dt;
    if (!(lr_d_.array() != 0.0).all()) return false;
    lr_dinv_ = lr_d_.cwiseInverse();
    lr_DP_.noalias() = lr_dinv_.asDiagonal() * P;
    lr_S_.noalias() = Q.transpose() * lr_DP_;
    lr_S_.diagonal().array() += 1.0;
    lr_lu_.compute(lr_S_);
    if (s_rcond) *s_rcond = lr_lu_.rcond();
    x = lr_dinv_.cwiseProduct(b);
    lr_y_.noalias() = Q.transpose() * x;
    lr_c_ = lr_lu_.solve(lr_y_);
    x.noalias() -= lr_DP_ * lr_c_;
    if (!x.allFinite()) return false;
    lr_y_.noalias() = Q.transpose() * x;
    lr_r_ = lr_d_.cwiseProduct(x) - b;
    lr_r_.noalias() += P * lr_y_;
    const double bn = b.norm(), rn = lr_r_.norm();
    low_rank_residual = rn / (bn > 0.0 ? bn : 1.0);
    return rn <= rtol * bn;
  }

  /// After form_low_rank(), no shift: an upper bound on ||M||_1 (M^T for `transposed`), the
  /// diagonal plus each link's |U| |V| column norms (exact where links do not overlap).
  double low_rank_norm1(bool transposed) const {
    // M (or M^T) = D + P Q^T: column j of P Q^T is P times Q's row j, so its 1-norm is at
    // most sum_a |Q(j, a)| ||P(:, a)||_1.
    const Md& P = transposed ? lr_V_ : lr_U_;
    const Md& Q = transposed ? lr_U_ : lr_V_;
    const Eigen::RowVectorXd pn = P.cwiseAbs().colwise().sum();
    return (lr_d0_.cwiseAbs() + Q.cwiseAbs() * pn.transpose()).maxCoeff();
  }

  /// After form_low_rank(): the spectrum of the full Jacobian J = T^-1 M (1/ms), where each
  /// population's diagonal is one value d_p (leaky units: dF/dz = -1), its leak l_p = d_p /
  /// tau_p, so J = Lambda + T^-1 U V^T. Column a of V lies on its source population's rows, where
  /// Lambda = l_src(a); so for an eigenvalue l outside {l_p}, y = V^T x satisfies l y = (diag(
  /// l_src(a)) + V^T T^-1 U) y: the eigenvalues of that (columns x columns) matrix L (ssn: 2 x
  /// 2), and every eigenvalue of L outside {l_p} is one of J. Each l_p is an eigenvalue of J of
  /// multiplicity at least n_p - r_p (x on p's rows with V_p^T x = 0; r_p the columns from p).
  /// Where every n_p > r_p, eig(L) and the l_p are J's spectrum as a set; each l_p is listed
  /// min(keep, n_p - r_p) times (at least once). false where a population has no more units
  /// than columns from it or unequal diagonals: the caller forms the Jacobian.
  bool low_rank_spectrum(int keep, Eigen::VectorXcd& ev) {
    const auto& pops = m.c->populations;
    const int K = int(m.lr_source.size()), NP = int(pops.size());
    std::vector<double> lam(std::size_t(NP), 0.0);
    std::vector<int> copies(std::size_t(NP), 0);
    for (int p = 0; p < NP; ++p) {
      const auto d = lr_d0_.segment(m.offset[p], pops[p].size);
      if (!(d.array() == d(0)).all() || !std::isfinite(d(0))) return false;
      const int from = int(std::count(m.lr_source.begin(), m.lr_source.end(), p));
      if (pops[p].size <= from) return false;
      lam[std::size_t(p)] = d(0) / pops[p].tau;
      copies[std::size_t(p)] = std::max(1, std::min(keep, pops[p].size - from));
    }
    lr_L_.noalias() = lr_V_.transpose() * (lr_tau_.cwiseInverse().asDiagonal() * lr_U_);
    for (int a = 0; a < K; ++a) lr_L_(a, a) += lam[std::size_t(m.lr_source[std::size_t(a)])];
    Eigen::VectorXcd small;
    if (!all_eigenvalues(lr_L_, small)) return false;
    ev.resize(small.size() + std::accumulate(copies.begin(), copies.end(), 0));
    ev.head(small.size()) = small;
    Eigen::Index at = small.size();
    for (int p = 0; p < NP; ++p)
      for (int q = 0; q < copies[std::size_t(p)]; ++q) ev(at++) = lam[std::size_t(p)];
    return true;
  }
  bool krylov = false;         ///< set by the solver: GMRES steps (not Pooled)
  bool low_rank_steps = true;  ///< set by the solver: low-rank steps where m.low_rank
  /// set by the solver before load(): keep the last sample's LU as the preconditioner
  bool carry_preconditioner = false;
  double krylov_rtol = 1e-6;  ///< GMRES: ||JG delta + G|| <= krylov_rtol ||G||
  int krylov_max = 8;         ///< GMRES vectors before the Jacobian is factorised anew

  /// Start with the integrator populations balanced at the current conductances: one Newton
  /// step on their block alone (exact when their drive is linear in their rates).
  void block_start(State& x) {
    if (block_idx_.empty()) return;
    newton_jacobian(true);
    const int k = int(block_idx_.size());
    if (k == 1) {
      const int i = block_idx_[0];
      // A singular 1 x 1 block has the minimum-norm step 0 (as FullPivLU gives).
      const double d = JG(i, i) != 0.0 ? -G(i) / JG(i, i) : 0.0;
      if (std::isfinite(d)) x.u(i) = std::max(x.u(i) + d, 0.0);
      return;
    }
    Md Jb(k, k);
    Vd Gb(k);
    for (int a = 0; a < k; ++a) {
      Gb(a) = G(block_idx_[a]);
      for (int b = 0; b < k; ++b) Jb(a, b) = JG(block_idx_[a], block_idx_[b]);
    }
    const Vd d = Eigen::FullPivLU<Md>(Jb).solve(-Gb);
    if (!d.allFinite()) return;
    for (int a = 0; a < k; ++a) x.u(block_idx_[a]) = std::max(x.u(block_idx_[a]) + d(a), 0.0);
  }

  void trial(const State& x, double t, State& out) const {
    out.u = x.u + t * delta;
    for (int p : m.st.core)
      if (m.c->populations[p].dynamics == models::Dynamics::integrator) {
        auto u = out.u.segment(m.offset[p], m.c->populations[p].size);
        u = u.cwiseMax(0.0);
      }
  }

  bool diverging(const State& x) const {
    for (int p : m.st.core)
      if (m.c->populations[p].dynamics == models::Dynamics::multiplicative &&
          x.u.segment(m.offset[p], m.c->populations[p].size).cwiseAbs().maxCoeff() > 700.0)
        return true;
    return false;
  }

 private:
  bool form_ca_ = true;             // jacobian(): add C A (false: the Krylov operator applies it)
  bool jacobian_restored_ = false;  // restore() set J (with the local terms)
  bool pairs_valid_ = false;        // e_pass_pairs_ are at the last evaluation
  bool prec_valid_ = false;         // lu factorises a (lagged) JG of this sample or of its group
  Vd rs_, cs_;                      // JG's row and column scales of the part C A
  Vd ve_, vc_, rhs_;                // Krylov scratch (E units, unknowns, right-hand side)
  // apply_A, apply_C, At_times, add_Ct_times: one link's source and target vectors, per
  // population (sized once: links of different sizes do not reallocate one buffer in turn).
  std::vector<Vd> ks_, kt_;
  Gmres gmres_;
  // Low-rank steps: U, V (unknowns x links), the diagonal without and with the continuation's
  // shift, its inverse, D^-1 P, the capacitance matrix S and its LU, and scratch vectors.
  Md lr_U_, lr_V_, lr_DP_, lr_S_, lr_L_;
  Vd lr_d0_, lr_tau_, lr_d_, lr_dinv_, lr_y_, lr_c_, lr_r_;
  Eigen::PartialPivLU<Md> lr_lu_;

  // One Newton (or continuation) step by GMRES, JG (direct part) + diag(rs) C A diag(cs) applied
  // to vectors; false if it did not converge within krylov_max vectors.
  bool krylov_step() {
    if constexpr (Pooled) {
      return false;
    } else {
      const auto op = [&](const Vd& v, Vd& out) {
        out.noalias() = JG * v;
        if (!m.st.eliminate_E) return;
        vc_ = cs_.cwiseProduct(v);
        apply_A(vc_, ve_);
        apply_C(ve_, vc_);
        out += rs_.cwiseProduct(vc_);
      };
      const auto prec = [&](const auto& v, Vd& out) { out = lu.solve(v); };
      rhs_ = -G;
      const bool ok = gmres_.solve(op, prec, rhs_, delta, krylov_rtol, krylov_max);
      krylov_vectors += gmres_.iterations;
      // A clamped unit's row is the identity with G = 0: its step is exactly 0 (as the direct
      // solve gives), not GMRES's 1e-6-sized remainder, which would lift it off its boundary.
      if (ok)
        for (int i = 0; i < m.n; ++i)
          if (clamped[i]) delta(i) = 0.0;
      return ok;
    }
  }

  // JG += diag(rs) C A diag(cs): the E-mediated part the Krylov operator had applied.
  void add_ca() {
    if constexpr (!Pooled) {
      if (!m.st.eliminate_E) return;
      form_ac();
      CA.setZero(m.n, m.n);
      add_C_times_A(CA);
      JG += rs_.asDiagonal() * CA * cs_.asDiagonal();
    }
  }

  void set_state(const State& x) {
    for (int p : m.st.core) {
      const auto u = x.u.segment(m.offset[p], m.c->populations[p].size);
      if (m.c->populations[p].dynamics == models::Dynamics::multiplicative)
        z[p] = u.array().exp().matrix();
      else
        z[p] = u;
    }
  }

  // The vectors save() keeps, in its order (the core states first), for a const or non-const
  // system: E's potential and 1/g (its conductance where E is not fused, its rate derivative
  // where a projection carries E's rate), the core populations' partials and the derivatives
  // of the core's signals.
  template <class Self, class F>
  static void visit_saved(Self& self, F&& f) {
    const SampleModel& m = self.m;
    for (int p : m.st.core) f(self.z[p]);
    f(self.z[0]);
    if (Pooled) f(self.dF_dq[0]);  // not pooled: e_partials() forms it from g and v
    if ((!Pooled || !m.e_fused) && self.has_g[0]) f(self.g[0]);
    if (m.rate_used[0]) f(self.dr[0]);
    for (int p : m.st.core) {
      f(self.dF_dz[p]);
      f(self.dF_dq[p]);
      f(self.dF_dg[p]);
    }
    // Pooled: the signals from E are summed from v and its rate derivative (e_pair_sum).
    for (int k : m.links)
      if (!Pooled || m.c->projections[k].src != 0) f(self.ds[k]);
  }

  // A one-unit vector as a fixed-size 1 x 1 matrix (Pooled: the compile-time kernels).
  using One = Eigen::Map<Eigen::Matrix<double, 1, 1>>;
  static One one(Vd& v) {
    return One(v.data());
  }

  void signal(int k) {
    const auto& pr = m.c->projections[k];
    if (Pooled && pr.src != 0) {
      s[k](0) = pr.signal == models::Signal::rate        ? r[pr.src](0)
                : pr.signal == models::Signal::potential ? z[pr.src](0)
                                                         : z[pr.src](0) * z[pr.src](0);
      ds[k](0) = pr.signal == models::Signal::rate        ? dr[pr.src](0)
                 : pr.signal == models::Signal::potential ? 1.0
                                                          : 2.0 * z[pr.src](0);
      return;
    }
    projection_signal(pr, z[pr.src], r[pr.src], dr[pr.src], s[k], &ds[k]);
  }

  void signals_from_core() {
    for (int k : m.links)
      if (m.c->projections[k].src != 0 || !m.st.eliminate_E) signal(k);
  }

  // Drive and conductance of dynamic population p from the constants and the dynamic sources.
  void drives(int p) {
    q[p] = q0[p];
    if (has_g[p]) g[p] = g0[p];
    for (int k : m.links_into[p]) {
      const auto& pr = m.c->projections[k];
      if (Pooled && pr.src == 0 && m.st.eliminate_E) {
        // A one-unit population driven by E: the signal is folded into one dot product (or
        // summed in E's pass, e_pass).
        const auto& v = z[0];
        double d = 0;
        if (m.n_e_out >= 0) {
          d = e_out_sum_[k == m.e_out[0] ? 0 : 1];
        } else {
          switch (pr.signal) {
            case models::Signal::rate:
              d = m.Wv[k].dot(r[0]);
              break;
            case models::Signal::potential:
              d = m.Wv[k].dot(v);
              break;
            default:  // squared_potential
              d = (m.Wv[k].array() * v.array().square()).sum();
              break;
          }
        }
        if (pr.action == models::Action::subtractive)
          q[p](0) += models::source_sign(pr) * d;
        else
          g[p](0) += d;
        continue;
      }
      if (pr.action == models::Action::subtractive)
        accumulate<Pooled>(m, k, s[k], models::source_sign(pr), q[p]);
      else
        accumulate<Pooled>(m, k, s[k], 1.0, g[p]);
    }
  }

  static bool all_finite(const Vd& v) {
    return (v.array() * 0.0).sum() == 0.0;
  }

  // Pooled, E fused with a divisive link (SampleModel::n_e_out >= 0): in one pass over E, 1/g
  // (into dF_dq), v = rest + (q0 + a w_sub) / g and the drives E sends to the core populations
  // (e_out_sum_: sum w v or sum w v^2), the same terms as the separate passes; and the
  // Jacobian's two pair sums of each of those links (e_pass_pairs_, as e_pair_sums), since a
  // Jacobian follows nearly every evaluation (block start, Newton step, stability blocks) and
  // the pass has every factor at hand (the loop waits on its division, not on these sums).
  double e_out_sum_[2] = {0.0, 0.0};
  std::pair<double, double> e_pass_pairs_[2];
  void e_pass(double a, double sd) {
    const auto& prs = m.c->projections;
    if (m.n_e_out == 0) return e_pass<0, false, false>(a, sd);
    const bool q0s = prs[m.e_out[0]].signal == models::Signal::squared_potential;
    if (m.n_e_out == 1) return q0s ? e_pass<1, true, false>(a, sd) : e_pass<1, false, false>(a, sd);
    const bool q1s = prs[m.e_out[1]].signal == models::Signal::squared_potential;
    if (q0s) return q1s ? e_pass<2, true, true>(a, sd) : e_pass<2, true, false>(a, sd);
    return q1s ? e_pass<2, false, true>(a, sd) : e_pass<2, false, false>(a, sd);
  }
  template <int N, bool Sq0, bool Sq1>
  void e_pass(double a, double sd) {
    const int n = int(z[0].size());
    const double rest = m.c->populations[0].rest;
    const double *g0p = g0[0].data(), *wd = m.Wv[m.e_div].data();
    const double *q0p = q0[0].data(), *ws = m.Wv[m.e_sub].data();
    const double* w0 = N > 0 ? m.Wv[m.e_out[0]].data() : nullptr;
    const double* w1 = N > 1 ? m.Wv[m.e_out[1]].data() : nullptr;
    double *ig = dF_dq[0].data(), *v = z[0].data();
    double s0 = 0.0, s1 = 0.0, a0 = 0.0, b0 = 0.0, a1 = 0.0, b1 = 0.0;
#pragma omp simd reduction(+ : s0, s1, a0, b0, a1, b1)
    for (int i = 0; i < n; ++i) {
      const double gi = 1.0 / (g0p[i] + wd[i] * sd);
      const double vi = rest + (q0p[i] + a * ws[i]) * gi;
      ig[i] = gi;
      v[i] = vi;
      // e_pair_sums' terms: d signal/dv (1, or 2 v for the square) times dF_E/dq = 1/g with
      // E's subtractive weight, and times dF_E/dg = -(v - rest)/g with its divisive weight.
      const double us = ws[i] * gi, ud = wd[i] * (vi - rest) * gi;
      if constexpr (N > 0) {
        s0 += w0[i] * (Sq0 ? vi * vi : vi);
        const double f = Sq0 ? w0[i] * (2.0 * vi) : w0[i];
        a0 += f * us;
        b0 -= f * ud;
      }
      if constexpr (N > 1) {
        s1 += w1[i] * (Sq1 ? vi * vi : vi);
        const double f = Sq1 ? w1[i] * (2.0 * vi) : w1[i];
        a1 += f * us;
        b1 -= f * ud;
      }
    }
    e_out_sum_[0] = s0;
    e_out_sum_[1] = s1;
    e_pass_pairs_[0] = {a0, b0};
    e_pass_pairs_[1] = {a1, b1};
    pairs_valid_ = true;
  }

  // d F_target / d signal of a projection, per target unit (coef_: the negated dF_dq of an
  // inhibitory subtractive link, per target population, sized once).
  std::vector<Vd> coef_;
  std::vector<double> h_;
  std::vector<double> inv_tau_;
  std::vector<int> block_idx_;       // unknowns of the integrator populations (block_start)
  std::vector<char> in_block_;       // per unknown: in block_idx_
  std::vector<char> g0_per_sample_;  // per population: g0 has divisive input from the constants
  const Vd& coefficient(const models::Projection& pr) {
    if (pr.action == models::Action::divisive) return dF_dg[pr.tgt];
    if (models::source_sign(pr) > 0) return dF_dq[pr.tgt];
    coef_[pr.tgt] = -dF_dq[pr.tgt];
    return coef_[pr.tgt];
  }

  // Jacobian of the Newton residual G over u: rows of multiplicative populations divided by
  // r h (the derivative of the log residual), their columns times r (u = log r), local terms,
  // and identity rows for degenerate or clamped units.
  void newton_jacobian(bool block_only = false) {
    jacobian(block_only);
    JG = J;
    const auto& pops = m.c->populations;
    if (!Pooled) {
      rs_.setOnes(m.n);
      cs_.setOnes(m.n);
    }
    for (int p : m.st.core) {
      const int o = m.offset[p], n = pops[p].size;
      if (pops[p].dynamics == models::Dynamics::multiplicative) {
        std::vector<double>& hs = h_;
        hs.resize(n);
        for (int i = 0; i < n; ++i) {
          hs[i] = std::max(pops[p].gain * q[p](i) + pops[p].leak / r[p](i), 1e-300);
          JG.row(o + i) /= r[p](i) * hs[i];
          if (!Pooled) {
            rs_(o + i) = 1.0 / (r[p](i) * hs[i]);
            cs_(o + i) = r[p](i);
          }
        }
        for (int i = 0; i < n; ++i) JG.col(o + i) *= r[p](i);
        // The local term of G = log(gain q + leak / r) in u = log r: -leak / (r h).
        for (int i = 0; i < n; ++i) JG(o + i, o + i) -= pops[p].leak / (r[p](i) * hs[i]);
      } else {
        JG.diagonal().segment(o, n) += dF_dz[p];
      }
    }
    for (int i = 0; i < m.n; ++i) {
      if (degenerate_unit[i]) {
        // No E activity reaches this divisive unit (e.g. a constant drive): it has no positive
        // fixed point and decays towards 0, as in the ODE: step log r down (capped).
        JG.row(i).setZero();
        JG(i, i) = 1.0;
        G(i) = 1e300;
        if (!Pooled) rs_(i) = 0.0;
      }
      if (clamped[i]) {
        if (!Pooled) rs_(i) = cs_(i) = 0.0;
        JG.row(i).setZero();
        JG.col(i).setZero();
        JG(i, i) = 1.0;
        G(i) = 0.0;
      }
    }
  }
};

/// The threads of the calling team (1 outside a parallel region or without OpenMP).
inline int team_size() {
#ifdef _OPENMP
  return omp_get_num_threads();
#else
  return 1;
#endif
}

/// True inside a parallel region's team of one (or without OpenMP): the calling thread's
/// PooledLease may serve it.
inline bool team_of_one() {
  return team_size() == 1;
}

/// Runs `body` on a team of threads where `parallel` and OpenMP may use more than one, else on
/// the calling thread alone. At the top level (outside every parallel region) that is a plain
/// call: a region serialised by `if (false)` or by a one-thread limit still runs its team's
/// barriers, a futex system call each (about 10 per training batch of the default circuit in
/// this VM; bench/README.md, session 13). Inside any region, active or not, it stays a
/// serialised region of its own, so that the body's worksharing constructs (`omp for`, `omp
/// single`) bind to a team of one, never to the caller's team or inside the caller's
/// worksharing. An exception thrown by the body reaches the caller on the plain call (inside a
/// region OpenMP terminates instead); solve_fixed_point then drops its kept evaluations, and
/// the batch's other outputs are not to be used.
template <class F>
void parallel_region(bool parallel, F&& body) {
#ifdef _OPENMP
  const bool team = parallel && omp_get_max_threads() > 1;
  if (team || omp_get_level() > 0) {
#pragma omp parallel if (team)
    body();
    return;
  }
#else
  (void)parallel;
#endif
  body();
}

/// Per thread, the last circuit's model (and, where pooled, its system), reused by the next
/// solve or adjoint call on a circuit with the same specification (the training step's layers
/// share one) with only the weights cast afresh: building a SampleSystem allocates and zeroes
/// some forty vectors, about 10 % of the default circuit's solve (perf, session 11). A lease
/// holds the cache; a nested call builds its own model, and a thread in a team of more than one
/// its own system. Each thread keeps its last model's weights (in double) until it exits.
class PooledLease {
 public:
  template <class S>
  explicit PooledLease(const models::Layer<S>& layer) {
    Slot& c = slot();
    if (c.busy) {
      own_ = std::make_unique<SampleModel>(layer);
      model_ = own_.get();
      return;
    }
    if (c.model && layer.spec.circuit == c.spec.circuit &&
        layer.spec.projection_weight == c.spec.projection_weight) {
      c.model->refresh(layer);
    } else {
      c.system.reset();
      c.model.reset();
      c.spec = layer.spec;
      c.model = std::make_unique<SampleModel>(layer);
      // The model reads the structure through these pointers: to the cache's copy, which
      // outlives the layer.
      c.model->spec = &c.spec;
      c.model->c = &c.spec.circuit;
    }
    model_ = c.model.get();
    // Held only once ready: if building threw, the next call rebuilds.
    cached_ = &c;
    c.busy = true;
  }
  ~PooledLease() {
    if (cached_) cached_->busy = false;
  }
  PooledLease(const PooledLease&) = delete;
  PooledLease& operator=(const PooledLease&) = delete;

  const SampleModel& model() const { return *model_; }

  /// A pooled system (model().pooled) with tolerance t and zeroed counters for the calling
  /// thread: the cached one where the lease holds the cache and the thread runs alone (a team
  /// of one), else one built in `local`.
  SampleSystem<true>& system(const Tolerance& t, std::optional<SampleSystem<true>>& local) {
    if (!cached_ || !model_->pooled || !team_of_one()) return local.emplace(*model_, t);
    if (!cached_->system) cached_->system = std::make_unique<SampleSystem<true>>(*model_, t);
    SampleSystem<true>& s = *cached_->system;
    s.tol = t;
    s.factorisations = s.krylov_vectors = s.low_rank_solves = 0;
    s.krylov = false;
    s.forget_evaluation();
    return s;
  }

 private:
  struct Slot {
    bool busy = false;
    models::LayerSpec spec;
    std::unique_ptr<SampleModel> model;
    std::unique_ptr<SampleSystem<true>> system;
  };
  static Slot& slot() {
    thread_local Slot s;
    return s;
  }
  Slot* cached_ = nullptr;
  std::unique_ptr<SampleModel> own_;
  const SampleModel* model_ = nullptr;
};

}  // namespace eisim::sim::detail
