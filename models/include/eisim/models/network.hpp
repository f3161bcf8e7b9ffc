#pragma once
// What the network is: plain data (specifications and weights), no solver code.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "eisim/models/circuit.hpp"
#include "eisim/models/types.hpp"

namespace eisim::models {

/// How a hidden layer computes its output. Each kind is a type in sim/ (forward) and learning/
/// (backward); this enum is only the configuration's and the files' spelling.
enum class LayerKind {
  circuit,    ///< E/I circuit integrated to its fixed point (see docs/concepts.md)
  layernorm,  ///< hard-coded sqrt(theta) * LayerNorm(W_EX x + b), exact backward
  none,       ///< plain E/I layer: W_EX x - W_EI (W_IX x) + b, no normalisation
};

/// The layer kinds as types: sim/ (forward) and learning/ (backward) overload on them, and
/// visit() is the one place that turns the configured LayerKind into a type.
struct CircuitKind {};
struct LayerNormKind {};
struct PlainKind {};

template <class F>
decltype(auto) visit(LayerKind kind, F&& f) {
  switch (kind) {
    case LayerKind::circuit:
      return f(CircuitKind{});
    case LayerKind::layernorm:
      return f(LayerNormKind{});
    case LayerKind::none:
      break;
  }
  return f(PlainKind{});
}

/// A weight matrix of a layer and its role, declared once (LayerSpec::weights) and read by the
/// initialisation, the optimiser, gradient clipping and checkpoints.
struct WeightInfo {
  std::string name;
  int rows = 0, cols = 0;
  Learns learns = Learns::fixed;
  bool dale = true;         ///< constrained to be non-negative (Dale's law)
  bool excitatory = false;  ///< learning rate learning.lr_E (else lr_I)
  bool decay = false;       ///< learning.weight_decay applies
  int projection = -1;      ///< circuit projection it belongs to (-1: none)
  bool energy = false;      ///< the signed matrix U of an input_energy projection
};

struct LayerSpec {
  LayerKind kind = LayerKind::circuit;
  int n_in = 0;
  int n_E = 0;
  NonlinearitySpec phi;      ///< output rate function r_E = phi(v)
  CircuitSpec circuit;       ///< kind circuit: populations and projections (E first)
  int n_I_plain = 1;         ///< inhibitory units of a `none` layer (feed-forward, subtractive)
  double theta = 1.0;        ///< layernorm and the frozen rule's `scale`: target mean of v^2
  double ln_epsilon = 1e-5;  ///< epsilon of the hard-coded LayerNorm
  int lateral_units = 0;     ///< fixed lateral error-pooling units (0: none)
  /// Every weight of the layer (W_EX and b first), filled by finalise().
  std::vector<WeightInfo> weights;
  /// Index into `weights` of each circuit projection's matrix and of its U (-1 if none).
  std::vector<int> projection_weight, energy_weight;
  /// Index of a weight by name, -1 if the layer has none.
  int weight_index(const std::string& name) const;
};

/// Fill LayerSpec::weights (and the projection indices) from the kind and the circuit; resolves
/// and checks the circuit. E's size and rate function are the layer's.
void finalise(LayerSpec& spec);

/// A network: hidden layers followed by a linear E/I readout (a `none` layer, identity output).
struct NetworkSpec {
  std::vector<LayerSpec> layers;  ///< hidden layers then the readout
  double init_gain = 1.0;         ///< scales the lognormal excitatory weights
};

/// Weights of one layer, in the order of LayerSpec::weights: W_EX and b (members, used in the
/// hot paths), then the others by index. Every entry is non-negative except b and U.
template <class S>
struct LayerWeights {
  Mat<S> W_EX;                     ///< n_E x n_in, excitatory input
  Mat<S> b;                        ///< n_E x 1, bias of the excitatory drive
  std::vector<std::string> names;  ///< names of `other`
  std::vector<Mat<S>> other;       ///< LayerSpec::weights[2 ...]

  /// Weight k of LayerSpec::weights (0 = W_EX, 1 = b).
  Mat<S>& at(int k) { return k == 0 ? W_EX : k == 1 ? b : other[k - 2]; }
  const Mat<S>& at(int k) const { return k == 0 ? W_EX : k == 1 ? b : other[k - 2]; }
  int count() const { return 2 + int(other.size()); }
  const std::string& name(int k) const;
  /// By name; throws internal_error if the layer has no such weight.
  Mat<S>& operator[](const std::string& name);
  const Mat<S>& operator[](const std::string& name) const;
  bool has(const std::string& name) const;

  /// Same names and shapes as `w`, every entry zero.
  template <class T>
  void zero_like(const LayerWeights<T>& w);

  /// Visit every non-empty matrix with its name, in order.
  template <class F>
  void for_each(F&& f) {
    for (int k = 0; k < count(); ++k)
      if (at(k).size() > 0) f(name(k), at(k));
  }
  template <class F>
  void for_each(F&& f) const {
    for (int k = 0; k < count(); ++k)
      if (at(k).size() > 0) f(name(k), at(k));
  }
};

template <class S>
struct Layer {
  LayerSpec spec;
  LayerWeights<S> w;
};

template <class S>
struct Network {
  NetworkSpec spec;
  std::vector<Layer<S>> layers;
  int n_in() const { return layers.empty() ? 0 : layers.front().spec.n_in; }
  int n_out() const { return layers.empty() ? 0 : layers.back().spec.n_E; }
};

/// "circuit", "layernorm" or "none" (the config's spelling).
const char* to_string(LayerKind kind);

/// Build a network spec: the `hidden` layers (n_in chained), then a 10-way E/I readout with
/// `readout_inhibitory` inhibitory units. Every layer is finalised. The one network builder.
NetworkSpec make_network_spec(int n_in, int n_out, const std::vector<LayerSpec>& hidden,
                              double init_gain, int readout_inhibitory);

/// Initialise weights (lognormal Dale-respecting excitatory weights, each projection as its
/// `init` says; see docs/concepts.md). Deterministic for a given seed.
template <class S>
Network<S> initialise(const NetworkSpec& spec, std::uint64_t seed);

/// Convert precision (float <-> double).
template <class To, class From>
Network<To> cast_network(const Network<From>& net);
template <class To, class From>
Layer<To> cast_layer(const Layer<From>& layer);

/// Smallest entry among the weights that must be non-negative (Dale's law); +inf if none.
template <class S>
double min_dale_weight(const Network<S>& net);

/// Project the Dale-constrained weights onto >= 0.
template <class S>
void clamp_dale(Network<S>& net);

template <class S>
template <class T>
void LayerWeights<S>::zero_like(const LayerWeights<T>& w) {
  W_EX.setZero(w.W_EX.rows(), w.W_EX.cols());
  b.setZero(w.b.rows(), w.b.cols());
  names = w.names;
  other.resize(w.other.size());
  for (std::size_t k = 0; k < other.size(); ++k)
    other[k].setZero(w.other[k].rows(), w.other[k].cols());
}

}  // namespace eisim::models
