// Strict configuration: YAML -> validated Config.
//
// One schema (visit_schema) lists every key with its type and range. Three visitors walk it: the
// key lister (valid_keys), the reader (YAML -> Config with checks) and the writer (Config ->
// YAML), so the key set, the checks and the dump cannot drift apart.
#include "eisim/io/config.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <climits>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <utility>

#include "eisim/models/error.hpp"

namespace eisim::io {
namespace {

// ---------------------------------------------------------------------------------------------
// Formatting

/// Shortest text that parses back to exactly `x` ("0.1", "1e-06", "inf").
std::string format_number(double x) {
  std::array<char, 64> buf{};
  const auto r = std::to_chars(buf.data(), buf.data() + buf.size(), x);
  return std::string(buf.data(), r.ptr);
}

/// `x` as a YAML float that round-trips exactly and reads as a float in YAML 1.1 and 1.2
/// parsers alike: always a '.', signed exponent ("10.0", "1.0e-06", ".inf").
std::string format_yaml_double(double x) {
  if (std::isnan(x)) return ".nan";
  if (std::isinf(x)) return x > 0 ? ".inf" : "-.inf";
  std::string s = format_number(x);
  const auto e = s.find('e');
  const std::string mantissa = s.substr(0, e);
  std::string exponent = e == std::string::npos ? "" : s.substr(e);
  if (mantissa.find('.') == std::string::npos) s = mantissa + ".0" + exponent;
  return s;
}

// ---------------------------------------------------------------------------------------------
// Paths

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  std::string cur;
  for (char ch : path) {
    if (ch == '.') {
      parts.push_back(cur);
      cur.clear();
    } else {
      cur += ch;
    }
  }
  parts.push_back(cur);
  return parts;
}

std::string parent_of(const std::string& path) {
  const auto dot = path.rfind('.');
  return dot == std::string::npos ? std::string() : path.substr(0, dot);
}

std::string last_of(const std::string& path) {
  const auto dot = path.rfind('.');
  return dot == std::string::npos ? path : path.substr(dot + 1);
}

std::string join_path(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

/// True if `path` is `prefix` or lies below it.
bool is_within(const std::string& path, const std::string& prefix) {
  if (path.size() < prefix.size() || path.compare(0, prefix.size(), prefix) != 0) return false;
  return path.size() == prefix.size() || path[prefix.size()] == '.' || path[prefix.size()] == '[';
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return {};
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// ---------------------------------------------------------------------------------------------
// The circuit's maps: network.circuit.populations.<name>.* and network.circuit.projections.<name>.*

const std::string kPopulations = "network.circuit.populations";
const std::string kProjections = "network.circuit.projections";
/// Stands for any entry name in the schema's key paths.
const std::string kAnyName = "<name>";

/// The map (kPopulations or kProjections) whose entry `path` names or lies in, or "".
std::string map_of(const std::string& path) {
  for (const std::string* m : {&kPopulations, &kProjections})
    if (path.size() > m->size() && path.compare(0, m->size(), *m) == 0 && path[m->size()] == '.')
      return *m;
  return {};
}

/// `path` with its entry name replaced by <name> (the schema's spelling of map entries).
std::string canonical(const std::string& path) {
  const std::string m = map_of(path);
  if (m.empty()) return path;
  const auto end = path.find('.', m.size() + 1);
  return m + "." + kAnyName + (end == std::string::npos ? "" : path.substr(end));
}

/// The entry name of `path` (under a map), or "".
std::string entry_name(const std::string& path) {
  const std::string m = map_of(path);
  if (m.empty()) return {};
  const auto end = path.find('.', m.size() + 1);
  return path.substr(m.size() + 1,
                     end == std::string::npos ? std::string::npos : end - m.size() - 1);
}

/// The entry (network.circuit.populations.<name>) that `path` lies in, or "".
std::string entry_of(const std::string& path) {
  const std::string m = map_of(path);
  return m.empty() ? std::string() : m + "." + entry_name(path);
}

/// A schema path (with <name>) spelt with the entry name of `like`, if both lie in the same map.
std::string with_name_of(const std::string& schema_path, const std::string& like) {
  const std::string m = map_of(schema_path);
  if (m.empty() || map_of(like) != m) return schema_path;
  const std::string rest = schema_path.substr(m.size() + 1 + kAnyName.size());
  return m + "." + entry_name(like) + rest;
}

/// A population or projection name: letters, digits and '_', not starting with a digit (it
/// becomes part of key paths and of weight names in the output files).
bool is_entry_name(const std::string& s) {
  if (s.empty() || std::isdigit(static_cast<unsigned char>(s[0]))) return false;
  if (s == "null" || s == "Null" || s == "NULL") return false;  // YAML would read it as nothing
  return std::all_of(s.begin(), s.end(), [](char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_';
  });
}

// ---------------------------------------------------------------------------------------------
// Ranges

struct Range {
  std::optional<double> lo, hi;
  bool lo_strict = false, hi_strict = false;

  bool contains(double x) const {
    if (lo && (lo_strict ? !(x > *lo) : !(x >= *lo))) return false;
    if (hi && (hi_strict ? !(x < *hi) : !(x <= *hi))) return false;
    return true;
  }
  std::string describe() const {
    if (lo && hi) {
      return std::string("in ") + (lo_strict ? "(" : "[") + format_number(*lo) + ", " +
             format_number(*hi) + (hi_strict ? ")" : "]");
    }
    if (lo) return std::string(lo_strict ? "> " : ">= ") + format_number(*lo);
    if (hi) return std::string(hi_strict ? "< " : "<= ") + format_number(*hi);
    return "any number";
  }
};

Range gt(double a) {
  return Range{a, std::nullopt, true, false};
}
Range ge(double a) {
  return Range{a, std::nullopt, false, false};
}
Range closed(double a, double b) {
  return Range{a, b, false, false};
}
Range half_open(double a, double b) {
  return Range{a, b, false, true};
}
Range any_number() {
  return Range{};
}

// ---------------------------------------------------------------------------------------------
// Enumerations (spelled as in the YAML)

template <class E>
struct EnumName {
  const char* name;
  E value;
};

constexpr std::array<EnumName<Precision>, 2> kPrecision{
    {{"float32", Precision::float32}, {"float64", Precision::float64}}};
constexpr std::array<EnumName<models::LayerKind>, 3> kLayerKind{
    {{"circuit", models::LayerKind::circuit},
     {"layernorm", models::LayerKind::layernorm},
     {"none", models::LayerKind::none}}};
constexpr std::array<EnumName<models::Nonlinearity>, 4> kNonlinearity{
    {{"relu", models::Nonlinearity::relu},
     {"softplus", models::Nonlinearity::softplus},
     {"power", models::Nonlinearity::power},
     {"identity", models::Nonlinearity::identity}}};
/// The legacy key network.circuit.drive: feedback is the default preset, feedforward inorm.
enum class Drive { feedback, feedforward };
constexpr std::array<EnumName<Drive>, 2> kDrive{
    {{"feedback", Drive::feedback}, {"feedforward", Drive::feedforward}}};
/// network.circuit.pooling: params.heterogeneous.
constexpr std::array<EnumName<bool>, 2> kPooling{{{"pooled", false}, {"heterogeneous", true}}};
constexpr std::array<EnumName<models::Nonlinearity>, 5> kRate{
    {{"relu", models::Nonlinearity::relu},
     {"softplus", models::Nonlinearity::softplus},
     {"power", models::Nonlinearity::power},
     {"identity", models::Nonlinearity::identity},
     {"sqrt", models::Nonlinearity::sqrt}}};
constexpr std::array<EnumName<models::Dynamics>, 3> kDynamics{
    {{"leaky", models::Dynamics::leaky},
     {"integrator", models::Dynamics::integrator},
     {"multiplicative", models::Dynamics::multiplicative}}};
constexpr std::array<EnumName<sim::StabilityCheck>, 3> kStability{
    {{"integrate", sim::StabilityCheck::integrate},
     {"fail", sim::StabilityCheck::fail},
     {"off", sim::StabilityCheck::off}}};
constexpr std::array<EnumName<models::Signal>, 5> kSignal{
    {{"rate", models::Signal::rate},
     {"potential", models::Signal::potential},
     {"squared_potential", models::Signal::squared_potential},
     {"input", models::Signal::input},
     {"input_energy", models::Signal::input_energy}}};
constexpr std::array<EnumName<models::Action>, 2> kAction{
    {{"subtractive", models::Action::subtractive}, {"divisive", models::Action::divisive}}};
constexpr std::array<EnumName<models::Init>, 5> kInit{
    {{"pooled", models::Init::pooled},
     {"heterogeneous", models::Init::heterogeneous},
     {"lognormal", models::Init::lognormal},
     {"constant", models::Init::constant},
     {"mean_drive", models::Init::mean_drive}}};
constexpr std::array<EnumName<models::Learns>, 3> kLearns{{{"task", models::Learns::task},
                                                           {"local", models::Learns::local},
                                                           {"fixed", models::Learns::fixed}}};
constexpr std::array<EnumName<learning::Rule>, 3> kRule{{{"implicit", learning::Rule::implicit},
                                                         {"frozen", learning::Rule::frozen},
                                                         {"bptt", learning::Rule::bptt}}};
constexpr std::array<EnumName<learning::ErrorTransform>, 6> kErrorTransform{
    {{"none", learning::ErrorTransform::none},
     {"center", learning::ErrorTransform::center},
     {"scale", learning::ErrorTransform::scale},
     {"decorrelate", learning::ErrorTransform::decorrelate},
     {"full", learning::ErrorTransform::full},
     {"lateral", learning::ErrorTransform::lateral}}};

template <class E, std::size_t N>
const char* name_of(E value, const std::array<EnumName<E>, N>& table) {
  for (const auto& entry : table)
    if (entry.value == value) return entry.name;
  throw internal_error("enumeration value without a name in the config schema");
}

// ---------------------------------------------------------------------------------------------
// The schema: every key, in the order of the dump and of docs/config.md.

/// The fields of a population, under `prefix` (network.circuit.populations.<name>). E has no
/// `size` (it is network.width) and its `rate` is network.nonlinearity unless set here.
template <class V>
void visit_population(models::Population& p, V& v, const std::string& prefix, bool with_size,
                      bool with_rate) {
  if (with_size) v.integer(prefix + ".size", p.size, closed(1, 65536));
  v.choice(prefix + ".dynamics", p.dynamics, kDynamics);
  v.real(prefix + ".tau", p.tau, gt(0));
  v.real(prefix + ".gain", p.gain, gt(0));
  v.real(prefix + ".leak", p.leak, ge(0));
  v.real(prefix + ".setpoint", p.setpoint, any_number());
  v.real(prefix + ".rest", p.rest, any_number());
  v.real(prefix + ".conductance", p.conductance, gt(0));
  v.real(prefix + ".initial", p.initial, any_number());
  if (with_rate) {
    v.choice(prefix + ".rate.function", p.phi.kind, kRate);
    v.real(prefix + ".rate.power", p.phi.power, gt(0));
    v.real(prefix + ".rate.beta", p.phi.beta, gt(0));
    v.real(prefix + ".rate.gain", p.phi.gain, gt(0));
    v.real(prefix + ".rate.threshold", p.phi.threshold, any_number());
  }
}

/// The fields of a projection, under `prefix` (network.circuit.projections.<name>).
template <class V>
void visit_projection(models::Projection& p, V& v, const std::string& prefix) {
  v.text(prefix + ".source", p.source, /*non_empty=*/true);
  v.text(prefix + ".target", p.target, /*non_empty=*/true);
  v.choice(prefix + ".signal", p.signal, kSignal);
  v.choice(prefix + ".action", p.action, kAction);
  v.choice(prefix + ".init", p.init, kInit);
  v.real(prefix + ".scale", p.scale, ge(0));
  v.real(prefix + ".heterogeneity", p.heterogeneity, ge(0));
  v.choice(prefix + ".learns", p.learns, kLearns);
  v.text(prefix + ".energy_name", p.energy_name, /*non_empty=*/true);
  v.choice(prefix + ".energy_learns", p.energy_learns, kLearns);
}

/// The legacy keys that only the default and inorm presets read, and what to set instead with
/// the other presets.
struct LegacyKey {
  const char* key;
  const char* instead;
};
constexpr std::array<LegacyKey, 14> kLegacyKeys{{
    {"drive", "network.circuit.preset"},
    {"pooling", "network.circuit.projections.<name>.init"},
    {"n_I", "network.circuit.populations.<name>.size"},
    {"n_D", "network.circuit.populations.<name>.size"},
    {"tau_I", "network.circuit.populations.<name>.tau"},
    {"tau_D", "network.circuit.populations.<name>.tau"},
    {"k_I", "network.circuit.populations.<name>.gain"},
    {"k_D", "network.circuit.populations.<name>.gain"},
    {"lambda_I", "network.circuit.populations.<name>.leak"},
    {"lambda_D", "network.circuit.populations.<name>.leak"},
    {"theta", "network.circuit.populations.<name>.setpoint"},
    {"sigma0", "network.circuit.populations.E.conductance"},
    {"heterogeneity", "network.circuit.projections.<name>.heterogeneity"},
    {"ff_epsilon", "network.circuit.populations.<name>.rest"},
}};

bool reads_legacy_keys(const std::string& preset) {
  return preset == "default" || preset == "inorm";
}

/// The preset circuit before network.circuit.populations / projections change it: E has
/// network.width units and rate network.nonlinearity (ssn: its own power law); an explicit
/// tau_E is E's time constant in every preset (ssn's own is 20 ms).
models::CircuitSpec preset_circuit(const NetworkConfig& n, const models::CircuitParams& params,
                                   bool tau_E_given) {
  models::CircuitSpec s = models::make_preset(n.circuit.preset, params, n.width, n.phi);
  if (tau_E_given) s.populations.front().tau = params.tau_E;
  return s;
}

template <class V>
void visit_schema(Config& c, V& v) {
  v.uinteger("seed", c.seed);
  v.choice("precision", c.precision, kPrecision);

  v.text("data.dir", c.data.dir, /*non_empty=*/true);
  v.real("data.train_eps", c.data.train_eps, closed(0, 1));
  v.reals("data.eval_eps", c.data.eval_eps, closed(0, 1));
  v.integer("data.train_limit", c.data.train_limit, closed(0, 60000));
  v.integer("data.validation", c.data.validation, closed(0, 59999));
  v.integer("data.test_limit", c.data.test_limit, closed(0, 10000));
  v.uinteger("data.test_seed", c.data.test_seed);

  auto& n = c.network;
  v.integer("network.hidden_layers", n.hidden_layers, closed(1, 8));
  v.integer("network.width", n.width, closed(2, 65536));
  v.choice("network.kind", n.kind, kLayerKind);
  v.choice("network.nonlinearity", n.phi.kind, kNonlinearity);
  v.real("network.power", n.phi.power, gt(0));
  v.real("network.softplus_beta", n.phi.beta, gt(0));
  v.integer("network.plain_inhibitory", n.plain_inhibitory, closed(0, 65536));
  v.integer("network.readout_inhibitory", n.readout_inhibitory, ge(1));
  v.real("network.init_gain", n.init_gain, gt(0));
  v.integer("network.lateral_units", n.lateral_units, closed(0, 65536));
  v.real("network.ln_epsilon", n.ln_epsilon, gt(0));
  v.preset("network.circuit.preset", n.circuit.preset);
  // The legacy single-motif keys parameterise the default and inorm presets (the writer leaves
  // them out for the others, where they are errors); tau_E is every preset's E time constant.
  const bool legacy = v.legacy_keys(n.circuit.preset);
  auto& ci = n.circuit.params;
  if (legacy) {
    v.drive("network.circuit.drive", n.circuit.preset);
    v.choice("network.circuit.pooling", ci.heterogeneous, kPooling);
    v.integer("network.circuit.n_I", ci.n_I, ge(1));
    v.integer("network.circuit.n_D", ci.n_D, ge(1));
  }
  v.real("network.circuit.tau_E", ci.tau_E, gt(0));
  if (legacy) {
    v.real("network.circuit.tau_I", ci.tau_I, gt(0));
    v.real("network.circuit.tau_D", ci.tau_D, gt(0));
    v.real("network.circuit.k_I", ci.k_I, gt(0));
    v.real("network.circuit.k_D", ci.k_D, gt(0));
    v.real("network.circuit.lambda_I", ci.lambda_I, ge(0));
    v.real("network.circuit.lambda_D", ci.lambda_D, ge(0));
    v.real("network.circuit.theta", ci.theta, gt(0));
    v.real("network.circuit.sigma0", ci.sigma0, gt(0));
    v.real("network.circuit.heterogeneity", ci.heterogeneity, ge(0));
    v.real("network.circuit.ff_epsilon", ci.ff_epsilon, gt(0));
  }
  // network.circuit.populations and network.circuit.projections (visit_population and
  // visit_projection); the reader builds and checks network.circuit.spec here.
  v.circuit(n);

  auto& fp = c.fixed_point;
  v.real("fixed_point.abs_tol", fp.tol.abs_tol, gt(0));
  v.real("fixed_point.rel_tol", fp.tol.rel_tol, ge(0));
  v.integer("fixed_point.max_iterations", fp.max_iterations, ge(1));
  v.real("fixed_point.max_log_step", fp.max_log_step, gt(0));
  v.integer("fixed_point.max_backtracks", fp.max_backtracks, ge(0));
  v.boolean("fixed_point.continuation", fp.continuation);
  v.integer("fixed_point.stall_backtracks", fp.stall_backtracks, ge(0));
  v.integer("fixed_point.continuation_max_steps", fp.continuation_max_steps, ge(1));
  v.real("fixed_point.continuation_dt0", fp.continuation_dt0, gt(0));
  v.boolean("fixed_point.krylov", fp.krylov);
  v.integer("fixed_point.krylov_min_unknowns", fp.krylov_min_unknowns, ge(1));
  v.integer("fixed_point.krylov_share", fp.krylov_share, ge(1));
  v.boolean("fixed_point.low_rank", fp.low_rank);
  v.boolean("fixed_point.ode_fallback", fp.ode_fallback);
  v.real("fixed_point.fallback_t_max", fp.fallback_t_max, gt(0));
  v.integer("fixed_point.fallback_max_steps", fp.fallback_max_steps, ge(1));
  v.choice("fixed_point.stability", fp.stability, kStability);
  v.integer("fixed_point.stability_samples", fp.stability_samples, ge(0));
  v.real("fixed_point.stability_marginal", fp.stability_marginal, closed(0, 1e-3));

  auto& ode = c.ode;
  v.real("ode.abs_tol", ode.tol.abs_tol, gt(0));
  v.real("ode.rel_tol", ode.tol.rel_tol, ge(0));
  v.real("ode.stepper_abs_tol", ode.stepper_abs_tol, gt(0));
  v.real("ode.stepper_rel_tol", ode.stepper_rel_tol, ge(0));
  v.real("ode.dt_initial", ode.dt_initial, gt(0));
  v.real("ode.t_max", ode.t_max, gt(0));
  v.integer("ode.max_steps", ode.max_steps, ge(1));
  v.integer("ode.check_every", ode.check_every, ge(1));

  auto& l = c.learning;
  v.choice("learning.rule", l.rule, kRule);
  v.choice("learning.error_transform", l.error_transform, kErrorTransform);
  v.integer("learning.bptt_steps", l.bptt_steps, ge(1));
  v.real("learning.bptt_dt", l.bptt_dt, gt(0));
  v.real("learning.label_smoothing", l.label_smoothing, half_open(0, 1));
  v.real("learning.lr_E", l.lr_E, gt(0));
  v.real("learning.lr_I", l.lr_I, ge(0));
  v.real("learning.momentum", l.momentum, half_open(0, 1));
  v.real("learning.weight_decay", l.weight_decay, ge(0));
  v.real("learning.local_loss_weight", l.local_loss_weight, ge(0));
  v.boolean("learning.train_inhibitory", l.train_inhibitory);

  auto& t = c.train;
  v.integer("train.epochs", t.epochs, ge(1));
  v.integer("train.batch_size", t.batch_size, closed(1, 60000));
  v.integer("train.probe_batch", t.probe_batch, closed(1, 60000));
  v.boolean("train.progress", t.progress);
  v.real("train.max_grad_norm", t.max_grad_norm, ge(0));

  auto& s = c.simulate;
  v.integers("simulate.images", s.images, closed(0, 9999));
  v.real("simulate.eps", s.eps, closed(0, 1));
  v.real("simulate.t_max", s.t_max, gt(0));
  v.integer("simulate.record_points", s.record_points, closed(2, 100000));
  v.text("simulate.weights", s.weights, /*non_empty=*/false);
  // A stimulus protocol: lists of mappings, each element's fields checked by the reader
  // (read_segment, read_perturbation); populations, layers and windows in cross_check.
  v.segments("simulate.protocol.segments", s.protocol.segments);
  v.perturbations("simulate.protocol.perturbations", s.protocol.perturbations);
  v.real("simulate.protocol.record_interval", s.protocol.record_interval, gt(0));

  auto& sw = c.sweep;
  v.text("sweep.out_dir", sw.out_dir, /*non_empty=*/true);
  v.uintegers("sweep.seeds", sw.seeds);
  v.reals("sweep.eps", sw.eps, closed(0, 1));
  v.conditions("sweep.conditions", sw.conditions);

  auto& ev = c.evaluate;
  v.reals("evaluate.shift", ev.shift, closed(-1, 1));
  v.reals("evaluate.contrast", ev.contrast, closed(0, 10));
  v.reals("evaluate.noise", ev.noise, closed(0, 1));
}

/// Collects the key paths.
struct KeyLister {
  std::vector<std::string> keys;
  void add(const std::string& path) { keys.push_back(path); }
  void uinteger(const std::string& p, std::uint64_t&) { add(p); }
  void integer(const std::string& p, int&, const Range&) { add(p); }
  void real(const std::string& p, double&, const Range&) { add(p); }
  void boolean(const std::string& p, bool&) { add(p); }
  void text(const std::string& p, std::string&, bool) { add(p); }
  template <class E, std::size_t N>
  void choice(const std::string& p, E&, const std::array<EnumName<E>, N>&) {
    add(p);
  }
  void reals(const std::string& p, std::vector<double>&, const Range&) { add(p); }
  void integers(const std::string& p, std::vector<int>&, const Range&) { add(p); }
  void uintegers(const std::string& p, std::vector<std::uint64_t>&) { add(p); }
  void conditions(const std::string& p, std::vector<SweepCondition>&) { add(p); }
  void segments(const std::string& p, std::vector<ProtocolSegment>&) { add(p); }
  void perturbations(const std::string& p, std::vector<ProtocolPerturbation>&) { add(p); }
  void preset(const std::string& p, std::string&) { add(p); }
  bool legacy_keys(const std::string&) { return true; }
  void drive(const std::string& p, std::string&) { add(p); }
  void circuit(NetworkConfig&) {
    models::Population population;
    const std::string pp = kPopulations + "." + kAnyName;
    visit_population(population, *this, pp, true, true);
    add(pp + ".remove");
    models::Projection projection;
    const std::string jp = kProjections + "." + kAnyName;
    visit_projection(projection, *this, jp);
    add(jp + ".remove");
  }
};

struct Schema {
  std::vector<std::string> leaves;  ///< schema order
  std::set<std::string> leaf_set;
  std::set<std::string> groups;  ///< "data", "network", "network.circuit", ...
  std::vector<std::string> groups_in_order;

  static const Schema& get() {
    static const Schema schema = [] {
      Schema s;
      Config c;
      KeyLister lister;
      visit_schema(c, lister);
      s.leaves = lister.keys;
      s.leaf_set.insert(s.leaves.begin(), s.leaves.end());
      for (const auto& leaf : s.leaves) {
        for (std::string g = parent_of(leaf); !g.empty(); g = parent_of(g)) {
          if (s.groups.insert(g).second) s.groups_in_order.push_back(g);
        }
      }
      return s;
    }();
    return schema;
  }
  /// Paths under network.circuit.populations / projections may use any entry name.
  bool is_leaf(const std::string& p) const { return leaf_set.count(canonical(p)) > 0; }
  bool is_group(const std::string& p) const { return groups.count(canonical(p)) > 0; }
};

// ---------------------------------------------------------------------------------------------
// Nearest key by edit distance

/// Optimal-string-alignment distance in half-edits: an insertion, deletion, substitution or
/// transposition costs 2; a substitution that only changes letter case costs 1.
int edit_distance(const std::string& a, const std::string& b) {
  const std::size_t n = a.size(), m = b.size();
  std::vector<std::vector<int>> d(n + 1, std::vector<int>(m + 1, 0));
  for (std::size_t i = 0; i <= n; ++i) d[i][0] = 2 * int(i);
  for (std::size_t j = 0; j <= m; ++j) d[0][j] = 2 * int(j);
  const auto lower = [](char ch) { return char(std::tolower(static_cast<unsigned char>(ch))); };
  for (std::size_t i = 1; i <= n; ++i) {
    for (std::size_t j = 1; j <= m; ++j) {
      const int sub = a[i - 1] == b[j - 1] ? 0 : (lower(a[i - 1]) == lower(b[j - 1]) ? 1 : 2);
      d[i][j] = std::min({d[i - 1][j] + 2, d[i][j - 1] + 2, d[i - 1][j - 1] + sub});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 2);
    }
  }
  return d[n][m];
}

/// Score of `candidate` as a correction of `path`: the distance of the last components plus
/// one edit if the candidate lives at another level, or the distance of the full paths.
int key_score(const std::string& path, const std::string& candidate) {
  const int by_name = edit_distance(last_of(path), last_of(candidate)) +
                      (parent_of(path) == parent_of(candidate) ? 0 : 2);
  return std::min(by_name, edit_distance(path, candidate));
}

std::string nearest_of(const std::string& given, bool include_groups) {
  const Schema& schema = Schema::get();
  // Under a population or projection, compare with the schema's <name> paths and answer with
  // the given name.
  const std::string path = canonical(given);
  std::string best;
  int best_score = INT_MAX;
  auto consider = [&](const std::string& candidate) {
    const int score = key_score(path, candidate);
    if (score < best_score) {
      best_score = score;
      best = candidate;
    }
  };
  // Same-level keys first so that they win ties.
  for (const auto& k : schema.leaves)
    if (parent_of(k) == parent_of(path)) consider(k);
  if (include_groups)
    for (const auto& g : schema.groups_in_order)
      if (parent_of(g) == parent_of(path)) consider(g);
  for (const auto& k : schema.leaves) consider(k);
  if (include_groups)
    for (const auto& g : schema.groups_in_order) consider(g);
  return with_name_of(best, given);
}

// ---------------------------------------------------------------------------------------------
// Where a value came from (for messages)

struct Origin {
  std::string path;   ///< key path set by the override (it and everything below it)
  std::string label;  ///< e.g. "--set 'network.width=100'"
};

struct Context {
  std::string source;
  std::vector<Origin> overrides;

  /// " (config.yaml, line 7)" or " (from --set 'a.b=1')" or "".
  std::string where(const std::string& path, const YAML::Mark& mark) const {
    for (auto it = overrides.rbegin(); it != overrides.rend(); ++it)
      if (is_within(path, it->path)) return " (from " + it->label + ")";
    if (mark.is_null()) return {};
    return " (" + source + ", line " + std::to_string(mark.line + 1) + ")";
  }
};

std::string describe_node(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Null:
      return "nothing (null)";
    case YAML::NodeType::Scalar:
      return "'" + n.Scalar() + "'";
    case YAML::NodeType::Undefined:
      break;
  }
  return "nothing";
}

[[noreturn]] void fail(const Context& ctx, const std::string& path, const YAML::Node& n,
                       const std::string& message) {
  throw config_error(path, message + ctx.where(path, n.Mark()));
}

[[noreturn]] void fail_unknown(const Context& ctx, const std::string& path, const YAML::Node& n,
                               const std::string& nearest) {
  fail(ctx, path, n, "unknown key '" + path + "'; did you mean '" + nearest + "'?");
}

std::optional<YAML::Node> find_node(const YAML::Node& root, const std::string& path) {
  YAML::Node cur;
  cur.reset(root);
  for (const auto& key : split_path(path)) {
    if (!cur.IsMap()) return std::nullopt;
    const YAML::Node& as_const = cur;
    YAML::Node next = as_const[key];
    if (!next.IsDefined()) return std::nullopt;
    cur.reset(next);
  }
  return cur;
}

// ---------------------------------------------------------------------------------------------
// Unknown keys

void check_known_keys(const YAML::Node& map, const std::string& prefix, const Context& ctx) {
  const Schema& schema = Schema::get();
  std::set<std::string> seen;
  for (auto it = map.begin(); it != map.end(); ++it) {
    if (!it->first.IsScalar())
      fail(ctx, prefix, it->first, "keys must be plain names, got " + describe_node(it->first));
    const std::string path = join_path(prefix, it->first.Scalar());
    if (!seen.insert(path).second) fail(ctx, path, it->first, "duplicate key '" + path + "'");
    if ((prefix == kPopulations || prefix == kProjections) && !is_entry_name(it->first.Scalar()))
      fail(ctx, path, it->first,
           "'" + it->first.Scalar() + "' cannot name a " +
               (prefix == kPopulations ? "population" : "projection") +
               ": use letters, digits and '_', not starting with a digit");
    if (schema.is_leaf(path)) continue;
    if (!schema.is_group(path)) fail_unknown(ctx, path, it->first, nearest_of(path, true));
    if (it->second.IsNull()) continue;  // an empty section
    if (!it->second.IsMap())
      fail(ctx, path, it->second,
           "'" + path + "' is a section and expects a mapping of keys, got " +
               describe_node(it->second));
    check_known_keys(it->second, path, ctx);
  }
}

/// Throws the unknown-key error unless `path` is a key or a section.
void check_path(const std::string& path, const Context& ctx, const YAML::Node& at) {
  const Schema& schema = Schema::get();
  if (schema.is_leaf(path) || schema.is_group(path)) return;
  // Report the first component that is not a section.
  std::string prefix;
  for (const auto& key : split_path(path)) {
    const std::string p = join_path(prefix, key);
    if (schema.is_leaf(p) || !schema.is_group(p)) {
      if (schema.is_leaf(p)) fail_unknown(ctx, path, at, nearest_of(path, true));
      // A misspelt section: suggest the corrected section with the rest of the path if valid.
      const std::string section = nearest_of(p, true);
      const std::string repaired = section + path.substr(p.size());
      const bool valid = schema.is_leaf(repaired) || schema.is_group(repaired);
      fail_unknown(ctx, path, at, valid ? repaired : section);
    }
    prefix = p;
  }
  fail_unknown(ctx, path, at, nearest_of(path, true));
}

// ---------------------------------------------------------------------------------------------
// Overrides

/// Set `value` under `key` of `parent` (whose key path is `path`); mappings are merged key by
/// key. A section is only ever merged into: replacing it by a non-mapping (null, say, from
/// --set 'network={circuit: ~}') would silently reset every key in it.
/// network.circuit.drive is the legacy spelling of network.circuit.preset: setting one replaces
/// the other (so that --set network.circuit.drive=feedforward works on a file, or a stored
/// configuration, that names its preset), unless the same value sets both (`both`).
void merge_into(YAML::Node parent, const std::string& key, const YAML::Node& value,
                const std::string& path, bool both = false) {
  YAML::Node existing = parent[key];
  if (Schema::get().is_group(path) && !value.IsMap()) {
    std::string example = path + ".<key>";
    for (const auto& leaf : Schema::get().leaves)
      if (is_within(leaf, canonical(path))) {
        example = with_name_of(leaf, path);
        break;
      }
    throw config_error(path, "'" + path + "' is a section: setting it to " + describe_node(value) +
                                 " would reset every key in it; set the keys inside it instead "
                                 "(e.g. '" +
                                 example + "=...') or give a mapping ('" + path +
                                 "={key: value}')");
  }
  if (value.IsMap() && existing.IsMap()) {
    const bool sets_both =
        path == "network.circuit" && value["preset"].IsDefined() && value["drive"].IsDefined();
    for (auto it = value.begin(); it != value.end(); ++it)
      merge_into(existing, it->first.Scalar(), it->second, join_path(path, it->first.Scalar()),
                 both || sets_both);
    return;
  }
  if (!both && (path == "network.circuit.drive" || path == "network.circuit.preset"))
    parent.remove(path == "network.circuit.drive" ? "preset" : "drive");
  parent[key] = value;
}

void set_path(YAML::Node& root, const std::string& path, const YAML::Node& value) {
  const auto keys = split_path(path);
  YAML::Node cur;
  cur.reset(root);
  for (std::size_t i = 0; i + 1 < keys.size(); ++i) {
    YAML::Node next = cur[keys[i]];
    if (!next.IsMap()) next = YAML::Node(YAML::NodeType::Map);  // replaces null / absent
    cur.reset(next);
  }
  merge_into(cur, keys.back(), value, path);
}

void apply_override(YAML::Node& root, const std::string& text, Context& ctx) {
  const auto eq = text.find('=');
  if (eq == std::string::npos)
    throw config_error("", "override '" + text +
                               "' must have the form path.to.key=value (e.g. network.width=100)");
  const std::string path = trim(text.substr(0, eq));
  const std::string value_text = text.substr(eq + 1);
  const std::string label = "--set '" + text + "'";
  if (path.empty()) throw config_error("", "override '" + text + "' has an empty key path");
  ctx.overrides.push_back({path, label});
  check_path(path, ctx, YAML::Node());
  YAML::Node value;
  try {
    value = YAML::Load(value_text);
  } catch (const YAML::Exception& e) {
    throw config_error(path, "cannot parse the value of " + label + " as YAML: " + e.msg);
  }
  set_path(root, path, value);
}

// ---------------------------------------------------------------------------------------------
// Reader: YAML tree -> Config, with type and range checks.

bool is_condition_name(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-';
  });
}

