// The preset circuits (../shared/circuits.md) reach equilibria that satisfy their equations,
// that the ODE reaches too, and that show the motifs' published behaviour.
#include "presets.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <random>

#include "eisim/models/circuit.hpp"
#include "eisim/sim/solver.hpp"

using namespace eisim;
namespace presets = test::presets;

namespace {

constexpr int kInputs = 12, kUnits = 20, kSamples = 4;

Mat<double> inputs(std::uint64_t salt) {
  std::mt19937_64 rng(test::seed() + salt);
  return test::random_matrix<double>(kInputs, kSamples, 0.0, 1.0, rng);
}

sim::CircuitInput<double> input_of(const models::Layer<double>& L, const Mat<double>& x) {
  sim::CircuitInput<double> in;
  sim::circuit_input(L, x, in);
  return in;
}

sim::FixedPointParameters fixed_point(double tol, bool pooled_fast_path = true) {
  sim::FixedPointParameters fp;
  fp.tol = {tol, tol};
  fp.max_iterations = 100;
  fp.pooled_fast_path = pooled_fast_path;
  return fp;
}

// The fixed-point solver's equilibrium from the common initial state; it must converge.
sim::CircuitState<double> equilibrium(const models::Layer<double>& L, const Mat<double>& x,
                                      double tol = 1e-12, bool pooled_fast_path = true) {
  sim::CircuitState<double> z;
  sim::initial_state(L, int(x.cols()), z);
  const sim::SolveResult res =
      sim::solve_fixed_point(L, input_of(L, x), fixed_point(tol, pooled_fast_path), z);
  INFO(res.describe());
  REQUIRE(res.ok());
  return z;
}

// The ODE's equilibrium from the common initial state; it must converge.
sim::CircuitState<double> ode_equilibrium(const models::Layer<double>& L, const Mat<double>& x) {
  sim::OdeParameters op;
  op.tol = {1e-11, 1e-11};
  op.stepper_abs_tol = 1e-12;
  op.stepper_rel_tol = 1e-12;
  sim::CircuitState<double> z;
  sim::initial_state(L, int(x.cols()), z);
  const sim::SolveResult res = sim::integrate(L, input_of(L, x), op, z);
  INFO(res.describe());
  REQUIRE(res.ok());
  return z;
}

// max |a - b| over every population, relative to the largest |b| (at least 1).
double state_distance(const sim::CircuitState<double>& a, const sim::CircuitState<double>& b) {
  double d = 0, scale = 1;
  for (std::size_t p = 0; p < b.z.size(); ++p) {
    d = std::max(d, (a.z[p] - b.z[p]).cwiseAbs().maxCoeff());
    scale = std::max(scale, b.z[p].cwiseAbs().maxCoeff());
  }
  return d / scale;
}

// Mean rate of a population over its units, per sample.
Mat<double> mean_rate(const models::Layer<double>& L, const sim::CircuitState<double>& z,
                      const std::string& name) {
  const int p = presets::population(L, name);
  return presets::population_rate(L.spec.circuit.populations[p], z.z[p]).colwise().mean();
}

}  // namespace

TEST_CASE(
    "every preset's fixed point satisfies the circuit equations and is the ODE's equilibrium") {
  for (const auto& c : presets::all()) {
    CAPTURE(c.label);
    const auto L = presets::layer<double>(c, kInputs, kUnits, 31);
    const Mat<double> x = inputs(1);
    const double tol = 1e-12;
    const auto z = equilibrium(L, x, tol);
    // The solver's own test, recomputed by sim's residual in double ...
    std::vector<double> residual, scaled;
    sim::circuit_residual(L, input_of(L, x), z, sim::Tolerance{tol, tol}, residual, scaled);
    for (int j = 0; j < kSamples; ++j) CHECK(scaled[j] <= 1.0);
    // ... and by the equations written out in the test (rounding may differ: factor 10).
    CHECK(presets::scaled_residual(L, x, z, tol, tol) <= 10.0);
    // Every population is active somewhere, so the check is not about silent units.
    const auto t = presets::terms(L, x, z);
    for (std::size_t p = 0; p < t.rate.size(); ++p) {
      CAPTURE(L.spec.circuit.populations[p].name);
      CHECK(t.rate[p].maxCoeff() > 0.0);
    }
    // It is stable, and the ODE from the same initial state settles at the same point.
    for (int j = 0; j < kSamples; ++j) {
      CAPTURE(j);
      CHECK(presets::growth_rate(L, x, z, j) < 0.0);
    }
    const auto zo = ode_equilibrium(L, x);
    CHECK(state_distance(zo, z) <= 1e-6);
  }
}

