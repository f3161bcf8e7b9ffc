#pragma once
// What the network is: plain data (specifications and weights), no solver code.
#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "eisim/models/types.hpp"

namespace eisim::models {

/// How a hidden layer computes its output.
enum class LayerKind {
  circuit,    ///< E/I circuit integrated to its fixed point (see docs/concepts.md)
  layernorm,  ///< hard-coded sqrt(theta) * LayerNorm(W_EX x + b), exact backward
  none,       ///< plain E/I layer: W_EX x - W_EI (W_IX x) + b, no normalisation
};

/// Where the circuit's interneurons take their input from.
enum class InhibitionDrive {
  feedback,     ///< from the E potentials (homeostatic circuit, eisim's default)
  feedforward,  ///< from the layer input (the reference study's circuit)
};

/// Pooling weights of the interneurons.
enum class Pooling {
  pooled,         ///< uniform: rows of W_IE, W_DE are 1/n_E, rows of W_EI, W_ED are 1/n
  heterogeneous,  ///< random positive rows, normalised to the same sums
};

enum class Nonlinearity { relu, softplus, power, identity };

struct NonlinearitySpec {
  Nonlinearity kind = Nonlinearity::relu;
  double power = 2.0;  ///< exponent of the rectified power law [v]_+^power
  double beta = 1.0;   ///< sharpness of softplus: log(1 + exp(beta v)) / beta
};

/// Parameters of the dynamical circuit (units: time constants in ms, rates dimensionless).
struct CircuitParams {
  InhibitionDrive drive = InhibitionDrive::feedback;
  Pooling pooling = Pooling::pooled;
  int n_I = 1;                 ///< subtractive interneurons
  int n_D = 1;                 ///< divisive (shunting) interneurons
  double tau_E = 10.0;         ///< ms
  double tau_I = 10.0;         ///< ms
  double tau_D = 20.0;         ///< ms
  double k_I = 1.0;            ///< gain of the subtractive interneurons
  double k_D = 1.0;            ///< gain of the divisive interneurons
  double lambda_I = 0.0;       ///< leak of the subtractive interneurons (0 = integral control)
  double lambda_D = 0.0;       ///< leak of the divisive interneurons (0 = integral control)
  double theta = 1.0;          ///< set point of the mean squared E potential
  double sigma0 = 1e-6;        ///< baseline shunting conductance
  double heterogeneity = 0.5;  ///< lognormal sigma of heterogeneous pooling weights
  double ff_epsilon = 1e-5;    ///< feed-forward divisive unit: sqrt(mean((U x)^2) + ff_epsilon)
};

struct LayerSpec {
  LayerKind kind = LayerKind::circuit;
  int n_in = 0;
  int n_E = 0;
  int n_I_plain = 1;  ///< inhibitory units of a `none` layer (feed-forward, subtractive)
  NonlinearitySpec phi;
  CircuitParams circuit;
  double ln_epsilon = 1e-5;  ///< epsilon of the hard-coded LayerNorm
};

/// A network: hidden layers followed by a linear E/I readout (a `none` layer, identity output).
struct NetworkSpec {
  std::vector<LayerSpec> layers;  ///< hidden layers then the readout
  double init_gain = 1.0;         ///< scales the lognormal excitatory weights
  int lateral_units = 0;          ///< lateral error-pooling units per layer (0 = n_E / 10)
};

/// Parameter groups get separate learning rates.
enum class ParamGroup { excitatory, inhibitory, fixed };

/// Weights of one layer. Every entry is non-negative except b and U (see docs/concepts.md).
/// Matrices a layer kind does not use are empty (0 x 0).
template <class S>
struct LayerWeights {
  Mat<S> W_EX;    ///< n_E x n_in, excitatory input
  Mat<S> b;       ///< n_E x 1, bias of the excitatory drive
  Mat<S> W_EI;    ///< n_E x n_I, subtractive inhibition onto E
  Mat<S> W_ED;    ///< n_E x n_D, shunting inhibition onto E
  Mat<S> W_IE;    ///< n_I x n_E, E -> subtractive interneurons (feedback)
  Mat<S> W_DE;    ///< n_D x n_E, squared E -> divisive interneurons (feedback)
  Mat<S> W_IX;    ///< n_I x n_in, input -> subtractive interneurons (feed-forward and `none`)
  Mat<S> U;       ///< n_U x n_in, input -> divisive interneuron dendrites (feed-forward)
  Mat<S> L_pool;  ///< n_L x n_E, fixed lateral error pooling (frozen + lateral rule)
  Mat<S> L_back;  ///< n_E x n_L, fixed lateral error feedback (rows sum to 1)

  /// Every entry with its name, in a fixed order (for_each visits the non-empty ones in it).
  using Member = Mat<S> LayerWeights::*;
  static const std::array<std::pair<const char*, Member>, 10>& entries() {
    static const std::array<std::pair<const char*, Member>, 10> all{
        {{"W_EX", &LayerWeights::W_EX},
         {"b", &LayerWeights::b},
         {"W_EI", &LayerWeights::W_EI},
         {"W_ED", &LayerWeights::W_ED},
         {"W_IE", &LayerWeights::W_IE},
         {"W_DE", &LayerWeights::W_DE},
         {"W_IX", &LayerWeights::W_IX},
         {"U", &LayerWeights::U},
         {"L_pool", &LayerWeights::L_pool},
         {"L_back", &LayerWeights::L_back}}};
    return all;
  }

  /// Visit every non-empty matrix with its name.
  template <class F>
  void for_each(F&& f);
  template <class F>
  void for_each(F&& f) const;
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

/// Group of a weight matrix by name, given the layer (W_IX and U are inhibitory).
ParamGroup group_of(const LayerSpec& spec, const std::string& name);

/// Build a network spec: `hidden` layers of the given template, then a 10-way E/I readout.
NetworkSpec make_network_spec(int n_in, int n_out, const std::vector<LayerSpec>& hidden,
                              double init_gain, int readout_inhibitory, int lateral_units);

/// Initialise weights (lognormal Dale-respecting excitatory weights, pooled or heterogeneous
/// inhibition; see docs/concepts.md). Deterministic for a given seed.
template <class S>
Network<S> initialise(const NetworkSpec& spec, std::uint64_t seed);

/// Convert precision (float <-> double).
template <class To, class From>
Network<To> cast_network(const Network<From>& net);

/// Smallest entry among the weights that must be non-negative (Dale's law); +inf if none.
template <class S>
double min_dale_weight(const Network<S>& net);

/// Project the Dale-constrained weights onto >= 0.
template <class S>
void clamp_dale(Network<S>& net);

/// True for weights that Dale's law constrains to be non-negative.
bool is_dale_constrained(const std::string& name);

// ---------------------------------------------------------------------------------------------

template <class S>
template <class F>
void LayerWeights<S>::for_each(F&& f) {
  for (const auto& [name, member] : entries()) {
    Mat<S>& m = this->*member;
    if (m.size() > 0) f(std::string(name), m);
  }
}

template <class S>
template <class F>
void LayerWeights<S>::for_each(F&& f) const {
  const_cast<LayerWeights<S>*>(this)->for_each(
      [&](const std::string& name, Mat<S>& m) { f(name, static_cast<const Mat<S>&>(m)); });
}

}  // namespace eisim::models
