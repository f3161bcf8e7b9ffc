#pragma once
// A circuit is data: populations and the projections between them (docs/concepts.md,
// "Circuits"). Nothing here knows how a circuit is solved; sim/ reads these specifications.
#include <string>
#include <vector>

namespace eisim::models {

enum class Nonlinearity { relu, softplus, power, identity, sqrt };

/// Rate function r = phi(v) of a leaky population (and of a layer's output).
struct NonlinearitySpec {
  Nonlinearity kind = Nonlinearity::relu;
  double power = 2.0;      ///< exponent of the rectified power law gain * [v - threshold]_+^power
  double beta = 1.0;       ///< sharpness of softplus: log(1 + exp(beta v)) / beta
  double gain = 1.0;       ///< power law only: r = gain * [v - threshold]_+^power
  double threshold = 0.0;  ///< power law only
  bool operator==(const NonlinearitySpec&) const = default;
};

/// How a population's state z evolves; F = tau dz/dt is its "displacement rate".
enum class Dynamics {
  leaky,           ///< z = v:  F = -v + rest + q / g,          rate phi(v)
  integrator,      ///< z = r >= 0: F = gain (q - setpoint) - leak r,  rate [r]_+ (r stays at 0
                   ///< while F < 0 there: rectification as a boundary)
  multiplicative,  ///< z = r > 0:  F = gain r (q - setpoint) - leak (r - 1),  rate [r]_+
};
// q is the population's drive (its input projections, the subtractive projections with the
// sign of their source) and g its shunting conductance (baseline + divisive projections).

struct Population {
  std::string name;  ///< "E" for the layer's excitatory population (always first)
  int size = 1;      ///< units
  Dynamics dynamics = Dynamics::leaky;
  double tau = 10.0;         ///< ms
  double gain = 1.0;         ///< integrator / multiplicative: k
  double leak = 0.0;         ///< integrator / multiplicative: lambda (0 = integral control)
  double setpoint = 0.0;     ///< integrator / multiplicative: theta
  double rest = 0.0;         ///< leaky: resting potential
  double conductance = 1.0;  ///< leaky: baseline of the shunting conductance g
  NonlinearitySpec phi;      ///< leaky: rate function
  double initial = 0.0;      ///< initial state (v of a leaky population, r otherwise)
  bool operator==(const Population&) const = default;
};

/// What a projection carries from its source.
enum class Signal {
  rate,               ///< the source's rates
  potential,          ///< the source's potentials v (leaky sources)
  squared_potential,  ///< v * v of a leaky source
  input,              ///< the layer input x (source "input")
  input_energy,       ///< (U x)^2 through a signed matrix U (source "input"; see Projection)
};

enum class Action {
  subtractive,  ///< adds sign(source) W s to the target's drive q
  divisive,     ///< adds W s to the target's shunting conductance g (leaky targets)
};

/// Initial weights. Every rule keeps the weights non-negative (Dale's law), except U.
enum class Init {
  pooled,         ///< every entry scale / n_source (rows sum to scale)
  heterogeneous,  ///< rows of exp(N(0, heterogeneity^2)), normalised to sum to scale
  lognormal,      ///< lognormal with mean = sd = scale / n_source
  constant,       ///< every entry scale
  mean_drive,     ///< input projections: every row scale * the mean row of W_EX
};

/// What trains a weight (declared once; the optimiser, clipping and checkpoints read it).
enum class Learns {
  task,   ///< the task loss (the learning rule's gradient)
  local,  ///< the local homeostatic loss (learning.local_loss_weight)
  fixed,  ///< never updated
};

struct Projection {
  std::string name;    ///< the weight's name, e.g. "W_EI" (unique in the layer)
  std::string source;  ///< a population name, or "input"
  std::string target;  ///< a population name
  Signal signal = Signal::rate;
  Action action = Action::subtractive;
  Init init = Init::pooled;
  double scale = 1.0;
  double heterogeneity = 0.5;  ///< lognormal sigma of `heterogeneous` rows
  Learns learns = Learns::fixed;
  /// input_energy: the name of the signed n_E x n_in matrix U (initialised to W_EX minus its
  /// mean row, so that (U x)^2 is the squared centred drive) and what trains it.
  std::string energy_name = "U";
  Learns energy_learns = Learns::fixed;
  // Resolved by resolve(): population indices (-1 = the layer input).
  int src = -1, tgt = -1;
  bool operator==(const Projection&) const = default;
};

struct CircuitSpec {
  std::string preset = "default";       ///< the preset this circuit started from (documentation)
  std::vector<Population> populations;  ///< [0] is E, the layer's output
  std::vector<Projection> projections;
  /// E's rate function is the circuit's (ssn's power law, or set under populations.E) instead
  /// of the layer's network.nonlinearity.
  bool own_output_rate = false;
  bool operator==(const CircuitSpec&) const = default;
};

/// Sign of a source under Dale's law: E and the layer input excite (+1), interneurons inhibit.
inline double source_sign(const Projection& p) {
  return p.src > 0 ? -1.0 : 1.0;
}

/// Parameters of the legacy single-motif keys (network.circuit.tau_E, n_I, ...) from which the
/// `default` and `inorm` presets are built (docs/concepts.md).
struct CircuitParams {
  bool heterogeneous = false;  ///< pooling: heterogeneous instead of pooled
  int n_I = 1;                 ///< subtractive interneurons
  int n_D = 1;                 ///< divisive (shunting) interneurons
  double tau_E = 10.0;
  double tau_I = 10.0;
  double tau_D = 20.0;
  double k_I = 1.0;
  double k_D = 1.0;
  double lambda_I = 0.0;
  double lambda_D = 0.0;
  double theta = 1.0;
  double sigma0 = 1e-6;
  double heterogeneity = 0.5;
  double ff_epsilon = 1e-5;
};

/// The preset names: "default", "inorm", "pv_sst_vip", "ssn".
const std::vector<std::string>& preset_names();

/// A preset circuit for a layer of n_E units with output rate function phi. `default` and
/// `inorm` take their parameters from `p`; `pv_sst_vip` uses p.tau_E and p.heterogeneity, `ssn`
/// the values of ../shared/circuits.md (tau_E = 20 ms) and p.heterogeneous/heterogeneity; see
/// docs/concepts.md. Throws config_error (key network.circuit.preset) for an unknown name.
CircuitSpec make_preset(const std::string& name, const CircuitParams& p, int n_E,
                        const NonlinearitySpec& phi);

/// Check a circuit and resolve its projections' population indices. Errors are config_error
/// naming the key under `key` (e.g. "network.circuit.projections.W_EI.source").
void resolve(CircuitSpec& c, const std::string& key = "network.circuit");

/// Index of a population by name, -1 if none (and for "input").
int find_population(const CircuitSpec& c, const std::string& name);

/// How the solvers treat a circuit, derived once from its projections.
struct CircuitStructure {
  /// Populations driven only by the input or by other such populations (leaky, no cycle):
  /// their equilibrium is explicit. In dependency order.
  std::vector<int> explicit_order;
  /// E receives nothing from itself: its potentials are eliminated exactly (v = rest + q / g)
  /// and Newton runs on `core` only.
  bool eliminate_E = true;
  /// The populations Newton solves for (E included when it cannot be eliminated).
  std::vector<int> core;
  int core_size = 0;  ///< total units in `core`
  bool is_explicit(int p) const;
};

CircuitStructure analyse(const CircuitSpec& c);

const char* to_string(Dynamics d);
const char* to_string(Signal s);
const char* to_string(Action a);
const char* to_string(Init i);
const char* to_string(Learns l);
const char* to_string(Nonlinearity n);

}  // namespace eisim::models
