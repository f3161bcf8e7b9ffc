#pragma once
// Small circuits shared by the sim and learning tests.
#include <random>

#include "eisim/models/network.hpp"
#include "test_support.hpp"

namespace eisim::test {

/// A single circuit layer with n_in inputs and n_E units; drive and weights deterministic.
template <class S>
models::Layer<S> make_circuit(int n_in, int n_E, const models::CircuitParams& c,
                              std::uint64_t seed = 1) {
  models::LayerSpec ls;
  ls.kind = models::LayerKind::circuit;
  ls.n_in = n_in;
  ls.n_E = n_E;
  ls.circuit = c;
  auto spec = models::make_network_spec(n_in, 3, {ls}, 1.0, 1, 0);
  auto net = models::initialise<S>(spec, seed);
  return net.layers.front();
}

/// Default homeostatic circuit parameters (pooled, integral control).
inline models::CircuitParams default_circuit() {
  return models::CircuitParams{};
}

/// Leaky circuit with heterogeneous pooling and several interneurons of each type.
inline models::CircuitParams leaky_circuit() {
  models::CircuitParams c;
  c.pooling = models::Pooling::heterogeneous;
  c.n_I = 3;
  c.n_D = 2;
  c.lambda_I = 0.5;
  c.lambda_D = 0.3;
  c.k_I = 1.5;
  c.k_D = 0.8;
  c.theta = 0.7;
  return c;
}

/// The leaky circuit with one interneuron of each type (the solvers' scalar fast path).
inline models::CircuitParams leaky_pooled_circuit() {
  models::CircuitParams c = leaky_circuit();
  c.n_I = 1;
  c.n_D = 1;
  return c;
}

/// Network of `hidden` circuit layers (n_E units) and a 3-way readout, double precision.
template <class S>
models::Network<S> make_network(int n_in, int n_E, int hidden, const models::LayerSpec& tmpl,
                                std::uint64_t seed = 1) {
  std::vector<models::LayerSpec> layers(hidden, tmpl);
  for (auto& l : layers) l.n_E = n_E;
  auto spec = models::make_network_spec(n_in, 3, layers, 1.0, 1, 0);
  auto net = models::initialise<S>(spec, seed);
  // Non-zero biases so that every parameter has a non-trivial gradient.
  std::mt19937_64 rng(seed + 99);
  for (auto& l : net.layers) l.w.b = random_matrix<S>(int(l.w.b.rows()), 1, -0.1, 0.1, rng);
  return net;
}

}  // namespace eisim::test