/// The fields of an element of simulate.protocol.segments and .perturbations.
const std::vector<std::string> kSegmentFields{"image", "brightness", "duration"};
const std::vector<std::string> kPerturbationFields{"population", "layer",   "start",
                                                   "end",        "current", "silence"};

class Reader {
 public:
  Reader(const YAML::Node& root, const Context& ctx) : root_(root), ctx_(ctx) {}

  void uinteger(const std::string& path, std::uint64_t& v) {
    if (auto n = find_node(root_, path)) v = read_uint(path, *n);
  }
  void integer(const std::string& path, int& v, const Range& r) {
    if (auto n = find_node(root_, path)) v = read_int(path, *n, r);
  }
  void real(const std::string& path, double& v, const Range& r) {
    if (auto n = find_node(root_, path)) v = read_real(path, *n, r);
  }
  void boolean(const std::string& path, bool& v) {
    auto n = find_node(root_, path);
    if (!n) return;
    expect_scalar(path, *n, "true or false");
    if (!YAML::convert<bool>::decode(*n, v))
      fail(ctx_, path, *n, "expected true or false, got " + describe_node(*n));
  }
  void text(const std::string& path, std::string& v, bool non_empty) {
    auto n = find_node(root_, path);
    if (!n) return;
    v = read_text(path, *n);
    if (non_empty && v.empty()) fail(ctx_, path, *n, std::string(path) + " must not be empty");
  }
  template <class E, std::size_t N>
  void choice(const std::string& path, E& v, const std::array<EnumName<E>, N>& table) {
    auto n = find_node(root_, path);
    if (!n) return;
    std::string allowed;
    for (const auto& entry : table)
      allowed += (allowed.empty() ? "" : ", ") + std::string(entry.name);
    expect_scalar(path, *n, "one of: " + allowed);
    for (const auto& entry : table) {
      if (n->Scalar() == entry.name) {
        v = entry.value;
        return;
      }
    }
    fail(ctx_, path, *n,
         std::string(path) + " = '" + n->Scalar() +
             "' is not one of the allowed values: " + allowed);
  }
  void reals(const std::string& path, std::vector<double>& v, const Range& r) {
    auto n = find_node(root_, path);
    if (!n) return;
    std::vector<double> out;
    for (const auto& [p, e] : elements(path, *n)) out.push_back(read_real(p, e, r));
    v = std::move(out);
  }
  void integers(const std::string& path, std::vector<int>& v, const Range& r) {
    auto n = find_node(root_, path);
    if (!n) return;
    std::vector<int> out;
    for (const auto& [p, e] : elements(path, *n)) out.push_back(read_int(p, e, r));
    v = std::move(out);
  }
  void uintegers(const std::string& path, std::vector<std::uint64_t>& v) {
    auto n = find_node(root_, path);
    if (!n) return;
    std::vector<std::uint64_t> out;
    for (const auto& [p, e] : elements(path, *n)) out.push_back(read_uint(p, e));
    v = std::move(out);
  }
  void conditions(const std::string& path, std::vector<SweepCondition>& v) {
    auto n = find_node(root_, path);
    if (!n) return;
    v.clear();
    if (n->IsNull()) return;
    if (!n->IsSequence())
      fail(ctx_, path, *n, "expected a list of {name, set} mappings, got " + describe_node(*n));
    for (std::size_t i = 0; i < n->size(); ++i) v.push_back(read_condition(path, i, (*n)[i], v));
  }
  void segments(const std::string& path, std::vector<ProtocolSegment>& v) {
    auto n = find_node(root_, path);
    if (!n) return;
    v.clear();
    for (const auto& [p, e] : maps(path, *n, kSegmentFields, "{image: 0, duration: 300}")) {
      ProtocolSegment s;
      s.image = read_int(p + ".image", required(p, e, "image"), closed(0, 9999));
      if (e["brightness"]) s.brightness = read_real(p + ".brightness", e["brightness"], ge(0));
      s.duration = read_real(p + ".duration", required(p, e, "duration"), gt(0));
      v.push_back(s);
    }
  }
  void perturbations(const std::string& path, std::vector<ProtocolPerturbation>& v) {
    auto n = find_node(root_, path);
    if (!n) return;
    v.clear();
    for (const auto& [p, e] :
         maps(path, *n, kPerturbationFields, "{population: I, start: 100, end: 200, current: 1}")) {
      ProtocolPerturbation q;
      q.population = read_text(p + ".population", required(p, e, "population"));
      if (q.population.empty())
        fail(ctx_, p + ".population", e["population"], p + ".population must not be empty");
      if (e["layer"]) q.layer = read_int(p + ".layer", e["layer"], closed(0, 7));
      q.start = read_real(p + ".start", required(p, e, "start"), ge(0));
      q.end = read_real(p + ".end", required(p, e, "end"), gt(0));
      if (!(q.start < q.end))
        fail(ctx_, p + ".end", e["end"],
             p + ".end = " + format_number(q.end) + " must be > " + p +
                 ".start = " + format_number(q.start) + " (a window [start, end) in ms)");
      const bool has_current = bool(e["current"]);
      if (has_current) q.current = read_real(p + ".current", e["current"], any_number());
      if (e["silence"]) {
        const YAML::Node sn = e["silence"];
        expect_scalar(p + ".silence", sn, "true or false");
        if (!YAML::convert<bool>::decode(sn, q.silence))
          fail(ctx_, p + ".silence", sn, "expected true or false, got " + describe_node(sn));
      }
      if (q.silence && has_current)
        fail(ctx_, p + ".silence", e["silence"],
             p + " sets both silence: true and current: a window either silences the population "
                 "or injects a current into it, not both; split it into two perturbations");
      if (!q.silence && !has_current)
        fail(ctx_, p, e,
             p + " does nothing: give it a current (e.g. current: 0.5) or silence: true");
      v.push_back(q);
    }
  }

