// The stability of equilibria (sim/stability.hpp) against independent answers: the Jacobian by
// central differences of the equations written out in tests/support/presets.hpp, a dense
// eigensolver, and the analytic Hopf point of the linear two-population E/I circuit of
// ../shared/circuits.md.
#include "eisim/sim/stability.hpp"

#include <doctest/doctest.h>

#include <Eigen/Eigenvalues>
#include <algorithm>
#include <cmath>
#include <numbers>
#include <random>

#include "eisim/models/error.hpp"
#include "eisim/sim/forward.hpp"
#include "eisim/sim/solver.hpp"
#include "presets.hpp"

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

sim::CircuitState<double> equilibrium(const models::Layer<double>& L, const Mat<double>& x) {
  sim::FixedPointParameters fp;
  fp.tol = {1e-12, 1e-12};
  fp.max_iterations = 100;
  sim::CircuitState<double> z;
  sim::initial_state(L, int(x.cols()), z);
  const sim::SolveResult res = sim::solve_fixed_point(L, input_of(L, x), fp, z);
  INFO(res.describe());
  REQUIRE(res.ok());
  return z;
}

// Eigenvalues sorted by decreasing real part (then imaginary part).
std::vector<std::complex<double>> sorted_eigenvalues(const Eigen::MatrixXd& J) {
  const Eigen::VectorXcd ev = Eigen::EigenSolver<Eigen::MatrixXd>(J, false).eigenvalues();
  std::vector<std::complex<double>> l(ev.data(), ev.data() + ev.size());
  std::sort(l.begin(), l.end(), [](const auto& a, const auto& b) {
    return a.real() > b.real() || (a.real() == b.real() && a.imag() > b.imag());
  });
  return l;
}

// The linear two-population circuit of ../shared/circuits.md:
//   tau_E dr_E/dt = -r_E + w_EE r_E - w_EI r_I + h,  tau_I dr_I/dt = -r_I + w_IE r_E - w_II r_I,
// as the ssn preset with one unit per population and identity rate functions.
constexpr double kWEE = 2.0, kWEI = 2.0, kWIE = 2.0, kWII = 0.5, kTauE = 10.0;

models::Layer<double> linear_ei(double tau_I) {
  models::LayerSpec t;
  t.kind = models::LayerKind::circuit;
  t.n_E = 1;
  t.circuit = models::make_preset("ssn", models::CircuitParams{}, 1, t.phi);
  auto& pops = t.circuit.populations;
  REQUIRE(pops.size() == 2);
  for (auto& p : pops) p.phi.kind = models::Nonlinearity::identity;
  pops[0].tau = kTauE;
  pops[1].tau = tau_I;
  auto spec = models::make_network_spec(3, 2, {t}, 1.0, 1);
  auto net = models::initialise<double>(spec, 5);
  auto L = net.layers.front();
  L.w["W_EE"].setConstant(kWEE);
  L.w["W_EI"].setConstant(kWEI);
  L.w["W_IE"].setConstant(kWIE);
  L.w["W_II"].setConstant(kWII);
  L.w["W_IX"].setConstant(0.1);
  L.w.W_EX.setConstant(0.2);
  L.w.b.setConstant(0.1);
  return L;
}

double hopf_tau_I() {
  return kTauE * (1 + kWII) / (kWEE - 1);
}

sim::SampleStability classify_linear(double tau_I) {
  const auto L = linear_ei(tau_I);
  const Mat<double> x = Mat<double>::Ones(3, 1);
  sim::CircuitState<double> z;
  sim::initial_state(L, 1, z);
  const auto res = sim::stability(L, input_of(L, x), z);
  REQUIRE(res.samples.size() == 1);
  return res.samples[0];
}

}  // namespace

TEST_CASE("the Jacobian of every preset equals central differences of the equations") {
  for (const auto& c : presets::all()) {
    CAPTURE(c.label);
    const auto L = presets::layer<double>(c, kInputs, kUnits, 31);
    const Mat<double> x = inputs(1);
    const auto z = equilibrium(L, x);
    for (int j = 0; j < kSamples; ++j) {
      CAPTURE(j);
      const Eigen::MatrixXd J = sim::dense_jacobian(L, input_of(L, x), z, j);
      const Eigen::MatrixXd Jfd = presets::fd_jacobian(L, x, z, j);
      REQUIRE(J.rows() == Jfd.rows());
      const double err = (J - Jfd).cwiseAbs().maxCoeff() / std::max(1.0, Jfd.cwiseAbs().maxCoeff());
      CHECK(err <= 1e-6);
    }
  }
}

