#pragma once
// The forward pass: every layer to its equilibrium (or its closed form), batch by batch.
#include <vector>

#include "eisim/models/network.hpp"
#include "eisim/sim/circuit.hpp"
#include "eisim/sim/solver.hpp"

namespace eisim::sim {

/// What the forward pass keeps of one layer (for the backward pass and for recording).
template <class S>
struct LayerCache {
  CircuitInput<S> in;  ///< in.x: the layer input; in.ext[0]: the drive e = W_EX x + b
  CircuitState<S> z;   ///< circuit: equilibrium; layernorm/none: z.v() is the pre-activation
  Mat<S> r;            ///< output rates phi(v)
  Mat<S> aux;          ///< none: W_IX x; layernorm: 1 x B inverse spread
  SolveResult solve;   ///< circuit only
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
};

/// Run one layer on input x (a circuit with the fixed-point solver from the common initial
/// state). A solver failure is recorded in c.solve, never hidden.
template <class S>
void forward_layer(const models::Layer<S>& layer, const Mat<S>& x, const FixedPointParameters& fp,
                   LayerCache<S>& c);

/// Run every layer to its equilibrium.
template <class S>
ForwardStats forward(const models::Network<S>& net, const Mat<S>& x, const FixedPointParameters& fp,
                     ForwardCache<S>& cache);

}  // namespace eisim::sim