  void preset(const std::string& path, std::string& v) {
    auto n = find_node(root_, path);
    if (!n) return;
    std::string allowed;
    for (const auto& name : models::preset_names()) allowed += (allowed.empty() ? "" : ", ") + name;
    expect_scalar(path, *n, "one of: " + allowed);
    const auto& names = models::preset_names();
    if (std::find(names.begin(), names.end(), n->Scalar()) == names.end())
      fail(ctx_, path, *n,
           path + " = '" + n->Scalar() + "' is not one of the allowed values: " + allowed);
    v = n->Scalar();
  }
  bool legacy_keys(const std::string&) { return true; }
  /// The legacy key: feedback is the default preset, feedforward inorm.
  void drive(const std::string& path, std::string& preset) {
    auto n = find_node(root_, path);
    if (!n) return;
    Drive d = Drive::feedback;
    choice(path, d, kDrive);
    const std::string implied = d == Drive::feedforward ? "inorm" : "default";
    if (find_node(root_, "network.circuit.preset") && preset != implied) {
      if (!reads_legacy_keys(preset)) return;  // circuit() refuses every legacy key
      fail(ctx_, path, *n,
           "network.circuit.drive = " + n->Scalar() +
               " contradicts network.circuit.preset = " + preset +
               " (drive: feedback is the default preset, drive: feedforward the inorm preset); "
               "remove network.circuit.drive");
    }
    preset = implied;
  }
  /// Builds network.circuit.spec: the preset, changed by network.circuit.populations and
  /// network.circuit.projections, then checked (models::resolve).
  void circuit(NetworkConfig& n) {
    CircuitConfig& cc = n.circuit;
    if (!reads_legacy_keys(cc.preset))
      for (const auto& legacy : kLegacyKeys) {
        const std::string path = std::string("network.circuit.") + legacy.key;
        if (auto node = find_node(root_, path))
          fail(ctx_, path, *node,
               path +
                   " is a parameter of the default and inorm presets only; with "
                   "network.circuit.preset = " +
                   cc.preset + " set " + legacy.instead + " instead (" + preset_contents(n) + ")");
      }
    const bool tau_E_given = find_node(root_, "network.circuit.tau_E").has_value();
    models::CircuitSpec s = preset_circuit(n, cc.params, tau_E_given);
    read_populations(s);
    read_projections(s);
    models::Population& E = s.populations.front();
    E.size = n.width;
    if (!s.own_output_rate) E.phi = n.phi;
    cc.params.tau_E = E.tau;  // tau_E is E's time constant in every preset
    for (const auto& p : s.populations) {
      const std::string path = kPopulations + "." + p.name + ".initial";
      if (p.dynamics == models::Dynamics::multiplicative && !(p.initial > 0))
        fail(ctx_, path, node_or_null(path),
             path + " = " + format_number(p.initial) +
                 " must be > 0 for a multiplicative population (its rate changes in proportion "
                 "to itself and would stay at 0)");
      if (p.dynamics == models::Dynamics::integrator && !(p.initial >= 0))
        fail(ctx_, path, node_or_null(path),
             path + " = " + format_number(p.initial) +
                 " must be >= 0 for an integrator population (its rate is rectified)");
    }
    for (const auto& p : s.projections)
      if (!is_entry_name(p.energy_name)) {
        const std::string path = kProjections + "." + p.name + ".energy_name";
        fail(ctx_, path, node_or_null(path),
             path + " = '" + p.energy_name +
                 "' cannot name a weight: use letters, digits and '_', not starting with a digit");
      }
    try {
      models::resolve(s, "network.circuit");
    } catch (const config_error& e) {
      // Add where the offending entry came from (file and line, or the override).
      std::string message = e.what();
      const std::string& key = e.key_path();
      if (message.rfind(key + ": ", 0) == 0) message = message.substr(key.size() + 2);
      YAML::Node at;
      for (std::string p = key; !p.empty() && p != "network.circuit"; p = parent_of(p))
        if (auto node = find_node(root_, p)) {
          at = *node;
          break;
        }
      fail(ctx_, key, at, message);
    }
    cc.spec = std::move(s);
  }