TEST_CASE("stability() reports the spectrum of the dense Jacobian, reduced or not") {
  // Presets whose E population is eliminated use the 2m x 2m reduction; ssn (recurrent E) the
  // dense Jacobian. Both must give the leading eigenvalues of an independent dense eigensolve
  // of the finite-difference Jacobian.
  for (const auto& c : presets::all()) {
    CAPTURE(c.label);
    const auto L = presets::layer<double>(c, kInputs, kUnits, 31);
    const Mat<double> x = inputs(2);
    const auto z = equilibrium(L, x);
    sim::StabilityParameters sp;
    sp.keep = 3;
    const auto res = sim::stability(L, input_of(L, x), z, sp);
    REQUIRE(int(res.samples.size()) == kSamples);
    CHECK(res.stable == kSamples);
    for (int j = 0; j < kSamples; ++j) {
      CAPTURE(j);
      const auto ref = sorted_eigenvalues(presets::fd_jacobian(L, x, z, j));
      const auto& got = res.samples[j];
      CHECK(got.cls == sim::Stability::stable);
      REQUIRE(got.leading.size() == 3);
      for (int k = 0; k < 3; ++k) {
        CAPTURE(k);
        CHECK(std::abs(got.leading[k] - ref[k]) <= 1e-6 * std::max(1.0, std::abs(ref[k])));
      }
      CHECK(std::abs(got.max_real - presets::growth_rate(L, x, z, j)) <= 1e-6);
    }
  }
}

TEST_CASE("the classification flips at the analytic Hopf point of the linear E/I circuit") {
  const double ts = hopf_tau_I();  // 15 ms
  REQUIRE(ts == doctest::Approx(15.0));
  // Below tau_I*: a stable focus; above: an oscillatory instability.
  const auto below = classify_linear(0.99 * ts);
  const auto above = classify_linear(1.01 * ts);
  CHECK(below.cls == sim::Stability::stable);
  CHECK(above.cls == sim::Stability::oscillatory);
  // The frequency at the Hopf point: sqrt(det J) / (2 pi), det J at tau_I*.
  const double det = (-(kWEE - 1) * (1 + kWII) + kWEI * kWIE) / (kTauE * ts);  // 1 / ms^2
  const double f_hopf = std::sqrt(det) / (2 * std::numbers::pi) * 1000.0;      // Hz
  CHECK(above.frequency_hz == doctest::Approx(f_hopf).epsilon(0.01));
  CHECK(below.frequency_hz == doctest::Approx(f_hopf).epsilon(0.01));
  // The flip by bisection on the classifier: within 0.1 % of tau_I* (the issue asks 1 %).
  double lo = 0.5 * ts, hi = 2 * ts;
  REQUIRE(classify_linear(lo).cls == sim::Stability::stable);
  REQUIRE(classify_linear(hi).cls == sim::Stability::oscillatory);
  for (int i = 0; i < 40; ++i) {
    const double mid = 0.5 * (lo + hi);
    (classify_linear(mid).cls == sim::Stability::stable ? lo : hi) = mid;
  }
  CHECK(std::abs(lo - ts) / ts <= 1e-3);
  // The growth rate is trace J / 2 where the pair is complex: checks its sign and size.
  const double t_above = 1.01 * ts;
  CHECK(above.max_real ==
        doctest::Approx(0.5 * ((kWEE - 1) / kTauE - (1 + kWII) / t_above)).epsilon(1e-9));
}

TEST_CASE("the forward pass replaces an unstable equilibrium by the ODE's stable one") {
  // The heterogeneous ssn layer on which Newton converges to an unstable equilibrium of sample 1
  // (largest eigenvalue +0.023 / ms; tests/sim/presets_test.cpp): the stability check finds it
  // and the forward pass integrates the ODE from the initial state instead.
  const auto ssn = presets::all()[3];
  REQUIRE(ssn.preset == "ssn");
  const auto L = presets::layer<double>(ssn, kInputs, kUnits, 211);
  std::mt19937_64 rng(20261129ULL + 211);
  const Mat<double> x = test::random_matrix<double>(kInputs, kSamples, 0.0, 1.0, rng);
  sim::FixedPointParameters fp;
  fp.tol = {1e-10, 1e-10};
  sim::LayerCache<double> c;
  sim::forward_layer(L, x, fp, c);
  INFO(c.solve.describe());
  CHECK(c.solve.ok());
  CHECK(c.found_unstable + c.found_oscillatory >= 1);
  CHECK(c.reintegrated == c.found_unstable + c.found_oscillatory);
  CHECK(c.no_stable == 0);
  CHECK(c.stability.stable == kSamples);
  for (int j = 0; j < kSamples; ++j) CHECK(presets::growth_rate(L, x, c.z, j) < 0.0);
  // The policy `fail` names the problem instead.
  fp.stability = sim::StabilityCheck::fail;
  CHECK_THROWS_AS(sim::forward_layer(L, x, fp, c), numerical_error);
  // And `off` keeps Newton's answer, unchecked.
  fp.stability = sim::StabilityCheck::off;
  sim::forward_layer(L, x, fp, c);
  CHECK(c.checked.empty());
  CHECK(presets::growth_rate(L, x, c.z, 1) > 0.0);
}

TEST_CASE("a layer with no stable equilibrium stops the forward pass with a clear error") {
  // The linear circuit past its Hopf point: the fixed point is an unstable focus and the ODE
  // grows without bound, so no stable equilibrium exists.
  auto L = linear_ei(1.2 * hopf_tau_I());
  models::Network<double> net;
  net.layers.push_back(L);
  sim::FixedPointParameters fp;
  fp.fallback_t_max = 2000;  // ms: enough to see the growth
  sim::ForwardCache<double> cache;
  const Mat<double> x = Mat<double>::Ones(3, 2);
  try {
    sim::forward(net, x, fp, cache);
    FAIL("forward accepted an unstable equilibrium");
  } catch (const numerical_error& e) {
    const std::string what = e.what();
    CAPTURE(what);
    CHECK(what.find("layer 0") != std::string::npos);
    CHECK(what.find("no stable equilibrium for 2 of 2 samples") != std::string::npos);
    CHECK(what.find("oscillatory") != std::string::npos);
    CHECK(what.find("tau 18 ms") != std::string::npos);
  }
}

