#pragma once
// The learning rules' backward passes, for every layer kind (sim/forward.hpp runs the forward).
#include <vector>

#include "eisim/models/learning_spec.hpp"
#include "eisim/models/network.hpp"
#include "eisim/sim/forward.hpp"
#include "eisim/sim/solver.hpp"

namespace eisim::learning {

/// Gradients for every parameter (same names and shapes as the weights) and, if asked for, the
/// loss gradient with respect to the network input.
template <class S>
struct Gradients {
  std::vector<models::LayerWeights<S>> layers;
  /// dL/dx (n_in x B), computed only if `input_gradient` is set before backward(); training
  /// does not need it and it costs a GEMM as large as the first layer's forward product.
  Mat<S> input;
  bool input_gradient = false;
  sim::AdjointStats adjoint;
  /// Shape every entry like the weights and set it to zero. With keep_overwritten, W_EX and b
  /// are only shaped, not zeroed (backward() overwrites them).
  void zero_like(const models::Network<S>& net, bool keep_overwritten = false);
};

/// Softmax cross-entropy with label smoothing; returns the mean loss and writes dL/dlogits
/// (already divided by the batch size). `correct` receives the number of correct argmaxes.
template <class S>
double cross_entropy(const Mat<S>& logits, const std::vector<int>& labels, double smoothing,
                     Mat<S>& dlogits, int* correct = nullptr);

/// Back-propagate dL/dlogits with the given rule (implicit or frozen). Throws numerical_error if
/// an adjoint solve fails (singular or non-finite); never returns silently zero gradients.
template <class S>
void backward(const models::Network<S>& net, const sim::ForwardCache<S>& cache,
              const Mat<S>& dlogits, const LearningSpec& spec, Gradients<S>& grads);

/// Gradient of the local homeostatic loss weight * mean_batch[ mean(v)^2 + (var(v) - theta)^2 ]
/// of every circuit layer with weights that learn from it (models::Learns::local), through the
/// exact dependence of v on them; added into those entries of `grads` (others untouched).
/// Returns the loss value.
template <class S>
double local_homeostatic_gradients(const models::Network<S>& net, const sim::ForwardCache<S>& cache,
                                   double weight, Gradients<S>& grads);

/// Back-propagation through `steps` Euler steps of size dt from the solvers' initial state
/// (bptt rule); the loss is taken at the final state. Any circuit.
template <class S>
void backward_bptt(const models::Network<S>& net, const Mat<S>& x, const std::vector<int>& labels,
                   const LearningSpec& spec, Gradients<S>& grads, double* loss = nullptr);

/// The frozen rule's error transform T (center, decorrelate, full, lateral; none = identity) of
/// the error g_v at the E potentials v. `scale` is not a transform of g_v (see frozen rule).
template <class S>
Mat<S> transform_error(ErrorTransform t, const models::Layer<S>& layer, const Mat<S>& v,
                       Mat<S> g_v);

/// True if the optimiser updates weight k of the layer (its declared role; with
/// train_inhibitory false only the excitatory W_EX and b).
bool is_trained(const models::LayerSpec& spec, int k, bool train_inhibitory);

/// True if a training step with `spec` solves a circuit's adjoint at the equilibrium (the
/// implicit rule, or, with train_inhibitory, the local loss of weights that learn from it): the
/// training forward pass then keeps the solver's last evaluations for it
/// (sim::FixedPointParameters::keep_linearisation).
bool solves_adjoint(const models::NetworkSpec& net, const LearningSpec& spec);

}  // namespace eisim::learning
