// The configuration is strict: unknown keys, wrong types and out-of-range values are errors
// that name the key path; everything else takes the documented defaults.
#include "eisim/io/config.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <fstream>
#include <string>
#include <tuple>

#include "eisim/models/error.hpp"
#include "test_support.hpp"

using eisim::config_error;
using eisim::io::Config;
using eisim::io::parse_config;
using eisim::io::to_yaml;

namespace {

/// The key path of the config_error thrown by parsing `yaml` with `overrides`.
std::string error_key(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  try {
    parse_config(yaml, overrides);
  } catch (const config_error& e) {
    return e.key_path();
  }
  return "<no error>";
}

/// Every field of two circuits equal (exactly), the resolved indices included.
bool same_circuit(const eisim::models::CircuitSpec& a, const eisim::models::CircuitSpec& b) {
  if (a.populations.size() != b.populations.size() ||
      a.projections.size() != b.projections.size() || a.preset != b.preset ||
      a.own_output_rate != b.own_output_rate)
    return false;
  for (std::size_t k = 0; k < a.populations.size(); ++k) {
    const auto &p = a.populations[k], &q = b.populations[k];
    if (p.name != q.name || p.size != q.size || p.dynamics != q.dynamics || p.tau != q.tau ||
        p.gain != q.gain || p.leak != q.leak || p.setpoint != q.setpoint || p.rest != q.rest ||
        p.conductance != q.conductance || p.initial != q.initial || p.phi.kind != q.phi.kind ||
        p.phi.power != q.phi.power || p.phi.beta != q.phi.beta || p.phi.gain != q.phi.gain ||
        p.phi.threshold != q.phi.threshold)
      return false;
  }
  for (std::size_t k = 0; k < a.projections.size(); ++k) {
    const auto &p = a.projections[k], &q = b.projections[k];
    if (p.name != q.name || p.source != q.source || p.target != q.target || p.signal != q.signal ||
        p.action != q.action || p.init != q.init || p.scale != q.scale ||
        p.heterogeneity != q.heterogeneity || p.learns != q.learns ||
        p.energy_name != q.energy_name || p.energy_learns != q.energy_learns || p.src != q.src ||
        p.tgt != q.tgt)
      return false;
  }
  return true;
}

}  // namespace

TEST_CASE("an empty configuration takes the defaults of the structs") {
  const Config c = parse_config("");
  const Config d;
  CHECK(c.seed == d.seed);
  CHECK(c.precision == eisim::io::Precision::float32);
  CHECK(c.data.dir == "/usr/share/datasets/fashion-mnist");
  CHECK(c.data.eval_eps == std::vector<double>{0.0, 0.25, 0.5, 0.75});
  CHECK(c.network.width == 283);
  CHECK(c.network.kind == eisim::models::LayerKind::circuit);
  CHECK(c.network.circuit.preset == "default");
  CHECK(c.network.circuit.params.tau_E == 10.0);
  CHECK(c.network.circuit.params.sigma0 == 1e-6);
  CHECK(c.network.ln_epsilon == 1e-5);
  REQUIRE(c.network.circuit.spec.populations.size() == 3);
  CHECK(c.network.circuit.spec.populations[0].size == 283);
  CHECK(c.fixed_point.max_iterations == d.fixed_point.max_iterations);
  CHECK(c.ode.tol.abs_tol == d.ode.tol.abs_tol);
  CHECK(c.learning.rule == eisim::learning::Rule::implicit);
  CHECK(c.learning.label_smoothing == 0.1);
  CHECK(c.train.batch_size == 32);
  CHECK(c.simulate.images.size() == 8);
  CHECK(c.sweep.seeds == std::vector<std::uint64_t>{1, 2, 3});
  CHECK(c.sweep.conditions.empty());
}

TEST_CASE("values in the YAML replace the defaults, nested sections included") {
  const Config c = parse_config(R"(
seed: 7
precision: float64
data: {train_eps: 0.5, eval_eps: [0, 0.75], train_limit: 1000}
network:
  width: 100
  kind: layernorm
  nonlinearity: softplus
  circuit: {drive: feedforward, pooling: heterogeneous, n_I: 3, tau_E: 5}
learning: {rule: frozen, error_transform: center, train_inhibitory: false}
train: {epochs: 2, progress: no}
)");
  CHECK(c.seed == 7);
  CHECK(c.precision == eisim::io::Precision::float64);
  CHECK(c.data.train_eps == 0.5);
  CHECK(c.data.eval_eps == std::vector<double>{0.0, 0.75});
  CHECK(c.data.train_limit == 1000);
  CHECK(c.network.width == 100);
  CHECK(c.network.kind == eisim::models::LayerKind::layernorm);
  CHECK(c.network.phi.kind == eisim::models::Nonlinearity::softplus);
  CHECK(c.network.circuit.preset == "inorm");  // drive: feedforward
  CHECK(c.network.circuit.params.heterogeneous);
  CHECK(c.network.circuit.params.n_I == 3);
  CHECK(c.network.circuit.params.tau_E == 5.0);
  CHECK(c.network.circuit.params.tau_I == 10.0);  // untouched sibling keeps its default
  CHECK(c.learning.error_transform == eisim::learning::ErrorTransform::center);
  CHECK_FALSE(c.learning.train_inhibitory);
  CHECK(c.train.epochs == 2);
  CHECK_FALSE(c.train.progress);
}

TEST_CASE("an unknown config key names its path and the nearest valid key") {
  SUBCASE("nested") {
    CHECK_THROWS_WITH_AS(parse_config("network:\n  circuit:\n    tau_e: 5\n"),
                         doctest::Contains("unknown key 'network.circuit.tau_e'; did you mean "
                                           "'network.circuit.tau_E'?"),
                         config_error);
    CHECK(error_key("network:\n  circuit:\n    tau_e: 5\n") == "network.circuit.tau_e");
  }
  SUBCASE("top level") {
    CHECK_THROWS_WITH_AS(parse_config("sede: 3\n"), doctest::Contains("did you mean 'seed'"),
                         config_error);
    CHECK_THROWS_WITH_AS(parse_config("netwrok: {width: 3}\n"),
                         doctest::Contains("did you mean 'network'"), config_error);
  }
  SUBCASE("a key placed in the wrong section") {
    CHECK_THROWS_WITH_AS(parse_config("network: {tau_E: 5}\n"),
                         doctest::Contains("did you mean 'network.circuit.tau_E'"), config_error);
  }
  SUBCASE("the message gives the line in the source") {
    CHECK_THROWS_WITH_AS(parse_config("seed: 1\ntrain:\n  epoch: 3\n", {}, "my.yaml"),
                         doctest::Contains("(my.yaml, line 3)"), config_error);
  }
  SUBCASE("via a --set override") {
    CHECK_THROWS_WITH_AS(parse_config("", {"network.circuit.tau_e=3"}),
                         doctest::Contains("did you mean 'network.circuit.tau_E'"), config_error);
    CHECK_THROWS_WITH_AS(parse_config("", {"network.circuit.tau_e=3"}),
                         doctest::Contains("--set 'network.circuit.tau_e=3'"), config_error);
    CHECK_THROWS_WITH_AS(parse_config("", {"netwrk.width=3"}),
                         doctest::Contains("did you mean 'network.width'"), config_error);
  }
  SUBCASE("inside a sweep condition's set") {
    const std::string yaml = R"(
sweep:
  conditions:
    - {name: a, set: {network.kind: none}}
    - {name: b, set: {network.width: 50}}
    - {name: c, set: {network.circuit.tau_e: 5}}
)";
    CHECK_THROWS_WITH_AS(parse_config(yaml),
                         doctest::Contains("unknown key 'sweep.conditions[2].set.network.circuit."
                                           "tau_e'; did you mean 'sweep.conditions[2].set."
                                           "network.circuit.tau_E'?"),
                         config_error);
    CHECK(error_key(yaml) == "sweep.conditions[2].set.network.circuit.tau_e");
  }
  SUBCASE("inside a sweep condition") {
    CHECK_THROWS_WITH_AS(parse_config("sweep: {conditions: [{nme: a}]}"),
                         doctest::Contains("did you mean 'sweep.conditions[0].name'"),
                         config_error);
  }
}

TEST_CASE("a section given a scalar, or a key given a mapping, is an error naming the path") {
  CHECK_THROWS_WITH_AS(parse_config("network: 5\n"),
                       doctest::Contains("'network' is a section and expects a mapping"),
                       config_error);
  CHECK_THROWS_WITH_AS(parse_config("network: {width: {a: 1}}\n"),
                       doctest::Contains("expected an integer, got a mapping"), config_error);
  CHECK(error_key("network: {width: {a: 1}}\n") == "network.width");
  CHECK_THROWS_WITH_AS(parse_config("network: {circuit: {tau_E: [1, 2]}}\n"),
                       doctest::Contains("expected a number, got a list"), config_error);
  CHECK_THROWS_AS(parse_config("- 1\n- 2\n"), config_error);
  CHECK_THROWS_WITH_AS(parse_config("seed: [1\n"), doctest::Contains("invalid YAML"), config_error);
}