TEST_CASE("a marginal equilibrium is counted apart and kept, not replaced or failed") {
  // The leading real part in (margin, marginal] is `marginal` whether the leading eigenvalue is
  // real or a complex pair; above it, `unstable` or `oscillatory`; marginal = 0 (the library's
  // default) has no such class.
  sim::StabilityParameters p;
  p.marginal = 1e-5;
  using C = std::complex<double>;
  const auto cls = [](const sim::StabilityParameters& q, std::initializer_list<C> l) {
    Eigen::VectorXcd ev(Eigen::Index(l.size()));
    Eigen::Index k = 0;
    for (const C& c : l) ev(k++) = c;
    return sim::classify(ev, q);
  };
  CHECK(cls(p, {C(3e-6, 0), C(-1, 0)}).cls == sim::Stability::marginal);
  CHECK(cls(p, {C(1e-5, 0), C(-1, 0)}).cls == sim::Stability::marginal);
  CHECK(cls(p, {C(2e-5, 0), C(-1, 0)}).cls == sim::Stability::unstable);
  CHECK(cls(p, {C(-3e-6, 0), C(-1, 0)}).cls == sim::Stability::stable);
  CHECK(cls(p, {C(5e-10, 0), C(-1, 0)}).cls == sim::Stability::stable);  // within `margin`
  const auto pair = cls(p, {C(3e-6, 0.02), C(3e-6, -0.02), C(-1, 0)});
  CHECK(pair.cls == sim::Stability::marginal);
  CHECK(pair.frequency_hz == doctest::Approx(0.02 * 1000 / (2 * std::numbers::pi)));
  CHECK(cls(p, {C(2e-5, 0.02), C(2e-5, -0.02)}).cls == sim::Stability::oscillatory);
  CHECK(cls(sim::StabilityParameters{}, {C(3e-6, 0), C(-1, 0)}).cls == sim::Stability::unstable);
  CHECK(std::string(sim::to_string(sim::Stability::marginal)) == "marginal");

  // The linear E/I circuit just past its Hopf point: growth rate
  // (w_EE - 1) / (2 tau_E) - (1 + w_II) / (2 tau_I) = 5.0e-6 /ms at tau_I = 1.0001 tau_I*.
  const double tau_I = 1.0001 * hopf_tau_I();
  const double growth = 0.5 * ((kWEE - 1) / kTauE - (1 + kWII) / tau_I);
  REQUIRE(growth > 4e-6);
  REQUIRE(growth < 6e-6);
  auto L = linear_ei(tau_I);
  const Mat<double> x = Mat<double>::Ones(3, 2);
  sim::FixedPointParameters fp;  // stability_marginal 1e-5 /ms, policy `integrate`
  REQUIRE(fp.stability_marginal == 1e-5);
  sim::LayerCache<double> c;
  // The solver's fast path, the generic path, and the training step's settings (class only, no
  // list of eigenvalues: the leading one by one scan).
  for (int path = 0; path < 3; ++path) {
    CAPTURE(path);
    sim::FixedPointParameters q = fp;
    q.stability_fast_path = path != 1;
    if (path == 2) {
      q.stability_leading = 0;
      q.stability_class_only = true;
    }
    sim::forward_layer(L, x, q, c);
    INFO(c.solve.describe());
    CHECK(c.solve.ok());
    CHECK(c.found_marginal == 2);
    CHECK(c.found_unstable + c.found_oscillatory == 0);
    CHECK(c.reintegrated == 0);  // the policy does not act: Newton's equilibrium is kept
    CHECK(c.no_stable == 0);
    REQUIRE(c.stability.samples.size() == 2);
    CHECK(c.stability.marginal == 2);
    CHECK(c.stability.not_stable() == 0);
    for (const auto& st : c.stability.samples) {
      CHECK(st.cls == sim::Stability::marginal);
      CHECK(std::abs(st.max_real - growth) <= 1e-12);
      CHECK(st.frequency_hz > 0.0);
    }
  }
  // The library's default (marginal = 0) calls the same point oscillatory.
  CHECK(classify_linear(tau_I).cls == sim::Stability::oscillatory);
  // `fail` does not fail on it either; with stability_marginal = 0 it is oscillatory and
  // `fail` stops.
  fp.stability = sim::StabilityCheck::fail;
  CHECK_NOTHROW(sim::forward_layer(L, x, fp, c));
  fp.stability_marginal = 0.0;
  CHECK_THROWS_AS(sim::forward_layer(L, x, fp, c), numerical_error);
  // The forward pass counts it per batch (ForwardStats, what train and evaluate record).
  models::Network<double> net;
  net.layers.push_back(L);
  sim::ForwardCache<double> cache;
  const sim::ForwardStats fs = sim::forward(net, x, sim::FixedPointParameters{}, cache);
  CHECK(fs.marginal_samples == 2);
  CHECK(fs.unstable_samples + fs.oscillatory_samples + fs.reintegrated_samples == 0);
}

