#pragma once
// How a circuit is run: the ODE integrator and the fixed-point (Newton) solver. Both take
// parameters in and return a status with statistics; non-convergence is a status, never a
// silently returned state.
#include <functional>
#include <string>
#include <vector>

#include "eisim/models/network.hpp"

namespace eisim::sim {

enum class SolverStatus { converged, max_iterations, diverged, non_finite };
const char* to_string(SolverStatus s);

/// State of one circuit layer for a batch (one sample per column).
template <class S>
struct CircuitState {
  Mat<S> v;    ///< n_E x B, E potentials
  Mat<S> r_I;  ///< n_I x B, subtractive interneuron rates
  Mat<S> r_D;  ///< n_D x B, divisive interneuron rates
  void resize(int n_E, int n_I, int n_D, int batch);
};

/// Convergence test shared by both solvers: a sample has converged when every component's
/// displacement rate |tau_k dz_k/dt| <= abs_tol + rel_tol * |z_k|.
struct Tolerance {
  double abs_tol = 1e-6;
  double rel_tol = 1e-6;
};

struct FixedPointParameters {
  Tolerance tol;
  int max_iterations = 50;
  double max_log_step = 4.0;    ///< cap on |change of log r_D| per Newton step
  int max_backtracks = 30;      ///< line-search halvings per iteration
  bool ode_fallback = true;     ///< integrate the ODE for samples where Newton fails, then polish
  double fallback_t_max = 1e5;  ///< ms, cap of the fallback integration
  int fallback_max_steps = 100000;  ///< step cap of the fallback integration
  /// One subtractive and one divisive interneuron (the default): scalar code with fused passes
  /// over the E units. false forces the general matrix code (same iterates; for verification).
  bool pooled_fast_path = true;
};

/// Per-batch outcome. `status` is the worst sample's status.
struct SolveResult {
  SolverStatus status = SolverStatus::converged;
  int iterations = 0;            ///< Newton iterations (max over samples) or ODE steps
  double residual = 0.0;         ///< worst max_k |tau_k dz_k/dt| over samples
  double scaled_residual = 0.0;  ///< worst residual / (abs_tol + rel_tol |z|); <= 1 converged
  int failed_samples = 0;        ///< samples not converged
  int fallback_samples = 0;      ///< samples that needed the ODE fallback (fixed point only)
  std::vector<int> sample_iterations;
  std::vector<SolverStatus> sample_status;
  std::vector<double> sample_residual;
  std::vector<double> residual_history;  ///< worst residual after each iteration / step
  double t_final = 0.0;                  ///< ODE only: simulated time (ms)
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

/// Observer called with (t, state) at requested times (ODE only).
template <class S>
using TraceObserver = std::function<void(double t, const CircuitState<S>&)>;

/// Compute the excitatory drive e = W_EX x + b for a batch.
template <class S>
void excitatory_drive(const models::LayerWeights<S>& w, const Mat<S>& x, Mat<S>& e);

/// Right-hand side dz/dt of the circuit at state z for drive e and input x.
template <class S>
void circuit_rhs(const models::Layer<S>& layer, const Mat<S>& e, const Mat<S>& x,
                 const CircuitState<S>& z, CircuitState<S>& dzdt);

/// Per-sample residual max_k |tau_k dz_k/dt| and scaled residual (see Tolerance).
template <class S>
void circuit_residual(const models::Layer<S>& layer, const Mat<S>& e, const Mat<S>& x,
                      const CircuitState<S>& z, const Tolerance& tol, std::vector<double>& residual,
                      std::vector<double>& scaled);

/// Initial state used by both solvers: v = 0, r_I = 0, r_D = 1.
template <class S>
void initial_state(const models::Layer<S>& layer, int batch, CircuitState<S>& z);

/// Newton's method on the interneuron rates (the E potentials are eliminated exactly), with a
/// backtracking line search. z holds the initial guess and receives the equilibrium.
template <class S>
SolveResult solve_fixed_point(const models::Layer<S>& layer, const Mat<S>& e, const Mat<S>& x,
                              const FixedPointParameters& params, CircuitState<S>& z);

/// Integrate the circuit ODE with Boost.Odeint's controlled Dormand-Prince stepper (dense
/// output) until every sample meets the tolerance, or t_max / max_steps is hit. If `observe`
/// is set it is called at each of `observe_times` (ms, ascending) reached before stopping.
template <class S>
SolveResult integrate(const models::Layer<S>& layer, const Mat<S>& e, const Mat<S>& x,
                      const OdeParameters& params, CircuitState<S>& z,
                      const std::vector<double>& observe_times = {},
                      const TraceObserver<S>& observe = {});

}  // namespace eisim::sim