TEST_CASE("the pooled and the dynamic instantiation of the solver reach the same equilibrium") {
  // Circuits whose Newton unknowns are one unit per population: the default circuit with one
  // interneuron of each type (pooled or heterogeneous, with or without leak) and pv_sst_vip
  // with fewer than 20 E units (one PV, one SST and one VIP unit).
  models::CircuitParams integral;
  struct Shape {
    presets::Case c;
    int n_E;
  };
  const std::vector<Shape> shapes{
      {presets::default_pooled_leaky(), kUnits},
      {{"default", "default (pooled, integral control)", integral}, kUnits},
      {{"pv_sst_vip", "pv_sst_vip with 12 E units", integral}, 12}};
  for (const auto& s : shapes) {
    CAPTURE(s.c.label);
    const auto L = presets::layer<double>(s.c, kInputs, s.n_E, 32);
    const auto st = models::analyse(L.spec.circuit);
    REQUIRE(st.eliminate_E);
    REQUIRE(!st.core.empty());
    for (int p : st.core) REQUIRE(L.spec.circuit.populations[p].size == 1);
    const Mat<double> x = inputs(2);
    const auto pooled = equilibrium(L, x, 1e-13, true);
    const auto dynamic = equilibrium(L, x, 1e-13, false);
    CHECK(state_distance(pooled, dynamic) <= 1e-9);
  }
}

TEST_CASE("Krylov steps reach the direct solve's equilibrium on every preset, with fewer LUs") {
  // The Krylov path is forced on every circuit that is not pooled (krylov_min_unknowns = 1):
  // GMRES on the matrix-free Jacobian, preconditioned by the last LU of its group of
  // krylov_share samples.
  for (const auto& c : presets::all()) {
    CAPTURE(c.label);
    const auto L = presets::layer<double>(c, kInputs, kUnits, 33);
    const Mat<double> x = inputs(3);
    sim::CircuitState<double> zk, zd;
    sim::FixedPointParameters fp = fixed_point(1e-12);
    fp.krylov_min_unknowns = 1;
    const auto rk = sim::solve_fixed_point(L, input_of(L, x), fp, zk);
    fp.krylov = false;
    const auto rd = sim::solve_fixed_point(L, input_of(L, x), fp, zd);
    INFO(rk.describe() << " / " << rd.describe());
    REQUIRE(rk.ok());
    REQUIRE(rd.ok());
    CHECK(rd.krylov_vectors == 0);
    if (models::analyse(L.spec.circuit).core.empty()) continue;  // inorm: nothing to solve
    CHECK(state_distance(zk, zd) <= 1e-9);
    // Steps to 1e-6 of Newton's: the same samples stall and continue.
    CHECK(rk.continuation_samples == rd.continuation_samples);
    // One LU per group of krylov_share samples at least (the first sample's first step; the
    // group's later samples start from its last LU); Newton's later steps come from GMRES
    // where it converges.
    CHECK(rk.factorisations >= (kSamples + fp.krylov_share - 1) / fp.krylov_share);
    if (rd.factorisations > kSamples) {
      CHECK(rk.krylov_vectors > 0);
      CHECK(rk.factorisations < rd.factorisations);
    }
    MESSAGE(c.label << ": LUs " << rd.factorisations << " -> " << rk.factorisations << " and "
                    << rk.krylov_vectors << " GMRES vectors");
  }
}