namespace {

// The E/I circuit with rectified square-root rates r = sqrt([v]_+) (steep at threshold, then
// saturating), w_EE = w_EI = w_IE = 3, w_II = 0.5, tau_E = 20 ms, drive 1.5: its equilibrium loses
// stability with slower inhibition and the circuit settles on a bounded limit cycle.
models::Layer<double> sqrt_ei(double tau_I) {
  auto L = linear_ei(tau_I);
  for (auto& p : L.spec.circuit.populations) p.phi.kind = models::Nonlinearity::sqrt;
  L.spec.circuit.populations[0].tau = 20.0;
  L.w["W_EE"].setConstant(3.0);
  L.w["W_EI"].setConstant(3.0);
  L.w["W_IE"].setConstant(3.0);
  L.w["W_IX"].setConstant(0.0);
  L.w.W_EX.setConstant(0.5);  // drive 1.5
  L.w.b.setConstant(0.0);
  return L;
}

// The RK4 reference's step (ms). Under the sanitizers (EISIM_TEST_SANITIZED, set by
// tests/CMakeLists.txt with EISIM_SANITIZE) 0.05 ms: 40,000 steps instead of 200,000, which took
// minutes under ASan. Its period agrees with the 0.01 ms one to 1e-6 relative (48.220924 against
// 48.220877 ms), far inside the 1 % checked below.
#ifdef EISIM_TEST_SANITIZED
constexpr double kReferenceDt = 0.05;
#else
constexpr double kReferenceDt = 0.01;
#endif

// Period of E's potential by a fixed-step RK4 integration of the equations written out in
// tests/support/presets.hpp (not sim/'s code): mean interval between upward crossings of its
// mean over [1000, 2000] ms.
double reference_period(const models::Layer<double>& L, const Mat<double>& x) {
  const auto& pops = L.spec.circuit.populations;
  sim::CircuitState<double> z;
  for (const auto& p : pops) z.z.push_back(Mat<double>::Constant(1, 1, p.initial));
  auto f = [&](const sim::CircuitState<double>& s) {
    const auto t = presets::terms(L, x, s);
    sim::CircuitState<double> d;
    for (std::size_t p = 0; p < pops.size(); ++p) d.z.push_back(t.F[p] / pops[p].tau);
    return d;
  };
  auto axpy = [](const sim::CircuitState<double>& a, double h, const sim::CircuitState<double>& b) {
    sim::CircuitState<double> r = a;
    for (std::size_t p = 0; p < r.z.size(); ++p) r.z[p] += h * b.z[p];
    return r;
  };
  const double dt = kReferenceDt;
  const int steps = int(std::lround(2000.0 / dt));
  std::vector<double> t_obs, e_obs;
  for (int k = 0; k < steps; ++k) {
    const auto k1 = f(z), k2 = f(axpy(z, dt / 2, k1)), k3 = f(axpy(z, dt / 2, k2)),
               k4 = f(axpy(z, dt, k3));
    for (std::size_t p = 0; p < z.z.size(); ++p)
      z.z[p] += dt / 6 * (k1.z[p] + 2 * k2.z[p] + 2 * k3.z[p] + k4.z[p]);
    const double t = (k + 1) * dt;
    if (t >= 1000) {
      t_obs.push_back(t);
      e_obs.push_back(z.z[0](0, 0));
    }
  }
  double mean = 0;
  for (double e : e_obs) mean += e / double(e_obs.size());
  std::vector<double> up;
  for (std::size_t i = 1; i < e_obs.size(); ++i)
    if (e_obs[i - 1] < mean && e_obs[i] >= mean)
      up.push_back(t_obs[i - 1] + (mean - e_obs[i - 1]) / (e_obs[i] - e_obs[i - 1]) * dt);
  REQUIRE(up.size() >= 4);
  return (up.back() - up.front()) / double(up.size() - 1);
}

}  // namespace

TEST_CASE("a layer past its Hopf point oscillates: the limit cycle is measured") {
  const Mat<double> x = Mat<double>::Ones(3, 1);
  // Fast inhibition (tau_I = 5 ms): a stable focus, no sustained oscillation.
  {
    const auto L = sqrt_ei(5.0);
    sim::LayerCache<double> c;
    sim::forward_layer(L, x, sim::FixedPointParameters{}, c);
    INFO(c.solve.describe());
    REQUIRE(c.solve.ok());
    CHECK(c.stability.stable == 1);
    CHECK(c.stability.samples[0].frequency_hz > 0.0);  // a damped oscillation
    const auto o = sim::measure_oscillation(L, c.in, {0});
    CHECK_FALSE(o[0].periodic);
  }
  // tau_I = 10 ms: the equilibrium is an unstable focus; the ODE finds no stable equilibrium
  // and settles on a limit cycle near the focus's frequency.
  const auto L = sqrt_ei(10.0);
  sim::LayerCache<double> c;
  sim::forward_layer(L, x, sim::FixedPointParameters{}, c);
  CHECK(c.found_oscillatory == 1);
  CHECK(c.no_stable == 1);
  CHECK(c.solve.sample_status[0] == sim::SolverStatus::unstable);
  CHECK(c.stability.samples[0].cls == sim::Stability::oscillatory);
  const auto o = sim::measure_oscillation(L, c.in, {0});
  REQUIRE(o[0].periodic);
  const double ref = reference_period(L, x);
  CHECK(o[0].period_ms == doctest::Approx(ref).epsilon(0.01));
  CHECK(o[0].frequency_hz == doctest::Approx(1000.0 / ref).epsilon(0.01));
  CHECK(o[0].amplitude[0] > 0.1);
  CHECK(o[0].amplitude[1] > 0.1);
  // Near the Hopf point the cycle's frequency is the focus's (within 10 % here).
  CHECK(o[0].frequency_hz == doctest::Approx(c.stability.samples[0].frequency_hz).epsilon(0.1));
}

