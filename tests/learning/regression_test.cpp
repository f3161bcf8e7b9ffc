// No regression: the redesigned circuits (populations and projections, sim/circuit.hpp) give the
// equilibria and gradients of the pre-redesign code (commit d3ac570). tests/data/regression_v1.h5
// holds that code's answers for fixed networks; its generator is
// tests/data/regression_v1_generator.cpp.txt. The old answers were themselves checked against
// closed forms, finite differences and BPTT by the tests of that commit.
#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <random>
#include <set>
#include <string>

#include "circuits.hpp"
#include "eisim/io/hdf5.hpp"
#include "eisim/learning/gradients.hpp"
#include "eisim/sim/circuit.hpp"

using namespace eisim;
using learning::ErrorTransform;
using learning::Rule;

namespace {

const std::string kFile = "tests/data/regression_v1.h5";

sim::FixedPointParameters tight() {
  sim::FixedPointParameters fp;
  fp.tol = {1e-14, 1e-14};
  fp.max_iterations = 200;
  return fp;
}

// One case of the generator: the hidden-layer template and the seed of its network.
struct Case {
  std::string name;
  models::LayerSpec hidden;
  std::uint64_t seed = 0;
  bool circuit = false, feedback = false;
};

std::vector<Case> cases() {
  auto circ = [](const models::CircuitParams& c, const std::string& preset) {
    return test::circuit_template(c, preset);
  };
  const models::CircuitParams def = test::default_circuit();
  const models::CircuitParams leaky = test::leaky_circuit();
  const models::CircuitParams lp = test::leaky_pooled_circuit();
  models::CircuitParams ffh;
  ffh.heterogeneous = true;
  ffh.n_I = 2;
  ffh.n_D = 3;
  ffh.sigma0 = 0.1;
  models::LayerSpec ln;
  ln.kind = models::LayerKind::layernorm;
  models::LayerSpec no;
  no.kind = models::LayerKind::none;
  no.n_I_plain = 2;
  std::vector<Case> out{{"default", circ(def, "default"), 0, true, true},
                        {"leaky_heterogeneous", circ(leaky, "default"), 0, true, true},
                        {"leaky_pooled", circ(lp, "default"), 0, true, true},
                        {"feedforward", circ(def, "inorm"), 0, true, false},
                        {"feedforward_heterogeneous", circ(ffh, "inorm"), 0, true, false},
                        {"layernorm", ln, 0, false, false},
                        {"none", no, 0, false, false}};
  std::uint64_t seed = 30;
  for (auto& c : out) c.seed = ++seed;
  return out;
}

// The case's network as the generator built it: two hidden layers of 20 units (n_E / 10 = 2
// lateral units each) and a 3-unit readout with one inhibitory unit; initialised with the
// case's seed, biases drawn as the generator drew them.
models::Network<double> build(const Case& c) {
  std::vector<models::LayerSpec> layers(2, c.hidden);
  for (auto& l : layers) {
    l.n_E = 20;
    l.lateral_units = test::lateral_units(20);
  }
  auto net = models::initialise<double>(models::make_network_spec(12, 3, layers, 1.0, 1), c.seed);
  std::mt19937_64 rng(c.seed + 99);
  std::uniform_real_distribution<double> u(-0.1, 0.1);
  for (auto& l : net.layers)
    for (int i = 0; i < l.w.b.rows(); ++i) l.w.b(i, 0) = u(rng);
  return net;
}

std::string layer_group(const std::string& prefix, std::size_t l) {
  return prefix + "/layer_" + std::to_string(l);
}

// Worst max |a - b| / max(1, scale) and max |a - b| / scale of the comparisons of a case
// (reported: the second shows the agreement relative to each quantity's own size).
double worst_error = 0, worst_relative = 0;

// max |a - b| <= 1e-9 * max(1, scale), with a message naming what is compared.
void check_close(const std::string& what, const Mat<double>& a, const Mat<double>& b,
                 double scale) {
  CAPTURE(what);
  REQUIRE(a.rows() == b.rows());
  REQUIRE(a.cols() == b.cols());
  const double err = a.size() == 0 ? 0.0 : (a - b).cwiseAbs().maxCoeff();
  CAPTURE(err);
  CHECK(err <= 1e-9 * std::max(1.0, scale));
  worst_error = std::max(worst_error, err / std::max(1.0, scale));
  if (scale > 0) worst_relative = std::max(worst_relative, err / scale);
}

double max_abs(const Mat<double>& m) {
  return m.size() == 0 ? 0.0 : m.cwiseAbs().maxCoeff();
}

// Load every stored weight into the network; every weight of the network must be stored.
void load_weights(const io::H5File& f, const std::string& name, models::Network<double>& net) {
  for (std::size_t l = 0; l < net.layers.size(); ++l) {
    const std::string g = layer_group(name + "/weights", l);
    auto& w = net.layers[l].w;
    const auto stored = f.list(g);
    CAPTURE(g);
    CHECK(stored.size() == std::size_t(w.count()));
    for (const auto& n : stored) {
      CAPTURE(n);
      REQUIRE(w.has(n));
      const Mat<double> m = f.read_matrix(g + "/" + n);
      REQUIRE(m.rows() == w[n].rows());
      REQUIRE(m.cols() == w[n].cols());
      w[n] = m;
    }
  }
}

std::vector<int> read_labels(const io::H5File& f, const std::string& name) {
  std::vector<int> labels;
  for (double v : f.read_vector(name + "/labels")) labels.push_back(int(v));
  return labels;
}

// Compare a gradient set with the stored one of a rule: every stored entry (and no other
// non-zero entry), per layer to 1e-9 of that layer's largest stored gradient.
void compare_gradients(const io::H5File& f, const std::string& group,
                       const learning::Gradients<double>& g) {
  for (std::size_t l = 0; l < g.layers.size(); ++l) {
    const std::string lg = layer_group(group, l);
    const auto stored = f.list(lg);
    std::map<std::string, Mat<double>> old;
    double scale = 0;
    for (const auto& n : stored) {
      old[n] = f.read_matrix(lg + "/" + n);
      scale = std::max(scale, max_abs(old[n]));
    }
    const auto& gl = g.layers[l];
    for (int k = 0; k < gl.count(); ++k) {
      const std::string& n = gl.name(k);
      CAPTURE(lg + "/" + n);
      if (old.count(n) == 0) {
        // Not stored by the old code: it must then be zero (or not computed).
        CHECK(max_abs(gl.at(k)) == 0.0);
        continue;
      }
      check_close(lg + "/" + n, gl.at(k), old[n], scale);
      old.erase(n);
    }
    for (const auto& [n, m] : old) {
      CAPTURE(lg + "/" + n);
      FAIL_CHECK("stored gradient has no counterpart in the new code");
    }
  }
  if (f.exists(group + "/input")) {
    const Mat<double> old = f.read_matrix(group + "/input");
    check_close(group + "/input", g.input, old, max_abs(old));
  }
}

learning::LearningSpec rule_spec(const std::string& rule) {
  learning::LearningSpec s;
  if (rule == "implicit") {
    s.rule = Rule::implicit;
  } else if (rule.rfind("frozen_", 0) == 0) {
    s.rule = Rule::frozen;
    const std::string t = rule.substr(7);
    bool found = false;
    for (auto e : {ErrorTransform::none, ErrorTransform::center, ErrorTransform::scale,
                   ErrorTransform::decorrelate, ErrorTransform::full, ErrorTransform::lateral})
      if (t == learning::to_string(e)) {
        s.error_transform = e;
        found = true;
      }
    REQUIRE_MESSAGE(found, "unknown error transform in the file: " << rule);
  } else if (rule == "bptt_300x0.5") {
    s.rule = Rule::bptt;
    s.bptt_steps = 300;
    s.bptt_dt = 0.5;
  } else if (rule != "local") {
    FAIL("unknown rule in the file: " << rule);
  }
  return s;
}

}  // namespace