 private:
  YAML::Node node_or_null(const std::string& path) const {
    auto n = find_node(root_, path);
    return n ? *n : YAML::Node();
  }

  /// "the preset's populations: E, PV, SST, VIP; projections: W_EPV, ..." for messages.
  static std::string preset_contents(const NetworkConfig& n) {
    const models::CircuitSpec s = preset_circuit(n, n.circuit.params, false);
    return "the preset's populations: " + names(s.populations) +
           "; projections: " + names(s.projections);
  }

  template <class T>
  static std::string names(const std::vector<T>& v) {
    std::string out;
    for (const auto& x : v) out += (out.empty() ? "" : ", ") + x.name;
    return out.empty() ? std::string("none") : out;
  }

  /// The entries of the map at `map_path`, in order (none if it is absent or empty).
  std::vector<std::pair<std::string, YAML::Node>> entries(const std::string& map_path) const {
    std::vector<std::pair<std::string, YAML::Node>> out;
    auto node = find_node(root_, map_path);
    if (!node || node->IsNull()) return out;
    if (!node->IsMap())
      fail(ctx_, map_path, *node, "expected a mapping of names, got " + describe_node(*node));
    for (auto it = node->begin(); it != node->end(); ++it)
      out.emplace_back(it->first.Scalar(), it->second);
    return out;
  }