TEST_CASE("the solver's fast path gives the generic path's spectrum") {
  // FixedPointParameters::stability_fast_path classifies each equilibrium from the Newton
  // solver's own Jacobian blocks; stability() from vector-Jacobian products of the batch
  // equations. Same reduction, same point: the same leading eigenvalues to rounding. The default
  // circuit pooled (with and without leak: the compile-time instantiation), heterogeneous and
  // pv_sst_vip (the dynamic one); ssn from the solver's whole Jacobian (full_stability: E is
  // a Newton unknown); inorm is not covered by the fast path and must come out the same
  // through the generic one.
  models::CircuitParams plain;
  plain.heterogeneous = false;
  std::vector<presets::Case> cases = {{"default", "default (pooled, no leak)", plain},
                                      presets::default_pooled_leaky()};
  for (const auto& c : presets::all()) cases.push_back(c);
  for (const auto& c : cases) {
    for (const int first : {0, 3}) {
      CAPTURE(c.label);
      CAPTURE(first);
      const auto L = presets::layer<double>(c, kInputs, kUnits, 31);
      const Mat<double> x = inputs(7);
      sim::FixedPointParameters fp;
      fp.tol = {1e-10, 1e-10};
      fp.stability_samples = first;
      sim::LayerCache<double> fast, generic;
      sim::forward_layer(L, x, fp, fast);
      fp.stability_fast_path = false;
      sim::forward_layer(L, x, fp, generic);
      REQUIRE(generic.solve.stability_known.empty());
      // inorm's interneurons are driven by the input alone (explicit).
      const bool covered = c.preset != "inorm";
      REQUIRE(!fast.solve.stability_known.empty() == covered);
      REQUIRE(fast.checked == generic.checked);
      REQUIRE(int(fast.checked.size()) == (first > 0 ? first : kSamples));
      CHECK((fast.z.v() - generic.z.v()).cwiseAbs().maxCoeff() == 0.0);
      CHECK(fast.stability.stable == generic.stability.stable);
      CHECK(fast.stability.unstable == generic.stability.unstable);
      for (std::size_t q = 0; q < fast.checked.size(); ++q) {
        CAPTURE(q);
        if (covered) CHECK(fast.solve.stability_known[std::size_t(fast.checked[q])] == 1);
        const auto& a = fast.stability.samples[q];
        const auto& b = generic.stability.samples[q];
        CHECK(a.cls == b.cls);
        CHECK(std::abs(a.max_real - b.max_real) <= 1e-10);
        CHECK(std::abs(a.frequency_hz - b.frequency_hz) <= 1e-8);
        REQUIRE(a.leading.size() == b.leading.size());
        CHECK(a.leading.size() == 4);
        if (c.preset == "default" && c.params.lambda_I > 0) {
          // The pooled circuit's 4 x 4 (fixed-size) eigensolve against the dense one of the
          // finite-difference Jacobian.
          const auto ref = sorted_eigenvalues(presets::fd_jacobian(L, x, fast.z, fast.checked[q]));
          for (std::size_t k = 0; k < a.leading.size(); ++k)
            CHECK(std::abs(a.leading[k] - ref[k]) <= 1e-6 * std::max(1.0, std::abs(ref[k])));
        }
        for (std::size_t k = 0; k < a.leading.size(); ++k) {
          CAPTURE(k);
          CHECK(std::abs(a.leading[k] - b.leading[k]) <=
                1e-10 * std::max(1.0, std::abs(b.leading[k])));
        }
      }
    }
  }
}