TEST_CASE("a value of the wrong type is an error naming the path") {
  CHECK_THROWS_WITH_AS(parse_config("network: {circuit: {tau_E: fast}}\n"),
                       doctest::Contains("expected a number, got 'fast'"), config_error);
  CHECK(error_key("network: {circuit: {tau_E: fast}}\n") == "network.circuit.tau_E");
  CHECK_THROWS_WITH_AS(parse_config("network: {width: 2.5}\n"),
                       doctest::Contains("expected an integer, got '2.5'"), config_error);
  CHECK_THROWS_WITH_AS(parse_config("train: {progress: maybe}\n"),
                       doctest::Contains("expected true or false"), config_error);
  CHECK_THROWS_WITH_AS(parse_config("data: {eval_eps: [0, x]}\n"),
                       doctest::Contains("data.eval_eps[1]"), config_error);
  // Integral floats are accepted for integers.
  CHECK(parse_config("data: {train_limit: 1e3}\n").data.train_limit == 1000);
}

TEST_CASE("a bad enumeration value lists the allowed values") {
  CHECK_THROWS_WITH_AS(
      parse_config("learning: {rule: backprop}\n"),
      doctest::Contains("learning.rule = 'backprop' is not one of the allowed values: implicit, "
                        "frozen, bptt"),
      config_error);
  CHECK_THROWS_WITH_AS(parse_config("precision: float16\n"), doctest::Contains("float32, float64"),
                       config_error);
  CHECK_THROWS_WITH_AS(parse_config("network: {kind: Circuit}\n"),
                       doctest::Contains("circuit, layernorm, none"), config_error);
}

TEST_CASE("range checks name the key, the value and the constraint, and match the wording") {
  SUBCASE("> 0 rejects 0") {
    CHECK_THROWS_WITH_AS(parse_config("network: {circuit: {tau_E: 0}}\n"),
                         doctest::Contains("network.circuit.tau_E = 0 must be > 0"), config_error);
    CHECK_THROWS_WITH_AS(parse_config("learning: {lr_E: 0}\n"),
                         doctest::Contains("learning.lr_E = 0 must be > 0"), config_error);
    CHECK_THROWS_WITH_AS(parse_config("fixed_point: {abs_tol: 0}\n"),
                         doctest::Contains("fixed_point.abs_tol = 0 must be > 0"), config_error);
    CHECK_THROWS_WITH_AS(parse_config("ode: {t_max: -1}\n"),
                         doctest::Contains("ode.t_max = -1 must be > 0"), config_error);
  }
  SUBCASE(">= 0 accepts 0 and rejects a negative value") {
    const Config c = parse_config(
        "network: {circuit: {lambda_I: 0, heterogeneity: 0}}\nlearning: {lr_I: 0}\n"
        "fixed_point: {rel_tol: 0, max_backtracks: 0}\ntrain: {max_grad_norm: 0}\n");
    CHECK(c.network.circuit.params.lambda_I == 0.0);
    CHECK(c.learning.lr_I == 0.0);
    CHECK(c.fixed_point.tol.rel_tol == 0.0);
    CHECK(c.fixed_point.max_backtracks == 0);
    CHECK_THROWS_WITH_AS(parse_config("network: {circuit: {lambda_D: -0.5}}\n"),
                         doctest::Contains("network.circuit.lambda_D = -0.5 must be >= 0"),
                         config_error);
    CHECK_THROWS_WITH_AS(parse_config("seed: -1\n"), doctest::Contains("seed = -1 must be >= 0"),
                         config_error);
    CHECK(parse_config("").fixed_point.stability_marginal == 1e-5);
    CHECK(parse_config("fixed_point: {stability_marginal: 0}\n").fixed_point.stability_marginal ==
          0.0);
    CHECK(
        parse_config("fixed_point: {stability_marginal: 1e-3}\n").fixed_point.stability_marginal ==
        1e-3);
    CHECK_THROWS_WITH_AS(
        parse_config("fixed_point: {stability_marginal: -1e-05}\n"),
        doctest::Contains("fixed_point.stability_marginal = -1e-05 must be in [0, 0.001]"),
        config_error);
    CHECK_THROWS_WITH_AS(
        parse_config("fixed_point: {stability_marginal: 0.002}\n"),
        doctest::Contains("fixed_point.stability_marginal = 0.002 must be in [0, 0.001]"),
        config_error);
    CHECK_THROWS_WITH_AS(parse_config("fixed_point: {stability_marginal: abc}\n"),
                         doctest::Contains("fixed_point.stability_marginal"), config_error);
  }
  SUBCASE("closed and half-open intervals") {
    CHECK(parse_config("data: {train_eps: 1}\n").data.train_eps == 1.0);
    CHECK_THROWS_WITH_AS(parse_config("data: {train_eps: 1.5}\n"),
                         doctest::Contains("data.train_eps = 1.5 must be in [0, 1]"), config_error);
    CHECK(parse_config("learning: {momentum: 0}\n").learning.momentum == 0.0);
    CHECK_THROWS_WITH_AS(parse_config("learning: {momentum: 1}\n"),
                         doctest::Contains("learning.momentum = 1 must be in [0, 1)"),
                         config_error);
    CHECK_THROWS_WITH_AS(parse_config("network: {hidden_layers: 9}\n"),
                         doctest::Contains("network.hidden_layers = 9 must be in [1, 8]"),
                         config_error);
    CHECK_THROWS_WITH_AS(parse_config("data: {test_limit: 10001}\n"),
                         doctest::Contains("data.test_limit = 10001 must be in [0, 10000]"),
                         config_error);
    CHECK_THROWS_WITH_AS(parse_config("network: {width: 1}\n"),
                         doctest::Contains("network.width = 1 must be in [2, 65536]"),
                         config_error);
    CHECK_THROWS_WITH_AS(parse_config("train: {epochs: 0}\n"),
                         doctest::Contains("train.epochs = 0 must be >= 1"), config_error);
  }
  SUBCASE("list elements are checked one by one") {
    CHECK_THROWS_WITH_AS(parse_config("simulate: {images: [0, 10000]}\n"),
                         doctest::Contains("simulate.images[1] = 10000 must be in [0, 9999]"),
                         config_error);
    CHECK_THROWS_WITH_AS(parse_config("sweep: {eps: []}\n"),
                         doctest::Contains("sweep.eps must not be empty"), config_error);
  }
  SUBCASE("non-finite numbers are rejected") {
    CHECK_THROWS_WITH_AS(parse_config("ode: {t_max: .inf}\n"),
                         doctest::Contains("must be a finite number"), config_error);
  }
}

TEST_CASE("cross-checks name both keys") {
  CHECK_THROWS_WITH_AS(parse_config("network: {width: 4, circuit: {n_I: 5}}\n"),
                       doctest::Contains("network.circuit.n_I = 5 must be <= network.width = 4"),
                       config_error);
  CHECK_THROWS_WITH_AS(parse_config("learning: {error_transform: scale}\n"),
                       doctest::Contains("learning.error_transform = scale requires "
                                         "learning.rule = frozen (got learning.rule = implicit)"),
                       config_error);
  CHECK(error_key("learning: {error_transform: scale}\n") == "learning.error_transform");
}

TEST_CASE("--set overrides are parsed as YAML and applied in order") {
  const Config c = parse_config(
      "network: {width: 50}\n",
      {"data.eval_eps=[0, 0.5]", "learning.lr_E=1e-3", "network.width=60", "network.width=70",
       "precision=float64", "network.circuit={tau_I: 3, n_D: 2}", "simulate.weights="});
  CHECK(c.data.eval_eps == std::vector<double>{0.0, 0.5});
  CHECK(c.learning.lr_E == 1e-3);
  CHECK(c.network.width == 70);
  CHECK(c.precision == eisim::io::Precision::float64);
  CHECK(c.network.circuit.params.tau_I == 3.0);  // a mapping value is merged key by key
  CHECK(c.network.circuit.params.n_D == 2);
  CHECK(c.network.circuit.params.tau_E == 10.0);
  CHECK(c.simulate.weights.empty());
  // An override's value is range-checked like the file's, and the message names the override.
  CHECK_THROWS_WITH_AS(parse_config("", {"network.circuit.tau_E=0"}),
                       doctest::Contains("network.circuit.tau_E = 0 must be > 0 (from --set"),
                       config_error);
  CHECK_THROWS_WITH_AS(parse_config("", {"network.width"}),
                       doctest::Contains("must have the form path.to.key=value"), config_error);
}

