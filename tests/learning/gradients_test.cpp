#include "eisim/learning/gradients.hpp"

#include <doctest/doctest.h>

#include <cmath>

#include "circuits.hpp"
#include "eisim/models/error.hpp"

using namespace eisim;
using learning::Rule;
using test::circuit_template;

namespace {

sim::FixedPointParameters tight() {
  sim::FixedPointParameters fp;
  fp.tol = {1e-14, 1e-14};
  fp.max_iterations = 200;
  return fp;
}

struct Problem {
  models::Network<double> net;
  Mat<double> x;
  std::vector<int> labels;
};

Problem make_problem(const models::LayerSpec& tmpl, int hidden, std::uint64_t seed) {
  Problem p{test::make_network<double>(12, 20, hidden, tmpl, seed), {}, {}};
  std::mt19937_64 rng(seed + 1);
  p.x = test::random_matrix<double>(12, 4, 0.0, 1.0, rng);
  p.labels = {0, 2, 1, 2};
  return p;
}

double loss_of(const models::Network<double>& net, const Mat<double>& x,
               const std::vector<int>& labels) {
  sim::ForwardCache<double> cache;
  sim::forward(net, x, tight(), cache);
  for (const auto& l : cache.layers)
    if (l.solve.sample_status.size() > 0) REQUIRE(l.solve.ok());
  Mat<double> d;
  return learning::cross_entropy(cache.logits(), labels, 0.1, d);
}

// Gradients including dL/dx. fast = false forces the dynamic-size instantiation of the solvers
// for circuits with one interneuron of each type, in the forward solve and in the adjoint.
// keep: the forward pass keeps the solver's last evaluations for the adjoint, as training does
// (sim::Linearisation); false: the adjoint evaluates every sample afresh.
learning::Gradients<double> gradients(const Problem& p, Rule rule,
                                      learning::ErrorTransform t = learning::ErrorTransform::none,
                                      bool fast = true, bool keep = true,
                                      sim::StabilityCheck check = sim::StabilityCheck::integrate) {
  sim::ForwardCache<double> cache;
  auto fp = tight();
  fp.pooled_fast_path = fast;
  fp.keep_linearisation = keep;
  fp.stability = check;
  sim::forward(p.net, p.x, fp, cache);
  Mat<double> d;
  learning::cross_entropy(cache.logits(), p.labels, 0.1, d);
  learning::LearningSpec spec;
  spec.rule = rule;
  spec.error_transform = t;
  spec.pooled_fast_path = fast;
  learning::Gradients<double> g;
  g.input_gradient = true;
  learning::backward(p.net, cache, d, spec, g);
  return g;
}

// Compares every trainable-or-not parameter's gradient (a few entries each) with central
// finite differences of the loss, and the input gradient too.
void check_against_finite_differences(Problem p, double tol) {
  const auto g = gradients(p, Rule::implicit);
  CHECK(g.adjoint.ok());
  std::mt19937_64 rng(test::seed() + 40);
  int checked = 0;
  for (std::size_t l = 0; l < p.net.layers.size(); ++l) {
    std::vector<std::string> names;
    p.net.layers[l].w.for_each([&](const std::string& n, const Mat<double>&) {
      if (n != "L_pool" && n != "L_back") names.push_back(n);
    });
    for (const auto& name : names) {
      CAPTURE(l);
      CAPTURE(name);
      Mat<double>& W = p.net.layers[l].w[name];
      const Mat<double>& G = g.layers[l][name];
      const double scale = std::max(G.cwiseAbs().maxCoeff(), 1e-8);
      for (int k = 0; k < 6; ++k) {
        const int i = int(rng() % W.rows()), j = int(rng() % W.cols());
        const double w0 = W(i, j), h = 1e-5 * std::max(1.0, std::abs(w0));
        W(i, j) = w0 + h;
        const double lp = loss_of(p.net, p.x, p.labels);
        W(i, j) = w0 - h;
        const double lm = loss_of(p.net, p.x, p.labels);
        W(i, j) = w0;
        const double fd = (lp - lm) / (2 * h);
        CAPTURE(fd);
        CAPTURE(G(i, j));
        CHECK(std::abs(fd - G(i, j)) <= tol * scale);
        ++checked;
      }
    }
  }
  // The error passed to the input.
  const double scale = g.input.cwiseAbs().maxCoeff();
  for (int k = 0; k < 6; ++k) {
    const int i = int(rng() % p.x.rows()), j = int(rng() % p.x.cols());
    const double x0 = p.x(i, j), h = 1e-5;
    p.x(i, j) = x0 + h;
    const double lp = loss_of(p.net, p.x, p.labels);
    p.x(i, j) = x0 - h;
    const double lm = loss_of(p.net, p.x, p.labels);
    p.x(i, j) = x0;
    CHECK(std::abs((lp - lm) / (2 * h) - g.input(i, j)) <= tol * scale);
  }
  MESSAGE(checked << " parameter entries checked");
}

}  // namespace

