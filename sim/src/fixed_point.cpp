// Newton's method for the circuit's equilibrium (see sample_system.hpp for the formulation).
//
// Populations driven only by the input are computed explicitly first. The E potentials are
// eliminated exactly when E has no recurrent input; Newton then runs on the remaining
// populations' unknowns per sample, in double precision whatever the storage precision, with a
// backtracking line search. Where Newton stalls, pseudo-transient continuation runs from the start
// point; samples where both fail are integrated with the ODE and polished.
#include <algorithm>
#include <array>
#include <cmath>
#include <exception>
#include <limits>
#include <optional>
#include <type_traits>
#include <utility>

#include "eisim/models/error.hpp"
#include "eisim/sim/solver.hpp"
#include "eisim/sim/stability.hpp"
#include "sample_system.hpp"

namespace eisim::sim {

using models::Layer;

namespace {

template <class S>
void finish_result(SolveResult& res) {
  res.status = SolverStatus::converged;
  res.failed_samples = 0;
  res.residual = 0;
  res.iterations = 0;
  const auto rank = [](SolverStatus s) {
    switch (s) {
      case SolverStatus::converged:
        return 0;
      case SolverStatus::max_iterations:
      case SolverStatus::unstable:
        return 1;
      case SolverStatus::diverged:
        return 2;
      case SolverStatus::non_finite:
        return 3;
    }
    return 3;
  };
  for (std::size_t j = 0; j < res.sample_status.size(); ++j) {
    if (res.sample_status[j] != SolverStatus::converged) ++res.failed_samples;
    if (rank(res.sample_status[j]) > rank(res.status)) res.status = res.sample_status[j];
    res.iterations = std::max(res.iterations, res.sample_iterations[j]);
    const double r = res.sample_residual[j];
    if (!(r <= res.residual)) res.residual = r;
  }
}

struct ColumnOutcome {
  SolverStatus status = SolverStatus::max_iterations;
  int iterations = 0;
  double residual = 0.0, scaled = 0.0;
  bool continued = false;  ///< Newton stalled and the continuation ran
};

// One sample's residual after each iteration. The default circuit's take two to four entries:
// those stay in the object (no heap allocation per sample, which had cost about 1 % of its
// training epoch); longer ones continue in `more`.
class ResidualHistory {
 public:
  void push_back(double r) {
    if (n_ < kInline)
      first_[n_] = r;
    else
      more_.push_back(r);
    ++n_;
  }
  std::size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  double operator[](std::size_t i) const { return i < kInline ? first_[i] : more_[i - kInline]; }