TEST_CASE("sweep conditions keep their values as YAML text and are validated when applied") {
  const Config c = parse_config(R"(
sweep:
  seeds: [4, 5]
  conditions:
    - name: layer-norm_1
      set: {network.kind: layernorm, learning.lr_E: 0.005, data.eval_eps: [0, 0.5]}
    - name: base
)");
  REQUIRE(c.sweep.conditions.size() == 2);
  const auto& set = c.sweep.conditions[0].set;
  REQUIRE(set.size() == 3);
  CHECK(set[0] == std::pair<std::string, std::string>{"network.kind", "layernorm"});
  CHECK(set[1] == std::pair<std::string, std::string>{"learning.lr_E", "0.005"});
  CHECK(set[2].second == "[0, 0.5]");
  CHECK(c.sweep.conditions[1].set.empty());
  // The texts work as --set overrides.
  std::vector<std::string> overrides;
  for (const auto& [k, v] : set) overrides.push_back(k + "=" + v);
  const Config applied = parse_config("", overrides);
  CHECK(applied.network.kind == eisim::models::LayerKind::layernorm);
  CHECK(applied.data.eval_eps == std::vector<double>{0.0, 0.5});

  CHECK_THROWS_WITH_AS(parse_config("sweep: {conditions: [{name: a}, {name: a}]}\n"),
                       doctest::Contains("is already used by sweep.conditions[0]"), config_error);
  CHECK_THROWS_WITH_AS(parse_config("sweep: {conditions: [{name: 'a b'}]}\n"),
                       doctest::Contains("letters, digits"), config_error);
  CHECK_THROWS_WITH_AS(
      parse_config("sweep: {conditions: [{name: a, set: {network.circuit.tau_E: 0}}]}\n"),
      doctest::Contains("network.circuit.tau_E = 0 must be > 0"), config_error);
  CHECK(error_key("sweep: {conditions: [{name: a, set: {network.circuit.tau_E: 0}}]}\n") ==
        "sweep.conditions[0].set.network.circuit.tau_E");
}

TEST_CASE("to_yaml lists every key and parse_config(to_yaml(c)) reproduces c exactly") {
  Config c;
  c.seed = 18446744073709551615ULL;  // the largest seed
  c.data.train_eps = 0.1;
  c.data.eval_eps = {0.0, 1.0 / 3.0, 0.3};
  c.data.dir = "null";  // a string that YAML would read as null unless quoted
  // A circuit without D (so that `remove: true` is written too), then values that need every
  // digit, set in the parameters and in the circuit alike.
  c.network.circuit =
      parse_config(
          "network: {circuit: {populations: {D: {remove: true}}, projections: {W_ED: {remove: "
          "true}, W_DE: {remove: true}}}}\n")
          .network.circuit;
  c.network.circuit.params.tau_E = 2.0 / 3.0;
  c.network.circuit.spec.populations[0].tau = 2.0 / 3.0;
  c.network.circuit.params.sigma0 = 1e-300;
  c.network.circuit.spec.populations[0].conductance = 1e-300;
  c.network.circuit.params.k_D = 12345678.901234567;
  c.network.circuit.spec.populations[1].gain = 0.1 + 0.2;
  c.network.ln_epsilon = 1.0 / 7.0;
  c.learning.lr_E = 0.1 + 0.2;
  c.learning.rule = eisim::learning::Rule::frozen;
  c.learning.error_transform = eisim::learning::ErrorTransform::lateral;
  c.simulate.images = {9999, 0};
  c.sweep.conditions = {{"a", {{"network.kind", "none"}, {"data.eval_eps", "[0, 0.5]"}}},
                        {"b", {{"simulate.weights", ""}, {"train.progress", "no"}}},
                        {"1", {{"simulate.weights", "null"}}}};
  const std::string text = to_yaml(c);
  for (const auto& key : eisim::io::valid_keys()) {
    const std::string leaf = key.substr(key.rfind('.') + 1);  // npos + 1 == 0
    CHECK_MESSAGE(text.find(leaf + ":") != std::string::npos, key);
  }
  const Config back = parse_config(text);
  CHECK(to_yaml(back) == text);
  CHECK(back.seed == c.seed);
  CHECK(back.data.dir == "null");
  CHECK(back.data.eval_eps == c.data.eval_eps);  // exact, not approximate
  CHECK(back.network.circuit.params.tau_E == c.network.circuit.params.tau_E);
  CHECK(back.network.circuit.params.sigma0 == c.network.circuit.params.sigma0);
  CHECK(back.network.circuit.params.k_D == c.network.circuit.params.k_D);
  CHECK(back.network.ln_epsilon == c.network.ln_epsilon);
  CHECK(same_circuit(back.network.circuit.spec, c.network.circuit.spec));
  CHECK(eisim::io::config_differences(back, c).empty());
  CHECK(back.learning.lr_E == c.learning.lr_E);
  CHECK(back.learning.error_transform == c.learning.error_transform);
  REQUIRE(back.sweep.conditions.size() == 3);
  CHECK(back.sweep.conditions[0].set == c.sweep.conditions[0].set);
  CHECK(back.sweep.conditions[1].set == c.sweep.conditions[1].set);
  CHECK(back.sweep.conditions[2].name == "1");
  CHECK(back.sweep.conditions[2].set == c.sweep.conditions[2].set);
  // The default configuration round-trips too.
  CHECK(to_yaml(parse_config(to_yaml(Config{}))) == to_yaml(Config{}));
}

