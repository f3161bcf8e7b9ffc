#pragma once
// SGD with momentum and weight decay; separate learning rates for the excitatory and inhibitory
// parameter groups; Dale's-law projection after every step.
#include <vector>

#include "eisim/learning/gradients.hpp"
#include "eisim/models/learning_spec.hpp"

namespace eisim::learning {

template <class S>
class Sgd {
 public:
  explicit Sgd(const LearningSpec& spec) : spec_(spec) {}

  /// One update of every trained weight (see is_trained), projected onto Dale's law
  /// (w >= 0 for constrained entries) in the same pass. Fixed weights are not touched after the
  /// first step, which projects them once.
  void step(models::Network<S>& net, const Gradients<S>& g);

  /// Momentum buffers, same shapes as the weights (empty until the first step; they stay zero
  /// with momentum 0 and no weight decay, where the step does not need them).
  std::vector<models::LayerWeights<S>>& velocity() { return velocity_; }
  const std::vector<models::LayerWeights<S>>& velocity() const { return velocity_; }

 private:
  struct Entry {
    int k;  // index in the layer's weights (models::LayerSpec::weights)
    S lr;
    bool dale, decay;
  };
  // Velocity buffers and the trained entries of each layer; redone when step() is given a
  // different network object than the one planned for.
  void plan(models::Network<S>& net);

  LearningSpec spec_;
  std::vector<models::LayerWeights<S>> velocity_;
  std::vector<std::vector<Entry>> plan_;
  const models::Network<S>* planned_for_ = nullptr;
};

/// Cosine between the excitatory-weight gradients (W_EX and b) of two gradient sets, per layer
/// and over all layers together (last entry).
template <class S>
std::vector<double> gradient_cosines(const Gradients<S>& a, const Gradients<S>& b);

}  // namespace eisim::learning
