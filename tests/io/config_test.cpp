// The configuration is strict: unknown keys, wrong types and out-of-range values are errors
// that name the key path; everything else takes the documented defaults.
#include "eisim/io/config.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <fstream>
#include <string>

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
  CHECK(c.network.circuit.tau_E == 10.0);
  CHECK(c.network.circuit.sigma0 == 1e-6);
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
  CHECK(c.network.circuit.drive == eisim::models::InhibitionDrive::feedforward);
  CHECK(c.network.circuit.pooling == eisim::models::Pooling::heterogeneous);
  CHECK(c.network.circuit.n_I == 3);
  CHECK(c.network.circuit.tau_E == 5.0);
  CHECK(c.network.circuit.tau_I == 10.0);  // untouched sibling keeps its default
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
    CHECK(c.network.circuit.lambda_I == 0.0);
    CHECK(c.learning.lr_I == 0.0);
    CHECK(c.fixed_point.tol.rel_tol == 0.0);
    CHECK(c.fixed_point.max_backtracks == 0);
    CHECK_THROWS_WITH_AS(parse_config("network: {circuit: {lambda_D: -0.5}}\n"),
                         doctest::Contains("network.circuit.lambda_D = -0.5 must be >= 0"),
                         config_error);
    CHECK_THROWS_WITH_AS(parse_config("seed: -1\n"), doctest::Contains("seed = -1 must be >= 0"),
                         config_error);
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
  CHECK(c.network.circuit.tau_I == 3.0);  // a mapping value is merged key by key
  CHECK(c.network.circuit.n_D == 2);
  CHECK(c.network.circuit.tau_E == 10.0);
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
  c.network.circuit.tau_E = 2.0 / 3.0;
  c.network.circuit.sigma0 = 1e-300;
  c.network.circuit.k_D = 12345678.901234567;
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
  CHECK(back.network.circuit.tau_E == c.network.circuit.tau_E);
  CHECK(back.network.circuit.sigma0 == c.network.circuit.sigma0);
  CHECK(back.network.circuit.k_D == c.network.circuit.k_D);
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
  CHECK(keys.size() == 74);
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
    CHECK(spec.layers[l].circuit.tau_D == 7.0);
  }
  const auto& readout = spec.layers[3];
  CHECK(readout.kind == eisim::models::LayerKind::none);
  CHECK(readout.n_in == 95);
  CHECK(readout.n_E == 10);
  CHECK(readout.n_I_plain == 2);
  CHECK(readout.phi.kind == eisim::models::Nonlinearity::identity);
  CHECK(spec.init_gain == 0.5);
  CHECK(spec.lateral_units == 9);  // width / 10

  const Config small = parse_config("network: {width: 5, plain_inhibitory: 3}\n");
  const auto s2 = eisim::io::network_spec(small, 20, 4);
  CHECK(s2.lateral_units == 1);  // at least one
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