TEST_CASE("valid_keys lists every dotted path once, and docs/config.md documents each") {
  const auto keys = eisim::io::valid_keys();
  CHECK(keys.size() == 120);
  CHECK(std::find(keys.begin(), keys.end(), "network.circuit.tau_E") != keys.end());
  CHECK(std::find(keys.begin(), keys.end(), "sweep.conditions") != keys.end());
  auto sorted = keys;
  std::sort(sorted.begin(), sorted.end());
  CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());

  std::ifstream in(eisim::test::source_path("docs/config.md"));
  REQUIRE(in.good());
  const std::string doc((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (const auto& key : keys)
    CHECK_MESSAGE(doc.find("`" + key + "`") != std::string::npos, key << " is not documented");
}

TEST_CASE("load_config reads a file and names it in messages") {
  const auto dir = eisim::test::scratch_dir("config_load");
  const std::string path = (dir / "run.yaml").string();
  std::ofstream(path) << "seed: 3\nnetwork:\n  width: 0\n";
  CHECK_THROWS_WITH_AS(eisim::io::load_config(path), doctest::Contains("run.yaml, line 3"),
                       config_error);
  CHECK(eisim::io::load_config(path, {"network.width=10"}).network.width == 10);
  CHECK_THROWS_WITH_AS(eisim::io::load_config((dir / "missing.yaml").string()),
                       doctest::Contains("missing.yaml"), config_error);
}

TEST_CASE("network_spec chains the hidden layers and adds an E/I readout") {
  const Config c = parse_config(
      "network: {hidden_layers: 3, width: 95, kind: none, nonlinearity: power, power: 3, "
      "readout_inhibitory: 2, init_gain: 0.5, circuit: {tau_D: 7}}\n");
  const auto spec = eisim::io::network_spec(c, 784, 10);
  REQUIRE(spec.layers.size() == 4);
  CHECK(spec.layers[0].n_in == 784);
  CHECK(spec.layers[1].n_in == 95);
  CHECK(spec.layers[2].n_in == 95);
  for (int l = 0; l < 3; ++l) {
    CHECK(spec.layers[l].kind == eisim::models::LayerKind::none);
    CHECK(spec.layers[l].n_E == 95);
    CHECK(spec.layers[l].n_I_plain == 10);  // ceil(95 / 10)
    CHECK(spec.layers[l].phi.kind == eisim::models::Nonlinearity::power);
    CHECK(spec.layers[l].phi.power == 3.0);
    REQUIRE(spec.layers[l].circuit.populations.size() == 3);
    CHECK(spec.layers[l].circuit.populations[2].name == "D");
    CHECK(spec.layers[l].circuit.populations[2].tau == 7.0);
    CHECK(spec.layers[l].lateral_units == 9);  // width / 10
    CHECK(spec.layers[l].ln_epsilon == 1e-5);
    CHECK(spec.layers[l].theta == 1.0);
  }
  const auto& readout = spec.layers[3];
  CHECK(readout.kind == eisim::models::LayerKind::none);
  CHECK(readout.n_in == 95);
  CHECK(readout.n_E == 10);
  CHECK(readout.n_I_plain == 2);
  CHECK(readout.phi.kind == eisim::models::Nonlinearity::identity);
  CHECK(spec.init_gain == 0.5);

  const Config small = parse_config("network: {width: 5, plain_inhibitory: 3}\n");
  const auto s2 = eisim::io::network_spec(small, 20, 4);
  CHECK(s2.layers[0].lateral_units == 1);  // at least one
  CHECK(s2.layers[0].n_I_plain == 3);
}

TEST_CASE("a section cannot be reset by an override, and a file is one non-empty document") {
  CHECK_THROWS_WITH_AS(parse_config("network: {width: 50}\n", {"network="}),
                       doctest::Contains("is a section"), config_error);
  CHECK_THROWS_WITH_AS(parse_config("", {"network.circuit=3"}), doctest::Contains("is a section"),
                       config_error);
  CHECK(parse_config("network: {width: 50}\n", {"network={hidden_layers: 1}"}).network.width == 50);
  CHECK_THROWS_WITH_AS(parse_config("seed: 1\n---\nseed: 2\n"),
                       doctest::Contains("a second YAML document starts here"), config_error);
  const auto dir = eisim::test::scratch_dir("config_files");
  for (const char* text : {"", "# only a comment\n", "\n\n"}) {
    const std::string path = (dir / "empty.yaml").string();
    std::ofstream(path) << text;
    CHECK_THROWS_WITH_AS(eisim::io::load_config(path), doctest::Contains("is empty"), config_error);
  }
  const std::string braces = (dir / "defaults.yaml").string();
  std::ofstream(braces) << "{}\n";
  CHECK(eisim::io::load_config(braces).seed == Config{}.seed);
  CHECK_THROWS_WITH_AS(eisim::io::load_config(dir.string()),
                       doctest::Contains("not a regular file"), config_error);
  CHECK_THROWS_WITH_AS(parse_config("train: {batch_size: 2147483647}\n"),
                       doctest::Contains("[1, 60000]"), config_error);
}

TEST_CASE("config_differences names every differing key with both values") {
  const Config a = parse_config("network: {width: 50}\nlearning: {lr_E: 0.1}\n");
  const Config b =
      parse_config("network: {width: 60}\nlearning: {lr_E: 0.1}\ntrain: {epochs: 9}\n");
  const auto d = eisim::io::config_differences(a, b);
  REQUIRE(d.size() == 2);
  CHECK(d[0] == "network.width (50 vs 60)");
  CHECK(d[1].find("train.epochs") == 0);
  CHECK(eisim::io::config_differences(a, b, {"train", "network.width"}).empty());
}

TEST_CASE("a text that starts with a stray comma is refused at once (yaml-cpp's LoadAll hung)") {
  // fuzz/regressions/config/: yaml-cpp 0.7's LoadAll never returned on these texts.
  for (const char* text : {",\n", ", a]\n", ", a}\n---\n"}) {
    CAPTURE(text);
    CHECK_THROWS_AS(parse_config(text), config_error);
  }
}

TEST_CASE("duplicate eval_eps and conditions that set what the grid sets are refused") {
  CHECK_THROWS_WITH_AS(parse_config("data: {eval_eps: [0.5, 0.5]}\n"),
                       doctest::Contains("lists 0.5 twice"), config_error);
  for (const char* cond : {"{name: a, set: {seed: 7}}", "{name: a, set: {data.train_eps: 0.1}}"}) {
    CAPTURE(cond);
    CHECK_THROWS_WITH_AS(parse_config(std::string("sweep: {conditions: [") + cond + "]}\n"),
                         doctest::Contains("the grid sets for every point"), config_error);
  }
  CHECK(parse_config("sweep: {conditions: [{name: a, set: {data.eval_eps: [0.1]}}]}\n")
            .sweep.conditions.size() == 1);
  // A section nested in a mapping override cannot be nulled either.
  CHECK_THROWS_WITH_AS(parse_config("network: {circuit: {theta: 5}}\n", {"network={circuit: ~}"}),
                       doctest::Contains("is a section"), config_error);
}

// ---------------------------------------------------------------------------------------------
// The circuit: presets, populations and projections (docs/config.md, network.circuit)

namespace {

using eisim::models::Action;
using eisim::models::CircuitSpec;
using eisim::models::Dynamics;

/// Names of the populations (or projections) of a circuit, in order.
template <class T>
std::vector<std::string> names(const std::vector<T>& v) {
  std::vector<std::string> out;
  for (const auto& x : v) out.push_back(x.name);
  return out;
}

const eisim::models::Projection& projection(const CircuitSpec& s, const std::string& name) {
  for (const auto& p : s.projections)
    if (p.name == name) return p;
  FAIL("no projection " << name);
  return s.projections.front();
}

/// make_preset for a configuration's width and nonlinearity, resolved (the expected circuit).
CircuitSpec expected_preset(const std::string& preset, const eisim::models::CircuitParams& p,
                            const Config& c) {
  CircuitSpec s = eisim::models::make_preset(preset, p, c.network.width, c.network.phi);
  eisim::models::resolve(s, "network.circuit");
  return s;
}

/// The configuration of a sweep condition: the base file with the condition's keys set.
Config condition_config(const std::string& rel, const std::string& name) {
  const Config base = eisim::io::load_config(eisim::test::source_path(rel));
  for (const auto& cond : base.sweep.conditions)
    if (cond.name == name) {
      std::vector<std::string> overrides;
      for (const auto& [k, v] : cond.set) overrides.push_back(k + "=" + v);
      return eisim::io::load_config(eisim::test::source_path(rel), overrides);
    }
  FAIL("no condition " << name);
  return base;
}

}  // namespace

TEST_CASE("each preset parses and yields its populations and projections") {
  SUBCASE("default") {
    const auto& s = parse_config("network: {width: 50}\n").network.circuit.spec;
    CHECK(s.preset == "default");
    CHECK(names(s.populations) == std::vector<std::string>{"E", "I", "D"});
    CHECK(names(s.projections) == std::vector<std::string>{"W_EI", "W_ED", "W_IE", "W_DE"});
    CHECK(s.populations[0].size == 50);
    CHECK(s.populations[1].dynamics == Dynamics::integrator);
    CHECK(s.populations[2].dynamics == Dynamics::multiplicative);
    CHECK(projection(s, "W_ED").action == Action::divisive);
    CHECK(projection(s, "W_ED").src == 2);  // resolved
    CHECK(projection(s, "W_ED").tgt == 0);
    CHECK_FALSE(s.own_output_rate);
  }
  SUBCASE("inorm") {
    const Config c = parse_config("network: {width: 50, circuit: {preset: inorm, n_I: 5}}\n");
    const auto& s = c.network.circuit.spec;
    CHECK(c.network.circuit.preset == "inorm");
    CHECK(names(s.populations) == std::vector<std::string>{"E", "I", "D"});
    CHECK(names(s.projections) == std::vector<std::string>{"W_EI", "W_ED", "W_IX", "W_DE"});
    CHECK(s.populations[1].size == 5);
    CHECK(s.populations[2].phi.kind == eisim::models::Nonlinearity::sqrt);
    CHECK(projection(s, "W_DE").signal == eisim::models::Signal::input_energy);
    CHECK(projection(s, "W_DE").src == -1);
  }
  SUBCASE("pv_sst_vip") {
    const Config c = parse_config("network: {width: 200, circuit: {preset: pv_sst_vip}}\n");
    const auto& s = c.network.circuit.spec;
    CHECK(names(s.populations) == std::vector<std::string>{"E", "PV", "SST", "VIP"});
    CHECK(s.populations[1].size == 20);
    CHECK(s.populations[2].size == 20);
    CHECK(s.populations[3].size == 10);
    CHECK(names(s.projections) ==
          std::vector<std::string>{"W_EPV", "W_ESST", "W_PVE", "W_SSTE", "W_VIPE", "W_SSTVIP"});
    CHECK(projection(s, "W_EPV").action == Action::divisive);
    CHECK(same_circuit(s, expected_preset("pv_sst_vip", {}, c)));
  }
  SUBCASE("ssn") {
    const Config c = parse_config("network: {width: 40, circuit: {preset: ssn}}\n");
    const auto& s = c.network.circuit.spec;
    CHECK(names(s.populations) == std::vector<std::string>{"E", "I"});
    CHECK(s.populations[1].size == 10);
    CHECK(s.own_output_rate);
    CHECK(s.populations[0].phi.kind == eisim::models::Nonlinearity::power);
    CHECK(s.populations[0].tau == 20.0);
    CHECK(c.network.circuit.params.tau_E == 20.0);  // tau_E is E's time constant
    CHECK(same_circuit(s, expected_preset("ssn", {}, c)));
    // tau_E applies to every preset's E.
    CHECK(parse_config("network: {circuit: {preset: ssn, tau_E: 7}}\n")
              .network.circuit.spec.populations[0]
              .tau == 7.0);
    // The network's layers get the circuit's own rate function.
    const auto net = eisim::io::network_spec(c, 20, 3);
    CHECK(net.layers[0].phi.kind == eisim::models::Nonlinearity::power);
  }
}

TEST_CASE("legacy configurations give exactly the default and inorm presets") {
  SUBCASE("experiments/quickstart.yaml") {
    const Config c =
        eisim::io::load_config(eisim::test::source_path("experiments/quickstart.yaml"));
    CHECK(c.network.circuit.preset == "default");
    CHECK(same_circuit(c.network.circuit.spec, expected_preset("default", {}, c)));
  }
  SUBCASE("experiments/paper/sweep.yaml, its dynamical and its I-Norm conditions") {
    const Config base =
        eisim::io::load_config(eisim::test::source_path("experiments/paper/sweep.yaml"));
    CHECK(base.network.circuit.preset == "default");
    CHECK(same_circuit(base.network.circuit.spec, expected_preset("default", {}, base)));
    const Config inorm = condition_config("experiments/paper/sweep.yaml", "inorm_frozen");
    CHECK(inorm.network.circuit.preset == "inorm");
    eisim::models::CircuitParams p;
    p.n_I = 28;
    CHECK(same_circuit(inorm.network.circuit.spec, expected_preset("inorm", p, inorm)));
  }
  SUBCASE("every legacy key reaches make_preset") {
    const Config c = parse_config(R"(
network:
  width: 30
  nonlinearity: softplus
  circuit: {drive: feedforward, pooling: heterogeneous, n_I: 3, n_D: 2, tau_E: 4, tau_I: 5,
            tau_D: 6, k_I: 2, k_D: 3, lambda_I: 0.1, lambda_D: 0.2, theta: 1.5, sigma0: 1e-4,
            heterogeneity: 0.3, ff_epsilon: 1e-3}
)");
    const auto& p = c.network.circuit.params;
    CHECK(p.heterogeneous);
    CHECK(p.n_D == 2);
    CHECK(p.ff_epsilon == 1e-3);
    CHECK(same_circuit(c.network.circuit.spec, expected_preset("inorm", p, c)));
    const Config d = parse_config(
        "network: {circuit: {pooling: heterogeneous, n_I: 3, k_D: 3, lambda_I: 0.1, theta: 2}}\n");
    CHECK(same_circuit(d.network.circuit.spec,
                       expected_preset("default", d.network.circuit.params, d)));
    CHECK(d.network.circuit.spec.populations[2].setpoint == 2.0);
  }
  SUBCASE("tests/data/tiny.yaml and the other experiments") {
    for (const char* rel :
         {"tests/data/tiny.yaml", "experiments/simulate.yaml", "experiments/compare_rules.yaml"}) {
      CAPTURE(rel);
      const Config c = eisim::io::load_config(eisim::test::source_path(rel));
      CHECK(same_circuit(c.network.circuit.spec,
                         expected_preset(c.network.circuit.preset, c.network.circuit.params, c)));
    }
  }
}

TEST_CASE("populations and projections are changed, added and removed by name") {
  const Config c = parse_config(R"(
network:
  width: 100
  circuit:
    preset: pv_sst_vip
    populations:
      PV: {size: 7, tau: 4.5, rate: {function: softplus, beta: 2}}
      VIP: {remove: true}
      CCK: {size: 3, dynamics: integrator, gain: 2, leak: 0.5, setpoint: 0.25}
    projections:
      W_VIPE: {remove: true}
      W_SSTVIP: {remove: true}
      W_EPV: {learns: task, scale: 2}
      W_CCKE: {source: E, target: CCK, signal: potential}
      W_ECCK: {source: CCK, target: E, init: constant, scale: 0.1}
)");
  const auto& s = c.network.circuit.spec;
  REQUIRE(names(s.populations) == std::vector<std::string>{"E", "PV", "SST", "CCK"});
  const auto& PV = s.populations[1];
  CHECK(PV.size == 7);
  CHECK(PV.tau == 4.5);
  CHECK(PV.phi.kind == eisim::models::Nonlinearity::softplus);
  CHECK(PV.phi.beta == 2.0);
  CHECK(PV.conductance == 1.0);        // not given: the preset's
  CHECK(s.populations[2].size == 10);  // SST untouched
  const auto& CCK = s.populations[3];
  CHECK(CCK.dynamics == Dynamics::integrator);
  CHECK(CCK.gain == 2.0);
  CHECK(CCK.leak == 0.5);
  CHECK(CCK.setpoint == 0.25);
  CHECK(CCK.tau == eisim::models::Population{}.tau);  // a new population's defaults
  CHECK(names(s.projections) ==
        std::vector<std::string>{"W_EPV", "W_ESST", "W_PVE", "W_SSTE", "W_CCKE", "W_ECCK"});
  CHECK(projection(s, "W_EPV").learns == eisim::models::Learns::task);
  CHECK(projection(s, "W_EPV").scale == 2.0);
  CHECK(projection(s, "W_EPV").init == eisim::models::Init::heterogeneous);
  CHECK(projection(s, "W_CCKE").signal == eisim::models::Signal::potential);
  CHECK(projection(s, "W_CCKE").tgt == 3);
  CHECK(projection(s, "W_ECCK").init == eisim::models::Init::constant);
  CHECK(projection(s, "W_ECCK").learns == eisim::models::Learns::fixed);  // the default
  // The network's layers carry the changed circuit.
  const auto net = eisim::io::network_spec(c, 20, 3);
  CHECK(names(net.layers[0].circuit.populations) == names(s.populations));
  CHECK(net.layers[0].weight_index("W_ECCK") >= 0);
  CHECK(net.layers[0].weight_index("W_VIPE") < 0);

  SUBCASE("E's rate set under populations replaces network.nonlinearity") {
    const Config e = parse_config(
        "network: {nonlinearity: softplus, circuit: {populations: {E: {rate: {beta: 3}}}}}\n");
    const auto& E = e.network.circuit.spec.populations[0];
    CHECK(e.network.circuit.spec.own_output_rate);
    CHECK(E.phi.kind == eisim::models::Nonlinearity::softplus);  // kept
    CHECK(E.phi.beta == 3.0);
    CHECK(E.size == e.network.width);
    const Config f = parse_config("network: {nonlinearity: softplus}\n");
    CHECK_FALSE(f.network.circuit.spec.own_output_rate);
    CHECK(f.network.circuit.spec.populations[0].phi.kind == eisim::models::Nonlinearity::softplus);
  }
  SUBCASE("populations.E.tau is tau_E") {
    const Config e = parse_config("network: {circuit: {populations: {E: {tau: 3}}}}\n");
    CHECK(e.network.circuit.spec.populations[0].tau == 3.0);
    CHECK(e.network.circuit.params.tau_E == 3.0);
  }
  SUBCASE("through --set and sweep conditions") {
    const Config o =
        parse_config("", {"network.circuit.preset=ssn", "network.circuit.populations.I.size=12",
                          "network.circuit.projections.W_EE={scale: 1.0}"});
    CHECK(o.network.circuit.spec.populations[1].size == 12);
    CHECK(projection(o.network.circuit.spec, "W_EE").scale == 1.0);
    const Config w = parse_config(R"(
sweep:
  conditions:
    - {name: big_I, set: {network.circuit.populations.I.size: 5}}
    - {name: ssn, set: {network.circuit.preset: ssn}}
)");
    CHECK(w.sweep.conditions[0].set[0].first == "network.circuit.populations.I.size");
    CHECK(error_key("sweep: {conditions: [{name: a, set: {network.circuit.populations.I.size: "
                    "0}}]}\n") == "sweep.conditions[0].set.network.circuit.populations.I.size");
  }
}

TEST_CASE("circuit errors name their key") {
  SUBCASE("legacy keys with the presets that do not read them say what to set instead") {
    for (const char* key :
         {"n_I: 2", "n_D: 2", "tau_I: 2", "tau_D: 2", "k_I: 2", "k_D: 2", "lambda_I: 2",
          "lambda_D: 2", "theta: 2", "sigma0: 2", "heterogeneity: 2", "ff_epsilon: 2",
          "pooling: heterogeneous", "drive: feedback", "drive: feedforward"})
      for (const char* preset : {"pv_sst_vip", "ssn"}) {
        const std::string yaml =
            std::string("network: {circuit: {preset: ") + preset + ", " + key + "}}\n";
        CAPTURE(yaml);
        const std::string name = std::string(key).substr(0, std::string(key).find(':'));
        CHECK(error_key(yaml) == "network.circuit." + name);
        CHECK_THROWS_WITH_AS(parse_config(yaml),
                             doctest::Contains((std::string("network.circuit.preset = ") + preset +
                                                " set network.circuit.")
                                                   .c_str()),
                             config_error);
      }
    CHECK_THROWS_WITH_AS(parse_config("network: {circuit: {preset: ssn, n_I: 3}}\n"),
                         doctest::Contains("set network.circuit.populations.<name>.size instead"),
                         config_error);
    // tau_E is every preset's.
    CHECK(parse_config("network: {circuit: {preset: pv_sst_vip, tau_E: 3}}\n")
              .network.circuit.spec.populations[0]
              .tau == 3.0);
  }
  SUBCASE("preset and drive that contradict each other name both keys") {
    for (const char* yaml : {"network: {circuit: {preset: inorm, drive: feedback}}\n",
                             "network: {circuit: {preset: default, drive: feedforward}}\n"}) {
      CAPTURE(yaml);
      CHECK(error_key(yaml) == "network.circuit.drive");
      CHECK_THROWS_WITH_AS(parse_config(yaml),
                           doctest::Contains("contradicts network.circuit.preset"), config_error);
    }
    CHECK(parse_config("network: {circuit: {preset: inorm, drive: feedforward}}\n")
              .network.circuit.preset == "inorm");
    CHECK_THROWS_WITH_AS(parse_config("network: {circuit: {preset: lif}}\n"),
                         doctest::Contains("network.circuit.preset = 'lif' is not one of the "
                                           "allowed values: default, inorm, pv_sst_vip, ssn"),
                         config_error);
  }
  SUBCASE("E's size, E's removal, unknown removals, incomplete new projections") {
    CHECK_THROWS_WITH_AS(parse_config("network: {circuit: {populations: {E: {size: 5}}}}\n"),
                         doctest::Contains("E's size is network.width"), config_error);
    CHECK(error_key("network: {circuit: {populations: {E: {size: 5}}}}\n") ==
          "network.circuit.populations.E.size");
    CHECK(error_key("network: {circuit: {populations: {E: {remove: true}}}}\n") ==
          "network.circuit.populations.E.remove");
    CHECK_THROWS_WITH_AS(parse_config("network: {circuit: {populations: {PV: {remove: true}}}}\n"),
                         doctest::Contains("there is no population 'PV' to remove (the circuit "
                                           "has E, I, D)"),
                         config_error);
    CHECK(error_key("network: {circuit: {projections: {W_X: {remove: true}}}}\n") ==
          "network.circuit.projections.W_X.remove");
    CHECK(error_key("network: {circuit: {populations: {I: {remove: true, tau: 2}}}}\n") ==
          "network.circuit.populations.I.remove");
    CHECK_THROWS_WITH_AS(parse_config("network: {circuit: {projections: {W_X: {source: E}}}}\n"),
                         doctest::Contains("needs a source and a target"), config_error);
    CHECK(error_key("network: {circuit: {projections: {W_X: {source: E}}}}\n") ==
          "network.circuit.projections.W_X.target");
    CHECK(error_key("network: {circuit: {populations: {E: {dynamics: integrator}}}}\n") ==
          "network.circuit.populations.E.dynamics");
  }
  SUBCASE("models::resolve: unknown populations, Dale's law, populations without input") {
    CHECK_THROWS_WITH_AS(
        parse_config("network: {circuit: {projections: {W_EI: {source: PV}}}}\n", {}, "c.yaml"),
        doctest::Contains("unknown population 'PV'"), config_error);
    CHECK(error_key("network: {circuit: {projections: {W_EI: {source: PV}}}}\n") ==
          "network.circuit.projections.W_EI.source");
    // The message says where the entry came from.
    CHECK_THROWS_WITH_AS(
        parse_config("network:\n  circuit:\n    projections:\n      W_EI: {source: PV}\n", {},
                     "c.yaml"),
        doctest::Contains("(c.yaml, line 4)"), config_error);
    CHECK_THROWS_WITH_AS(
        parse_config("network: {circuit: {projections: {W_X: {source: E, target: I, action: "
                     "divisive}}}}\n"),
        doctest::Contains("Dale's law"), config_error);
    CHECK(error_key("network: {circuit: {projections: {W_X: {source: E, target: I, action: "
                    "divisive}}}}\n") == "network.circuit.projections.W_X.action");
    CHECK_THROWS_WITH_AS(parse_config("network: {circuit: {populations: {X: {size: 2}}}}\n"),
                         doctest::Contains("has no input"), config_error);
    CHECK(error_key("network: {circuit: {populations: {X: {size: 2}}}}\n") ==
          "network.circuit.populations.X");
    // A removed population that a projection still uses.
    CHECK(error_key("network: {circuit: {preset: pv_sst_vip, populations: {VIP: {remove: "
                    "true}}}}\n") == "network.circuit.projections.W_VIPE.target");
    CHECK(error_key("network: {circuit: {projections: {W_X: {source: E, target: I, signal: "
                    "input}}}}\n") == "network.circuit.projections.W_X.signal");
    CHECK(error_key("network: {circuit: {projections: {W_EX: {source: E, target: I}}}}\n") ==
          "network.circuit.projections.W_EX.name");
    CHECK(error_key("network: {circuit: {populations: {input: {size: 2}}}}\n") ==
          "network.circuit.populations.input");
  }
  SUBCASE("ranges of the fields") {
    const std::string p = "network.circuit.populations.I.";
    for (const auto& [set, message] : std::vector<std::pair<std::string, std::string>>{
             {"size=0", "size = 0 must be in [1, 65536]"},
             {"size=65537", "size = 65537 must be in [1, 65536]"},
             {"tau=0", "tau = 0 must be > 0"},
             {"gain=0", "gain = 0 must be > 0"},
             {"leak=-1", "leak = -1 must be >= 0"},
             {"conductance=0", "conductance = 0 must be > 0"},
             {"rate.power=0", "rate.power = 0 must be > 0"},
             {"rate.beta=-1", "rate.beta = -1 must be > 0"},
             {"initial=-1", "initial = -1 must be >= 0 for an integrator"},
             {"setpoint=.nan", "must be a finite number"},
             {"dynamics=linear",
              "not one of the allowed values: leaky, integrator, "
              "multiplicative"},
             {"rate.function=tanh", "relu, softplus, power, identity, sqrt"}}) {
      CAPTURE(set);
      CHECK_THROWS_WITH_AS(parse_config("", {p + set}), doctest::Contains(message.c_str()),
                           config_error);
      CHECK(error_key("", {p + set}) == p + set.substr(0, set.find('=')));
    }
    CHECK(error_key("", {"network.circuit.populations.D.initial=0"}) ==
          "network.circuit.populations.D.initial");
    const std::string j = "network.circuit.projections.W_EI.";
    CHECK_THROWS_WITH_AS(parse_config("", {j + "scale=-1"}),
                         doctest::Contains((j + "scale = -1 must be >= 0").c_str()), config_error);
    CHECK(error_key("", {j + "heterogeneity=-1"}) == j + "heterogeneity");
    CHECK(error_key("", {j + "learns=always"}) == j + "learns");
    CHECK(error_key("", {j + "signal=spikes"}) == j + "signal");
    CHECK(error_key("", {j + "energy_name=a/b"}) == j + "energy_name");
    CHECK(error_key("", {j + "source="}) == j + "source");
    CHECK(parse_config("", {"network.circuit.populations.I.setpoint=-2"})
              .network.circuit.spec.populations[1]
              .setpoint == -2.0);
    CHECK_THROWS_WITH_AS(parse_config("network: {ln_epsilon: 0}\n"),
                         doctest::Contains("network.ln_epsilon = 0 must be > 0"), config_error);
  }
  SUBCASE("unknown fields and bad names suggest the nearest key under the same name") {
    CHECK_THROWS_WITH_AS(parse_config("network: {circuit: {populations: {PV: {tua: 3}}}}\n"),
                         doctest::Contains("unknown key 'network.circuit.populations.PV.tua'; "
                                           "did you mean 'network.circuit.populations.PV.tau'?"),
                         config_error);
    CHECK_THROWS_WITH_AS(parse_config("", {"network.circuit.projections.W_EI.sorce=I"}),
                         doctest::Contains("did you mean 'network.circuit.projections.W_EI."
                                           "source'"),
                         config_error);
    CHECK_THROWS_WITH_AS(parse_config("", {"network.circuit.population.PV.tau=3"}),
                         doctest::Contains("did you mean 'network.circuit.populations.PV.tau'"),
                         config_error);
    CHECK_THROWS_WITH_AS(
        parse_config("network: {circuit: {populations: {I: {rate: {functon: relu}}}}}\n"),
        doctest::Contains("did you mean 'network.circuit.populations.I.rate.function'"),
        config_error);
    CHECK(eisim::io::nearest_key("network.circuit.populations.SST.sise") ==
          "network.circuit.populations.SST.size");
    CHECK(error_key("network: {circuit: {populations: {a-b: {size: 1}}}}\n") ==
          "network.circuit.populations.a-b");
    CHECK(error_key("network: {circuit: {projections: {1W: {source: E}}}}\n") ==
          "network.circuit.projections.1W");
    CHECK(error_key("network: {circuit: {populations: {I: 3}}}\n") ==
          "network.circuit.populations.I");
  }
}

TEST_CASE("every preset, changed, round-trips through to_yaml exactly") {
  const std::vector<std::string> yamls{
      "network: {width: 37, circuit: {pooling: heterogeneous, n_I: 4, theta: 0.3, populations: "
      "{I: {gain: 0.1}, X: {size: 2, rate: {function: power, power: 1.5}}}, projections: {W_XE: "
      "{source: E, target: X}, W_EX2: {source: X, target: E, scale: 0.3, learns: task}}}}\n",
      "network: {width: 37, circuit: {drive: feedforward, ff_epsilon: 1e-7, projections: {W_IX: "
      "{remove: true}, W_IE: {source: E, target: I, signal: rate}}}}\n",
      "network: {width: 37, nonlinearity: softplus, circuit: {preset: pv_sst_vip, tau_E: "
      "0.30000000000000004, populations: {VIP: {remove: true}, E: {rate: {function: sqrt}}}, "
      "projections: {W_VIPE: {remove: true}, W_SSTVIP: {remove: true}}}}\n",
      "network: {width: 37, circuit: {preset: ssn, populations: {I: {size: 3, tau: 3.3}}, "
      "projections: {W_II: {remove: true}, W_EE: {scale: 0.1}}}}\n",
      "network: {circuit: {preset: pv_sst_vip}}\n",
      "network: {circuit: {preset: ssn}}\n",
      "network: {circuit: {preset: inorm}}\n",
  };
  for (const auto& yaml : yamls) {
    CAPTURE(yaml);
    const Config c = parse_config(yaml);
    const std::string text = to_yaml(c);
    const Config back = parse_config(text);
    CHECK(same_circuit(back.network.circuit.spec, c.network.circuit.spec));
    CHECK(back.network.circuit.preset == c.network.circuit.preset);
    CHECK(back.network.circuit.params.tau_E == c.network.circuit.params.tau_E);
    CHECK(back.network.circuit.params.heterogeneous == c.network.circuit.params.heterogeneous);
    CHECK(to_yaml(back) == text);
    CHECK(eisim::io::config_differences(c, back).empty());
    CHECK(text.find("preset: " + c.network.circuit.preset) != std::string::npos);
  }
  // The legacy keys are written for the presets that read them, and only for those.
  CHECK(to_yaml(parse_config("")).find("n_I:") != std::string::npos);
  CHECK(to_yaml(parse_config("network: {circuit: {preset: ssn}}\n")).find("n_I:") ==
        std::string::npos);
  // A Config built in code (no circuit yet) is written with its preset's circuit.
  Config coded;
  coded.network.circuit.preset = "ssn";
  coded.network.width = 8;
  const Config parsed = parse_config(to_yaml(coded));
  CHECK(same_circuit(parsed.network.circuit.spec, expected_preset("ssn", {}, parsed)));
  CHECK(eisim::io::network_spec(coded, 5, 2).layers[0].circuit.populations.size() == 2);
}

TEST_CASE("config_differences compares the circuits field by field") {
  const Config a = parse_config("network: {circuit: {preset: pv_sst_vip}}\n");
  const Config b = parse_config(
      "network: {circuit: {preset: pv_sst_vip, populations: {PV: {tau: 2}, VIP: {remove: true}}, "
      "projections: {W_VIPE: {remove: true}, W_SSTVIP: {remove: true}}}}\n");
  const auto d = eisim::io::config_differences(a, b);
  REQUIRE(d.size() == 4);
  CHECK(d[0] == "network.circuit.populations.PV.tau (5.0 vs 2.0)");
  CHECK(d[1] == "network.circuit.populations.VIP (present vs removed)");
  CHECK(d[2] == "network.circuit.projections.W_VIPE (present vs removed)");
  CHECK(d[3] == "network.circuit.projections.W_SSTVIP (present vs removed)");
  CHECK(eisim::io::config_differences(a, b, {"network.circuit"}).empty());
  // Another preset: its populations, projections and legacy keys on one side only.
  const auto e = eisim::io::config_differences(parse_config(""), a);
  CHECK(e.front() == "network.circuit.preset (default vs pv_sst_vip)");
  CHECK(std::find(e.begin(), e.end(), "network.circuit.n_I (1 vs absent)") != e.end());
  CHECK(std::find(e.begin(), e.end(), "network.circuit.populations.I (present vs absent)") !=
        e.end());
  CHECK(std::find(e.begin(), e.end(), "network.circuit.populations.PV (absent vs present)") !=
        e.end());
  CHECK(
      eisim::io::config_differences(parse_config("network: {ln_epsilon: 1e-3}\n"), parse_config(""))
          .front() == "network.ln_epsilon (0.001 vs 1.0e-05)");
  // E's own rate on one side only.
  const auto f = eisim::io::config_differences(
      parse_config(""),
      parse_config("network: {circuit: {populations: {E: {rate: {gain: 2}}}}}\n"));
  CHECK(std::find(f.begin(), f.end(), "network.circuit.populations.E.rate.gain (absent vs 2.0)") !=
        f.end());
}

TEST_CASE("network_spec passes ln_epsilon, theta and lateral_units to every hidden layer") {
  const Config c = parse_config(
      "network: {hidden_layers: 2, width: 30, kind: layernorm, ln_epsilon: 1e-3, lateral_units: "
      "4, circuit: {theta: 2}}\n");
  const auto spec = eisim::io::network_spec(c, 10, 3);
  REQUIRE(spec.layers.size() == 3);
  for (int l = 0; l < 2; ++l) {
    CHECK(spec.layers[l].ln_epsilon == 1e-3);
    CHECK(spec.layers[l].theta == 2.0);
    CHECK(spec.layers[l].lateral_units == 4);
  }
  CHECK(spec.layers[2].n_E == 3);
}

TEST_CASE("an override of drive replaces the file's preset, and the other way round") {
  // Both in one file contradict each other; an override (a --set, a sweep condition) wins.
  const std::string file = "network: {circuit: {preset: default}}\n";
  CHECK(parse_config(file, {"network.circuit.drive=feedforward"}).network.circuit.preset ==
        "inorm");
  CHECK(parse_config("network: {circuit: {drive: feedforward}}\n", {"network.circuit.preset=ssn"})
            .network.circuit.preset == "ssn");
  CHECK(parse_config("network: {circuit: {preset: inorm}}\n", {"network.circuit={drive: feedback}"})
            .network.circuit.preset == "default");
  // One override that sets both is checked like a file.
  CHECK(error_key(file, {"network.circuit={preset: inorm, drive: feedback}"}) ==
        "network.circuit.drive");
  const Config c = parse_config(
      "network: {circuit: {preset: default}}\n"
      "sweep: {conditions: [{name: ff, set: {network.circuit.drive: feedforward}}]}\n");
  CHECK(c.sweep.conditions.size() == 1);
}

TEST_CASE("the stored configuration of every shipped configuration reads back as itself") {
  // Run files store to_yaml(config), sweep conditions included; resume and the sweep parse it
  // again, which applies every condition to the stored (fully resolved) circuit.
  for (const char* rel :
       {"experiments/quickstart.yaml", "experiments/paper/sweep.yaml", "experiments/simulate.yaml",
        "experiments/compare_rules.yaml", "tests/data/tiny.yaml"}) {
    CAPTURE(rel);
    const Config c = eisim::io::load_config(eisim::test::source_path(rel));
    const std::string text = to_yaml(c);
    const Config back = parse_config(text, {}, "stored");
    CHECK(eisim::io::config_differences(c, back).empty());
    CHECK(to_yaml(back) == text);
    // And so does each of its sweep points' (a point has no conditions: experiments/sweep.cpp).
    for (const auto& cond : c.sweep.conditions) {
      CAPTURE(cond.name);
      std::vector<std::string> overrides{"sweep.conditions=[]"};
      for (const auto& [k, v] : cond.set) overrides.push_back(k + "=" + v);
      const Config point = eisim::io::load_config(eisim::test::source_path(rel), overrides);
      const Config stored = parse_config(to_yaml(point), {}, "stored point");
      CHECK(eisim::io::config_differences(point, stored).empty());
    }
  }
}

// ---------------------------------------------------------------------------------------------
// simulate.protocol: stimulus protocols (docs/config.md, "simulate.protocol")

namespace {

/// A valid protocol on the pv_sst_vip circuit (E, PV, SST, VIP), two hidden layers, 600 ms.
const std::string kProtocol = R"(
network:
  hidden_layers: 2
  width: 20
  circuit: {preset: pv_sst_vip}
simulate:
  protocol:
    segments:
      - {image: 0, duration: 300}
      - {image: 7, brightness: 0.5, duration: 300}
    perturbations:
      - {population: VIP, start: 100, end: 200, current: 0.5}
      - {population: SST, start: 400, end: 600, silence: true, layer: 1}
    record_interval: 0.5
)";

/// The key path and message of the error of kProtocol with `overrides`.
std::pair<std::string, std::string> protocol_error(const std::vector<std::string>& overrides,
                                                   const std::string& yaml = kProtocol) {
  try {
    parse_config(yaml, overrides);
  } catch (const config_error& e) {
    return {e.key_path(), e.what()};
  }
  return {"<no error>", ""};
}

}  // namespace