  /// `remove: true` of the entry at `prefix`; refused with other keys beside it.
  bool read_remove(const std::string& prefix, const YAML::Node& entry, const char* what) {
    bool remove = false;
    boolean(prefix + ".remove", remove);
    if (remove && entry.size() > 1)
      fail(ctx_, prefix + ".remove", node_or_null(prefix + ".remove"),
           prefix + ".remove = true deletes the " + what +
               "; its other keys would be ignored: remove them");
    return remove;
  }

  void read_populations(models::CircuitSpec& s) {
    for (const auto& [name, entry] : entries(kPopulations)) {
      const std::string prefix = kPopulations + "." + name;
      int k = models::find_population(s, name);
      if (read_remove(prefix, entry, "population")) {
        const std::string path = prefix + ".remove";
        if (k == 0)
          fail(ctx_, path, node_or_null(path),
               path + " = true: E is the layer's output and cannot be removed");
        if (k < 0)
          fail(ctx_, path, node_or_null(path),
               path + " = true: there is no population '" + name + "' to remove (the circuit has " +
                   names(s.populations) + ")");
        s.populations.erase(s.populations.begin() + k);
        continue;
      }
      if (k == 0 && find_node(root_, prefix + ".size"))
        fail(ctx_, prefix + ".size", node_or_null(prefix + ".size"),
             "E's size is network.width: set network.width instead of " + prefix + ".size");
      if (k < 0) {
        models::Population p;
        p.name = name;
        s.populations.push_back(p);
        k = int(s.populations.size()) - 1;
      }
      visit_population(s.populations[k], *this, prefix, k != 0, true);
      if (k == 0 && find_node(root_, prefix + ".rate")) s.own_output_rate = true;
    }
  }

  void read_projections(models::CircuitSpec& s) {
    for (const auto& [name, entry] : entries(kProjections)) {
      const std::string prefix = kProjections + "." + name;
      const std::string& wanted = name;  // (clang < 16 cannot capture structured bindings)
      auto it = std::find_if(s.projections.begin(), s.projections.end(),
                             [&](const models::Projection& p) { return p.name == wanted; });
      if (read_remove(prefix, entry, "projection")) {
        const std::string path = prefix + ".remove";
        if (it == s.projections.end())
          fail(ctx_, path, node_or_null(path),
               path + " = true: there is no projection '" + name + "' to remove (the circuit has " +
                   names(s.projections) + ")");
        s.projections.erase(it);
        continue;
      }
      if (it == s.projections.end()) {
        for (const char* field : {"source", "target"})
          if (!find_node(root_, prefix + "." + field))
            fail(ctx_, prefix + "." + field, node_or_null(prefix),
                 prefix + " is a new projection (the circuit has " + names(s.projections) +
                     "): it needs a source and a target (" + prefix + "." + field + " is missing)");
        models::Projection p;
        p.name = name;
        s.projections.push_back(p);
        it = s.projections.end() - 1;
      }
      visit_projection(*it, *this, prefix);
    }
  }

  void expect_scalar(const std::string& path, const YAML::Node& n, const std::string& what) const {
    if (!n.IsScalar()) fail(ctx_, path, n, "expected " + what + ", got " + describe_node(n));
  }

  double read_real(const std::string& path, const YAML::Node& n, const Range& r) const {
    expect_scalar(path, n, "a number");
    double x = 0;
    if (!YAML::convert<double>::decode(n, x))
      fail(ctx_, path, n, "expected a number, got " + describe_node(n));
    if (!std::isfinite(x))
      fail(ctx_, path, n, path + " = " + n.Scalar() + " must be a finite number");
    if (!r.contains(x))
      fail(ctx_, path, n, path + " = " + format_number(x) + " must be " + r.describe());
    return x;
  }

  /// An integer, also accepted in float notation when integral ("1e3", "10.0").
  std::int64_t read_int64(const std::string& path, const YAML::Node& n) const {
    expect_scalar(path, n, "an integer");
    std::int64_t i = 0;
    if (YAML::convert<std::int64_t>::decode(n, i)) return i;
    double x = 0;
    if (YAML::convert<double>::decode(n, x) && std::isfinite(x) && x == std::floor(x) &&
        std::abs(x) < 9.2e18)
      return static_cast<std::int64_t>(x);
    fail(ctx_, path, n, "expected an integer, got " + describe_node(n));
  }

  int read_int(const std::string& path, const YAML::Node& n, const Range& r) const {
    const std::int64_t i = read_int64(path, n);
    if (!r.contains(double(i)))
      fail(ctx_, path, n, path + " = " + std::to_string(i) + " must be " + r.describe());
    if (i > INT_MAX || i < INT_MIN)
      fail(ctx_, path, n,
           path + " = " + std::to_string(i) + " must be <= " + std::to_string(INT_MAX));
    return int(i);
  }

  std::uint64_t read_uint(const std::string& path, const YAML::Node& n) const {
    expect_scalar(path, n, "an integer");
    std::uint64_t u = 0;
    std::int64_t i = 0;
    const bool is_int = YAML::convert<std::int64_t>::decode(n, i);
    if (!is_int && n.Scalar().find('-') == std::string::npos &&
        YAML::convert<std::uint64_t>::decode(n, u))
      return u;  // beyond the int64 range
    i = read_int64(path, n);
    if (i < 0) fail(ctx_, path, n, path + " = " + std::to_string(i) + " must be >= 0");
    return std::uint64_t(i);
  }

  std::string read_text(const std::string& path, const YAML::Node& n) const {
    if (n.IsNull()) return {};
    expect_scalar(path, n, "a string");
    return n.Scalar();
  }

  /// List elements with their paths; a scalar counts as a one-element list. Never empty.
  std::vector<std::pair<std::string, YAML::Node>> elements(const std::string& path,
                                                           const YAML::Node& n) const {
    std::vector<std::pair<std::string, YAML::Node>> out;
    if (n.IsScalar()) {
      out.emplace_back(path, n);
    } else if (n.IsSequence()) {
      for (std::size_t i = 0; i < n.size(); ++i)
        out.emplace_back(path + "[" + std::to_string(i) + "]", n[i]);
    } else {
      fail(ctx_, path, n, "expected a list, got " + describe_node(n));
    }
    // The evaluate.* lists are empty by default (nothing to evaluate); every other list is not.
    if (out.empty() && path.rfind("evaluate.", 0) != 0)
      fail(ctx_, path, n, path + " must not be empty");
    return out;
  }