TEST_CASE("classify without a list (keep = 0) gives the sorted classification's leading values") {
  // classify's scan (keep <= 0, what training asks for: no allocation) against its sort, on
  // spectra with conjugate pairs, real parts that tie to rounding with other eigenvalues (E's
  // -1/tau_E beside a pair), exact ties, positive and negative leading parts, and NaN.
  std::mt19937_64 rng(test::seed() + 91);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  sim::StabilityParameters listed, scan;
  scan.keep = 0;
  for (int trial = 0; trial < 400; ++trial) {
    CAPTURE(trial);
    std::vector<std::complex<double>> l;
    const int pairs = trial % 4, reals = 1 + trial % 3;
    for (int k = 0; k < pairs; ++k) {
      const std::complex<double> z(0.1 * u(rng), std::abs(u(rng)));
      l.push_back(z);
      l.push_back(std::conj(z));
    }
    for (int k = 0; k < reals; ++k) l.emplace_back(0.1 * u(rng), 0.0);
    if (trial % 5 == 1 && pairs > 0) l.back() = {l[0].real() * (1 + 1e-14), 0.0};  // a tie
    if (trial % 5 == 2) l.push_back(l[0]);                                         // exact
    if (trial % 7 == 3) l.emplace_back(std::nan(""), 0.0);
    std::shuffle(l.begin(), l.end(), rng);
    const Eigen::VectorXcd ev =
        Eigen::Map<const Eigen::VectorXcd>(l.data(), Eigen::Index(l.size()));
    const auto a = sim::classify(ev, listed);
    const auto b = sim::classify(ev, scan);
    CHECK(a.cls == b.cls);
    CHECK(b.leading.empty());
    if (a.cls == sim::Stability::unknown) continue;
    CHECK(a.max_real == b.max_real);
    CHECK(a.frequency_hz == b.frequency_hz);
  }
  CHECK(sim::classify(Eigen::VectorXcd(0), scan).cls == sim::Stability::stable);
  // Hand-made cases: real parts tied to rounding with equal imaginary parts (the larger real
  // part leads), a non-finite imaginary part, a signed zero.
  using C = std::complex<double>;
  const double r = 0.25;
  const std::vector<std::vector<C>> cases = {{C(r, 0), C(r * (1 + 1e-14), 0)},
                                             {C(r * (1 + 1e-14), 0), C(r, 0)},
                                             {C(-r, 0.5), C(-r * (1 + 1e-14), 0.5), C(-1, 0)},
                                             {C(1, 0), C(0, INFINITY)},
                                             {C(0.5, -0.0), C(0.5 * (1 + 1e-14), 0.0)},
                                             {C(-0.1, 2.0), C(-0.1, -2.0), C(-0.1, 0.0)}};
  for (const auto& l : cases) {
    const Eigen::VectorXcd ev =
        Eigen::Map<const Eigen::VectorXcd>(l.data(), Eigen::Index(l.size()));
    const auto a = sim::classify(ev, listed);
    const auto b = sim::classify(ev, scan);
    CHECK(a.cls == b.cls);
    CHECK(a.max_real == b.max_real);
    CHECK(a.frequency_hz == b.frequency_hz);
  }
  CHECK(sim::classify(Eigen::Map<const Eigen::VectorXcd>(cases[0].data(), 2), scan).max_real ==
        r * (1 + 1e-14));
  CHECK(sim::classify(Eigen::Map<const Eigen::VectorXcd>(cases[3].data(), 2), scan).cls ==
        sim::Stability::unknown);
}

TEST_CASE("reduced_stability without a list classifies as with one, for every storage size") {
  // f = 0 ... 10 free units: the fixed-size (f <= 3), fixed-capacity (f <= 8) and large
  // reductions, on random blocks whose spectra straddle the imaginary axis.
  std::mt19937_64 rng(test::seed() + 93);
  sim::StabilityParameters listed, scan;
  scan.keep = 0;
  for (int f = 0; f <= 10; ++f)
    for (int trial = 0; trial < 8; ++trial) {
      CAPTURE(f);
      CAPTURE(trial);
      const Eigen::MatrixXd D = test::random_matrix<double>(f, f, -1.0, 0.6, rng);
      const Eigen::MatrixXd CB = test::random_matrix<double>(f, f, -0.5, 0.5, rng);
      const auto a = sim::reduced_stability(D, CB, -0.1, 50, listed);
      const auto b = sim::reduced_stability(D, CB, -0.1, 50, scan);
      CHECK(a.cls == b.cls);
      CHECK(a.max_real == b.max_real);
      CHECK(a.frequency_hz == b.frequency_hz);
      CHECK(b.leading.empty());
      CHECK(a.leading.size() == 4);
    }
}

namespace {

// The classification through class_only (`certified`: certified_stable's answer): stable
// without numbers where certified, the eigensolver's otherwise.
void check_class_only(const Eigen::MatrixXd& D, const Eigen::MatrixXd& CB, double a,
                      bool certified) {
  sim::StabilityParameters full, cls;
  full.keep = cls.keep = 0;
  cls.class_only = true;
  const auto x = sim::reduced_stability(D, CB, a, 50, full);
  const auto y = sim::reduced_stability(D, CB, a, 50, cls);
  CHECK(x.cls == y.cls);
  if (certified) {
    CHECK(y.cls == sim::Stability::stable);
    CHECK(std::isnan(y.max_real));
    CHECK(std::isnan(y.frequency_hz));
  } else {
    CHECK(x.max_real == y.max_real);
    CHECK(x.frequency_hz == y.frequency_hz);
  }
}

}  // namespace