TEST_CASE("a stimulus protocol is read in order, with its defaults, and round-trips") {
  const Config c = parse_config(kProtocol);
  const auto& p = c.simulate.protocol;
  REQUIRE(p.segments.size() == 2);
  CHECK(p.segments[0].image == 0);
  CHECK(p.segments[0].brightness == 1.0);  // the default
  CHECK(p.segments[0].duration == 300.0);
  CHECK(p.segments[1].image == 7);
  CHECK(p.segments[1].brightness == 0.5);
  CHECK(p.duration() == 600.0);
  REQUIRE(p.perturbations.size() == 2);
  CHECK(p.perturbations[0].population == "VIP");
  CHECK(p.perturbations[0].layer == -1);  // every layer
  CHECK(p.perturbations[0].current == 0.5);
  CHECK_FALSE(p.perturbations[0].silence);
  CHECK(p.perturbations[1].population == "SST");
  CHECK(p.perturbations[1].layer == 1);
  CHECK(p.perturbations[1].silence);
  CHECK(p.perturbations[1].end == 600.0);  // a window may end with the protocol
  CHECK(p.record_interval == 0.5);
  // No protocol by default.
  CHECK(parse_config("").simulate.protocol.empty());
  CHECK(parse_config("").simulate.protocol.perturbations.empty());

  const std::string text = to_yaml(c);
  const Config back = parse_config(text);
  CHECK(to_yaml(back) == text);
  CHECK(eisim::io::config_differences(back, c).empty());
  REQUIRE(back.simulate.protocol.perturbations.size() == 2);
  CHECK(back.simulate.protocol.perturbations[1].layer == 1);
  CHECK(back.simulate.protocol.perturbations[1].silence);
  // A single mapping is a one-element list; --set replaces a whole list.
  const Config one = parse_config(
      "simulate: {protocol: {segments: {image: 3, duration: 50}}}\n",
      {"simulate.protocol.perturbations={population: I, start: 0, end: 50, current: -1}"});
  REQUIRE(one.simulate.protocol.segments.size() == 1);
  CHECK(one.simulate.protocol.segments[0].image == 3);
  REQUIRE(one.simulate.protocol.perturbations.size() == 1);
  CHECK(one.simulate.protocol.perturbations[0].current == -1.0);
  // The protocol is simulate-only: a stored run's configuration that differs by it is the same
  // run (simulate.* is ignored when a run is reused).
  CHECK(eisim::io::config_differences(
            c,
            parse_config(kProtocol,
                         {"simulate.protocol.segments=[]", "simulate.protocol.perturbations=[]"}),
            {"simulate"})
            .empty());
  // The shipped example parses.
  const Config shipped =
      eisim::io::load_config(eisim::test::source_path("experiments/protocol.yaml"));
  CHECK(shipped.simulate.protocol.segments.size() == 2);
  CHECK(shipped.simulate.protocol.perturbations.size() == 2);
  // A sweep condition may set a protocol.
  const Config sw = parse_config(
      "sweep: {conditions: [{name: a, set: {simulate.protocol.segments: [{image: 1, duration: "
      "10}]}}]}\n");
  REQUIRE(sw.sweep.conditions[0].set.size() == 1);
}

