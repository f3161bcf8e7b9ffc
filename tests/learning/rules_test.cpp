// The learning rules on every preset circuit, against independent answers: finite differences
// of the loss (implicit), the implicit gradient (BPTT through a converged trajectory), finite
// differences of the loss with the interneurons held at their equilibrium (frozen), and
// LayerNorm's backward pass (the default circuit).
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <random>

#include "eisim/learning/gradients.hpp"
#include "eisim/sim/forward.hpp"
#include "presets.hpp"

using namespace eisim;
using learning::Rule;
namespace presets = test::presets;

namespace {

constexpr int kInputs = 12, kUnits = 20, kHidden = 2, kSamples = 4;
constexpr double kSmoothing = 0.1;

sim::FixedPointParameters tight(bool pooled_fast_path = true) {
  sim::FixedPointParameters fp;
  fp.tol = {1e-14, 1e-14};
  fp.max_iterations = 200;
  fp.pooled_fast_path = pooled_fast_path;
  return fp;
}

// 12 inputs -> two hidden layers of 20 units of the preset -> 3-unit readout, 4 samples.
struct Problem {
  models::Network<double> net;
  Mat<double> x;
  std::vector<int> labels{0, 2, 1, 2};
};

Problem problem(const presets::Case& c, std::uint64_t seed) {
  Problem p{presets::network<double>(c, kInputs, kUnits, kHidden, seed), {}};
  std::mt19937_64 rng(test::seed() + seed);
  p.x = test::random_matrix<double>(kInputs, kSamples, 0.0, 1.0, rng);
  return p;
}

sim::ForwardCache<double> forward(const models::Network<double>& net, const Mat<double>& x,
                                  bool pooled_fast_path = true) {
  sim::ForwardCache<double> cache;
  sim::forward(net, x, tight(pooled_fast_path), cache);
  for (const auto& l : cache.layers) {
    INFO(l.solve.describe());
    REQUIRE(l.solve.ok());
  }
  return cache;
}

double loss_of(const models::Network<double>& net, const Mat<double>& x,
               const std::vector<int>& labels) {
  const auto cache = forward(net, x);
  Mat<double> d;
  return learning::cross_entropy(cache.logits(), labels, kSmoothing, d);
}

// Every gradient of a rule, with dL/dx.
learning::Gradients<double> gradients(const Problem& p, Rule rule, bool pooled_fast_path = true) {
  const auto cache = forward(p.net, p.x, pooled_fast_path);
  Mat<double> d;
  learning::cross_entropy(cache.logits(), p.labels, kSmoothing, d);
  learning::LearningSpec spec;
  spec.rule = rule;
  spec.pooled_fast_path = pooled_fast_path;
  learning::Gradients<double> g;
  g.input_gradient = true;
  learning::backward(p.net, cache, d, spec, g);
  CHECK(g.adjoint.ok());
  return g;
}

using Loss = std::function<double(const models::Network<double>&, const Mat<double>&)>;

// Central finite difference of the loss in one entry of m (a weight or the input), with one
// Richardson step: (4 D(h/2) - D(h)) / 3 cancels the h^2 error, which matters where the loss is
// strongly curved (the frozen ssn near the edge of inhibition stabilisation, where E's own
// block of the Jacobian is close to singular).
double finite_difference(Problem& p, Mat<double>& m, int i, int j, const Loss& loss) {
  const double m0 = m(i, j), h = 1e-5 * std::max(1.0, std::abs(m0));
  auto central = [&](double step) {
    m(i, j) = m0 + step;
    const double up = loss(p.net, p.x);
    m(i, j) = m0 - step;
    const double down = loss(p.net, p.x);
    m(i, j) = m0;
    return (up - down) / (2 * step);
  };
  return (4 * central(h / 2) - central(h)) / 3;
}

// The entry with the largest gradient and three random ones.
std::vector<std::pair<int, int>> entries(const Mat<double>& G, std::mt19937_64& rng) {
  std::vector<std::pair<int, int>> out(1);
  G.cwiseAbs().maxCoeff(&out[0].first, &out[0].second);
  for (int k = 0; k < 3; ++k) out.emplace_back(int(rng() % G.rows()), int(rng() % G.cols()));
  return out;
}

// Compares a few entries of every weight's gradient (fixed-role weights included) and of the
// input gradient with central finite differences of `loss`, to `tol` relative to the largest
// gradient of that weight, at least 1e-5: the finite differences' rounding noise (a few ulps of
// the loss over the step 2e-5, about 1e-11) must stay below tol times it, which matters for
// weights whose gradient vanishes (the readout's W_IX: softmax errors sum to zero over the
// output units and W_EI is uniform).
void check_against_finite_differences(Problem p, const learning::Gradients<double>& g,
                                      const Loss& loss, double tol) {
  std::mt19937_64 rng(test::seed() + 40);
  int checked = 0;
  for (std::size_t l = 0; l < p.net.layers.size(); ++l) {
    auto& w = p.net.layers[l].w;
    const auto& gl = g.layers[l];
    const double floor = 1e-5;
    for (int k = 0; k < w.count(); ++k) {
      CAPTURE(l);
      CAPTURE(w.name(k));
      const Mat<double>& G = gl.at(k);
      REQUIRE(G.rows() == w.at(k).rows());
      REQUIRE(G.cols() == w.at(k).cols());
      const double scale = std::max(G.cwiseAbs().maxCoeff(), floor);
      for (const auto& [i, j] : entries(G, rng)) {
        const double fd = finite_difference(p, w.at(k), i, j, loss);
        CAPTURE(i);
        CAPTURE(j);
        CAPTURE(fd);
        CAPTURE(G(i, j));
        CHECK(std::abs(fd - G(i, j)) <= tol * scale);
        ++checked;
      }
    }
  }
  REQUIRE(g.input.rows() == p.x.rows());
  const double scale = g.input.cwiseAbs().maxCoeff();
  for (const auto& [i, j] : entries(g.input, rng)) {
    CAPTURE(i);
    CAPTURE(j);
    CHECK(std::abs(finite_difference(p, p.x, i, j, loss) - g.input(i, j)) <= tol * scale);
    ++checked;
  }
  MESSAGE(checked << " entries checked against finite differences");
}

// Every gradient of a and b (and the input gradients) agree to `tol` relative to the largest
// entry of b's gradient of that weight (floor: 1e-6 of the layer's largest W_EX gradient).
void check_same_gradients(const learning::Gradients<double>& a,
                          const learning::Gradients<double>& b, double tol) {
  REQUIRE(a.layers.size() == b.layers.size());
  for (std::size_t l = 0; l < a.layers.size(); ++l) {
    const double floor = 1e-6 * b.layers[l].W_EX.cwiseAbs().maxCoeff();
    for (int k = 0; k < a.layers[l].count(); ++k) {
      CAPTURE(l);
      CAPTURE(b.layers[l].name(k));
      CHECK(test::max_rel_error(a.layers[l].at(k), b.layers[l].at(k), floor) <= tol);
    }
  }
  CHECK(test::max_rel_error(a.input, b.input) <= tol);
}

// Every preset (presets::all()) and the default circuit with one interneuron of each type
// (the pooled instantiation of the solver and the adjoint), each with its problem's seed.
std::vector<std::pair<presets::Case, std::uint64_t>> cases() {
  std::vector<std::pair<presets::Case, std::uint64_t>> out;
  std::uint64_t seed = 100;
  for (const auto& c : presets::all()) out.emplace_back(c, ++seed);
  out.emplace_back(presets::default_pooled_leaky(), ++seed);
  return out;
}

}  // namespace