TEST_CASE("the adjoint's GMRES solves equal its LU solves on every preset, with fewer LUs") {
  // GMRES forced on every circuit that is not pooled (krylov_min_unknowns = 1): all but the
  // first sample of each group of krylov_share solve J^T a = rhs by GMRES, preconditioned by
  // the group's last LU. With krylov_max = 1 GMRES cannot reach 1e-10 from a lagged
  // preconditioner, and the samples are factorised instead: the same numbers again.
  for (const auto& c : presets::all()) {
    CAPTURE(c.label);
    const auto L = presets::layer<double>(c, kInputs, kUnits, 35);
    std::mt19937_64 rng(test::seed() + 36);
    const int B = 12;
    const Mat<double> x = test::random_matrix<double>(kInputs, B, 0.0, 1.0, rng);
    const Mat<double> g_v = test::random_matrix<double>(kUnits, B, -1.0, 1.0, rng);
    const auto in = input_of(L, x);
    sim::CircuitState<double> z;
    sim::initial_state(L, B, z);
    const auto res = sim::solve_fixed_point(L, in, fixed_point(1e-12), z);
    INFO(res.describe());
    REQUIRE(res.ok());
    sim::CircuitTerms<double> t;
    sim::evaluate(L, in, z, t, true);
    const auto adjoint = [&](int min_unknowns, int max_vectors, std::vector<Mat<double>>& w) {
      sim::AdjointParameters ap;
      ap.krylov_min_unknowns = min_unknowns;
      ap.krylov_max = max_vectors;
      const sim::AdjointStats st = sim::solve_adjoint(L, in, z, t, g_v, ap, w);
      INFO("failed " << st.failed << ", residual " << st.worst_residual);
      REQUIRE(st.ok());
      return st;
    };
    std::vector<Mat<double>> wd, wk, w1;
    const sim::AdjointStats sd = adjoint(0, 20, wd), sk = adjoint(1, 20, wk),
                            s1 = adjoint(1, 1, w1);
    CHECK(sd.krylov_vectors == 0);
    CHECK(sd.factorisations == sd.solves);
    REQUIRE(wk.size() == wd.size());
    for (std::size_t p = 0; p < wd.size(); ++p) {
      CAPTURE(p);
      const double scale = std::max(1.0, wd[p].cwiseAbs().maxCoeff());
      CHECK((wk[p] - wd[p]).cwiseAbs().maxCoeff() <= 1e-8 * scale);
      CHECK((w1[p] - wd[p]).cwiseAbs().maxCoeff() <= 1e-8 * scale);
    }
    CHECK(sk.solves == sd.solves);
    // GMRES only where every unknown has a leak (identical units without one make J
    // singular; tests/sim/fixed_point_test.cpp). inorm has no Newton unknowns: nothing solved.
    const auto cs = models::analyse(L.spec.circuit);
    bool leak_everywhere = !cs.core.empty();
    for (int p : cs.core) {
      const auto& pop = L.spec.circuit.populations[std::size_t(p)];
      leak_everywhere =
          leak_everywhere && (pop.dynamics == models::Dynamics::leaky || pop.leak > 0.0);
    }
    if (!leak_everywhere) {
      CHECK(sk.krylov_vectors == 0);
      CHECK(sk.factorisations == sk.solves);
      continue;
    }
    REQUIRE(sk.solves == B);
    REQUIRE(sk.krylov_vectors > 0);
    // One LU per group of krylov_share (8): samples 0 and 8 of 12.
    CHECK(sk.factorisations == 2);
    CHECK(sk.krylov_vectors >= sk.solves - 2);
    // krylov_max = 1: no GMRES attempt reaches 1e-10, every sample is factorised.
    CHECK(s1.factorisations == s1.solves);
    CHECK(sk.worst_residual <= 1e-9);
    // The GMRES solves' rcond is an upper bound, the LU's an estimate: not far below it.
    CHECK(sk.worst_rcond >= 0.1 * sd.worst_rcond);
    MESSAGE(c.label << ": adjoint LUs " << sd.factorisations << " -> " << sk.factorisations
                    << " and " << sk.krylov_vectors << " GMRES vectors");
  }
}

TEST_CASE("the pooled solver handles divisive input from explicit populations and potentials") {
  // Two user circuits that take the pooled fast path's less common branches: inorm with an
  // integrating subtractive unit (Newton solves I; D, driven by the input only, is explicit and
  // divides E), and the default circuit whose I is leaky with softplus rates and acts on E
  // through its potential. Both instantiations must agree and meet an independent residual.
  auto make = [](const std::string& preset, const std::function<void(models::CircuitSpec&)>& edit) {
    presets::Case c{preset, preset, models::CircuitParams{}};
    models::LayerSpec t = presets::layer_template(c, kUnits);
    edit(t.circuit);
    auto net = models::initialise<double>(models::make_network_spec(kInputs, 3, {t}, 1.0, 1), 41);
    return net.layers.front();
  };
  const std::vector<std::pair<std::string, models::Layer<double>>> layers{
      {"inorm with an integrating I", make("inorm",
                                           [](models::CircuitSpec& c) {
                                             c.populations[1].dynamics =
                                                 models::Dynamics::integrator;
                                             c.populations[1].leak = 1.0;
                                           })},
      {"default with a leaky softplus I acting through its potential",
       make("default", [](models::CircuitSpec& c) {
         c.populations[1].dynamics = models::Dynamics::leaky;
         c.populations[1].phi.kind = models::Nonlinearity::softplus;
         c.projections[0].signal = models::Signal::potential;  // W_EI
       })}};
  for (const auto& [label, L] : layers) {
    CAPTURE(label);
    const auto st = models::analyse(L.spec.circuit);
    REQUIRE(st.eliminate_E);
    for (int p : st.core) REQUIRE(L.spec.circuit.populations[p].size == 1);
    const Mat<double> x = inputs(3);
    const auto pooled = equilibrium(L, x, 1e-13, true);
    const auto dynamic = equilibrium(L, x, 1e-13, false);
    CHECK(state_distance(pooled, dynamic) <= 1e-9);
    CHECK(presets::scaled_residual(L, x, pooled, 1e-12, 1e-12) <= 10.0);
  }
}