TEST_CASE("implicit gradients equal central finite differences on the default circuit") {
  check_against_finite_differences(make_problem(circuit_template(test::default_circuit()), 2, 11),
                                   1e-5);
}

TEST_CASE("the adjoint from the solver's kept evaluations equals the adjoint evaluated afresh") {
  // Pooled circuits keep them (stride > 0), and so does the heterogeneous one (the dynamic-size
  // solver, E eliminated: with the stability check its reduced Jacobian too).
  struct Case {
    const char* name;
    models::LayerSpec tmpl;
    bool kept;
  };
  for (const Case& c : {Case{"default", circuit_template(test::default_circuit()), true},
                        Case{"leaky pooled", circuit_template(test::leaky_pooled_circuit()), true},
                        Case{"leaky het.", circuit_template(test::leaky_circuit()), true}}) {
    CAPTURE(c.name);
    const Problem p = make_problem(c.tmpl, 2, 31);
    sim::ForwardCache<double> cache;
    auto fp = tight();
    fp.keep_linearisation = true;
    sim::forward(p.net, p.x, fp, cache);
    CHECK((cache.layers[0].lin.stride > 0) == c.kept);
    const auto afresh = gradients(p, Rule::implicit, learning::ErrorTransform::none, true, false);
    // With the stability check the kept evaluation includes the Jacobian (from the check's
    // blocks); without it the adjoint forms the Jacobian from the kept partials.
    for (auto check : {sim::StabilityCheck::integrate, sim::StabilityCheck::off}) {
      CAPTURE(int(check));
      const auto kept =
          gradients(p, Rule::implicit, learning::ErrorTransform::none, true, true, check);
      REQUIRE(kept.adjoint.ok());
      for (std::size_t l = 0; l < p.net.layers.size(); ++l)
        p.net.layers[l].w.for_each([&](const std::string& n, const Mat<double>&) {
          CAPTURE(l);
          CAPTURE(n);
          const Mat<double>& a = kept.layers[l][n];
          const Mat<double>& b = afresh.layers[l][n];
          // The same linearisation up to rounding (log r stored as r and read back, sums in
          // another order).
          CHECK((a - b).cwiseAbs().maxCoeff() <= 1e-12 * std::max(b.cwiseAbs().maxCoeff(), 1e-30));
        });
    }
  }
}