TEST_CASE("implicit gradients equal central finite differences of the loss on every preset") {
  for (const auto& [c, seed] : cases()) {
    CAPTURE(c.label);
    const Problem p = problem(c, seed);
    const auto g = gradients(p, Rule::implicit);
    check_against_finite_differences(
        p, g,
        [&](const models::Network<double>& net, const Mat<double>& x) {
          return loss_of(net, x, p.labels);
        },
        1e-5);
  }
}

TEST_CASE("the pooled and the dynamic adjoint give the same implicit gradients") {
  // The default circuit with one interneuron of each type, leaky and heterogeneous or with
  // integral control: the compile-time instantiation against the general one.
  models::CircuitParams integral;
  for (const auto& c : {presets::default_pooled_leaky(),
                        presets::Case{"default", "default (pooled, integral control)", integral}}) {
    CAPTURE(c.label);
    const Problem p = problem(c, 150);
    check_same_gradients(gradients(p, Rule::implicit, true), gradients(p, Rule::implicit, false),
                         1e-9);
  }
}

TEST_CASE("BPTT through a long converged trajectory equals the implicit gradient on every preset") {
  for (const auto& [c, seed] : cases()) {
    CAPTURE(c.label);
    const Problem p = problem(c, seed);
    learning::LearningSpec spec;
    spec.rule = Rule::bptt;
    spec.bptt_steps = 8000;  // 4 s: the leaky heterogeneous default circuit settles in ~2 s
    spec.bptt_dt = 0.5;
    learning::Gradients<double> gb;
    gb.input_gradient = true;
    double loss_bptt = 0;
    learning::backward_bptt(p.net, p.x, p.labels, spec, gb, &loss_bptt);

    // The trajectory ends at the equilibrium: the Euler steps from the common initial state,
    // layer by layer on the equilibrium's inputs, land on the fixed point, and the loss is the
    // fixed point's.
    const auto cache = forward(p.net, p.x);
    for (std::size_t l = 0; l < kHidden; ++l) {
      CAPTURE(l);
      const auto& L = p.net.layers[l];
      const auto& pops = L.spec.circuit.populations;
      sim::CircuitState<double> z, d;
      sim::initial_state(L, kSamples, z);
      for (int s = 0; s < spec.bptt_steps; ++s) {
        sim::circuit_rhs(L, cache.layers[l].in, z, d);
        for (std::size_t q = 0; q < pops.size(); ++q) z.z[q] += spec.bptt_dt * d.z[q];
      }
      for (std::size_t q = 0; q < pops.size(); ++q) {
        CAPTURE(pops[q].name);
        CHECK(test::max_rel_error(z.z[q], cache.layers[l].z.z[q], 1.0) <= 1e-9);
      }
    }
    Mat<double> dl;
    CHECK(std::abs(loss_bptt - learning::cross_entropy(cache.logits(), p.labels, kSmoothing, dl)) <=
          1e-10);

    check_same_gradients(gb, gradients(p, Rule::implicit), 1e-4);
  }
}

