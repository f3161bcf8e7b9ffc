#pragma once
// Small circuits shared by the sim and learning tests.
#include <algorithm>
#include <random>
#include <stdexcept>
#include <string>

#include "eisim/models/circuit.hpp"
#include "eisim/models/network.hpp"
#include "test_support.hpp"

namespace eisim::test {

/// Default homeostatic circuit parameters (pooled, integral control).
inline models::CircuitParams default_circuit() {
  return models::CircuitParams{};
}

/// Leaky circuit with heterogeneous pooling and several interneurons of each type.
inline models::CircuitParams leaky_circuit() {
  models::CircuitParams c;
  c.heterogeneous = true;
  c.n_I = 3;
  c.n_D = 2;
  c.lambda_I = 0.5;
  c.lambda_D = 0.3;
  c.k_I = 1.5;
  c.k_D = 0.8;
  c.theta = 0.7;
  return c;
}

/// The leaky circuit with one interneuron of each type (the solvers' pooled instantiation).
inline models::CircuitParams leaky_pooled_circuit() {
  models::CircuitParams c = leaky_circuit();
  c.n_I = 1;
  c.n_D = 1;
  return c;
}

/// Lateral error-pooling units of a hidden layer of n_E units (the former default, n_E / 10).
inline int lateral_units(int n_E) {
  return std::max(1, n_E / 10);
}

/// A hidden-layer template of kind circuit: the preset ("default" or "inorm") built from `c`,
/// with the layer's theta (layernorm target, the frozen rule's `scale`, the local loss) c.theta.
inline models::LayerSpec circuit_template(const models::CircuitParams& c,
                                          const std::string& preset = "default", int n_E = 1) {
  models::LayerSpec t;
  t.kind = models::LayerKind::circuit;
  t.n_E = n_E;
  t.circuit = models::make_preset(preset, c, n_E, t.phi);
  t.theta = c.theta;
  return t;
}

/// A single circuit layer with n_in inputs and n_E units; drive and weights deterministic.
template <class S>
models::Layer<S> make_circuit(int n_in, int n_E, const models::CircuitParams& c,
                              std::uint64_t seed = 1, const std::string& preset = "default") {
  models::LayerSpec ls = circuit_template(c, preset, n_E);
  ls.n_in = n_in;
  ls.lateral_units = lateral_units(n_E);
  auto spec = models::make_network_spec(n_in, 3, {ls}, 1.0, 1);
  auto net = models::initialise<S>(spec, seed);
  return net.layers.front();
}

/// Network of `hidden` layers of the template (n_E units, lateral units n_E / 10) and a 3-way
/// readout.
template <class S>
models::Network<S> make_network(int n_in, int n_E, int hidden, const models::LayerSpec& tmpl,
                                std::uint64_t seed = 1) {
  std::vector<models::LayerSpec> layers(hidden, tmpl);
  for (auto& l : layers) {
    l.n_E = n_E;
    l.lateral_units = lateral_units(n_E);
  }
  auto spec = models::make_network_spec(n_in, 3, layers, 1.0, 1);
  auto net = models::initialise<S>(spec, seed);
  // Non-zero biases so that every parameter has a non-trivial gradient.
  std::mt19937_64 rng(seed + 99);
  for (auto& l : net.layers) l.w.b = random_matrix<S>(int(l.w.b.rows()), 1, -0.1, 0.1, rng);
  return net;
}

/// Index of a population of a circuit layer by name (E, I, D for the default and inorm presets).
template <class S>
int population(const models::Layer<S>& L, const std::string& name) {
  const int p = models::find_population(L.spec.circuit, name);
  if (p < 0) throw std::logic_error("the circuit has no population " + name);
  return p;
}

}  // namespace eisim::test