TEST_CASE("a sample whose stored equilibrium changed after the solve is evaluated afresh") {
  // As when the stability policy re-integrates a sample: the kept evaluation no longer matches
  // the stored state, and the adjoint must linearise at the stored one. With the stability
  // check the kept evaluation includes the Jacobian; without it, not (and the heterogeneous
  // circuit, on the dynamic-size solver, keeps nothing then).
  for (const bool het : {false, true})
    for (auto check : {sim::StabilityCheck::integrate, sim::StabilityCheck::off}) {
      if (het && check == sim::StabilityCheck::off) continue;
      CAPTURE(het);
      CAPTURE(int(check));
      const Problem p = make_problem(
          circuit_template(het ? test::leaky_circuit() : test::default_circuit()), 1, 33);
      auto fp = tight();
      fp.keep_linearisation = true;
      fp.stability = check;
      sim::ForwardCache<double> cache;
      sim::forward(p.net, p.x, fp, cache);
      auto& c = cache.layers[0];
      REQUIRE(c.lin.stride > 0);
      // Move sample 2's interneurons (a state that is not the equilibrium, but a valid point).
      const int I = test::population(p.net.layers[0], "I");
      c.z.z[I](0, 2) += 0.1;
      const models::Layer<double>& L = p.net.layers[0];
      // A generic error (a uniform one is degenerate here: integral control pins the mean of v).
      std::mt19937_64 rng(test::seed() + 34);
      const Mat<double> g_v =
          test::random_matrix<double>(L.spec.n_E, int(p.x.cols()), -1.0, 1.0, rng);
      sim::CircuitTerms<double> t;
      sim::evaluate(L, c.in, c.z, t, true);
      sim::AdjointParameters with, without;
      with.saved = &c.lin;
      std::vector<Mat<double>> w_with, w_without;
      REQUIRE(sim::solve_adjoint(L, c.in, c.z, t, g_v, with, w_with).ok());
      REQUIRE(sim::solve_adjoint(L, c.in, c.z, t, g_v, without, w_without).ok());
      for (std::size_t q = 0; q < w_with.size(); ++q) {
        CAPTURE(q);
        const double scale = std::max(w_without[q].cwiseAbs().maxCoeff(), 1e-30);
        CHECK((w_with[q] - w_without[q]).cwiseAbs().maxCoeff() <= 1e-12 * scale);
      }
      // And the kept evaluation is really used elsewhere: perturb it for sample 0 and the
      // cotangents of sample 0 change (the test above cannot pass by never restoring).
      sim::Linearisation wrong = c.lin;
      // I and D: the core states come first, E's potential after them.
      const int n_core = int(c.z.z[I].rows() + c.z.z[test::population(L, "D")].rows());
      wrong.data[n_core] += 1.0;
      std::vector<Mat<double>> w_wrong;
      with.saved = &wrong;
      sim::solve_adjoint(L, c.in, c.z, t, g_v, with, w_wrong);
      CHECK((w_wrong[0].col(0) - w_without[0].col(0)).cwiseAbs().maxCoeff() > 1e-6);
      CHECK((w_wrong[0].col(1) - w_without[0].col(1)).cwiseAbs().maxCoeff() <= 1e-12);
      if (check == sim::StabilityCheck::off) continue;
      // The stability check ran, so the kept evaluation ends with the adjoint's n x n matrix: a
      // wrong entry there (its first) changes sample 0's cotangents too.
      wrong = c.lin;
      wrong.data[std::size_t(c.lin.stride - n_core * n_core)] += 1.0;
      sim::solve_adjoint(L, c.in, c.z, t, g_v, with, w_wrong);
      CHECK((w_wrong[0].col(0) - w_without[0].col(0)).cwiseAbs().maxCoeff() > 1e-6);
      CHECK((w_wrong[0].col(1) - w_without[0].col(1)).cwiseAbs().maxCoeff() <= 1e-12);
    }
}

