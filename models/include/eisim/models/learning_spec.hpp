#pragma once
// Parameters of the learning rules, the optimiser and the training loop: plain data, kept with
// the other specifications in models/ so that the configuration (io/) reads them without
// depending on the learning module that implements the rules. The names stay in
// eisim::learning, where they are used.
#include <string>

namespace eisim::learning {

/// How the error passes through the circuit's inhibition (science.md, section 3).
enum class Rule {
  implicit,  ///< exact gradient at the equilibrium (adjoint linear solve)
  frozen,    ///< inhibitory state held constant in the backward pass
  bptt,      ///< back-propagation through a fixed-step (Euler) integration
};

/// Part of LayerNorm's backward transform applied to the error at v (frozen rule only).
enum class ErrorTransform { none, center, scale, decorrelate, full, lateral };

/// The configuration's spelling.
inline const char* to_string(Rule r) {
  switch (r) {
    case Rule::implicit:
      return "implicit";
    case Rule::frozen:
      return "frozen";
    case Rule::bptt:
      return "bptt";
  }
  return "unknown";
}

inline const char* to_string(ErrorTransform t) {
  switch (t) {
    case ErrorTransform::none:
      return "none";
    case ErrorTransform::center:
      return "center";
    case ErrorTransform::scale:
      return "scale";
    case ErrorTransform::decorrelate:
      return "decorrelate";
    case ErrorTransform::full:
      return "full";
    case ErrorTransform::lateral:
      return "lateral";
  }
  return "unknown";
}

struct LearningSpec {
  Rule rule = Rule::implicit;
  ErrorTransform error_transform = ErrorTransform::none;
  int bptt_steps = 400;             ///< Euler steps of the bptt rule
  double bptt_dt = 1.0;             ///< ms, Euler step of the bptt rule
  double label_smoothing = 0.1;     ///< in [0, 1)
  double lr_E = 0.01;               ///< learning rate of excitatory weights and biases
  double lr_I = 0.001;              ///< learning rate of inhibitory weights
  double momentum = 0.0;            ///< in [0, 1)
  double weight_decay = 0.0;        ///< >= 0, L2 on excitatory weights
  double local_loss_weight = 0.01;  ///< weight of the feed-forward circuit's homeostatic loss
  bool train_inhibitory = true;     ///< train the inhibitory weights (task or local loss)
  /// One subtractive and one divisive interneuron (the default): scalar adjoint code with fused
  /// passes over the E units. false forces the general matrix code (for verification).
  bool pooled_fast_path = true;
};

struct TrainSpec {
  int epochs = 5;
  int batch_size = 32;
  int probe_batch = 256;       ///< fixed probe batch for gradient alignment
  bool progress = true;        ///< print a progress bar on stderr
  double max_grad_norm = 0.0;  ///< 0 = no clipping
};

}  // namespace eisim::learning