namespace {

// The loss with every circuit layer's interneurons held at the states `frozen` (the
// equilibrium of the unperturbed network) and only E re-solved, by the test's own equations;
// the readout (W_EX x + b - W_EI W_IX x) written out too.
double frozen_loss(const models::Network<double>& net, const Mat<double>& x,
                   const std::vector<int>& labels,
                   const std::vector<sim::CircuitState<double>>& frozen) {
  Mat<double> a = x;
  for (std::size_t l = 0; l < net.layers.size(); ++l) {
    const auto& L = net.layers[l];
    Mat<double> v;
    if (L.spec.kind == models::LayerKind::circuit) {
      v = presets::solve_E_alone(L, a, frozen[l]);
    } else {
      REQUIRE(L.spec.kind == models::LayerKind::none);
      v = (L.w.W_EX * a).colwise() + L.w.b.col(0);
      v -= L.w["W_EI"] * (L.w["W_IX"] * a);
    }
    a = presets::rate(L.spec.phi, v);
  }
  Mat<double> d;
  return learning::cross_entropy(a, labels, kSmoothing, d);
}

}  // namespace

TEST_CASE("the frozen rule is the gradient with the interneurons held at their equilibrium") {
  for (const auto& [c, seed] : cases()) {
    CAPTURE(c.label);
    const Problem p = problem(c, seed);
    const auto cache = forward(p.net, p.x);
    std::vector<sim::CircuitState<double>> frozen;
    for (const auto& l : cache.layers) frozen.push_back(l.z);
    // Re-solving E alone at the equilibrium's interneuron states returns the equilibrium.
    for (std::size_t l = 0; l < kHidden; ++l) {
      CAPTURE(l);
      CHECK(test::max_rel_error(
                presets::solve_E_alone(p.net.layers[l], cache.layers[l].x(), frozen[l]),
                cache.layers[l].z.v(), 1.0) <= 1e-12);
    }
    const auto g = gradients(p, Rule::frozen);
    check_against_finite_differences(
        p, g,
        [&](const models::Network<double>& net, const Mat<double>& x) {
          return frozen_loss(net, x, p.labels, frozen);
        },
        1e-5);
  }
}

TEST_CASE("on the default circuit, implicit gradients equal LayerNorm's backward pass") {
  // One pooled integrating unit of each type: the circuit computes sqrt(theta) LayerNorm(e)
  // exactly, so its implicit gradients are those of a network of hard-coded LayerNorm layers
  // (ln_epsilon = 0) with the same W_EX, b and readout.
  models::CircuitParams c;
  c.theta = 1.5;
  const Problem p = problem({"default", "default", c}, 400);
  Problem q = p;
  models::LayerSpec ln;
  ln.kind = models::LayerKind::layernorm;
  ln.n_E = kUnits;
  ln.theta = c.theta;
  ln.ln_epsilon = 0.0;
  q.net = models::initialise<double>(
      models::make_network_spec(kInputs, 3, std::vector<models::LayerSpec>(kHidden, ln), 1.0, 1),
      1);
  for (std::size_t l = 0; l < kHidden; ++l) {
    q.net.layers[l].w.W_EX = p.net.layers[l].w.W_EX;
    q.net.layers[l].w.b = p.net.layers[l].w.b;
  }
  q.net.layers.back().w = p.net.layers.back().w;
  // Same function ...
  CHECK(std::abs(loss_of(p.net, p.x, p.labels) - loss_of(q.net, q.x, q.labels)) <= 1e-12);
  // ... same gradients.
  const auto gc = gradients(p, Rule::implicit);
  const auto gl = gradients(q, Rule::implicit);
  for (std::size_t l = 0; l < p.net.layers.size(); ++l) {
    CAPTURE(l);
    CHECK(test::max_rel_error(gc.layers[l].W_EX, gl.layers[l].W_EX) <= 1e-9);
    CHECK(test::max_rel_error(gc.layers[l].b, gl.layers[l].b) <= 1e-9);
  }
  CHECK(test::max_rel_error(gc.input, gl.input) <= 1e-9);
}