TEST_CASE("bad protocol keys are config errors naming the key") {
  using Case = std::tuple<std::vector<std::string>, std::string, std::string>;
  const std::string seg = "simulate.protocol.segments", per = "simulate.protocol.perturbations";
  const std::vector<Case> cases{
      {{seg + "=[{image: 0, duration: 0}]"}, seg + "[0].duration", "must be > 0"},
      {{seg + "=[{image: 0, duration: 10}, {image: 1}]"},
       seg + "[1].duration",
       "has no 'duration'"},
      {{seg + "=[{duration: 10}]"}, seg + "[0].image", "has no 'image'"},
      {{seg + "=[{image: 0, durtion: 10}]"},
       seg + "[0].durtion",
       "did you mean 'simulate.protocol.segments[0].duration'"},
      {{seg + "=[{image: 10000, duration: 10}]"}, seg + "[0].image", "must be in [0, 9999]"},
      {{seg + "=[{image: 0, brightness: -1, duration: 10}]"}, seg + "[0].brightness", ">= 0"},
      {{seg + "=[{image: 0, duration: .inf}]"}, seg + "[0].duration", "finite"},
      {{seg + "=[3]"}, seg + "[0]", "expected a mapping"},
      {{seg + "=oops"}, seg, "expected a list of mappings"},
      {{per + "=[{population: VIP, start: 200, end: 100, current: 1}]"},
       per + "[0].end",
       "must be > simulate.protocol.perturbations[0].start = 200"},
      {{per + "=[{population: VIP, start: 100, end: 100, current: 1}]"},
       per + "[0].end",
       "must be >"},
      {{per + "=[{population: VIP, start: 100, end: 700, current: 1}]"},
       per + "[0].end",
       "must be <= the protocol's duration, 600 ms"},
      {{per + "=[{population: VIP, start: -1, end: 100, current: 1}]"}, per + "[0].start", ">= 0"},
      {{per + "=[{population: VIP, start: 0, end: 100, current: .nan}]"},
       per + "[0].current",
       "must be a finite number"},
      {{per + "=[{population: VIP, start: 0, end: 100, current: 1, silence: true}]"},
       per + "[0].silence",
       "not both"},
      {{per + "=[{population: VIP, start: 0, end: 100}]"}, per + "[0]", "does nothing"},
      {{per + "=[{population: VIP, start: 0, end: 100, silence: false}]"},
       per + "[0]",
       "does nothing"},
      {{per + "=[{population: VIP, start: 0, end: 100, silence: maybe}]"},
       per + "[0].silence",
       "expected true or false"},
      {{per + "=[{population: I, start: 0, end: 100, current: 1}]"},
       per + "[0].population",
       "is not a population of the circuit (it has E, PV, SST, VIP)"},
      {{per + "=[{start: 0, end: 100, current: 1}]"},
       per + "[0].population",
       "has no 'population'"},
      {{per + "=[{population: VIP, start: 0, end: 100, current: 1, layer: 2}]"},
       per + "[0].layer",
       "must be < network.hidden_layers = 2"},
      {{per + "=[{population: VIP, start: 0, end: 100, current: 1, lyer: 0}]"},
       per + "[0].lyer",
       "did you mean 'simulate.protocol.perturbations[0].layer'"},
      {{seg + "=[]"}, per, "needs a stimulus"},
      {{"network.kind=layernorm"}, seg, "network.kind = layernorm"},
      {{"simulate.protocol.record_interval=0"}, "simulate.protocol.record_interval", "> 0"},
      {{"simulate.protocol.record_interval=1e-4"},
       "simulate.protocol.record_interval",
       "recorded points"},
      {{"simulate.protocol.segmnts=[]"},
       "simulate.protocol.segmnts",
       "did you mean 'simulate.protocol.segments'"},
  };
  for (const auto& [overrides, key, text] : cases) {
    CAPTURE(overrides.front());
    const auto [got_key, message] = protocol_error(overrides);
    CHECK(got_key == key);
    CHECK_MESSAGE(message.find(text) != std::string::npos, message);
  }
  // From the file: the message gives the element's line.
  CHECK(protocol_error({}).first == "<no error>");
  std::string bad = kProtocol;
  bad.replace(bad.find("population: SST"), 15, "population: SOM");
  const auto [bkey, bmessage] = protocol_error({}, bad);
  CHECK(bkey == "simulate.protocol.perturbations[1].population");
  CHECK_MESSAGE(bmessage.find("line 13") != std::string::npos, bmessage);
}
