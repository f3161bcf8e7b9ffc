#pragma once
// Forward pass to the equilibrium of every layer and the learning rules' backward passes.
#include <vector>

#include "eisim/learning/spec.hpp"
#include "eisim/models/network.hpp"
#include "eisim/sim/solver.hpp"

namespace eisim::learning {

/// What the forward pass keeps of one layer for the backward pass.
template <class S>
struct LayerCache {
  Mat<S> x;                ///< input (n_in x B)
  Mat<S> e;                ///< excitatory drive W_EX x + b
  sim::CircuitState<S> z;  ///< circuit: equilibrium; layernorm/none: z.v is the pre-activation
  Mat<S> r;                ///< output rates phi(v)
  Mat<S> aux;              ///< none: W_IX x; layernorm: 1 x B inverse spread
  sim::SolveResult solve;  ///< circuit only
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

/// Run every layer to its equilibrium. Circuit layers use the fixed-point solver; a solver
/// failure is recorded in the cache (see ForwardCache::layers[l].solve), never hidden.
template <class S>
ForwardStats forward(const models::Network<S>& net, const Mat<S>& x,
                     const sim::FixedPointParameters& fp, ForwardCache<S>& cache);

/// Outcome of the adjoint (implicit-gradient) linear solves of a batch.
struct AdjointStats {
  sim::SolverStatus status = sim::SolverStatus::converged;
  int solves = 0;             ///< per-sample solves performed
  int failed = 0;             ///< singular or non-finite solves
  double worst_residual = 0;  ///< max ||J^T a - rhs|| / ||rhs|| over samples
  double worst_rcond = 1;     ///< smallest reciprocal condition estimate seen
  bool ok() const { return status == sim::SolverStatus::converged; }
};

/// Gradients for every parameter (same shapes as the weights; empty where unused) and, if asked
/// for, the loss gradient with respect to the network input.
template <class S>
struct Gradients {
  std::vector<models::LayerWeights<S>> layers;
  /// dL/dx (n_in x B), computed only if `input_gradient` is set before backward(); training
  /// does not need it and it costs a GEMM as large as the first layer's forward product.
  Mat<S> input;
  bool input_gradient = false;
  AdjointStats adjoint;
  /// Shape every entry like the weights and set it to zero. With keep_overwritten, W_EX and b
  /// are only shaped, not zeroed (backward() overwrites them).
  void zero_like(const models::Network<S>& net, bool keep_overwritten = false);
};

/// Softmax cross-entropy with label smoothing; returns the mean loss and writes dL/dlogits
/// (already divided by the batch size). `correct` receives the number of correct argmaxes.
template <class S>
double cross_entropy(const Mat<S>& logits, const std::vector<int>& labels, double smoothing,
                     Mat<S>& dlogits, int* correct = nullptr);

/// Back-propagate dL/dlogits with the given rule. Throws numerical_error if an adjoint solve
/// fails (singular or non-finite); never returns silently zero gradients.
template <class S>
void backward(const models::Network<S>& net, const ForwardCache<S>& cache, const Mat<S>& dlogits,
              const LearningSpec& spec, Gradients<S>& grads);

/// Gradient of the feed-forward circuits' local homeostatic loss
/// weight * mean_batch[ mean(v)^2 + (var(v) - theta)^2 ] with respect to W_IX and U, added into
/// `grads` (other entries untouched). Returns the loss value.
template <class S>
double local_homeostatic_gradients(const models::Network<S>& net, const ForwardCache<S>& cache,
                                   double weight, Gradients<S>& grads);

/// Back-propagation through `steps` Euler steps of size dt from the solvers' initial state
/// (bptt rule); the loss is taken at the final state. Feedback circuits only.
template <class S>
void backward_bptt(const models::Network<S>& net, const Mat<S>& x, const std::vector<int>& labels,
                   const LearningSpec& spec, Gradients<S>& grads, double* loss = nullptr);

/// The frozen rule's error at the drive, dL/de, from the error g_v at the E potentials: the
/// error transform (center, decorrelate, full, lateral) applied to g_v, then division by the
/// shunting gain; `scale` divides by LayerNorm's spread sqrt(theta)/sd(e) instead. Circuit
/// layers only; z is the equilibrium. Exposed for tests.
template <class S>
void frozen_error(ErrorTransform t, const models::Layer<S>& layer, const sim::CircuitState<S>& z,
                  const Mat<S>& e, Mat<S> g_v, Mat<S>& delta_e);

/// True if the optimiser updates this weight (see docs/concepts.md, "what learns").
bool is_trained(const models::LayerSpec& spec, const std::string& name, bool train_inhibitory);

}  // namespace eisim::learning