 private:
  static constexpr std::size_t kInline = 6;
  std::array<double, kInline> first_{};
  std::size_t n_ = 0;
  std::vector<double> more_;
};

// Convergence, the iteration cap and finiteness at the last evaluation: true if the iteration
// ends here (out.status set).
template <class Ev>
bool column_done(const Ev& ev, int cap, ColumnOutcome& out, ResidualHistory& history) {
  std::tie(out.residual, out.scaled) = ev.ode_residual();
  history.push_back(out.residual);
  if (!std::isfinite(out.residual)) {
    out.status = SolverStatus::non_finite;
    return true;
  }
  if (out.scaled <= 1.0) {
    out.status = SolverStatus::converged;
    return true;
  }
  if (out.iterations >= cap) {
    out.status = SolverStatus::max_iterations;
    return true;
  }
  return false;
}

// Pseudo-transient continuation for one sample from x (updated in place): implicit Euler steps
// of the circuit's flow, (JG - diag(sigma) / dt) delta = -G, whose pseudo-time step dt grows
// as the residual falls (switched evolution relaxation: dt * |G_old| / |G_new|, at most 10x per
// step), so that it follows the flow into the basin and ends in Newton's quadratic steps. A step
// that raises the merit more than tenfold (or leaves the finite range) is rejected and dt cut
// fourfold. Every step, rejected or not, counts as an iteration.
template <class Ev>
void continuation_column(Ev& ev, typename Ev::State& x, typename Ev::State& x_try,
                         const FixedPointParameters& p, ColumnOutcome& out,
                         ResidualHistory& history) {
  out.continued = true;
  // Saturated: the key admits any int, and the sum must not overflow.
  const int cap = p.continuation_max_steps > std::numeric_limits<int>::max() - out.iterations
                      ? std::numeric_limits<int>::max()
                      : out.iterations + p.continuation_max_steps;
  double dt = p.continuation_dt0;
  ev.evaluate(x);
  for (;; ++out.iterations) {
    if (column_done(ev, cap, out, history)) return;
    const double m0 = ev.merit();
    if (!ev.direction(p.max_log_step, dt)) {
      out.status = SolverStatus::diverged;
      return;
    }
    ev.trial(x, 1.0, x_try);
    ev.evaluate(x_try);
    const double m1 = ev.merit();
    if (!(m1 <= 10.0 * m0) || !std::isfinite(ev.ode_residual().first)) {
      dt *= 0.25;
      if (!(dt >= 1e-12 * p.continuation_dt0)) {
        out.status = SolverStatus::diverged;
        return;
      }
      ev.evaluate(x);
      continue;
    }
    std::swap(x, x_try);
    dt = std::min(dt * std::min(std::sqrt(m0 / std::max(m1, 1e-300)), 10.0), 1e300);
    if (ev.diverging(x)) {
      out.status = SolverStatus::diverged;
      return;
    }
  }
}

// Damped Newton for one sample on the evaluator's drive, from x (updated in place). Where it
// stalls (no sufficient decrease along the Newton direction, or the iteration cap) and
// p.continuation is set, the continuation runs from the start point instead.
template <class Ev>
ColumnOutcome newton_column(Ev& ev, typename Ev::State& x, typename Ev::State& x_try,
                            const FixedPointParameters& p, bool block_start,
                            ResidualHistory& history) {
  ColumnOutcome out;
  ev.evaluate(x);  // also for a non-finite drive, so that the stored state shows it
  if (!ev.drive_finite()) {
    out.status = SolverStatus::non_finite;
    out.residual = std::numeric_limits<double>::quiet_NaN();
    return out;
  }
  if (block_start) {
    // Start with the subtractive rates balanced, so Newton starts with the mean removed.
    ev.block_start(x);
    ev.evaluate(x);
  }
  const typename Ev::State x0 = x;
  // With the continuation behind it, Newton gives up on a line search early (measured on the
  // heterogeneous leaky circuit: 4 halvings instead of 30 take its iterations per solve from
  // 15.25 to 12.73, docs/numerics.md).
  const int halvings =
      p.continuation ? std::min(p.max_backtracks, p.stall_backtracks) : p.max_backtracks;
  auto stalled = [&] {
    if (!p.continuation) return false;
    x = x0;
    continuation_column(ev, x, x_try, p, out, history);
    return true;
  };
  for (;; ++out.iterations) {
    if (column_done(ev, p.max_iterations, out, history)) {
      if (out.status == SolverStatus::max_iterations) stalled();
      return out;
    }
    if (!ev.direction(p.max_log_step)) {
      out.status = SolverStatus::diverged;
      return out;
    }
    const double m0 = ev.merit();
    const bool degenerate = ev.degenerate;
    double t = 1.0;
    bool decreased = false;
    for (int bt = 0; bt <= halvings; ++bt, t *= 0.5) {
      ev.trial(x, t, x_try);
      ev.evaluate(x_try);
      if (degenerate || ev.merit() <= (1.0 - 1e-4 * t) * m0) {
        decreased = true;
        break;
      }
    }
    if (!decreased && stalled()) return out;
    // Without sufficient decrease (and no continuation) take the smallest step anyway; the
    // iteration cap and the reported status guard against stagnation.
    std::swap(x, x_try);
    if (ev.diverging(x)) {
      out.status = SolverStatus::diverged;
      return out;
    }
  }
}

// The explicit populations, in dependency order: v = rest + q / g from final sources.
template <class S>
void explicit_pass(const Layer<S>& layer, const CircuitInput<S>& in,
                   const models::CircuitStructure& st, CircuitState<S>& z) {
  CircuitTerms<S> t;
  for (int p : st.explicit_order) {
    evaluate(layer, in, z, t, false);
    z.z[p] += t.F[p];  // F = -v + rest + q / g
  }
}

}  // namespace

template <class S>
SolveResult solve_fixed_point(const Layer<S>& layer, const CircuitInput<S>& in,
                              const FixedPointParameters& p, CircuitState<S>& z,
                              Linearisation* keep) {
  if (layer.spec.kind != models::LayerKind::circuit)
    throw internal_error("solve_fixed_point called on a layer that is not a circuit");
  const int B = int(in.ext[0].cols());
  if (z.z.size() != layer.spec.circuit.populations.size() || z.v().cols() != B)
    initial_state(layer, B, z);
  SolveResult res;
  res.sample_status.assign(B, SolverStatus::converged);
  res.sample_iterations.assign(B, 0);
  res.sample_residual.assign(B, 0.0);
  detail::PooledLease lease(layer);
  const detail::SampleModel& model = lease.model();
  explicit_pass(layer, in, model.st, z);
  if (keep) keep->stride = 0;  // the storage stays, for the next batch
  // An exception out of the per-sample loop (detail::parallel_region) leaves the kept
  // evaluations half written: none of them is offered to the adjoint then.
  struct DropKeptOnThrow {
    Linearisation* keep;
    int exceptions = std::uncaught_exceptions();
    ~DropKeptOnThrow() {
      if (keep && std::uncaught_exceptions() > exceptions) keep->stride = 0;
    }
  } drop_kept_on_throw{keep};

  if (model.n == 0) {
    // Every population is explicit: the state is the fixed point by construction (residual
    // zero up to rounding, which the tests check independently); only a non-finite input can
    // spoil it.
    for (int j = 0; j < B; ++j) {
      res.sample_iterations[j] = 1;
      bool finite = true;
      for (const auto& m : z.z) finite = finite && m.col(j).allFinite();
      res.sample_residual[j] = finite ? 0.0 : std::numeric_limits<double>::quiet_NaN();
      if (!finite) res.sample_status[j] = SolverStatus::non_finite;
    }
    finish_result<S>(res);
    return res;
  }

  std::vector<double> scaled(B, 0.0);
  std::vector<char> continued(B, 0);
  std::vector<ResidualHistory> histories(B);
  const bool pooled = model.pooled && p.pooled_fast_path;
  // The stability check's fast path (sim/stability.hpp): E eliminated and leaky, every other
  // dynamic population a Newton unknown, fewer interneuron units than E units (the reduction).
  const auto& pops = layer.spec.circuit.populations;
  const bool stab = p.stability != StabilityCheck::off && p.stability_fast_path &&
                    model.st.eliminate_E && pops[0].dynamics == models::Dynamics::leaky &&
                    model.st.explicit_order.empty() && model.n < pops[0].size;
  // Every population a leaky Newton unknown (E not eliminated: ssn): the solver's own Jacobian
  // is the circuit's, and its spectrum the check's (full_stability), instead of stability()
  // forming it again from vector-Jacobian products of the batch equations.
  bool stab_full = p.stability != StabilityCheck::off && p.stability_fast_path &&
                   !model.st.eliminate_E && model.st.explicit_order.empty() &&
                   int(model.st.core.size()) == int(pops.size());
  for (const auto& pop : pops) stab_full = stab_full && pop.dynamics == models::Dynamics::leaky;
  if (stab || stab_full) {
    res.stability_known.assign(B, 0);
    res.sample_stability.assign(B, SampleStability{});
  }
  const double a_E = -1.0 / pops[0].tau;
  StabilityParameters sp;
  sp.keep = p.stability_leading;
  sp.class_only = p.stability_class_only;
  sp.marginal = p.stability_marginal;
  // Newton on the given columns, starting from z (with the block start if asked).
  auto newton = [&](const std::vector<int>& cols, bool block_start) {
    const int ncols = int(cols.size());
    auto run = [&](auto& ev) {
      using Ev = std::remove_reference_t<decltype(ev)>;
      typename Ev::State x, x_try;
      typename Ev::SM D, CB;
      std::vector<int> free_idx;
      detail::Md Jfull;
      std::vector<Eigen::Index> start;
      std::vector<double> lam;
      Eigen::VectorXcd lr_ev;
      ev.low_rank_steps = p.low_rank;
      ev.krylov = !Ev::pooled_instance && p.krylov && model.n >= p.krylov_min_unknowns;
      // With Krylov steps, groups of krylov_share consecutive columns go to one thread each
      // (schedule static with that chunk), so which LU preconditions which sample does not
      // depend on the team. Without them, one contiguous block of columns per thread (what a
      // plain schedule(static) does).
      const int share = std::max(1, p.krylov_share);
      const int team = detail::team_size();
      const int chunk = ev.krylov ? share : std::max(1, (ncols + team - 1) / team);
#pragma omp for schedule(static, chunk)
      for (int q = 0; q < ncols; ++q) {
        const int j = cols[q];
        // The first column of a group factorises afresh; the others may reuse its LU. So may
        // the fallback's polish (block_start false): its groups are of the failed columns.
        ev.carry_preconditioner = q % share != 0;
        ev.load(in, z, j, x);
        const ColumnOutcome out = newton_column(ev, x, x_try, p, block_start, histories[j]);
        res.sample_status[j] = out.status;
        res.sample_iterations[j] += out.iterations;
        res.sample_residual[j] = out.residual;
        continued[j] = continued[j] || out.continued;
        scaled[j] = out.scaled;
        bool blocks = false;
        if (stab || stab_full) {
          // At the equilibrium just evaluated: the blocks of the reduced Jacobian, or the
          // whole Jacobian.
          const bool want = out.status == SolverStatus::converged &&
                            (p.stability_samples <= 0 || j < p.stability_samples);
          if (want && stab) {
            ev.stability_blocks(D, CB, free_idx);
            blocks = true;
            res.sample_stability[j] =
                reduced_stability(D, CB, a_E, layer.spec.circuit.populations[0].size, sp);
            res.stability_known[j] = 1;
          } else if (want) {
            // (stab_full: E not eliminated, so never the pooled instance.)
            if constexpr (!Ev::pooled_instance) {
              // Every link uniform: the spectrum from the links' small linearisation (exact,
              // SampleSystem::low_rank_spectrum), no n x n matrix.
              bool done = false;
              if (model.low_rank && p.low_rank) {
                ev.form_low_rank();
                done = ev.low_rank_spectrum(sp.keep, lr_ev);
                if (done) res.sample_stability[j] = classify(lr_ev, sp);
              }
              if (!done) {
                ev.full_jacobian(Jfull, start, lam);
                // The low-rank test's tolerance as stability() sets it for a Jacobian in S.
                // This one is formed in double from the S weights (pooled blocks exactly of
                // rank one), so float's is looser than needed; with double's, 4 eps has little
                // margin for the rounding of the product (docs/numerics.md, "The cost of the
                // eigensolve").
                const double tol = 4.0 * double(std::numeric_limits<S>::epsilon()) * Jfull.norm();
                res.sample_stability[j] = full_stability(Jfull, start, lam, tol, sp);
              }
              res.stability_known[j] = 1;
            }
          }
        }
        ev.store(x, j, z);
        if (keep && keep->stride > 0) {
          double* at = keep->data.data() + std::size_t(j) * std::size_t(keep->stride);
          // Only a converged sample's last evaluation is at x (a rejected continuation step
          // leaves it at the trial point): others get a NaN state, which restore() refuses.
          if (out.status == SolverStatus::converged)
            ev.save(at, blocks);
          else
            at[0] = std::numeric_limits<double>::quiet_NaN();
        }
      }
#pragma omp critical(eisim_fixed_point_counts)
      {
        res.factorisations += ev.factorisations;
        res.krylov_vectors += ev.krylov_vectors;
        res.low_rank_solves += ev.low_rank_solves;
      }
    };
    // The kept evaluations: pooled, always; otherwise where the stability check's reduced fast
    // path applies (E eliminated: a kept evaluation is then a few vectors of E's size and the
    // reduced Jacobian, not the whole circuit's; ssn's whole 353 x 353 Jacobian, 1 MB per
    // sample, is not kept).
    const auto size_keep = [&](const auto& ev) {
#pragma omp single
      if (keep->stride == 0) {  // sized once per batch (the fallback's call writes into it)
        keep->stride = ev.saved_size();
        keep->pooled = std::remove_reference_t<decltype(ev)>::pooled_instance;
        keep->data.resize(std::size_t(B) * std::size_t(keep->stride));
      }
    };
    detail::parallel_region(ncols >= 128, [&] {
      if (pooled) {
        std::optional<detail::SampleSystem<true>> local;
        detail::SampleSystem<true>& ev = lease.system(p.tol, local);
        if (keep) size_keep(ev);
        run(ev);
      } else {
        detail::SampleSystem<false> ev(model, p.tol);
        if (keep && stab) size_keep(ev);
        run(ev);
      }
    });
  };
  std::vector<int> all(B);
  for (int j = 0; j < B; ++j) all[j] = j;
  newton(all, true);

  // Fallback: where Newton failed (it can stall on leaky heterogeneous circuits whose basin is
  // small), integrate the ODE from the common initial state, then polish with Newton.
  std::vector<int> failed;
  for (int j = 0; j < B; ++j)
    if (res.sample_status[j] == SolverStatus::max_iterations ||
        res.sample_status[j] == SolverStatus::diverged)
      failed.push_back(j);
  if (p.ode_fallback && !failed.empty()) {
    const int F = int(failed.size());
    CircuitInput<S> ins;
    select_samples(in, failed, ins);
    CircuitState<S> zs;
    initial_state(layer, F, zs);
    const SolveResult ores = integrate(layer, ins, fallback_ode(p), zs);
    for (int q = 0; q < F; ++q) {
      for (std::size_t k = 0; k < z.z.size(); ++k) z.z[k].col(failed[q]) = zs.z[k].col(q);
      res.sample_iterations[failed[q]] += ores.sample_iterations[q];
    }
    explicit_pass(layer, in, model.st, z);  // exact again after the integration
    newton(failed, false);
    res.fallback_samples = F;
  }
  for (int j = 0; j < B; ++j) {
    if (!(scaled[j] <= res.scaled_residual)) res.scaled_residual = scaled[j];
    res.continuation_samples += continued[j];
  }
  // Worst residual after each iteration, over samples (shorter histories hold their last value).
  std::size_t len = 0;
  for (const auto& h : histories) len = std::max(len, h.size());
  res.residual_history.assign(len, 0.0);
  for (const auto& h : histories)
    for (std::size_t i = 0; i < len; ++i) {
      const double r = h.empty() ? 0.0 : h[std::min(i, h.size() - 1)];
      if (!(r <= res.residual_history[i])) res.residual_history[i] = r;
    }
  finish_result<S>(res);
  return res;
}

template SolveResult solve_fixed_point<float>(const Layer<float>&, const CircuitInput<float>&,
                                              const FixedPointParameters&, CircuitState<float>&,
                                              Linearisation*);
template SolveResult solve_fixed_point<double>(const Layer<double>&, const CircuitInput<double>&,
                                               const FixedPointParameters&, CircuitState<double>&,
                                               Linearisation*);

}  // namespace eisim::sim
