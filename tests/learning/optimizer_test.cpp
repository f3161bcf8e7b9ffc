#include "eisim/learning/optimizer.hpp"

#include <doctest/doctest.h>

#include "circuits.hpp"

using namespace eisim;

TEST_CASE("Dale's law holds after every optimiser step, even with a large learning rate") {
  for (auto kind : {models::LayerKind::circuit, models::LayerKind::none}) {
    models::LayerSpec t = test::circuit_template(test::default_circuit());
    t.kind = kind;
    auto net = test::make_network<double>(12, 16, 2, t, 21);
    std::mt19937_64 rng(test::seed() + 60);
    const Mat<double> x = test::random_matrix<double>(12, 8, 0.0, 1.0, rng);
    const std::vector<int> y{0, 1, 2, 0, 1, 2, 0, 1};
    learning::LearningSpec spec;
    spec.lr_E = 5.0;
    spec.lr_I = 5.0;
    spec.momentum = 0.9;
    learning::Sgd<double> sgd(spec);
    int negatives_before_clamp = 0;
    for (int step = 0; step < 10; ++step) {
      sim::ForwardCache<double> cache;
      sim::forward(net, x, sim::FixedPointParameters{}, cache);
      Mat<double> d;
      learning::cross_entropy(cache.logits(), y, 0.1, d);
      learning::Gradients<double> g;
      learning::backward(net, cache, d, spec, g);
      // A plain gradient step would make some weight negative...
      const Mat<double> plain = net.layers[0].w.W_EX - spec.lr_E * g.layers[0].W_EX;
      if (plain.minCoeff() < 0) ++negatives_before_clamp;
      sgd.step(net, g);
      // ...the optimiser's projection keeps every constrained weight >= 0.
      CHECK(models::min_dale_weight(net) >= 0.0);
    }
    CHECK(negatives_before_clamp > 0);  // the check above could have failed
  }
}

TEST_CASE("SGD with momentum follows its recurrence on the trained weights only") {
  const models::LayerSpec t = test::circuit_template(test::default_circuit());
  auto net = test::make_network<double>(4, 5, 1, t, 22);
  const auto before = net;
  learning::Gradients<double> g;
  g.zero_like(net);
  g.layers[0].W_EX.setConstant(-0.5);    // negative gradient: weights grow, no clamping
  g.layers[0]["W_IE"].setConstant(1.0);  // feedback pooling weights are not trained
  learning::LearningSpec spec;
  spec.lr_E = 0.1;
  spec.momentum = 0.5;
  learning::Sgd<double> sgd(spec);
  sgd.step(net, g);
  sgd.step(net, g);
  // v1 = g, v2 = 0.5 g + g; w2 = w0 - lr (v1 + v2) = w0 + 0.1 * 0.5 * 2.5
  CHECK((net.layers[0].w.W_EX - before.layers[0].w.W_EX).cwiseAbs().maxCoeff() ==
        doctest::Approx(0.125));
  CHECK((net.layers[0].w["W_IE"] - before.layers[0].w["W_IE"]).cwiseAbs().maxCoeff() == 0.0);
}

TEST_CASE("SGD without momentum is one projected step w <- max(w - lr (g + wd w), 0)") {
  const models::LayerSpec t = test::circuit_template(test::default_circuit());
  for (const double wd : {0.0, 0.1}) {
    CAPTURE(wd);
    auto net = test::make_network<double>(4, 5, 1, t, 23);
    const auto before = net;
    learning::Gradients<double> g;
    g.zero_like(net);
    std::mt19937_64 rng(test::seed() + 61);
    for (auto& layer : g.layers) {
      layer.W_EX = test::random_matrix<double>(int(layer.W_EX.rows()), int(layer.W_EX.cols()), -4.0,
                                               4.0, rng);
      layer.b.setConstant(0.25);
    }
    learning::LearningSpec spec;
    spec.lr_E = 0.5;
    spec.weight_decay = wd;
    learning::Sgd<double> sgd(spec);
    sgd.step(net, g);
    for (std::size_t l = 0; l < net.layers.size(); ++l) {
      const auto& w0 = before.layers[l].w;
      const Mat<double> expected =
          (w0.W_EX - spec.lr_E * (g.layers[l].W_EX + wd * w0.W_EX)).cwiseMax(0.0);
      CHECK(test::max_rel_error(net.layers[l].w.W_EX, expected) < 1e-15);
      // Biases are not Dale-constrained and have no decay.
      CHECK(test::max_rel_error(net.layers[l].w.b, Mat<double>(w0.b.array() - 0.125)) < 1e-15);
    }
    CHECK(net.layers[0].w.W_EX.minCoeff() == 0.0);  // the projection was active
  }
}

TEST_CASE("an optimiser given another network trains that network's own parameters") {
  // The step plans the trained entries per network: a circuit network has no trained W_IX in
  // its hidden layers, a plain E/I (`none`) network does.
  const models::LayerSpec circuit = test::circuit_template(test::default_circuit());
  models::LayerSpec plain = circuit;
  plain.kind = models::LayerKind::none;
  auto a = test::make_network<double>(4, 5, 1, circuit, 24);
  auto b = test::make_network<double>(4, 5, 1, plain, 25);
  learning::LearningSpec spec;
  spec.lr_I = 0.1;
  learning::Sgd<double> sgd(spec);
  learning::Gradients<double> ga, gb;
  ga.zero_like(a);
  gb.zero_like(b);
  sgd.step(a, ga);
  gb.layers[0]["W_IX"].setConstant(-1.0);
  const Mat<double> before = b.layers[0].w["W_IX"];
  sgd.step(b, gb);
  CHECK((b.layers[0].w["W_IX"] - before).cwiseAbs().minCoeff() == doctest::Approx(0.1));
}