TEST_CASE("the solver keeps no evaluation of a sample that did not converge") {
  // Newton without iterations, continuation or fallback: samples not converged at the start
  // get a NaN state in the kept data, which the adjoint refuses.
  const Problem p = make_problem(circuit_template(test::default_circuit()), 1, 35);
  auto fp = tight();
  fp.keep_linearisation = true;
  fp.max_iterations = 0;
  fp.continuation = false;
  fp.ode_fallback = false;
  fp.stability = sim::StabilityCheck::off;
  sim::ForwardCache<double> cache;
  sim::forward(p.net, p.x, fp, cache);
  const auto& c = cache.layers[0];
  REQUIRE(c.lin.stride > 0);
  int refused = 0;
  for (int j = 0; j < int(p.x.cols()); ++j) {
    const bool converged = c.solve.sample_status[j] == sim::SolverStatus::converged;
    CHECK(std::isnan(c.lin.data[std::size_t(j) * std::size_t(c.lin.stride)]) == !converged);
    refused += !converged;
  }
  CHECK(refused > 0);
}

TEST_CASE("implicit gradients equal central finite differences on a leaky heterogeneous circuit") {
  check_against_finite_differences(make_problem(circuit_template(test::leaky_circuit()), 2, 12),
                                   1e-5);
}

TEST_CASE("implicit gradients equal central finite differences on a leaky pooled circuit") {
  // One interneuron of each type with leak: the pooled adjoint instantiation with every term
  // non-zero.
  check_against_finite_differences(
      make_problem(circuit_template(test::leaky_pooled_circuit()), 2, 19), 1e-5);
}

TEST_CASE(
    "the pooled (fixed-size) adjoint for one interneuron of each type gives the dynamic "
    "instantiation's gradients") {
  for (const auto& [name, c] : {std::pair{"default", test::default_circuit()},
                                std::pair{"leaky pooled", test::leaky_pooled_circuit()}}) {
    for (const bool clamped : {false, true}) {
      CAPTURE(name);
      CAPTURE(clamped);
      Problem p = make_problem(circuit_template(c), 2, 20);
      // A strongly negative bias on half the units silences the first layer's subtractive
      // interneuron (r_I = 0) while the other half stay active, so errors still flow.
      if (clamped)
        for (int i = 0; i < p.net.layers[0].w.b.rows(); i += 2) p.net.layers[0].w.b(i, 0) = -50.0;
      const auto fast = gradients(p, Rule::implicit);
      const auto general = gradients(p, Rule::implicit, learning::ErrorTransform::none, false);
      CHECK(fast.adjoint.ok());
      CHECK(general.adjoint.ok());
      if (clamped) {
        sim::ForwardCache<double> cache;
        sim::forward(p.net, p.x, tight(), cache);
        CHECK(cache.layers[0].z.z[test::population(p.net.layers[0], "I")].maxCoeff() == 0.0);
      }
      for (std::size_t l = 0; l < p.net.layers.size(); ++l) {
        auto& a = const_cast<models::LayerWeights<double>&>(fast.layers[l]);
        auto& b = const_cast<models::LayerWeights<double>&>(general.layers[l]);
        // Floor: the layer's largest gradient. The readout's inhibitory gradients vanish
        // exactly (softmax errors sum to 0) and are left with rounding noise of about 1e-16.
        const double floor = b.W_EX.cwiseAbs().maxCoeff();
        REQUIRE(floor > 0.0);
        a.for_each([&](const std::string& n, Mat<double>& ga) {
          if (n == "L_pool" || n == "L_back") return;
          CAPTURE(l);
          CAPTURE(n);
          CHECK(test::max_rel_error(ga, b[n], floor) < 1e-9);
        });
      }
      CHECK(test::max_rel_error(fast.input, general.input) < 1e-9);
    }
  }
}

TEST_CASE("the input gradient is computed only when asked for") {
  const Problem p = make_problem(circuit_template(test::default_circuit()), 1, 21);
  sim::ForwardCache<double> cache;
  sim::forward(p.net, p.x, tight(), cache);
  Mat<double> d;
  learning::cross_entropy(cache.logits(), p.labels, 0.1, d);
  learning::Gradients<double> g;
  learning::backward(p.net, cache, d, learning::LearningSpec{}, g);
  CHECK(g.input.size() == 0);
  const auto with = gradients(p, Rule::implicit);
  CHECK(with.input.rows() == p.x.rows());
  CHECK(with.input.cols() == p.x.cols());
  // The weight gradients do not depend on the choice.
  CHECK(test::max_rel_error(g.layers[0].W_EX, with.layers[0].W_EX) == 0.0);
}

