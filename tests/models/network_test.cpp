#include <doctest/doctest.h>

#include "circuits.hpp"

using namespace eisim;

TEST_CASE("Dale's law: every constrained weight is non-negative after initialisation") {
  for (auto kind :
       {models::LayerKind::circuit, models::LayerKind::none, models::LayerKind::layernorm}) {
    for (auto drive : {models::InhibitionDrive::feedback, models::InhibitionDrive::feedforward}) {
      models::LayerSpec t;
      t.kind = kind;
      t.circuit = test::leaky_circuit();
      t.circuit.drive = drive;
      const auto net = test::make_network<double>(50, 30, 2, t);
      CHECK(models::min_dale_weight(net) >= 0.0);
      CHECK(std::isfinite(models::min_dale_weight(net)));
    }
  }
}

TEST_CASE("excitatory weights follow the lognormal scale of the reference study") {
  models::LayerSpec t;
  t.n_E = 283;
  auto spec = models::make_network_spec(784, 10, {t}, 1.0, 1, 0);
  const auto net = models::initialise<double>(spec, 3);
  const auto& W = net.layers[0].w.W_EX;
  const double expected = std::sqrt(2.0 * 283 / (784.0 * 282));
  const double mean = W.mean();
  const double sd = std::sqrt((W.array() - mean).square().mean());
  CHECK(mean == doctest::Approx(expected).epsilon(0.02));
  CHECK(sd == doctest::Approx(expected).epsilon(0.05));
}

TEST_CASE("pooled inhibition has uniform rows with the documented sums") {
  models::LayerSpec t;
  t.circuit.n_I = 2;
  t.circuit.n_D = 1;
  const auto net = test::make_network<double>(10, 20, 1, t);
  const auto& w = net.layers[0].w;
  CHECK((w.W_IE.array() == 1.0 / 20).all());
  CHECK((w.W_EI.rowwise().sum().array() - 1.0).abs().maxCoeff() < 1e-12);
  CHECK((w.W_ED.rowwise().sum().array() - 1.0).abs().maxCoeff() < 1e-12);
  CHECK((w.L_back.rowwise().sum().array() - 1.0).abs().maxCoeff() < 1e-12);
  CHECK(w.L_back.minCoeff() > 0.0);
}

TEST_CASE("clamp_dale projects negative constrained weights to zero and leaves the bias alone") {
  models::LayerSpec t;
  auto net = test::make_network<double>(10, 20, 1, t);
  net.layers[0].w.W_EX(0, 0) = -1.0;
  net.layers[0].w.b(0, 0) = -1.0;
  models::clamp_dale(net);
  CHECK(net.layers[0].w.W_EX(0, 0) == 0.0);
  CHECK(net.layers[0].w.b(0, 0) == -1.0);
  CHECK(models::min_dale_weight(net) >= 0.0);
}
