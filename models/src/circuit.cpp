#include "eisim/models/circuit.hpp"

#include <algorithm>
#include <cctype>
#include <set>

#include "eisim/models/error.hpp"

namespace eisim::models {

const char* to_string(Dynamics d) {
  switch (d) {
    case Dynamics::leaky:
      return "leaky";
    case Dynamics::integrator:
      return "integrator";
    case Dynamics::multiplicative:
      return "multiplicative";
  }
  return "unknown";
}

const char* to_string(Signal s) {
  switch (s) {
    case Signal::rate:
      return "rate";
    case Signal::potential:
      return "potential";
    case Signal::squared_potential:
      return "squared_potential";
    case Signal::input:
      return "input";
    case Signal::input_energy:
      return "input_energy";
  }
  return "unknown";
}

const char* to_string(Action a) {
  return a == Action::subtractive ? "subtractive" : "divisive";
}

const char* to_string(Init i) {
  switch (i) {
    case Init::pooled:
      return "pooled";
    case Init::heterogeneous:
      return "heterogeneous";
    case Init::lognormal:
      return "lognormal";
    case Init::constant:
      return "constant";
    case Init::mean_drive:
      return "mean_drive";
  }
  return "unknown";
}

const char* to_string(Learns l) {
  switch (l) {
    case Learns::task:
      return "task";
    case Learns::local:
      return "local";
    case Learns::fixed:
      return "fixed";
  }
  return "unknown";
}

const char* to_string(Nonlinearity n) {
  switch (n) {
    case Nonlinearity::relu:
      return "relu";
    case Nonlinearity::softplus:
      return "softplus";
    case Nonlinearity::power:
      return "power";
    case Nonlinearity::identity:
      return "identity";
    case Nonlinearity::sqrt:
      return "sqrt";
  }
  return "unknown";
}

const std::vector<std::string>& preset_names() {
  static const std::vector<std::string> names{"default", "inorm", "pv_sst_vip", "ssn"};
  return names;
}

int find_population(const CircuitSpec& c, const std::string& name) {
  for (std::size_t k = 0; k < c.populations.size(); ++k)
    if (c.populations[k].name == name) return int(k);
  return -1;
}

namespace {

Population make_population(const std::string& name, int size, Dynamics d, double tau) {
  Population p;
  p.name = name;
  p.size = size;
  p.dynamics = d;
  p.tau = tau;
  return p;
}

Projection make_projection(const std::string& name, const std::string& source,
                           const std::string& target, Signal s, Action a, Init init, double scale,
                           double heterogeneity, Learns learns) {
  Projection p;
  p.name = name;
  p.source = source;
  p.target = target;
  p.signal = s;
  p.action = a;
  p.init = init;
  p.scale = scale;
  p.heterogeneity = heterogeneity;
  p.learns = learns;
  return p;
}

}  // namespace

CircuitSpec make_preset(const std::string& name, const CircuitParams& c, int n_E,
                        const NonlinearitySpec& phi) {
  CircuitSpec s;
  s.preset = name;
  Population E = make_population("E", n_E, Dynamics::leaky, c.tau_E);
  E.phi = phi;
  const Init pool = c.heterogeneous ? Init::heterogeneous : Init::pooled;
  const double h = c.heterogeneity;
  using D = Dynamics;
  using S = Signal;
  using A = Action;
  if (name == "default") {
    // The homeostatic circuit: an integrating subtractive and a multiplicative divisive class.
    E.conductance = c.sigma0;
    Population I = make_population("I", c.n_I, D::integrator, c.tau_I);
    I.gain = c.k_I;
    I.leak = c.lambda_I;
    Population Dv = make_population("D", c.n_D, D::multiplicative, c.tau_D);
    Dv.gain = c.k_D;
    Dv.leak = c.lambda_D;
    Dv.setpoint = c.theta;
    Dv.initial = 1.0;
    s.populations = {E, I, Dv};
    s.projections = {
        make_projection("W_EI", "I", "E", S::rate, A::subtractive, pool, 1.0, h, Learns::fixed),
        make_projection("W_ED", "D", "E", S::rate, A::divisive, pool, 1.0, h, Learns::fixed),
        make_projection("W_IE", "E", "I", S::potential, A::subtractive, pool, 1.0, h,
                        Learns::fixed),
        make_projection("W_DE", "E", "D", S::squared_potential, A::subtractive, pool, 1.0, h,
                        Learns::fixed)};
  } else if (name == "inorm") {
    // The reference study's feed-forward circuit: interneurons driven by the layer input.
    E.conductance = c.sigma0;
    Population I = make_population("I", c.n_I, D::leaky, c.tau_I);
    Population Dv = make_population("D", c.n_D, D::leaky, c.tau_D);
    Dv.phi.kind = Nonlinearity::sqrt;
    Dv.rest = c.ff_epsilon;
    Dv.initial = 1.0;
    s.populations = {E, I, Dv};
    Projection energy = make_projection("W_DE", "input", "D", S::input_energy, A::subtractive, pool,
                                        1.0, h, Learns::fixed);
    energy.energy_name = "U";
    energy.energy_learns = Learns::local;
    s.projections = {
        make_projection("W_EI", "I", "E", S::rate, A::subtractive, pool, 1.0, h, Learns::fixed),
        make_projection("W_ED", "D", "E", S::rate, A::divisive, pool, 1.0, h, Learns::fixed),
        make_projection("W_IX", "input", "I", S::input, A::subtractive, Init::mean_drive, 1.0, h,
                        Learns::local),
        energy};
  } else if (name == "pv_sst_vip") {
    // Canonical cortical motif: PV divides E (perisomatic), SST subtracts from E (dendritic),
    // VIP inhibits SST (disinhibition of E); E drives all three. Heterogeneous leaky units.
    E.conductance = 1.0;
    const int n_PV = std::max(1, n_E / 10), n_SST = std::max(1, n_E / 10),
              n_VIP = std::max(1, n_E / 20);
    Population PV = make_population("PV", n_PV, D::leaky, 5.0);
    Population SST = make_population("SST", n_SST, D::leaky, 15.0);
    Population VIP = make_population("VIP", n_VIP, D::leaky, 10.0);
    s.populations = {E, PV, SST, VIP};
    const Init het = Init::heterogeneous;
    s.projections = {
        make_projection("W_EPV", "PV", "E", S::rate, A::divisive, het, 1.0, h, Learns::fixed),
        make_projection("W_ESST", "SST", "E", S::rate, A::subtractive, het, 0.5, h, Learns::fixed),
        make_projection("W_PVE", "E", "PV", S::rate, A::subtractive, het, 1.0, h, Learns::fixed),
        make_projection("W_SSTE", "E", "SST", S::rate, A::subtractive, het, 1.0, h, Learns::fixed),
        make_projection("W_VIPE", "E", "VIP", S::rate, A::subtractive, het, 0.5, h, Learns::fixed),
        make_projection("W_SSTVIP", "VIP", "SST", S::rate, A::subtractive, het, 1.0, h,
                        Learns::fixed)};
  } else if (name == "ssn") {
    // Stabilised supralinear network (Hennequin et al. 2018 values, pooled into populations):
    // power-law rates k [v]_+^2 with k = 0.3, tau_E = 20 ms, tau_I = 10 ms.
    NonlinearitySpec pw;
    pw.kind = Nonlinearity::power;
    pw.power = 2.0;
    pw.gain = 0.3;
    E.tau = 20.0;
    E.phi = pw;
    s.own_output_rate = true;
    Population I = make_population("I", std::max(1, n_E / 4), D::leaky, 10.0);
    I.phi = pw;
    s.populations = {E, I};
    s.projections = {
        make_projection("W_EE", "E", "E", S::rate, A::subtractive, pool, 1.25, h, Learns::fixed),
        make_projection("W_EI", "I", "E", S::rate, A::subtractive, pool, 0.65, h, Learns::fixed),
        make_projection("W_IE", "E", "I", S::rate, A::subtractive, pool, 1.2, h, Learns::fixed),
        make_projection("W_II", "I", "I", S::rate, A::subtractive, pool, 0.5, h, Learns::fixed),
        make_projection("W_IX", "input", "I", S::input, A::subtractive, Init::mean_drive, 1.0, h,
                        Learns::fixed)};
  } else {
    std::string names;
    for (const auto& n : preset_names()) names += (names.empty() ? "" : ", ") + n;
    throw config_error("network.circuit.preset",
                       "unknown preset '" + name + "' (valid: " + names + ")");
  }
  return s;
}

void resolve(CircuitSpec& c, const std::string& key) {
  const std::string pk = key + ".populations", jk = key + ".projections";
  if (c.populations.empty() || c.populations.front().name != "E")
    throw internal_error("resolve: the first population must be E");
  std::set<std::string> names;
  for (const auto& p : c.populations) {
    const std::string k = pk + "." + p.name;
    if (p.name.empty() || p.name == "input")
      throw config_error(k, "'" + p.name + "' cannot name a population (reserved)");
    if (!names.insert(p.name).second) throw config_error(k, "population defined twice");
    if (p.size < 1) throw config_error(k + ".size", "must be >= 1");
    if (!(p.tau > 0)) throw config_error(k + ".tau", "must be > 0");
    if (p.dynamics == Dynamics::leaky && !(p.conductance > 0))
      throw config_error(k + ".conductance", "must be > 0");
    if (p.dynamics == Dynamics::multiplicative && !(p.initial > 0))
      throw config_error(k + ".initial", "a multiplicative population starts at a rate > 0");
    if (p.dynamics == Dynamics::integrator && !(p.initial >= 0))
      throw config_error(k + ".initial", "an integrator population starts at a rate >= 0");
    for (char ch : p.name)
      if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '_'))
        throw config_error(k, "a population name is letters, digits and _");
  }
  if (c.populations.front().dynamics != Dynamics::leaky)
    throw config_error(pk + ".E.dynamics", "E must be leaky (its potentials are the layer's)");
  for (const auto& p : c.populations)
    if (p.dynamics == Dynamics::multiplicative && !(p.gain * p.setpoint + p.leak > 0))
      throw config_error(pk + "." + p.name,
                         "a multiplicative population needs gain * setpoint + leak > 0 (its "
                         "equilibrium balances the drive against the setpoint)");
  std::set<std::string> wnames{"W_EX", "b", "L_pool", "L_back"};
  std::vector<int> inputs(c.populations.size(), 0);
  for (std::size_t k = 0; k < c.projections.size(); ++k) {
    Projection& p = c.projections[k];
    const std::string pre = jk + "." + (p.name.empty() ? std::to_string(k) : p.name);
    if (p.name.empty()) throw config_error(pre + ".name", "a projection needs a name");
    for (const std::string* n : {&p.name, &p.energy_name})
      for (char ch : *n)
        if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '_'))
          throw config_error(pre, "a weight name is letters, digits and _ ('" + *n + "')");
    if (!wnames.insert(p.name).second)
      throw config_error(pre + ".name", "weight name '" + p.name + "' is used twice in the layer");
    if (p.signal == Signal::input_energy && !wnames.insert(p.energy_name).second)
      throw config_error(pre + ".energy_name",
                         "weight name '" + p.energy_name + "' is used twice in the layer");
    auto unknown = [&](const std::string& field, const std::string& n) {
      std::string valid;
      for (const auto& q : c.populations) valid += (valid.empty() ? "" : ", ") + q.name;
      throw config_error(pre + "." + field, "unknown population '" + n + "' (the circuit has " +
                                                valid + (field == "source" ? ", and input)" : ")"));
    };
    p.src = p.source == "input" ? -1 : find_population(c, p.source);
    if (p.source != "input" && p.src < 0) unknown("source", p.source);
    p.tgt = find_population(c, p.target);
    if (p.tgt < 0) unknown("target", p.target);
    const Population& T = c.populations[p.tgt];
    const bool from_input = p.src < 0;
    if (from_input != (p.signal == Signal::input || p.signal == Signal::input_energy))
      throw config_error(pre + ".signal",
                         std::string("signal '") + to_string(p.signal) + "' does not fit source '" +
                             p.source + "' (input carries input or input_energy; a population " +
                             "carries rate, potential or squared_potential)");
    if ((p.signal == Signal::potential || p.signal == Signal::squared_potential) &&
        c.populations[p.src].dynamics != Dynamics::leaky)
      throw config_error(pre + ".signal", "only a leaky population has potentials; " + p.source +
                                              " is " + to_string(c.populations[p.src].dynamics));
    if (from_input && p.tgt == 0)
      throw config_error(pre + ".target",
                         "E's input is W_EX x + b (declared by the layer); input projections "
                         "drive interneurons");
    if (p.action == Action::divisive) {
      if (p.src <= 0)
        throw config_error(pre + ".action",
                           "Dale's law: a divisive (shunting) projection is inhibition, but '" +
                               p.source + "' is excitatory; shunting comes from an interneuron");
      if (T.dynamics != Dynamics::leaky)
        throw config_error(pre + ".action", "a divisive projection needs a leaky target (" +
                                                p.target + " is " + to_string(T.dynamics) + ")");
    }
    if (p.init == Init::mean_drive && !from_input)
      throw config_error(pre + ".init", "mean_drive initialises input projections only");
    if (!(p.scale >= 0)) throw config_error(pre + ".scale", "must be >= 0");
    if (!(p.heterogeneity >= 0)) throw config_error(pre + ".heterogeneity", "must be >= 0");
    if (p.action == Action::divisive && p.signal != Signal::rate)
      throw config_error(pre + ".signal", "a divisive projection carries its source's rates");
    ++inputs[p.tgt];
  }
  for (std::size_t k = 1; k < c.populations.size(); ++k)
    if (inputs[k] == 0)
      throw config_error(pk + "." + c.populations[k].name,
                         "population " + c.populations[k].name +
                             " has no input: add a projection with target " +
                             c.populations[k].name);
}

bool CircuitStructure::is_explicit(int p) const {
  return std::find(explicit_order.begin(), explicit_order.end(), p) != explicit_order.end();
}

CircuitStructure analyse(const CircuitSpec& c) {
  CircuitStructure s;
  const int P = int(c.populations.size());
  std::vector<char> done(P, 0);
  // Repeatedly take a leaky population whose every source is the input or already explicit.
  for (bool grew = true; grew;) {
    grew = false;
    for (int k = 0; k < P; ++k) {
      if (done[k] || c.populations[k].dynamics != Dynamics::leaky) continue;
      bool ok = true;
      for (const auto& p : c.projections)
        if (p.tgt == k && p.src >= 0 && !done[p.src]) ok = false;
      if (ok) {
        done[k] = 1;
        s.explicit_order.push_back(k);
        grew = true;
      }
    }
  }
  bool self = false;
  for (const auto& p : c.projections)
    if (p.src == 0 && p.tgt == 0) self = true;
  s.eliminate_E = !done[0] && !self;
  for (int k = 0; k < P; ++k)
    if (!done[k] && !(k == 0 && s.eliminate_E)) {
      s.core.push_back(k);
      s.core_size += c.populations[k].size;
    }
  return s;
}

}  // namespace eisim::models