TEST_CASE("exact gradients of the feed-forward circuit equal central finite differences") {
  auto c = test::default_circuit();
  c.n_I = 2;
  check_against_finite_differences(make_problem(circuit_template(c, "inorm"), 2, 13), 1e-5);
}

TEST_CASE("implicit gradients equal BPTT through a long converged trajectory") {
  for (const auto& [name, c] :
       {std::pair{"default", test::default_circuit()}, std::pair{"leaky", test::leaky_circuit()}}) {
    CAPTURE(name);
    const Problem p = make_problem(circuit_template(c), 2, 14);
    const auto gi = gradients(p, Rule::implicit);
    learning::LearningSpec spec;
    spec.rule = Rule::bptt;
    spec.bptt_steps = 6000;
    spec.bptt_dt = 0.5;
    learning::Gradients<double> gb;
    gb.input_gradient = true;
    learning::backward_bptt(p.net, p.x, p.labels, spec, gb);
    for (std::size_t l = 0; l < p.net.layers.size(); ++l) {
      auto& a = const_cast<models::LayerWeights<double>&>(gi.layers[l]);
      auto& b = gb.layers[l];
      a.for_each([&](const std::string& n, Mat<double>& ga) {
        if (n == "L_pool" || n == "L_back") return;
        CAPTURE(l);
        CAPTURE(n);
        // Floor: the readout's inhibitory gradients vanish exactly (softmax errors sum to 0).
        CHECK(test::max_rel_error(b[n], ga, 1e-8) <= 1e-4);
      });
    }
    CHECK(test::max_rel_error(gb.input, gi.input) <= 1e-4);
  }
}

TEST_CASE(
    "on the default circuit, implicit equals LayerNorm's backward and frozen divides by the "
    "spread") {
  auto c = test::default_circuit();
  c.theta = 1.5;
  Problem p = make_problem(circuit_template(c), 2, 15);
  Problem q = p;  // the same weights with hard-coded LayerNorm layers
  for (std::size_t l = 0; l + 1 < q.net.layers.size(); ++l) {
    q.net.layers[l].spec.kind = models::LayerKind::layernorm;
    q.net.layers[l].spec.ln_epsilon = 0.0;
  }
  const auto gi = gradients(p, Rule::implicit);
  const auto gl = gradients(q, Rule::implicit);
  for (std::size_t l = 0; l < p.net.layers.size(); ++l) {
    CAPTURE(l);
    CHECK(test::max_rel_error(gi.layers[l].W_EX, gl.layers[l].W_EX) <= 1e-6);
    CHECK(test::max_rel_error(gi.layers[l].b, gl.layers[l].b) <= 1e-6);
  }
  CHECK(test::max_rel_error(gi.input, gl.input) <= 1e-6);

  // Frozen: dL/de = g_v * sqrt(theta) / sd(e) in the top hidden layer (same upstream error).
  const auto gf = gradients(p, Rule::frozen);
  sim::ForwardCache<double> cache;
  sim::forward(p.net, p.x, tight(), cache);
  Mat<double> dlogits;
  learning::cross_entropy(cache.logits(), p.labels, 0.1, dlogits);
  const auto& ro = p.net.layers.back().w;
  const auto& top = cache.layers[1];
  const Mat<double> g_r = (ro.W_EX - ro["W_EI"] * ro["W_IX"]).transpose() * dlogits;
  const Mat<double> g_v = g_r.cwiseProduct((top.z.v().array() > 0).cast<double>().matrix());
  Mat<double> delta_e(g_v.rows(), g_v.cols());
  for (int j = 0; j < g_v.cols(); ++j) {
    const double mu = top.e().col(j).mean();
    const double sd = std::sqrt((top.e().col(j).array() - mu).square().mean());
    delta_e.col(j) = g_v.col(j) * std::sqrt(c.theta) / sd;
  }
  CHECK(test::max_rel_error(gf.layers[1].W_EX, Mat<double>(delta_e * top.x().transpose())) <= 1e-6);
  CHECK(test::max_rel_error(gf.layers[1].b, Mat<double>(delta_e.rowwise().sum())) <= 1e-6);
}

