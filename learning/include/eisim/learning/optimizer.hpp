#pragma once
// SGD with momentum and weight decay; separate learning rates for the excitatory and inhibitory
// parameter groups; Dale's-law projection after every step.
#include <vector>

#include "eisim/learning/gradients.hpp"
#include "eisim/learning/spec.hpp"

namespace eisim::learning {

template <class S>
class Sgd {
 public:
  explicit Sgd(const LearningSpec& spec) : spec_(spec) {}

  /// One update of every trained weight (see is_trained), then clamp_dale.
  void step(models::Network<S>& net, const Gradients<S>& g);

  /// Momentum buffers, same shapes as the weights (empty until the first step).
  std::vector<models::LayerWeights<S>>& velocity() { return velocity_; }
  const std::vector<models::LayerWeights<S>>& velocity() const { return velocity_; }

 private:
  LearningSpec spec_;
  std::vector<models::LayerWeights<S>> velocity_;
};

/// Cosine between the excitatory-weight gradients (W_EX and b) of two gradient sets, per layer
/// and over all layers together (last entry).
template <class S>
std::vector<double> gradient_cosines(const Gradients<S>& a, const Gradients<S>& b);

}  // namespace eisim::learning