TEST_CASE("the default preset's equilibrium is sqrt(theta) * LayerNorm(e)") {
  // One pooled integrating unit of each type: mean(v) = 0 and mean(v^2) = theta exactly.
  models::CircuitParams p;
  p.theta = 1.5;
  const auto L = presets::layer<double>({"default", "default", p}, kInputs, kUnits, 33);
  const Mat<double> x = inputs(3);
  const auto z = equilibrium(L, x, 1e-13);
  const Mat<double> e = (L.w.W_EX * x).colwise() + L.w.b.col(0);
  for (int j = 0; j < kSamples; ++j) {
    const double mu = e.col(j).mean();
    const double sd = std::sqrt((e.col(j).array() - mu).square().mean());
    const Vec<double> expected = std::sqrt(p.theta) * (e.col(j).array() - mu) / sd;
    CAPTURE(j);
    CHECK(test::max_rel_error(z.v().col(j), expected) <= 1e-9);
  }
}

TEST_CASE("in pv_sst_vip, driving VIP lowers SST rates and raises E rates (disinhibition)") {
  const auto L = presets::layer<double>({"pv_sst_vip", "pv_sst_vip", {}}, kInputs, kUnits, 34);
  const Mat<double> x = inputs(4);
  const auto z0 = equilibrium(L, x);
  const Mat<double> vip0 = mean_rate(L, z0, "VIP"), sst0 = mean_rate(L, z0, "SST"),
                    e0 = mean_rate(L, z0, "E");
  REQUIRE(sst0.minCoeff() > 0.0);  // SST is active, so there is inhibition to remove
  // A graded drive (SST stays active) and a strong one (SST may fall silent).
  for (const double drive : {0.2, 0.5}) {
    CAPTURE(drive);
    auto driven = L;
    driven.spec.circuit.populations[presets::population(L, "VIP")].rest += drive;
    const auto z1 = equilibrium(driven, x);
    const Mat<double> vip1 = mean_rate(driven, z1, "VIP"), sst1 = mean_rate(driven, z1, "SST"),
                      e1 = mean_rate(driven, z1, "E");
    if (drive == 0.2) CHECK(sst1.minCoeff() > 0.0);
    for (int j = 0; j < kSamples; ++j) {
      CAPTURE(j);
      CAPTURE(sst0(0, j));
      CAPTURE(sst1(0, j));
      CAPTURE(e0(0, j));
      CAPTURE(e1(0, j));
      CHECK(vip1(0, j) > vip0(0, j));
      CHECK(sst1(0, j) < sst0(0, j) - 1e-3);
      CHECK(e1(0, j) > e0(0, j) + 1e-3);
    }
  }
}

// ------------------------------------------------- the stabilised supralinear network, 1 E + 1 I