  /// The elements of a list of mappings, each with its path `path[i]` (a single mapping counts as
  /// a one-element list, null as the empty list); every key must be one of `fields` (an unknown
  /// key names the nearest one).
  std::vector<std::pair<std::string, YAML::Node>> maps(const std::string& path, const YAML::Node& n,
                                                       const std::vector<std::string>& fields,
                                                       const std::string& example) const {
    std::vector<std::pair<std::string, YAML::Node>> out;
    if (n.IsNull()) return out;
    if (n.IsMap()) {
      out.emplace_back(path + "[0]", n);
    } else if (n.IsSequence()) {
      for (std::size_t i = 0; i < n.size(); ++i)
        out.emplace_back(path + "[" + std::to_string(i) + "]", n[i]);
    } else {
      fail(ctx_, path, n,
           "expected a list of mappings such as " + example + ", got " + describe_node(n));
    }
    for (const auto& [p, e] : out) {
      if (!e.IsMap())
        fail(ctx_, p, e, "expected a mapping such as " + example + ", got " + describe_node(e));
      std::set<std::string> seen;
      for (auto it = e.begin(); it != e.end(); ++it) {
        if (!it->first.IsScalar())
          fail(ctx_, p, it->first, "keys must be plain names, got " + describe_node(it->first));
        const std::string key = it->first.Scalar(), kpath = p + "." + key;
        if (!seen.insert(key).second) fail(ctx_, kpath, it->first, "duplicate key '" + kpath + "'");
        if (std::find(fields.begin(), fields.end(), key) != fields.end()) continue;
        std::string best = fields.front();
        for (const auto& f : fields)
          if (edit_distance(key, f) < edit_distance(key, best)) best = f;
        std::string all;
        for (const auto& f : fields) all += (all.empty() ? "" : ", ") + f;
        fail(ctx_, kpath, it->first,
             "unknown key '" + kpath + "'; did you mean '" + p + "." + best + "'? (the keys of " +
                 path + " entries: " + all + ")");
      }
    }
    return out;
  }

  /// The value of `field` in the mapping `e` at `path`; an error if it is missing.
  YAML::Node required(const std::string& path, const YAML::Node& e, const char* field) const {
    const YAML::Node n = e[field];
    if (!n) fail(ctx_, path + "." + field, e, path + " has no '" + field + "'");
    return n;
  }

  SweepCondition read_condition(const std::string& list_path, std::size_t i, const YAML::Node& n,
                                const std::vector<SweepCondition>& earlier) const {
    const std::string path = list_path + "[" + std::to_string(i) + "]";
    if (!n.IsMap())
      fail(ctx_, path, n, "expected a mapping {name: ..., set: {...}}, got " + describe_node(n));
    SweepCondition c;
    bool has_name = false;
    for (auto it = n.begin(); it != n.end(); ++it) {
      const std::string key = it->first.Scalar();
      const std::string kpath = path + "." + key;
      if (key == "name") {
        has_name = true;
        c.name = read_text(kpath, it->second);
        if (!is_condition_name(c.name))
          fail(ctx_, kpath, it->second,
               kpath + " = '" + c.name +
                   "' must be a non-empty name of letters, digits, '_' and '-'");
        for (std::size_t j = 0; j < earlier.size(); ++j)
          if (earlier[j].name == c.name)
            fail(ctx_, kpath, it->second,
                 kpath + " = '" + c.name + "' is already used by " + list_path + "[" +
                     std::to_string(j) + "]; names must be unique");
      } else if (key == "set") {
        c.set = read_set(kpath, it->second);
      } else {
        fail(ctx_, kpath, it->first,
             "unknown key '" + kpath + "'; did you mean '" + path + "." +
                 (edit_distance(key, "name") <= edit_distance(key, "set") ? "name" : "set") + "'?");
      }
    }
    if (!has_name) fail(ctx_, path, n, path + " has no 'name'");
    return c;
  }

  std::vector<std::pair<std::string, std::string>> read_set(const std::string& path,
                                                            const YAML::Node& n) const {
    std::vector<std::pair<std::string, std::string>> out;
    if (n.IsNull()) return out;
    if (!n.IsMap())
      fail(ctx_, path, n,
           "expected a mapping of key paths to values (e.g. network.kind: layernorm), got " +
               describe_node(n));
    const Schema& schema = Schema::get();
    for (auto it = n.begin(); it != n.end(); ++it) {
      const std::string key = it->first.Scalar();
      const std::string kpath = path + "." + key;
      if (!schema.is_leaf(key))
        fail(ctx_, kpath, it->first,
             "unknown key '" + kpath + "'; did you mean '" + path + "." + nearest_of(key, false) +
                 "'?");
      if (is_within(key, "sweep"))
        fail(ctx_, kpath, it->first, "a sweep condition cannot set the sweep keys (" + key + ")");
      for (const auto& [k, _] : out)
        if (k == key) fail(ctx_, kpath, it->first, "duplicate key '" + kpath + "'");
      const YAML::Node value = it->second;  // a copy: the iterator yields a proxy
      std::string text;
      if (value.IsScalar()) {
        text = value.Scalar();
      } else if (value.IsNull()) {
        text = "";
      } else if (value.IsSequence()) {
        YAML::Node flow = YAML::Clone(value);
        flow.SetStyle(YAML::EmitterStyle::Flow);
        YAML::Emitter out_text;
        out_text << flow;
        text = out_text.c_str();
      } else {
        fail(ctx_, kpath, value, "expected a value, got " + describe_node(value));
      }
      out.emplace_back(key, text);
    }
    return out;
  }

  const YAML::Node& root_;
  const Context& ctx_;
};

// ---------------------------------------------------------------------------------------------
// Writer: Config -> YAML

struct Writer {
  std::vector<std::pair<std::string, std::function<void(YAML::Emitter&)>>> entries;

  void add(const std::string& path, std::function<void(YAML::Emitter&)> f) {
    entries.emplace_back(path, std::move(f));
  }
  void uinteger(const std::string& p, std::uint64_t& v) {
    add(p, [x = v](YAML::Emitter& o) { o << std::to_string(x); });
  }
  void integer(const std::string& p, int& v, const Range&) {
    add(p, [x = v](YAML::Emitter& o) { o << std::to_string(x); });
  }
  void real(const std::string& p, double& v, const Range&) {
    add(p, [x = v](YAML::Emitter& o) { o << format_yaml_double(x); });
  }
  void boolean(const std::string& p, bool& v) {
    add(p, [x = v](YAML::Emitter& o) { o << (x ? "true" : "false"); });
  }
  void text(const std::string& p, std::string& v, bool) {
    add(p, [x = v](YAML::Emitter& o) { o << YAML::DoubleQuoted << x; });
  }
  template <class E, std::size_t N>
  void choice(const std::string& p, E& v, const std::array<EnumName<E>, N>& table) {
    add(p, [x = std::string(name_of(v, table))](YAML::Emitter& o) { o << x; });
  }
  void reals(const std::string& p, std::vector<double>& v, const Range&) {
    add(p, [x = v](YAML::Emitter& o) {
      o << YAML::Flow << YAML::BeginSeq;
      for (double d : x) o << format_yaml_double(d);
      o << YAML::EndSeq;
    });
  }
  void integers(const std::string& p, std::vector<int>& v, const Range&) {
    add(p, [x = v](YAML::Emitter& o) {
      o << YAML::Flow << YAML::BeginSeq;
      for (int i : x) o << std::to_string(i);
      o << YAML::EndSeq;
    });
  }
  void uintegers(const std::string& p, std::vector<std::uint64_t>& v) {
    add(p, [x = v](YAML::Emitter& o) {
      o << YAML::Flow << YAML::BeginSeq;
      for (auto i : x) o << std::to_string(i);
      o << YAML::EndSeq;
    });
  }
  void preset(const std::string& p, std::string& v) {
    add(p, [x = v](YAML::Emitter& o) { o << x; });
  }
  /// The legacy keys are written for the presets that read them.
  bool legacy_keys(const std::string& preset) { return reads_legacy_keys(preset); }
  void drive(const std::string& p, std::string& preset) {
    add(p, [x = std::string(preset == "inorm" ? "feedforward" : "feedback")](YAML::Emitter& o) {
      o << x;
    });
  }
  /// Every field of every population and projection, and `remove: true` for each of the
  /// preset's that the circuit no longer has: parsing it rebuilds the same circuit.
  void circuit(NetworkConfig& n) {
    models::CircuitSpec s = n.circuit.spec;
    for (auto& p : s.populations)
      visit_population(p, *this, kPopulations + "." + p.name, &p != &s.populations.front(),
                       &p != &s.populations.front() || s.own_output_rate);
    const models::CircuitSpec preset = preset_circuit(n, n.circuit.params, true);
    for (const auto& p : preset.populations)
      if (models::find_population(s, p.name) < 0) remove(kPopulations + "." + p.name);
    for (auto& p : s.projections) visit_projection(p, *this, kProjections + "." + p.name);
    for (const auto& p : preset.projections)
      if (std::none_of(s.projections.begin(), s.projections.end(),
                       [&](const models::Projection& q) { return q.name == p.name; }))
        remove(kProjections + "." + p.name);
  }
  void remove(const std::string& prefix) {
    add(prefix + ".remove", [](YAML::Emitter& o) { o << "true"; });
  }
  /// One flow mapping per segment: `- {image: 0, brightness: 1.0, duration: 300.0}`.
  void segments(const std::string& p, std::vector<ProtocolSegment>& v) {
    add(p, [x = v](YAML::Emitter& o) {
      if (x.empty()) {
        o << YAML::Flow << YAML::BeginSeq << YAML::EndSeq;
        return;
      }
      o << YAML::BeginSeq;
      for (const auto& s : x)
        o << YAML::Flow << YAML::BeginMap << YAML::Key << "image" << YAML::Value
          << std::to_string(s.image) << YAML::Key << "brightness" << YAML::Value
          << format_yaml_double(s.brightness) << YAML::Key << "duration" << YAML::Value
          << format_yaml_double(s.duration) << YAML::EndMap;
      o << YAML::EndSeq;
    });
  }
  /// One flow mapping per window, `layer` only when it is one layer, and either `current` or
  /// `silence: true`.
  void perturbations(const std::string& p, std::vector<ProtocolPerturbation>& v) {
    add(p, [x = v](YAML::Emitter& o) {
      if (x.empty()) {
        o << YAML::Flow << YAML::BeginSeq << YAML::EndSeq;
        return;
      }
      o << YAML::BeginSeq;
      for (const auto& q : x) {
        o << YAML::Flow << YAML::BeginMap << YAML::Key << "population" << YAML::Value
          << YAML::DoubleQuoted << q.population;
        if (q.layer >= 0) o << YAML::Key << "layer" << YAML::Value << std::to_string(q.layer);
        o << YAML::Key << "start" << YAML::Value << format_yaml_double(q.start) << YAML::Key
          << "end" << YAML::Value << format_yaml_double(q.end);
        if (q.silence)
          o << YAML::Key << "silence" << YAML::Value << "true";
        else
          o << YAML::Key << "current" << YAML::Value << format_yaml_double(q.current);
        o << YAML::EndMap;
      }
      o << YAML::EndSeq;
    });
  }
  void conditions(const std::string& p, std::vector<SweepCondition>& v) {
    add(p, [x = v](YAML::Emitter& o) {
      if (x.empty()) {
        o << YAML::Flow << YAML::BeginSeq << YAML::EndSeq;
        return;
      }
      o << YAML::BeginSeq;
      for (const auto& c : x) {
        o << YAML::BeginMap << YAML::Key << "name" << YAML::Value << YAML::DoubleQuoted << c.name;
        o << YAML::Key << "set" << YAML::Value;
        if (c.set.empty()) {
          o << YAML::Flow << YAML::BeginMap << YAML::EndMap;
        } else {
          o << YAML::BeginMap;
          for (const auto& [key, value] : c.set) {
            o << YAML::Key << key << YAML::Value;
            // The text must parse back to itself; null spellings would parse to nothing.
            const bool null_like =
                value == "~" || value == "null" || value == "Null" || value == "NULL";
            if (null_like) o << YAML::DoubleQuoted;
            o << value;
          }
          o << YAML::EndMap;
        }
        o << YAML::EndMap;
      }
      o << YAML::EndSeq;
    });
  }
};