TEST_CASE("initialisation with the seed of the pre-redesign code reproduces its weights") {
  // Bit for bit in the Release build that wrote the file; other builds (the sanitizer build,
  // another -march) may round the row normalisations differently, so allow 4 ulp.
  const auto f = io::H5File::open_read(test::source_path(kFile));
  for (const Case& c : cases()) {
    CAPTURE(c.name);
    const auto net = build(c);
    for (std::size_t l = 0; l < net.layers.size(); ++l) {
      const std::string g = layer_group(c.name + "/weights", l);
      const auto stored = f.list(g);
      CHECK(stored.size() == std::size_t(net.layers[l].w.count()));
      for (const auto& n : stored) {
        CAPTURE(g + "/" + n);
        REQUIRE(net.layers[l].w.has(n));
        const Mat<double> old = f.read_matrix(g + "/" + n);
        const Mat<double>& now = net.layers[l].w[n];
        REQUIRE(now.rows() == old.rows());
        REQUIRE(now.cols() == old.cols());
        CHECK(max_abs(now - old) <= 4 * 2.3e-16 * std::max(1.0, max_abs(old)));
      }
    }
  }
}

TEST_CASE("the redesign reproduces the pre-redesign equilibria and gradients to 1e-9") {
  const auto f = io::H5File::open_read(test::source_path(kFile));
  for (const Case& c : cases()) {
    CAPTURE(c.name);
    REQUIRE(f.exists(c.name));
    worst_error = worst_relative = 0;
    auto net = build(c);
    load_weights(f, c.name, net);
    const Mat<double> x = f.read_matrix(c.name + "/x");
    const std::vector<int> labels = read_labels(f, c.name);

    // Equilibria: v, the interneurons' rates (the old r_I, r_D), the output rates and the loss.
    // The solver keeps its last evaluations for the adjoint, as in training.
    sim::ForwardCache<double> cache;
    auto fp = tight();
    fp.keep_linearisation = true;
    sim::forward(net, x, fp, cache);
    for (std::size_t l = 0; l < net.layers.size(); ++l) {
      const auto& layer = net.layers[l];
      const auto& lc = cache.layers[l];
      const std::string g = layer_group(c.name + "/eq", l);
      if (layer.spec.kind == models::LayerKind::circuit) {
        INFO(lc.solve.describe());
        REQUIRE(lc.solve.ok());
      }
      const Mat<double> v = f.read_matrix(g + "/v"), r = f.read_matrix(g + "/r");
      check_close(g + "/v", lc.z.v(), v, max_abs(v));
      check_close(g + "/r", lc.r, r, max_abs(r));
      for (const char* pop : {"I", "D"}) {
        const std::string dset = g + "/r_" + pop;
        if (layer.spec.kind != models::LayerKind::circuit) {
          CHECK_FALSE(f.exists(dset));
          continue;
        }
        REQUIRE(f.exists(dset));
        const Mat<double> old = f.read_matrix(dset);
        // The rate of the population: its state for the default preset's integrator and
        // multiplicative units, sqrt(W_DE (U x)^2 + eps) of inorm's leaky divisive units (their
        // state is the potential under the square root).
        const int p = test::population(layer, pop);
        Mat<double> rate;
        sim::population_rate(layer.spec.circuit.populations[p], lc.z.z[p], rate,
                             static_cast<Mat<double>*>(nullptr));
        check_close(dset, rate, old, max_abs(old));
      }
    }
    Mat<double> dlogits;
    const double loss = learning::cross_entropy(cache.logits(), labels, 0.1, dlogits);
    const double old_loss = f.read_vector(c.name + "/loss").at(0);
    CHECK(std::abs(loss - old_loss) <= 1e-9 * std::max(1.0, std::abs(old_loss)));

    // Gradients of every rule the old code stored.
    const auto rules = f.list(c.name + "/grad");
    std::set<std::string> expected{"implicit"};
    if (c.circuit)
      for (const char* t : {"none", "center", "scale", "decorrelate", "full", "lateral"})
        expected.insert(std::string("frozen_") + t);
    if (c.circuit) expected.insert(c.feedback ? "bptt_300x0.5" : "local");
    CHECK(std::set<std::string>(rules.begin(), rules.end()) == expected);
    for (const auto& rule : rules) {
      CAPTURE(rule);
      const std::string group = c.name + "/grad/" + rule;
      const learning::LearningSpec spec = rule_spec(rule);
      learning::Gradients<double> g;
      if (rule == "local") {
        g.zero_like(net);
        const double ll = learning::local_homeostatic_gradients(net, cache, 0.01, g);
        const double old = f.read_vector(c.name + "/local_loss").at(0);
        CHECK(std::abs(ll - old) <= 1e-9 * std::max(1.0, std::abs(old)));
      } else if (spec.rule == Rule::bptt) {
        g.input_gradient = true;
        double bl = 0;
        learning::backward_bptt(net, x, labels, spec, g, &bl);
        const double old = f.read_vector(c.name + "/bptt_loss").at(0);
        CHECK(std::abs(bl - old) <= 1e-9 * std::max(1.0, std::abs(old)));
      } else {
        g.input_gradient = true;
        learning::backward(net, cache, dlogits, spec, g);
      }
      compare_gradients(f, group, g);
    }
    MESSAGE(c.name << ": worst |new - old| / max(1, scale) " << worst_error << ", / scale "
                   << worst_relative);
  }
}
