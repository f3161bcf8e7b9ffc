#pragma once
// Strict configuration: YAML -> validated Config. Every key must be known (an unknown key is an
// error naming its path and the nearest valid key) and every value is range-checked.
// docs/config.md documents every key.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "eisim/models/learning_spec.hpp"
#include "eisim/models/network.hpp"
#include "eisim/sim/solver.hpp"

namespace eisim::io {

enum class Precision { float32, float64 };

/// "float32" or "float64" (the YAML spelling).
const char* to_string(Precision p);

struct DataSpec {
  std::string dir = "/usr/share/datasets/fashion-mnist";
  double train_eps = 0.75;                             ///< brightness jitter half-width, training
  std::vector<double> eval_eps{0.0, 0.25, 0.5, 0.75};  ///< test-set jitter grid
  int train_limit = 0;  ///< use the first N training images (0 = all)
  /// Hold out the last N images of the training file (never trained on) as the validation set
  /// (0 = none). The training set is then the first 60000 - N images (of which train_limit).
  int validation = 0;
  int test_limit = 0;               ///< use the first N test images (0 = all)
  std::uint64_t test_seed = 20260;  ///< seed of the (fixed) test-set jitter
};

/// The circuit of every hidden layer of kind `circuit` (docs/config.md, network.circuit).
struct CircuitConfig {
  /// default, inorm, pv_sst_vip or ssn. The legacy key network.circuit.drive = feedforward
  /// selects inorm.
  std::string preset = "default";
  /// The single-motif keys (network.circuit.tau_E, n_I, ...) that parameterise the default and
  /// inorm presets.
  models::CircuitParams params;
  /// The resolved circuit: the preset for network.width, with the populations and projections
  /// of network.circuit.populations / network.circuit.projections changed, added or removed.
  /// E's size is network.width and its rate function network.nonlinearity (ssn: its own).
  /// parse_config fills it. Empty (a Config built in code), network_spec() and to_yaml() use
  /// the preset's circuit for `params`; a Config changed in code after parsing (width, params)
  /// should clear it so that it is rebuilt.
  models::CircuitSpec spec;
};

/// The hidden-layer template applied to every hidden layer.
struct NetworkConfig {
  int hidden_layers = 2;
  int width = 283;  ///< n_E of each hidden layer
  models::LayerKind kind = models::LayerKind::circuit;
  models::NonlinearitySpec phi;
  CircuitConfig circuit;
  int plain_inhibitory = 0;  ///< n_I of a `none` layer (0 = ceil(width / 10))
  int readout_inhibitory = 1;
  double init_gain = 1.0;
  int lateral_units = 0;     ///< 0 = width / 10
  double ln_epsilon = 1e-5;  ///< epsilon of the `layernorm` kind
};

/// One segment of a stimulus protocol: a test image times a brightness factor, for a duration.
struct ProtocolSegment {
  int image = 0;            ///< test-set index
  double brightness = 1.0;  ///< the layer-0 input is brightness * image (not clipped)
  double duration = 0.0;    ///< ms, > 0
};

/// A perturbation window of a stimulus protocol (sim::Perturbation, by population name).
struct ProtocolPerturbation {
  std::string population;  ///< a population of the hidden layers' circuit
  int layer = -1;          ///< hidden layer it applies to; -1 = every circuit layer
  double start = 0.0;      ///< ms from the protocol's start
  double end = 0.0;        ///< ms (exclusive), start < end <= the protocol's duration
  double current = 0.0;    ///< added to the population's drive during the window
  bool silence = false;    ///< the population's projections carry nothing during the window
};

/// simulate.protocol: segments (in order) and perturbation windows; no segments = no protocol.
struct ProtocolSpec {
  std::vector<ProtocolSegment> segments;
  std::vector<ProtocolPerturbation> perturbations;
  double record_interval = 1.0;  ///< ms between recorded points of the protocol's traces

  bool empty() const { return segments.empty(); }
  double duration() const {
    double t = 0;
    for (const auto& s : segments) t += s.duration;
    return t;
  }
};

struct SimulateSpec {
  std::vector<int> images{0, 1, 2, 3, 4, 5, 6, 7};  ///< test-set indices
  double eps = 0.0;                                 ///< brightness jitter of the simulated images
  double t_max = 400.0;                             ///< ms, length of the recorded traces
  int record_points = 101;                          ///< samples of each trace in [0, t_max]
  std::string weights;  ///< HDF5 file written by eisim train ("" = random init)
  ProtocolSpec protocol;
};

struct SweepCondition {
  std::string name;
  std::vector<std::pair<std::string, std::string>> set;  ///< key path, value (as --set)
};

struct SweepSpec {
  std::string out_dir = "results/sweep";
  std::vector<std::uint64_t> seeds{1, 2, 3};
  std::vector<double> eps{0.0, 0.25, 0.5, 0.75};
  std::vector<SweepCondition> conditions;
};

/// `eisim evaluate`'s test-set transformations besides the brightness jitter of data.eval_eps
/// (io::apply_transform); each list is evaluated value by value, empty = not evaluated.
struct EvaluateSpec {
  std::vector<double> shift;     ///< fixed brightness shifts, in [-1, 1]
  std::vector<double> contrast;  ///< contrast factors, in [0, 10]
  std::vector<double> noise;     ///< standard deviations of additive Gaussian noise, in [0, 1]
};

struct Config {
  std::uint64_t seed = 1;
  Precision precision = Precision::float32;
  DataSpec data;
  NetworkConfig network;
  sim::FixedPointParameters fixed_point;
  sim::OdeParameters ode;
  learning::LearningSpec learning;
  learning::TrainSpec train;
  SimulateSpec simulate;
  SweepSpec sweep;
  EvaluateSpec evaluate;
};

/// Load a YAML file, apply overrides ("path.to.key=value", value in YAML syntax) in order, and
/// validate. Throws config_error naming the key path.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});

/// The keys of a YAML file as overrides ("path.to.key=value", each value as flow YAML), in file
/// order: a file of --set overrides (eisim evaluate --transforms). Throws config_error for an
/// unreadable file, invalid YAML (file, line, column) or a root that is not a mapping; the keys
/// themselves are checked where the overrides are applied.
std::vector<std::string> overrides_from_file(const std::string& path);

/// Same from a YAML string (used by tests and by sweeps). `source` names it in messages.
Config parse_config(const std::string& yaml_text, const std::vector<std::string>& overrides = {},
                    const std::string& source = "<string>");

/// The fully resolved configuration (every key, defaults filled in) as YAML text.
std::string to_yaml(const Config& config);

/// The key paths whose values differ between `a` and `b`, each as "path (value in a vs value in
/// b)", in schema order. Keys at or below a path in `ignore` (e.g. "train.epochs", "simulate")
/// are not compared.
std::vector<std::string> config_differences(const Config& a, const Config& b,
                                            const std::vector<std::string>& ignore = {});

/// Every valid key path (e.g. "network.circuit.tau_E"), for messages and docs.
std::vector<std::string> valid_keys();

/// Edit-distance suggestion: the valid key path closest to `path` (an unknown key path). Keys at
/// the same level are preferred; case-only differences count half. Used in unknown-key messages.
std::string nearest_key(const std::string& path);

/// Build the network specification from the configuration.
models::NetworkSpec network_spec(const Config& config, int n_in = 784, int n_out = 10);

}  // namespace eisim::io