/// The text of one writer entry.
std::string emitted(const std::function<void(YAML::Emitter&)>& emit) {
  YAML::Emitter e;
  emit(e);
  return e.c_str();
}

/// The preset circuit of network.circuit.preset and its legacy parameters, resolved.
models::CircuitSpec default_circuit(const NetworkConfig& n) {
  models::CircuitSpec s = preset_circuit(n, n.circuit.params, false);
  s.populations.front().size = n.width;
  if (!s.own_output_rate) s.populations.front().phi = n.phi;
  models::resolve(s, "network.circuit");
  return s;
}

/// `config` as the writer sees it: a Config built in code (network.circuit.spec empty) gets its
/// preset circuit, and tau_E is E's time constant (as after parsing).
Config normalised(const Config& config) {
  Config c = config;
  auto& cc = c.network.circuit;
  if (cc.spec.populations.empty()) cc.spec = default_circuit(c.network);
  cc.params.tau_E = cc.spec.populations.front().tau;
  return c;
}

// ---------------------------------------------------------------------------------------------
// Cross-checks and the pipeline

/// Images in Fashion-MNIST's training file.
constexpr int kTrainImages = 60000;

/// The node of `field` of element i of the list at `list_path` (the element itself if it lacks
/// the field, the list if it has no element i), for the file and line of a message.
YAML::Node list_field_node(const YAML::Node& root, const std::string& list_path, std::size_t i,
                           const std::string& field) {
  const auto list = find_node(root, list_path);
  if (!list) return YAML::Node();
  YAML::Node e;
  if (list->IsMap() && i == 0)
    e = *list;
  else if (list->IsSequence() && i < list->size())
    e = (*list)[i];
  else
    return *list;
  const YAML::Node& ce = e;
  return ce.IsMap() && ce[field] ? ce[field] : e;
}

/// simulate.protocol: what needs the circuit or the whole protocol (the reader checked each
/// element's fields): the populations and layers exist, every window lies inside the protocol,
/// and the recorded traces are of a sane size.
void check_protocol(const Config& c, const YAML::Node& root, const Context& ctx) {
  const ProtocolSpec& pc = c.simulate.protocol;
  const std::string segs = "simulate.protocol.segments", perts = "simulate.protocol.perturbations";
  auto at = [&](const std::string& path) {
    auto n = find_node(root, path);
    return n ? *n : YAML::Node();
  };
  if (pc.empty()) {
    if (!pc.perturbations.empty())
      fail(ctx, perts, at(perts),
           perts + " needs a stimulus: list the protocol's segments under " + segs +
               " (e.g. [{image: 0, duration: 300}])");
    return;
  }
  if (c.network.kind != models::LayerKind::circuit)
    fail(ctx, segs, at(segs),
         "simulate.protocol integrates circuit layers, but network.kind = " +
             std::string(name_of(c.network.kind, kLayerKind)) +
             " has none; set network.kind: circuit or remove simulate.protocol");
  const double T = pc.duration();
  const auto& pops = c.network.circuit.spec.populations;
  std::string names;
  for (const auto& p : pops) names += (names.empty() ? "" : ", ") + p.name;
  for (std::size_t i = 0; i < pc.perturbations.size(); ++i) {
    const auto& q = pc.perturbations[i];
    const std::string p = perts + "[" + std::to_string(i) + "]";
    if (std::none_of(pops.begin(), pops.end(),
                     [&](const models::Population& x) { return x.name == q.population; }))
      fail(ctx, p + ".population", list_field_node(root, perts, i, "population"),
           p + ".population = '" + q.population + "' is not a population of the circuit (it has " +
               names + ")");
    if (q.layer >= c.network.hidden_layers)
      fail(ctx, p + ".layer", list_field_node(root, perts, i, "layer"),
           p + ".layer = " + std::to_string(q.layer) +
               " must be < network.hidden_layers = " + std::to_string(c.network.hidden_layers) +
               " (hidden layers are numbered from 0; leave it out for every layer)");
    if (q.end > T)
      fail(ctx, p + ".end", list_field_node(root, perts, i, "end"),
           p + ".end = " + format_number(q.end) + " must be <= the protocol's duration, " +
               format_number(T) + " ms (the sum of the segments' durations)");
  }
  const double points = std::ceil(T / pc.record_interval) + 1;
  double units = 0;
  for (const auto& p : pops) units += p.size;
  const double bytes = 16.0 * points * units * c.network.hidden_layers;
  if (points > 1e6 || bytes > 2.0 * (1 << 30))
    fail(ctx, "simulate.protocol.record_interval", at("simulate.protocol.record_interval"),
         "simulate.protocol.record_interval = " + format_number(pc.record_interval) + " ms gives " +
             format_number(points) + " recorded points over the protocol's " + format_number(T) +
             " ms (limits: 1000000 points, 2048 MiB of traces); record less often");
}

void cross_check(const Config& c, const YAML::Node& root, const Context& ctx) {
  auto node_at = [&](const std::string& path) {
    auto n = find_node(root, path);
    return n ? *n : YAML::Node();
  };
  const auto& ci = c.network.circuit.params;
  const std::string width = std::to_string(c.network.width);
  if (ci.n_I > c.network.width)
    fail(
        ctx, "network.circuit.n_I", node_at("network.circuit.n_I"),
        "network.circuit.n_I = " + std::to_string(ci.n_I) + " must be <= network.width = " + width);
  if (ci.n_D > c.network.width)
    fail(
        ctx, "network.circuit.n_D", node_at("network.circuit.n_D"),
        "network.circuit.n_D = " + std::to_string(ci.n_D) + " must be <= network.width = " + width);
  if (c.data.validation > 0 && c.data.train_limit > kTrainImages - c.data.validation)
    fail(ctx, "data.train_limit", node_at("data.train_limit"),
         "data.train_limit = " + std::to_string(c.data.train_limit) +
             " exceeds the training images left after data.validation = " +
             std::to_string(c.data.validation) + " are held out (" +
             std::to_string(kTrainImages - c.data.validation) +
             "); lower one of them (train_limit = 0 uses all that are left)");
  for (std::size_t i = 0; i < c.data.eval_eps.size(); ++i)
    for (std::size_t j = 0; j < i; ++j)
      if (c.data.eval_eps[i] == c.data.eval_eps[j])
        fail(ctx, "data.eval_eps", node_at("data.eval_eps"),
             "data.eval_eps lists " + format_yaml_double(c.data.eval_eps[i]) + " twice (entries " +
                 std::to_string(j) + " and " + std::to_string(i) +
                 "); each value is one column of the results");
  // The recorded traces are held in memory and written in one file: refuse sizes that would
  // run out of memory or disk at the end of a run rather than at its start.
  double units = 0;  // of a hidden layer's circuit, E included
  for (const auto& p : c.network.circuit.spec.populations) units += p.size;
  const double trace_bytes = 4.0 * c.simulate.record_points * double(c.simulate.images.size()) *
                             units * (c.network.hidden_layers + 1);
  if (trace_bytes > 2.0 * (1 << 30))
    fail(ctx, "simulate.record_points", node_at("simulate.record_points"),
         "the traces of simulate.images (" + std::to_string(c.simulate.images.size()) +
             " images) at simulate.record_points = " + std::to_string(c.simulate.record_points) +
             " would take " + std::to_string(int(trace_bytes / (1 << 20))) +
             " MiB (limit 2048 MiB); record fewer points or images");
  check_protocol(c, root, ctx);
  if (c.learning.error_transform != learning::ErrorTransform::none &&
      c.learning.rule != learning::Rule::frozen)
    fail(ctx, "learning.error_transform", node_at("learning.error_transform"),
         std::string("learning.error_transform = ") +
             name_of(c.learning.error_transform, kErrorTransform) +
             " requires learning.rule = frozen (got learning.rule = " +
             name_of(c.learning.rule, kRule) + ")");
}

Config build(const YAML::Node& root, const Context& ctx, bool check_conditions) {
  check_known_keys(root, "", ctx);
  Config c;
  Reader reader(root, ctx);
  visit_schema(c, reader);
  cross_check(c, root, ctx);
  if (!check_conditions) return c;
  // Each sweep condition must give a valid configuration when applied.
  for (std::size_t i = 0; i < c.sweep.conditions.size(); ++i) {
    const auto& cond = c.sweep.conditions[i];
    const std::string cpath = "sweep.conditions[" + std::to_string(i) + "]";
    YAML::Node tree = YAML::Clone(root);
    Context sub = ctx;
    for (const auto& [key, value] : cond.set) {
      // The grid sets these for every point after the condition's own keys (leaf keys): a
      // condition that set them would be silently overridden.
      for (const char* grid_key : {"seed", "data.train_eps", "sweep"})
        if (is_within(key, grid_key))
          throw config_error(cpath + ".set." + key,
                             "sweep condition '" + cond.name + "' sets '" + key +
                                 "', which the grid sets for every point (sweep.seeds, "
                                 "sweep.eps); a condition cannot set seed, data.train_eps or "
                                 "sweep.*");
      sub.overrides.push_back({key, cpath + " '" + cond.name + "'"});
      YAML::Node parsed;
      try {
        parsed = YAML::Load(value);
      } catch (const YAML::Exception& e) {
        throw config_error(cpath + ".set." + key, "cannot parse '" + value + "' as YAML: " + e.msg);
      }
      set_path(tree, key, parsed);
    }
    try {
      build(tree, sub, false);
    } catch (const config_error& e) {
      std::string key = cpath;
      for (const auto& kv : cond.set)
        if (is_within(e.key_path(), kv.first)) key = cpath + ".set." + kv.first;
      throw config_error(key, std::string("in sweep condition '") + cond.name + "': " + e.what());
    }
  }
  return c;
}