TEST_CASE(
    "the Routh-Hurwitz certificate holds exactly where the eigensolver's spectrum is left of "
    "-shift") {
  // certified_stable(D, CB, a) for f = 0, 1, 2 against Eigen's dense eigensolver of the 2f x 2f
  // reduction [[D, I], [CB, a I]] (and a): certified iff every real part is below -tau, tau =
  // certificate_margin (certificate_shift x the balanced matrix's infinity norm), up to a 1 %
  // band around -tau (rounding). Random
  // blocks scaled over four decades, spectra on both sides of the imaginary axis.
  std::mt19937_64 rng(test::seed() + 94);
  std::uniform_real_distribution<double> decade(-2.0, 2.0), aa(-1.5, 0.05);
  int certified = 0, refused_stable = 0, checked = 0;
  for (int f = 0; f <= 2; ++f)
    for (int trial = 0; trial < 4000; ++trial) {
      CAPTURE(f);
      CAPTURE(trial);
      const double scale = std::pow(10.0, decade(rng));
      const Eigen::MatrixXd D = scale * test::random_matrix<double>(f, f, -1.0, 0.5, rng);
      const Eigen::MatrixXd CB = scale * scale * test::random_matrix<double>(f, f, -0.6, 0.6, rng);
      const double a = scale * aa(rng);
      Eigen::MatrixXd M = Eigen::MatrixXd::Zero(2 * f, 2 * f);
      M.topLeftCorner(f, f) = D;
      M.bottomLeftCorner(f, f) = CB;
      M.topRightCorner(f, f).setIdentity();
      M.bottomRightCorner(f, f).diagonal().setConstant(a);
      double lead = a;
      if (f > 0) {
        const Eigen::VectorXcd ev = Eigen::EigenSolver<Eigen::MatrixXd>(M, false).eigenvalues();
        lead = std::max(lead, ev.real().maxCoeff());
      }
      const double tau = sim::certificate_margin(D, CB, a);
      // The margin is certificate_shift x a bound on the spectral radius.
      CHECK(std::abs(lead) <= tau / sim::certificate_shift * (1.0 + 1e-12));
      const bool c = sim::certified_stable(D, CB, a);
      if (lead < -1.01 * tau) CHECK(c);
      if (lead > -0.99 * tau) CHECK(!c);
      certified += c;
      refused_stable += !c && lead < 0.0;
      ++checked;
      check_class_only(D, CB, a, c);
    }
  // Both outcomes occur often, and few stable spectra fall in the band left to the eigensolver.
  CHECK(certified > checked / 4);
  CHECK(certified < checked * 3 / 4);
  MESSAGE("certified " << certified << " of " << checked << "; stable but not certified "
                       << refused_stable);
  // A quadruple eigenvalue at 0 (M = [[I, I], [-I, -I]] is nilpotent) is refused; moved left
  // by c (D - c I, a - c: every eigenvalue -c) it is refused within the margin and certified
  // beyond it.
  const Eigen::MatrixXd I2 = Eigen::MatrixXd::Identity(2, 2);
  CHECK(!sim::certified_stable(I2, -I2, -1.0));
  const double tau0 = sim::certificate_margin(I2, -I2, -1.0);
  for (const double k : {0.5, 0.9, 1.1, 2.0}) {
    CAPTURE(k);
    const double c = k * tau0;
    const double tau = sim::certificate_margin((1.0 - c) * I2, -I2, -1.0 - c);
    CHECK(sim::certified_stable((1.0 - c) * I2, -I2, -1.0 - c) == (c > tau));
  }
  // Non-finite input is never certified.
  const Eigen::MatrixXd D2 = -Eigen::MatrixXd::Identity(2, 2), C2 = Eigen::MatrixXd::Zero(2, 2);
  CHECK(sim::certified_stable(D2, C2, -1.0));
  Eigen::MatrixXd Dn = D2;
  Dn(0, 1) = std::numeric_limits<double>::quiet_NaN();
  CHECK(!sim::certified_stable(Dn, C2, -1.0));
  CHECK(!sim::certified_stable(D2, C2, std::numeric_limits<double>::infinity()));
}