TEST_CASE("each error transform matches its formula, and the frozen rule divides it by the gain") {
  auto c = test::leaky_circuit();
  const Problem p = make_problem(circuit_template(c), 1, 16);
  sim::ForwardCache<double> cache;
  sim::forward(p.net, p.x, tight(), cache);
  const auto& layer = p.net.layers[0];
  const auto& lc = cache.layers[0];
  using T = learning::ErrorTransform;
  // y = LayerNorm(v), computed here.
  Mat<double> y = lc.z.v().rowwise() - lc.z.v().colwise().mean();
  for (int j = 0; j < 4; ++j) y.col(j) /= std::sqrt(y.col(j).squaredNorm() / 20);
  const Mat<double> L = layer.w["L_back"] * layer.w["L_pool"];
  CHECK((L.rowwise().sum().array() - 1.0).abs().maxCoeff() < 1e-12);
  CHECK(L.minCoeff() > 0.0);
  // Each transform written out independently.
  auto formula = [&](T t, const Mat<double>& g) {
    const Mat<double> centred = g.rowwise() - g.colwise().mean();
    Mat<double> out = g;
    for (int j = 0; j < 4; ++j) {
      const double proj = g.col(j).dot(y.col(j)) / 20;
      if (t == T::center) out.col(j) = centred.col(j);
      if (t == T::decorrelate) out.col(j) = g.col(j) - y.col(j) * proj;
      if (t == T::full) out.col(j) = centred.col(j) - y.col(j) * proj;
    }
    if (t == T::lateral) out = g - L * g;
    return out;
  };

  std::mt19937_64 rng(test::seed() + 50);
  const Mat<double> g_v = test::random_matrix<double>(20, 4, -1.0, 1.0, rng);
  for (T t : {T::none, T::center, T::decorrelate, T::full, T::lateral}) {
    CAPTURE(learning::to_string(t));
    const Mat<double> d = learning::transform_error<double>(t, layer, lc.z.v(), g_v);
    CHECK(test::max_rel_error(d, formula(t, g_v)) < 1e-12);
    // decorrelate removes the projection of the error on y.
    if (t == T::decorrelate)
      for (int j = 0; j < 4; ++j) CHECK(std::abs(d.col(j).dot(y.col(j))) < 1e-10);
  }
  // A constant error is removed exactly by lateral pooling whose weights sum to 1.
  const Mat<double> d_const =
      learning::transform_error<double>(T::lateral, layer, lc.z.v(), Mat<double>::Ones(20, 4));
  CHECK(d_const.cwiseAbs().maxCoeff() < 1e-12);

  // The frozen rule's dL/de = T(g_v) / g, with g the shunting gain at the equilibrium (scale:
  // g_v sqrt(theta) / sd(e)), read from dL/dW_EX = dL/de x^T (x has full column rank).
  Mat<double> gain = layer.w["W_ED"] * lc.z.z[test::population(layer, "D")];
  gain.array() += c.sigma0;
  Mat<double> dlogits;
  learning::cross_entropy(cache.logits(), p.labels, 0.1, dlogits);
  const auto& ro = p.net.layers.back().w;
  const Mat<double> g_r = (ro.W_EX - ro["W_EI"] * ro["W_IX"]).transpose() * dlogits;
  const Mat<double> g_up = g_r.cwiseProduct((lc.z.v().array() > 0).cast<double>().matrix());
  for (T t : {T::none, T::center, T::decorrelate, T::full, T::lateral, T::scale}) {
    CAPTURE(learning::to_string(t));
    Mat<double> delta_e;
    if (t == T::scale) {
      delta_e.resize(20, 4);
      for (int j = 0; j < 4; ++j) {
        const double mu = lc.e().col(j).mean();
        const double sd = std::sqrt((lc.e().col(j).array() - mu).square().mean());
        delta_e.col(j) = g_up.col(j) * std::sqrt(c.theta) / sd;
      }
    } else {
      delta_e = formula(t, g_up).cwiseQuotient(gain);
    }
    const auto g = gradients(p, Rule::frozen, t);
    CHECK(test::max_rel_error(g.layers[0].W_EX, Mat<double>(delta_e * p.x.transpose())) < 1e-12);
    CHECK(test::max_rel_error(g.layers[0].b, Mat<double>(delta_e.rowwise().sum())) < 1e-12);
  }
}