/// The 1-based line of a document marker ('---' at the start of a line) that follows content or
/// another marker, i.e. the start of a second document; 0 if there is none. Comment and blank
/// lines are not content, and one leading '---' is allowed.
int second_document_line(const std::string& text) {
  std::istringstream in(text);
  std::string line;
  bool seen = false;  // content or a document marker so far
  for (int n = 1; std::getline(in, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const bool marker =
        line.rfind("---", 0) == 0 && (line.size() == 3 || line[3] == ' ' || line[3] == '\t');
    if (marker && seen) return n;
    const auto first = line.find_first_not_of(" \t");
    if (marker || (first != std::string::npos && line[first] != '#')) seen = true;
  }
  return 0;
}

/// The 1-based line of the first line that is not blank, a comment or a document marker; 0 if
/// there is none (an empty configuration).
int first_content_line(const std::string& text) {
  std::istringstream in(text);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    const auto first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos || line[first] == '#') continue;
    if (line.rfind("---", 0) == 0 || line.rfind("...", 0) == 0) {
      const auto rest = line.find_first_not_of(" \t\r", 3);
      if (rest == std::string::npos || line[rest] == '#') continue;
    }
    return n;
  }
  return 0;
}

Config parse_tree(YAML::Node root, const std::vector<std::string>& overrides,
                  const std::string& source) {
  Context ctx{source, {}};
  if (!root.IsDefined() || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap())
    throw config_error(
        "", source + ": the configuration must be a mapping of keys, got " + describe_node(root));
  for (const auto& ov : overrides) apply_override(root, ov, ctx);
  return build(root, ctx, true);
}

}  // namespace

// -----------------------------------------------------------------------------------------------
// Public interface

const char* to_string(Precision p) {
  return name_of(p, kPrecision);
}

namespace {

/// One YAML document of configuration keys, with the errors of a configuration file.
YAML::Node load_document(const std::string& yaml_text, const std::string& source) {
  YAML::Node root;
  try {
    // YAML::Load, not LoadAll: yaml-cpp 0.7's LoadAll never returns on a text that starts with a
    // stray ',' (found by fuzz/fuzz_config; fuzz/regressions/config/).
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw config_error("", source + ", line " + std::to_string(e.mark.line + 1) + ", column " +
                               std::to_string(e.mark.column + 1) + ": invalid YAML: " + e.msg);
  }
  if (root.IsNull() && first_content_line(yaml_text) > 0)
    throw config_error("", source + ", line " + std::to_string(first_content_line(yaml_text)) +
                               ": invalid YAML: this text does not read as a mapping of keys "
                               "(it reads as nothing; a stray ',' or bracket?)");
  if (const int line = second_document_line(yaml_text); line > 0)
    throw config_error("", source + ", line " + std::to_string(line) +
                               ": a second YAML document starts here ('---'); a configuration is "
                               "one document: remove or merge the others");
  return root;
}

/// The text of a configuration file; refuses a non-regular, unreadable or empty one.
std::string read_config_text(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::exists(path, ec) && !std::filesystem::is_regular_file(path, ec))
    throw config_error("", "the configuration '" + path +
                               "' is not a regular file (a directory, FIFO or device?)");
  std::ifstream in(path);
  if (!in) throw config_error("", "cannot read the configuration file '" + path + "'");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw config_error("", "cannot read the configuration file '" + path + "'");
  // An empty file (or one of comments only) is almost always a mistake (a truncated copy, the
  // wrong path): refuse it rather than run every default.
  if (first_content_line(text.str()) == 0)
    throw config_error("", "the configuration file '" + path +
                               "' is empty (no keys); write '{}' in it to use every default on "
                               "purpose");
  return text.str();
}

void flatten(const YAML::Node& node, const std::string& prefix, std::vector<std::string>& out) {
  for (const auto& kv : node) {
    const std::string key = prefix + kv.first.as<std::string>();
    if (kv.second.IsMap()) {
      flatten(kv.second, key + ".", out);
      continue;
    }
    YAML::Emitter e;
    e.SetSeqFormat(YAML::Flow);
    e.SetMapFormat(YAML::Flow);
    e << kv.second;
    out.push_back(key + "=" + e.c_str());
  }
}

}  // namespace

Config parse_config(const std::string& yaml_text, const std::vector<std::string>& overrides,
                    const std::string& source) {
  return parse_tree(load_document(yaml_text, source), overrides, source);
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  return parse_config(read_config_text(path), overrides, path);
}

std::vector<std::string> overrides_from_file(const std::string& path) {
  const YAML::Node root = load_document(read_config_text(path), path);
  if (!root.IsMap())
    throw config_error("", path +
                               " must hold a mapping of configuration keys, for example "
                               "'evaluate: {shift: [-0.5, 0.5]}'");
  std::vector<std::string> out;
  flatten(root, "", out);
  return out;
}

std::string to_yaml(const Config& config) {
  Config c = normalised(config);
  Writer writer;
  visit_schema(c, writer);
  YAML::Emitter out;
  out << YAML::BeginMap;
  std::vector<std::string> open;  // sections currently open
  for (const auto& [path, emit] : writer.entries) {
    auto keys = split_path(path);
    const std::string leaf = keys.back();
    keys.pop_back();
    std::size_t common = 0;
    while (common < open.size() && common < keys.size() && open[common] == keys[common]) ++common;
    while (open.size() > common) {
      out << YAML::EndMap;
      open.pop_back();
    }
    while (open.size() < keys.size()) {
      out << YAML::Key << keys[open.size()] << YAML::Value;
      open.push_back(keys[open.size()]);
      // A population or projection on one line.
      std::string section;
      for (const auto& k : open) section = join_path(section, k);
      if (!map_of(section).empty()) out << YAML::Flow;
      out << YAML::BeginMap;
    }
    out << YAML::Key << leaf << YAML::Value;
    emit(out);
  }
  for (; !open.empty(); open.pop_back()) out << YAML::EndMap;
  out << YAML::EndMap;
  if (!out.good()) throw internal_error("to_yaml: " + out.GetLastError());
  return std::string(out.c_str()) + "\n";
}

std::vector<std::string> config_differences(const Config& a, const Config& b,
                                            const std::vector<std::string>& ignore) {
  // Every leaf of both configurations, each emitted on its own, compared as text. The circuits'
  // populations and projections, and the legacy keys of some presets, may exist on one side
  // only.
  auto leaves = [](const Config& config) {
    Config c = normalised(config);
    Writer writer;
    visit_schema(c, writer);
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& [path, emit] : writer.entries) out.emplace_back(path, emitted(emit));
    return out;
  };
  const auto la = leaves(a), lb = leaves(b);
  const std::map<std::string, std::string> ma(la.begin(), la.end()), mb(lb.begin(), lb.end());
  std::vector<std::string> paths;  // a's order, then b's paths that a lacks
  for (const auto& [path, _] : la) paths.push_back(path);
  for (const auto& [path, _] : lb)
    if (!ma.count(path)) paths.push_back(path);
  // What a side has of a population or projection that the other side lacks entirely.
  auto entry_state = [](const std::map<std::string, std::string>& m, const std::string& entry) {
    const auto it = m.find(entry + ".remove");
    if (it != m.end() && it->second == "true") return std::string("removed");
    const auto below = m.lower_bound(entry + ".");
    const bool present =
        below != m.end() && below->first.compare(0, entry.size() + 1, entry + ".") == 0;
    return std::string(present ? "present" : "absent");
  };
  std::vector<std::string> diff;
  std::set<std::string> reported;
  for (const auto& path : paths) {
    const bool ignored = std::any_of(ignore.begin(), ignore.end(),
                                     [&](const std::string& g) { return is_within(path, g); });
    if (ignored) continue;
    const auto ia = ma.find(path), ib = mb.find(path);
    if (ia != ma.end() && ib != mb.end()) {
      if (ia->second != ib->second)
        diff.push_back(path + " (" + ia->second + " vs " + ib->second + ")");
      continue;
    }
    // On one side only: a whole population or projection, or one key.
    const std::string entry = entry_of(path);
    if (!entry.empty()) {
      const std::string sa = entry_state(ma, entry), sb = entry_state(mb, entry);
      if (sa != "present" || sb != "present") {
        if (reported.insert(entry).second) diff.push_back(entry + " (" + sa + " vs " + sb + ")");
        continue;
      }
    }
    diff.push_back(path + " (" + (ia != ma.end() ? ia->second : "absent") + " vs " +
                   (ib != mb.end() ? ib->second : "absent") + ")");
  }
  return diff;
}

std::vector<std::string> valid_keys() {
  return Schema::get().leaves;
}

std::string nearest_key(const std::string& path) {
  return nearest_of(path, true);
}

models::NetworkSpec network_spec(const Config& config, int n_in, int n_out) {
  if (n_in < 1 || n_out < 1)
    throw error("network_spec: n_in = " + std::to_string(n_in) +
                " and n_out = " + std::to_string(n_out) + " must be >= 1");
  const NetworkConfig& net = config.network;
  // A Config built in code rather than parsed (spec empty): the preset's circuit.
  const models::CircuitSpec circuit =
      net.circuit.spec.populations.empty() ? default_circuit(net) : net.circuit.spec;
  std::vector<models::LayerSpec> hidden;
  for (int l = 0; l < net.hidden_layers; ++l) {
    models::LayerSpec layer;
    layer.kind = net.kind;
    layer.n_E = net.width;
    layer.n_I_plain = net.plain_inhibitory > 0 ? net.plain_inhibitory : (net.width + 9) / 10;
    layer.phi = net.phi;
    layer.circuit = circuit;
    layer.theta = net.circuit.params.theta;
    layer.ln_epsilon = net.ln_epsilon;
    layer.lateral_units = net.lateral_units > 0 ? net.lateral_units : std::max(1, net.width / 10);
    hidden.push_back(layer);
  }
  return models::make_network_spec(n_in, n_out, hidden, net.init_gain, net.readout_inhibitory);
}

}  // namespace eisim::io
