#pragma once
// The forward pass: every layer to its equilibrium (or its closed form), batch by batch.
#include <vector>

#include "eisim/models/network.hpp"
#include "eisim/sim/circuit.hpp"
#include "eisim/sim/solver.hpp"
#include "eisim/sim/stability.hpp"

namespace eisim::sim {

/// What the forward pass keeps of one layer (for the backward pass and for recording).
template <class S>
struct LayerCache {
  CircuitInput<S> in;  ///< in.x: the layer input; in.ext[0]: the drive e = W_EX x + b
  CircuitState<S> z;   ///< circuit: equilibrium; layernorm/none: z.v() is the pre-activation
  Mat<S> r;            ///< output rates phi(v)
  Mat<S> aux;          ///< none: W_IX x; layernorm: 1 x B inverse spread
  SolveResult solve;   ///< circuit only
  /// Circuit only, with FixedPointParameters::keep_linearisation: the solver's last evaluation of
  /// each sample, for the adjoint (AdjointParameters::saved).
  Linearisation lin;
  /// Circuit only: the stability of the equilibria of the samples `checked` (in that order),
  /// after the policy of FixedPointParameters::stability; `found_unstable` / `found_oscillatory`
  /// / `found_marginal` count what the solver's equilibria were before it (marginal ones are
  /// kept: the policy does not act on them), `reintegrated` the samples replaced by the ODE's
  /// equilibrium (stable, or marginal: then `stability` says so, found_marginal does not count
  /// it), `no_stable` those left with status `unstable`.
  StabilityResult stability;
  std::vector<int> checked;
  int found_unstable = 0, found_oscillatory = 0, found_marginal = 0, reintegrated = 0,
      no_stable = 0;
  const Mat<S>& x() const { return in.x; }
  const Mat<S>& e() const { return in.ext[0]; }
};

template <class S>
struct ForwardCache {
  std::vector<LayerCache<S>> layers;
  const Mat<S>& logits() const { return layers.back().r; }
};

/// Summary of the forward solves of a batch.
struct ForwardStats {
  int iterations_max = 0;
  double iterations_mean = 0.0;
  int failed_samples = 0;
  int fallback_samples = 0;  ///< samples that needed the ODE fallback of the fixed-point solver
  double worst_residual = 0.0;
  /// Stability of the solved equilibria (sim/stability.hpp), over circuit layers and samples:
  int stability_checked = 0;    ///< equilibria whose Jacobian spectrum was computed
  int unstable_samples = 0;     ///< found unstable (a real eigenvalue > 0), before the policy
  int oscillatory_samples = 0;  ///< found with a complex pair of positive real part (Hopf)
  /// found marginal (leading real part in (1e-9, FixedPointParameters::stability_marginal] /ms):
  /// kept and used, not acted on by the policy
  int marginal_samples = 0;
  int reintegrated_samples = 0;  ///< replaced by integrating the ODE (solver.unstable: integrate)
  /// The fixed-point solver's work (SolveResult), over circuit layers: samples the
  /// pseudo-transient continuation took, LU factorisations and GMRES vectors of Newton's steps,
  /// and its steps solved by the low-rank formula.
  long continuation_samples = 0, factorisations = 0, krylov_vectors = 0, low_rank_solves = 0;
};

/// Run one layer on input x (a circuit with the fixed-point solver from the common initial
/// state, then the stability check and its policy). A solver failure, or an equilibrium that is
/// not stable, is recorded in c.solve (status `unstable`), never hidden; with the policy `fail`
/// it throws numerical_error.
template <class S>
void forward_layer(const models::Layer<S>& layer, const Mat<S>& x, const FixedPointParameters& fp,
                   LayerCache<S>& c);

/// Run every layer to its equilibrium. Throws numerical_error naming the layer when a layer has
/// no stable equilibrium for some samples (it oscillates or diverges: see `eisim simulate`).
template <class S>
ForwardStats forward(const models::Network<S>& net, const Mat<S>& x, const FixedPointParameters& fp,
                     ForwardCache<S>& cache);

}  // namespace eisim::sim
