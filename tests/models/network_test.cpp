#include <doctest/doctest.h>

#include <cmath>

#include "circuits.hpp"

using namespace eisim;

TEST_CASE("Dale's law: every constrained weight is non-negative after initialisation") {
  for (auto kind :
       {models::LayerKind::circuit, models::LayerKind::none, models::LayerKind::layernorm}) {
    for (const char* preset : {"default", "inorm"}) {
      CAPTURE(preset);
      models::LayerSpec t = test::circuit_template(test::leaky_circuit(), preset);
      t.kind = kind;
      const auto net = test::make_network<double>(50, 30, 2, t);
      CHECK(models::min_dale_weight(net) >= 0.0);
      CHECK(std::isfinite(models::min_dale_weight(net)));
    }
  }
}

TEST_CASE("excitatory weights follow the lognormal scale of the reference study") {
  models::LayerSpec t = test::circuit_template(test::default_circuit(), "default", 283);
  auto spec = models::make_network_spec(784, 10, {t}, 1.0, 1);
  const auto net = models::initialise<double>(spec, 3);
  const auto& W = net.layers[0].w.W_EX;
  const double expected = std::sqrt(2.0 * 283 / (784.0 * 282));
  const double mean = W.mean();
  const double sd = std::sqrt((W.array() - mean).square().mean());
  CHECK(mean == doctest::Approx(expected).epsilon(0.02));
  CHECK(sd == doctest::Approx(expected).epsilon(0.05));
}

TEST_CASE("pooled inhibition has uniform rows with the documented sums") {
  auto c = test::default_circuit();
  c.n_I = 2;
  c.n_D = 1;
  const auto net = test::make_network<double>(10, 20, 1, test::circuit_template(c));
  const auto& w = net.layers[0].w;
  CHECK((w["W_IE"].array() == 1.0 / 20).all());
  CHECK((w["W_EI"].rowwise().sum().array() - 1.0).abs().maxCoeff() < 1e-12);
  CHECK((w["W_ED"].rowwise().sum().array() - 1.0).abs().maxCoeff() < 1e-12);
  CHECK((w["L_back"].rowwise().sum().array() - 1.0).abs().maxCoeff() < 1e-12);
  CHECK(w["L_back"].minCoeff() > 0.0);
}

TEST_CASE("clamp_dale projects negative constrained weights to zero and leaves the bias alone") {
  auto net = test::make_network<double>(10, 20, 1, test::circuit_template(test::default_circuit()));
  net.layers[0].w.W_EX(0, 0) = -1.0;
  net.layers[0].w.b(0, 0) = -1.0;
  models::clamp_dale(net);
  CHECK(net.layers[0].w.W_EX(0, 0) == 0.0);
  CHECK(net.layers[0].w.b(0, 0) == -1.0);
  CHECK(models::min_dale_weight(net) >= 0.0);
}