TEST_CASE("a singular adjoint system is an error, not zero gradients") {
  // Several identical integrating interneurons make the Jacobian singular (science.md).
  auto c = test::default_circuit();
  c.n_I = 3;
  const Problem p = make_problem(circuit_template(c), 1, 17);
  sim::ForwardCache<double> cache;
  sim::forward(p.net, p.x, tight(), cache);
  Mat<double> d;
  learning::cross_entropy(cache.logits(), p.labels, 0.1, d);
  learning::Gradients<double> g;
  CHECK_THROWS_WITH_AS(learning::backward(p.net, cache, d, learning::LearningSpec{}, g),
                       doctest::Contains("adjoint solve failed"), eisim::numerical_error);
}

TEST_CASE("the feed-forward circuit's local homeostatic loss gradient equals finite differences") {
  auto c = test::default_circuit();
  c.n_I = 2;
  c.theta = 1.3;  // so that the variance term is not zero at initialisation
  Problem p = make_problem(circuit_template(c, "inorm"), 1, 18);
  // Perturb the inhibitory input weights away from the exact-LayerNorm initialisation.
  std::mt19937_64 rng(test::seed() + 70);
  p.net.layers[0].w["W_IX"].array() *= test::random_matrix<double>(2, 12, 0.5, 1.5, rng).array();
  p.net.layers[0].w["U"].array() *= test::random_matrix<double>(20, 12, 0.5, 1.5, rng).array();
  auto local_loss = [&](const models::Network<double>& net) {
    sim::ForwardCache<double> cache;
    sim::forward(net, p.x, tight(), cache);
    learning::Gradients<double> g;
    g.zero_like(net);
    return learning::local_homeostatic_gradients(net, cache, 0.01, g);
  };
  sim::ForwardCache<double> cache;
  sim::forward(p.net, p.x, tight(), cache);
  learning::Gradients<double> g;
  g.zero_like(p.net);
  const double l0 = learning::local_homeostatic_gradients(p.net, cache, 0.01, g);
  CHECK(l0 > 0.0);
  for (const char* name : {"W_IX", "U"}) {
    CAPTURE(name);
    Mat<double>& W = p.net.layers[0].w[name];
    const Mat<double>& G = g.layers[0][name];
    const double scale = G.cwiseAbs().maxCoeff();
    REQUIRE(scale > 0.0);
    for (int k = 0; k < 8; ++k) {
      const int i = int(rng() % W.rows()), j = int(rng() % W.cols());
      const double w0 = W(i, j), h = 1e-6;
      W(i, j) = w0 + h;
      const double lp = local_loss(p.net);
      W(i, j) = w0 - h;
      const double lm = local_loss(p.net);
      W(i, j) = w0;
      CHECK(std::abs((lp - lm) / (2 * h) - G(i, j)) <= 1e-5 * scale);
    }
  }
}
