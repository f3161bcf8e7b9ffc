#pragma once
// Pieces of the training loop of `eisim train` that tests and benchmarks call directly.
#include <string>

#include "eisim/io/config.hpp"
#include "eisim/learning/gradients.hpp"
#include "eisim/models/network.hpp"

namespace eisim::experiments {

/// Gradient clipping (train.max_grad_norm): scales the gradients of the weights the optimiser
/// updates (learning::is_trained with `train_inhibitory`) so that their joint Euclidean norm is
/// at most `max_norm`. Gradients of fixed weights (feedback pooling, lateral error pooling, ...)
/// neither count towards the norm nor change. Returns the norm before clipping (NaN if a trained
/// gradient is not finite; nothing is scaled then).
template <class S>
double clip_gradients(const models::Network<S>& net, learning::Gradients<S>& grads, double max_norm,
                      bool train_inhibitory);

/// What shapes the hidden layers, named by the configuration keys that exist for the configured
/// layer kind and circuit preset, with their values: the part of eisim train's failure hints
/// (non-finite loss before any update, accuracy at chance) that points at the network.
std::string network_hint(const io::Config& config);

}  // namespace eisim::experiments
