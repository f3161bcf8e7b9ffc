#pragma once
// How a circuit is run: the ODE integrator and the fixed-point (Newton) solver. Both take
// parameters in and return a status with statistics; non-convergence is a status, never a
// silently returned state.
#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "eisim/models/network.hpp"
#include "eisim/sim/circuit.hpp"
#include "eisim/sim/stability.hpp"

namespace eisim::sim {

/// `unstable`: the solver's equilibrium is not stable and integrating the ODE found no stable
/// one (the forward pass's stability check, FixedPointParameters::stability).
enum class SolverStatus { converged, max_iterations, diverged, non_finite, unstable };
const char* to_string(SolverStatus s);

enum class StabilityCheck { off, integrate, fail };
const char* to_string(StabilityCheck s);

struct FixedPointParameters {
  Tolerance tol;
  int max_iterations = 50;
  double max_log_step = 4.0;  ///< cap on |change of log r| of multiplicative units per step
  int max_backtracks = 30;    ///< line-search halvings per iteration
  /// Pseudo-transient continuation for samples where Newton stalls (a line search without
  /// sufficient decrease, or the iteration cap): from the initial state, Newton on
  /// F(z) - tau (z - z_prev) / dt with dt growing as the residual falls (docs/numerics.md,
  /// "Solver robustness per circuit"). Before the ODE fallback; Newton's iterates are unchanged
  /// where Newton converges.
  bool continuation = true;
  /// With the continuation on, a Newton line search without sufficient decrease after this
  /// many halvings is a stall (the continuation takes the sample); without it, max_backtracks.
  int stall_backtracks = 4;
  /// Cap on the continuation's steps (each one linear solve). 3000: on the heterogeneous leaky
  /// circuit a few solves per epoch need more than 1000 (up to about 1950 iterations: slow passages
  /// near barely stable equilibria, where the ODE fallback does not settle either;
  /// docs/numerics.md, "Solver robustness per circuit").
  int continuation_max_steps = 3000;
  /// ms, its first pseudo-time step (about the time constants: measured on the heterogeneous
  /// leaky circuit, 1 ms took 35 iterations per sample, 10 ms 15, 100 ms 16)
  double continuation_dt0 = 10.0;
  /// Circuits with at least `krylov_min_unknowns` Newton unknowns (not the pooled default):
  /// the linear solves use GMRES on the exact Jacobian applied matrix-free, preconditioned by
  /// the last LU of the sample's group (krylov_share), and refactorise only where
  /// GMRES needs more than 8 vectors (docs/numerics.md, "Krylov steps"). false: every step
  /// forms and factorises the Jacobian.
  bool krylov = true;
  int krylov_min_unknowns = 16;
  /// Krylov steps: groups of this many consecutive samples share a preconditioner (a sample's
  /// first step uses the LU its group last formed); the groups are the same on any team, so
  /// the iterates do not depend on the thread count.
  int krylov_share = 8;
  /// Circuits whose every population is a leaky Newton unknown and whose every link between
  /// them is uniform (ssn with pooled projections): Newton's steps, the stability check's
  /// spectrum and the adjoint's solves use the Jacobian's diagonal-plus-low-rank form (the
  /// Woodbury identity; docs/numerics.md, "Low-rank steps"). false: the dense and Krylov
  /// paths (same equilibria; for verification).
  bool low_rank = true;
  bool ode_fallback = true;     ///< integrate the ODE for samples where Newton fails, then polish
  double fallback_t_max = 1e5;  ///< ms, cap of the fallback integration
  int fallback_max_steps = 100000;  ///< step cap of the fallback integration
  /// Circuits whose Newton unknowns are one unit per population (the default circuit) use the
  /// compile-time fixed-size instantiation of the solver. false forces the dynamic-size one
  /// (same source and iterates; for verification).
  bool pooled_fast_path = true;
  /// What the forward pass does with an equilibrium that is not stable (sim/stability.hpp):
  /// `integrate` replaces it by integrating the ODE from the initial state (and reports a layer
  /// with no stable equilibrium), `fail` throws naming the layer, `off` skips the check.
  StabilityCheck stability = StabilityCheck::integrate;
  /// Equilibria checked per batch: 0 = every sample, k > 0 = the first k of each batch (the
  /// check costs a dense eigenproblem per sample for large interneuron populations).
  int stability_samples = 0;
  /// 1/ms, in [0, 1e-3]: an equilibrium whose leading eigenvalue has a real part in
  /// (StabilityParameters::margin = 1e-9, stability_marginal] is `marginal`
  /// (StabilityParameters::marginal): counted, recorded and used, not replaced or failed by the
  /// policy (and accepted where `integrate` re-integrates an unstable one). The default, 1e-5 /ms,
  /// is an e-folding time of 100 s, as long as the ODE fallback's whole horizon (fallback_t_max):
  /// no integration eisim runs can tell such a mode from a stationary one, and at an equilibrium
  /// converged to abs_tol = 1e-6 the sign of so small an eigenvalue is not resolved
  /// (docs/numerics.md, "Marginal equilibria"). 0: none (every real part above 1e-9 /ms is
  /// `unstable` or `oscillatory`).
  double stability_marginal = 1e-5;
  /// With a check (stability != off), circuits whose E is eliminated and leaky and whose other
  /// populations are all Newton unknowns, and circuits whose every population is a leaky Newton
  /// unknown (ssn), get the stability of each converged equilibrium from the solver's own
  /// Jacobian (SolveResult::sample_stability: reduced_stability or full_stability), not from
  /// stability()'s vector-Jacobian products. false forces the generic path (same spectrum; for
  /// verification).
  bool stability_fast_path = true;
  /// Not a config key: keep each sample's last evaluation for the adjoint (Linearisation; the
  /// training forward pass of the implicit rule sets it).
  bool keep_linearisation = false;
  /// Not a config key: leading eigenvalues kept per checked equilibrium on the solver's fast
  /// path (SampleStability::leading, as StabilityParameters::keep). The training step's forward
  /// pass (implicit and frozen rules; also bench_train's) sets 0: the class, growth rate and
  /// frequency only, which is all it counts and reports, without sorting or allocating per
  /// sample for the small reductions (f <= 8 interneuron units).
  int stability_leading = StabilityParameters{}.keep;
  /// Not a config key: the class only where a certificate gives it (StabilityParameters::
  /// class_only, sim::certified_stable: Routh-Hurwitz for the default circuit's 4 x 4
  /// reduction, a logarithmic-norm test for larger ones, without an eigensolve; such samples
  /// have NaN growth rate and frequency). The training step's forward pass sets it, with
  /// stability_leading = 0.
  bool stability_class_only = false;
};

/// The fixed-point solver's last evaluation of each converged sample (its double-precision state
/// and partials at the equilibrium it stored, and the Jacobian where the stability check formed
/// it), kept so that the adjoint solve need not load, evaluate and differentiate every sample
/// again. Kept for pooled circuits (the default circuit), and for the others where the stability
/// check's reduced fast path applies (E eliminated and leaky: a kept evaluation is a few vectors
/// of E's size plus the n x n Jacobian of the unknowns, e.g. 37 KB per sample for the
/// heterogeneous circuit's n = 56; not ssn's, whose Jacobian is 353 x 353); elsewhere `stride` is 0
/// and nothing is kept. For the batch and layer it was solved for: solve_adjoint checks the layout
/// (`pooled`, `stride`) and each sample's stored core states against it and evaluates afresh where
/// they differ (a sample the stability policy re-integrated). In float32 the adjoint then
/// linearises at the solver's double equilibrium rather than at its float32 rounding
/// (docs/numerics.md).
struct Linearisation {
  int stride = 0;            ///< doubles per sample, 0: nothing kept
  bool pooled = false;       ///< the layout: written by the pooled (fixed-size) solver or not
  std::vector<double> data;  ///< stride x batch
};

/// Per-batch outcome. `status` is the worst sample's status.
struct SolveResult {
  SolverStatus status = SolverStatus::converged;
  int iterations = 0;            ///< Newton iterations (max over samples) or ODE steps
  double residual = 0.0;         ///< worst max_k |tau_k dz_k/dt| over samples
  double scaled_residual = 0.0;  ///< worst residual / (abs_tol + rel_tol |z|); <= 1 converged
  int failed_samples = 0;        ///< samples not converged
  int fallback_samples = 0;      ///< samples that needed the ODE fallback (fixed point only)
  /// Samples where Newton stalled and the pseudo-transient continuation ran (fixed point only;
  /// those it did not bring to convergence are also in fallback_samples if the fallback is on)
  int continuation_samples = 0;
  /// Newton's linear solves (fixed point only): LU factorisations of the Jacobian, and GMRES
  /// vectors of the Krylov steps (FixedPointParameters::krylov), and steps solved by the
  /// low-rank (Woodbury) formula where every link is uniform (docs/numerics.md, "Low-rank steps")
  long factorisations = 0, krylov_vectors = 0, low_rank_solves = 0;
  std::vector<int> sample_iterations;
  std::vector<SolverStatus> sample_status;
  std::vector<double> sample_residual;
  std::vector<double> residual_history;  ///< worst residual after each iteration / step
  double t_final = 0.0;                  ///< ODE only: simulated time (ms)
  /// Fixed point with FixedPointParameters::stability_fast_path (and a check): per sample, 1 if
  /// sample_stability holds the stability of its final equilibrium (converged samples among the
  /// checked ones, on circuits the fast path covers); empty otherwise.
  std::vector<char> stability_known;
  std::vector<SampleStability> sample_stability;
  bool ok() const { return status == SolverStatus::converged; }
  std::string describe()
      const;  ///< "max_iterations after 50 iterations, residual 3.1e-2, 4/32 samples failed"
};

struct OdeParameters {
  Tolerance tol;                  ///< equilibrium test (same meaning as the fixed-point solver)
  double stepper_abs_tol = 1e-8;  ///< Dormand-Prince local error tolerances
  double stepper_rel_tol = 1e-8;
  double dt_initial = 0.1;  ///< ms
  double t_max = 1e5;       ///< ms
  int max_steps = 200000;
  int check_every = 1;  ///< test the residual every this many accepted steps
};

/// The ODE settings of the fixed-point solver's fallback (and of the forward pass's
/// re-integration of unstable equilibria): the fallback's caps, and a step error well below the
/// equilibrium tolerance, or the residual stalls just above it (measured in bench/README.md).
inline OdeParameters fallback_ode(const FixedPointParameters& p) {
  OdeParameters op;
  op.tol = p.tol;
  op.t_max = p.fallback_t_max;
  op.max_steps = p.fallback_max_steps;
  op.stepper_abs_tol = std::min(op.stepper_abs_tol, 0.01 * p.tol.abs_tol);
  op.stepper_rel_tol = std::min(op.stepper_rel_tol, 0.01 * std::max(p.tol.rel_tol, 1e-14));
  return op;
}

/// Observer called with (t, state) at requested times (ODE only).
template <class S>
using TraceObserver = std::function<void(double t, const CircuitState<S>&)>;

/// The circuit's equilibrium: populations driven only by the input are computed explicitly, then
/// Newton's method with a backtracking line search runs on the rest (the E potentials are
/// eliminated exactly when E has no recurrent input), per sample, in double precision. z holds
/// the initial guess and receives the equilibrium.
/// With `keep` (and a pooled circuit) each sample's last evaluation goes there too.
template <class S>
SolveResult solve_fixed_point(const models::Layer<S>& layer, const CircuitInput<S>& in,
                              const FixedPointParameters& params, CircuitState<S>& z,
                              Linearisation* keep = nullptr);

/// Integrate the circuit ODE with Boost.Odeint's controlled Dormand-Prince stepper (dense
/// output) until every sample meets the tolerance, or t_max / max_steps is hit. If `observe`
/// is set it is called at each of `observe_times` (ms, ascending) reached before stopping.
template <class S>
SolveResult integrate(const models::Layer<S>& layer, const CircuitInput<S>& in,
                      const OdeParameters& params, CircuitState<S>& z,
                      const std::vector<double>& observe_times = {},
                      const TraceObserver<S>& observe = {});

/// Outcome of the adjoint (implicit-gradient) linear solves of a batch.
struct AdjointStats {
  SolverStatus status = SolverStatus::converged;
  int solves = 0;             ///< per-sample solves performed
  int failed = 0;             ///< singular or non-finite solves
  double worst_residual = 0;  ///< max ||J^T w - rhs|| / ||rhs|| over samples
  /// smallest reciprocal condition estimate seen: LAPACK-style estimates of the factorised
  /// solves; for a GMRES solve (AdjointParameters::krylov_min_unknowns) the upper bound
  /// ||rhs||_1 / (||J^T||_1 ||a||_1) that its own solution a gives
  double worst_rcond = 1;
  /// solves by a factorisation of their own matrix (LU; Cramer's rule for two unknowns)
  long factorisations = 0;
  /// GMRES vectors built (krylov_min_unknowns), those of attempts that failed over to an LU
  /// included
  long krylov_vectors = 0;
  /// solves by the low-rank (Woodbury) formula (every link uniform; docs/numerics.md, "Low-rank
  /// steps"); their rcond is that of the links x links capacitance matrix
  long low_rank_solves = 0;
  bool ok() const { return status == SolverStatus::converged; }
  /// Merge another batch's (or layer's) statistics.
  void add(const AdjointStats& o);
};

struct AdjointParameters {
  /// true: through every population (the implicit rule); false: the inhibitory populations held
  /// constant at the equilibrium (the frozen rule), so only E's own block is solved.
  bool through_inhibition = true;
  bool pooled_fast_path = true;  ///< as FixedPointParameters::pooled_fast_path
  /// The solver's last evaluations of this layer and batch, or null: evaluate every sample.
  const Linearisation* saved = nullptr;
  /// Through the inhibition, systems of at least this many unknowns (ssn: 353, E among them)
  /// solve all but the first sample of each group of `krylov_share` consecutive samples by
  /// GMRES on J^T, preconditioned by the LU of the last sample of the group that was factorised,
  /// to ||J^T a - rhs|| <= krylov_rtol ||rhs||; where GMRES needs more than krylov_max
  /// vectors the sample is factorised and its LU becomes the preconditioner. The groups do not
  /// depend on the thread count. Only where every Newton unknown has a leak (leaky units,
  /// or integrating / multiplicative ones with leak > 0): identical units without one make J
  /// singular, a consistent system GMRES would solve where the LU fails. 0 = every sample
  /// factorised (docs/numerics.md, "Implicit gradients").
  int krylov_min_unknowns = 128;
  int krylov_share = 8;
  double krylov_rtol = 1e-10;
  int krylov_max = 20;
  /// Through the inhibition, where every population is a leaky unknown and every link uniform
  /// (ssn with pooled projections): J^T a = rhs by the Woodbury identity on J's
  /// diagonal-plus-low-rank form (FixedPointParameters::low_rank), checked by its residual;
  /// false: the LU / GMRES path (for verification).
  bool low_rank = true;
};

/// The adjoint of a circuit's equilibrium: the cotangents w (one n_P x B matrix per population)
/// with J^T w = -dL/dz, where dL/dz is g_v = dL/dv on E and 0 elsewhere, and J = dF/dz at the
/// equilibrium z (terms `t` from evaluate(..., partials = true)). Then dL/dparams = w^T dF/dparams:
/// pass w to vjp(). Per-sample dense solves in double over the populations Newton solves for (E
/// eliminated when it has no recurrent input); populations with explicit equilibria by
/// back-substitution. Failed solves (singular, non-finite) are counted in the returned stats.
template <class S>
AdjointStats solve_adjoint(const models::Layer<S>& layer, const CircuitInput<S>& in,
                           const CircuitState<S>& z, const CircuitTerms<S>& t, const Mat<S>& g_v,
                           const AdjointParameters& params, std::vector<Mat<S>>& w);

}  // namespace eisim::sim