TEST_CASE("the logarithmic-norm certificate (f > 2) certifies no spectrum right of -shift") {
  // certified_stable for f = 3 to 12 interneuron units (sufficient only: the symmetric part of
  // the balanced reduction below -tau) against Eigen's dense eigensolver of [[D, I], [CB, a I]]:
  // never certified where an eigenvalue lies right of -tau (a 1 % band for rounding), and
  // certified for a fair share of the stable ones. The blocks mimic inhibition through E: D
  // with decaying units and weak links, CB a negative low-rank feedback (E shared by every
  // unit) plus noise, a = -1/tau_E; scaled over four decades.
  std::mt19937_64 rng(test::seed() + 95);
  std::uniform_real_distribution<double> decade(-2.0, 2.0), u01(0.0, 1.0);
  int certified = 0, stable = 0, checked = 0, coupled_unstable = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    CAPTURE(trial);
    const int f = 3 + trial % 10;
    const double scale = std::pow(10.0, decade(rng));
    Eigen::MatrixXd D = (0.3 * u01(rng)) * test::random_matrix<double>(f, f, -0.2, 0.2, rng);
    D.diagonal() -= (0.05 + 0.5 * u01(rng)) * Eigen::VectorXd::Ones(f);
    if (trial % 7 == 0) D(0, 0) += 0.6;  // sometimes a unit that excites itself
    const Eigen::MatrixXd U = test::random_matrix<double>(f, 2, 0.0, 1.0, rng);
    const Eigen::MatrixXd V = test::random_matrix<double>(f, 2, 0.0, 1.0, rng);
    Eigen::MatrixXd CB = (-0.2 * u01(rng) / f) * U * V.transpose() +
                         (0.05 * u01(rng)) * test::random_matrix<double>(f, f, -1.0, 1.0, rng);
    D *= scale;
    CB *= scale * scale;
    const double a = -scale * (0.2 + 2.0 * u01(rng));
    Eigen::MatrixXd M = Eigen::MatrixXd::Zero(2 * f, 2 * f);
    M.topLeftCorner(f, f) = D;
    M.bottomLeftCorner(f, f) = CB;
    M.topRightCorner(f, f).setIdentity();
    M.bottomRightCorner(f, f).diagonal().setConstant(a);
    const double lead =
        std::max(a, Eigen::EigenSolver<Eigen::MatrixXd>(M, false).eigenvalues().real().maxCoeff());
    const double tau = sim::certificate_margin(D, CB, a);
    const bool c = sim::certified_stable(D, CB, a);
    if (lead > -0.99 * tau) CHECK(!c);
    certified += c;
    stable += lead < -1.01 * tau;
    // Not stable through the coupling alone (D's symmetric part and a well left of -tau): the
    // cases that test the coupling blocks of the certificate.
    const double symd = Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(0.5 * (D + D.transpose()))
                            .eigenvalues()
                            .maxCoeff();
    coupled_unstable += lead > -0.99 * tau && symd < -tau && a < -tau;
    ++checked;
    check_class_only(D, CB, a, c);
  }
  MESSAGE("log-norm certificate: certified " << certified << " of " << stable << " stable, "
                                             << checked << " checked, " << coupled_unstable
                                             << " not stable through the coupling alone");
  CHECK(stable < checked);  // unstable spectra occur
  CHECK(coupled_unstable > 0);
  CHECK(certified > stable / 4);
  // The decoupled case is certified at any scale, an excitable unit is not.
  const Eigen::MatrixXd I3 = Eigen::MatrixXd::Identity(3, 3), Z3 = Eigen::MatrixXd::Zero(3, 3);
  for (const double scale : {1e-3, 1.0, 1e3}) {
    CAPTURE(scale);
    CHECK(sim::certified_stable(-scale * I3, Z3, -5.0 * scale));
    CHECK(!sim::certified_stable(0.1 * scale * I3, Z3, -scale));
  }
}

TEST_CASE("the solver's fast path classifies the same without its list of eigenvalues") {
  // FixedPointParameters::stability_leading = 0 (the training forward pass): the same class,
  // growth rate and frequency per sample, and no list. ssn: from the solver's whole Jacobian.
  std::vector<presets::Case> cases = {presets::default_pooled_leaky()};
  for (const auto& c : presets::all())
    if (c.preset != "inorm") cases.push_back(c);
  for (const auto& c : cases) {
    CAPTURE(c.label);
    const auto L = presets::layer<double>(c, kInputs, kUnits, 37);
    const Mat<double> x = inputs(11);
    sim::FixedPointParameters fp;
    fp.tol = {1e-10, 1e-10};
    sim::LayerCache<double> listed, bare;
    sim::forward_layer(L, x, fp, listed);
    fp.stability_leading = 0;
    sim::forward_layer(L, x, fp, bare);
    REQUIRE(!bare.solve.stability_known.empty());
    REQUIRE(bare.checked == listed.checked);
    REQUIRE(int(bare.checked.size()) == kSamples);
    for (std::size_t q = 0; q < bare.checked.size(); ++q) {
      const auto& a = listed.stability.samples[q];
      const auto& b = bare.stability.samples[q];
      CHECK(a.leading.size() == 4);
      CHECK(b.leading.empty());
      CHECK(a.cls == b.cls);
      CHECK(a.max_real == b.max_real);
      CHECK(a.frequency_hz == b.frequency_hz);
    }
    // The class only (the training step's request): the same classes; certified equilibria
    // (NaN growth rate) are stable, the others keep their numbers. Some of the default and of
    // pv_sst_vip's are certified (Routh-Hurwitz and the logarithmic norm).
    fp.stability_class_only = true;
    sim::LayerCache<double> cls;
    sim::forward_layer(L, x, fp, cls);
    REQUIRE(cls.checked == listed.checked);
    int certified = 0;
    for (std::size_t q = 0; q < cls.checked.size(); ++q) {
      const auto& a = listed.stability.samples[q];
      const auto& b = cls.stability.samples[q];
      CHECK(a.cls == b.cls);
      if (std::isnan(b.max_real)) {
        ++certified;
        CHECK(b.cls == sim::Stability::stable);
        CHECK(a.max_real < 0.0);
      } else {
        CHECK(a.max_real == b.max_real);
      }
    }
    MESSAGE(c.label << ": " << certified << " of " << cls.checked.size() << " certified");
    if (c.label == presets::default_pooled_leaky().label || c.preset == "pv_sst_vip")
      CHECK(certified > 0);
  }
}