namespace {

// One E and one I unit of the ssn preset (circuits.md: W_EE 1.25, W_EI 0.65, W_IE 1.2,
// W_II 0.5, tau_E 20 ms, tau_I 10 ms, r = 0.3 [v]_+^2), both driven by the one input x = h:
// h_E = W_EX x = h and h_I = W_IX x = h.
models::Layer<double> two_unit_ssn() {
  models::LayerSpec t = presets::layer_template({"ssn", "ssn", {}}, 1);
  auto L =
      models::initialise<double>(models::make_network_spec(1, 1, {t}, 1.0, 1), 35).layers.front();
  REQUIRE(L.spec.circuit.populations.size() == 2);
  REQUIRE(L.spec.circuit.populations[1].size == 1);
  L.w.W_EX.setConstant(1.0);
  L.w.b.setZero();
  L.w["W_IX"].setConstant(1.0);
  // The preset's pooled weights of one unit are the published values.
  CHECK(L.w["W_EE"](0, 0) == doctest::Approx(1.25));
  CHECK(L.w["W_EI"](0, 0) == doctest::Approx(0.65));
  CHECK(L.w["W_IE"](0, 0) == doctest::Approx(1.2));
  CHECK(L.w["W_II"](0, 0) == doctest::Approx(0.5));
  CHECK(L.spec.circuit.populations[0].tau == 20.0);
  CHECK(L.spec.circuit.populations[1].tau == 10.0);
  return L;
}

struct Steady {
  double v_E, v_I, r_E, r_I;
  double isn_gain;  ///< W_EE phi'_E(v_E): > 1 means E alone is unstable (ISN)
};

// The steady state for input h: the fixed point, which the ODE reaches too (it is stable).
Steady steady(const models::Layer<double>& L, double h) {
  CAPTURE(h);
  const Mat<double> x = Mat<double>::Constant(1, 1, h);
  const auto z = equilibrium(L, x, 1e-13);
  CHECK(state_distance(ode_equilibrium(L, x), z) <= 1e-6);
  const auto& E = L.spec.circuit.populations[0];
  const auto& I = L.spec.circuit.populations[1];
  Steady s;
  s.v_E = z.z[0](0, 0);
  s.v_I = z.z[1](0, 0);
  s.r_E = presets::rate(E.phi, s.v_E);
  s.r_I = presets::rate(I.phi, s.v_I);
  s.isn_gain = L.w["W_EE"](0, 0) * presets::rate_slope(E.phi, s.v_E);
  // The two equations of circuits.md, by hand.
  const auto w = [&](const char* name) { return L.w[name](0, 0); };
  CHECK(std::abs(-s.v_E + E.rest + h + w("W_EE") * s.r_E - w("W_EI") * s.r_I) <=
        1e-10 * (1 + std::abs(s.v_E)));
  CHECK(std::abs(-s.v_I + I.rest + h + w("W_IE") * s.r_E - w("W_II") * s.r_I) <=
        1e-10 * (1 + std::abs(s.v_I)));
  return s;
}

// The steady state with extra excitatory input delta to I (I's resting potential raised).
Steady steady_with_I_input(models::Layer<double> L, double h, double delta) {
  L.spec.circuit.populations[1].rest += delta;
  return steady(L, h);
}

}  // namespace

TEST_CASE("the ssn sums weak inputs supralinearly and strong inputs sublinearly") {
  const auto L = two_unit_ssn();
  for (const double h : {0.25, 0.5}) {
    CAPTURE(h);
    const Steady one = steady(L, h), two = steady(L, 2 * h);
    CHECK(one.r_E > 0.0);
    CHECK(two.r_E > 2.0 * one.r_E);
    CHECK(two.r_I > 2.0 * one.r_I);
  }
  for (const double h : {8.0, 16.0}) {
    CAPTURE(h);
    const Steady one = steady(L, h), two = steady(L, 2 * h);
    CHECK(two.r_E < 2.0 * one.r_E);
    CHECK(two.r_I < 2.0 * one.r_I);
  }
}

TEST_CASE("in the inhibition-stabilised regime extra input to I lowers I's rate (paradoxical)") {
  const auto L = two_unit_ssn();
  for (const double h : {4.0, 8.0}) {
    CAPTURE(h);
    const Steady base = steady(L, h);
    CAPTURE(base.isn_gain);
    REQUIRE(base.isn_gain > 1.0);  // E alone is unstable at the fixed point
    const Steady more = steady_with_I_input(L, h, 0.2);
    CHECK(more.r_I < base.r_I);
    CHECK(more.r_E < base.r_E);
  }
}

TEST_CASE("extra input to I raises I's rate when E alone is stable (no paradoxical effect)") {
  SUBCASE("weak input: the published weights below the inhibition-stabilised regime") {
    const auto L = two_unit_ssn();
    const double h = 0.5;
    const Steady base = steady(L, h);
    CAPTURE(base.isn_gain);
    REQUIRE(base.isn_gain < 1.0);
    REQUIRE(base.r_I > 0.0);
    CHECK(steady_with_I_input(L, h, 0.2).r_I > base.r_I);
  }
  SUBCASE("strong input with weak recurrent excitation (W_EE = 0.1)") {
    auto L = two_unit_ssn();
    L.w["W_EE"].setConstant(0.1);
    const double h = 8.0;
    const Steady base = steady(L, h);
    CAPTURE(base.isn_gain);
    REQUIRE(base.isn_gain < 1.0);
    CHECK(steady_with_I_input(L, h, 0.2).r_I > base.r_I);
  }
}
