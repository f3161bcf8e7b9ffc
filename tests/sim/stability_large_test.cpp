// The stability check's eigensolves for many interneuron units (sim/stability.hpp): the
// reduction's larger path (f > 8 free interneuron units: LAPACK's eigenvalue-only QR, and the
// units that do not act on E deflated) and the dense path, against Eigen's dense EigenSolver of
// the full Jacobian: random E/I Jacobians built to be stable, unstable (real) and oscillatory,
// and real circuits (pv_sst_vip with its VIP units, the heterogeneous default circuit, ssn).
#include <doctest/doctest.h>

#include <Eigen/Eigenvalues>
#include <random>

#include "dense_spectrum.hpp"
#include "eisim/sim/forward.hpp"
#include "eisim/sim/solver.hpp"
#include "eisim/sim/stability.hpp"
#include "presets.hpp"

using namespace eisim;
namespace presets = test::presets;
using test::dense_reference;

namespace {

void check_same(const sim::SampleStability& got, const sim::SampleStability& ref) {
  CHECK(got.cls == ref.cls);
  CHECK(std::abs(got.max_real - ref.max_real) <= 1e-8 * std::abs(ref.max_real) + 1e-14);
  CHECK(std::abs(got.frequency_hz - ref.frequency_hz) <= 1e-8 * ref.frequency_hz + 1e-10);
  REQUIRE(got.leading.size() == ref.leading.size());
  for (std::size_t k = 0; k < ref.leading.size(); ++k) {
    CAPTURE(k);
    CAPTURE(got.leading[k]);
    CAPTURE(ref.leading[k]);
    CHECK(std::abs(got.leading[k] - ref.leading[k]) <= 1e-8 * std::abs(ref.leading[k]) + 1e-14);
  }
}

// J = [[a I, B], [C, D]]: n_E units of E (leaky, a = -1/tau_E) and f interneuron units with
// own block D = diag(d) + small excitatory links (so that without the loop the leading
// eigenvalue is real: Perron-Frobenius), d uniform in [d_lo, d_hi]. With `loop`, C is Gaussian
// and B = -C^T (C B = -C C^T, every mode in a negative loop through E: complex pairs with real
// part about (a + d) / 2); without, C >= 0 and B <= 0 of size `coupling`. The last `silent` units
// do not act on E (zero columns of B) and have d = -0.2.
struct RandomCircuit {
  Eigen::MatrixXd B, C, D;
  double a = -0.01;
};

RandomCircuit random_circuit(int n_E, int f, int silent, double d_lo, double d_hi, bool loop,
                             double coupling, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::normal_distribution<double> g(0.0, 1.0);
  RandomCircuit c;
  c.C.resize(f, n_E);
  c.B.resize(n_E, f);
  for (int j = 0; j < f; ++j)
    for (int i = 0; i < n_E; ++i) {
      c.C(j, i) = loop ? g(rng) / std::sqrt(double(n_E)) : coupling * u(rng) / n_E;
      c.B(i, j) = loop ? -c.C(j, i) : -coupling * u(rng) / f;
    }
  c.B.rightCols(silent).setZero();
  c.D.resize(f, f);
  for (int i = 0; i < f; ++i)
    for (int j = 0; j < f; ++j) c.D(i, j) = i == j ? d_lo + (d_hi - d_lo) * u(rng) : 1e-3 * u(rng);
  for (int i = f - silent; i < f; ++i) c.D(i, i) = -0.2;
  return c;
}

Eigen::MatrixXd full_jacobian(const RandomCircuit& c) {
  const Eigen::Index n_E = c.B.rows(), f = c.D.rows();
  Eigen::MatrixXd J = Eigen::MatrixXd::Zero(n_E + f, n_E + f);
  J.topLeftCorner(n_E, n_E).diagonal().setConstant(c.a);
  J.topRightCorner(n_E, f) = c.B;
  J.bottomLeftCorner(f, n_E) = c.C;
  J.bottomRightCorner(f, f) = c.D;
  return J;
}

}  // namespace

TEST_CASE("the large reduction gives the full Jacobian's spectrum: stable, unstable, oscillatory") {
  std::mt19937_64 rng(test::seed() + 41);
  struct Kind {
    const char* label;
    double d_lo, d_hi;
    bool loop;
    double coupling;
    sim::Stability expect;
  };
  // Self-inhibited units in a strong loop: damped oscillations. Some self-excited units, a weak
  // loop: a real positive eigenvalue. Slightly self-excited units in a strong loop: growing
  // oscillations.
  const Kind kinds[] = {{"stable", -0.5, -0.1, true, 1.0, sim::Stability::stable},
                        {"unstable", -0.05, 0.05, false, 1e-3, sim::Stability::unstable},
                        {"oscillatory", 0.02, 0.03, true, 1.0, sim::Stability::oscillatory}};
  for (const auto& k : kinds)
    for (const int f : {9, 24, 60})
      for (const int silent : {0, f / 3}) {
        CAPTURE(std::string(k.label));
        CAPTURE(f);
        CAPTURE(silent);
        const int n_E = 150;
        RandomCircuit c = random_circuit(n_E, f, silent, k.d_lo, k.d_hi, k.loop, k.coupling, rng);
        // At least one self-excited unit where the kind wants some (the draw can miss them all:
        // EISIM_TEST_SEED=1 did at f = 9).
        if (k.expect == sim::Stability::unstable) c.D(0, 0) = k.d_hi;
        const Eigen::MatrixXd CB = c.C * c.B;
        const auto ref = dense_reference(full_jacobian(c), 6);
        REQUIRE(ref.cls == k.expect);
        sim::StabilityParameters sp;
        sp.keep = 6;
        check_same(sim::reduced_stability(c.D, CB, c.a, n_E, sp), ref);
      }
}

TEST_CASE("circuits with many interneuron units: fast path, stability() and a dense solve agree") {
  // pv_sst_vip with 100 E units (10 PV, 10 SST, 5 VIP: the VIP units do not act on E), the
  // heterogeneous leaky default circuit with 8 + 8 interneurons (both on the reduction's larger
  // path), ssn with 100 + 25 units (the solver's full Jacobian, heterogeneous: a dense
  // eigensolve); the reference is Eigen's dense eigensolve of the full Jacobian from the
  // vector-Jacobian products of the batch equations.
  models::CircuitParams d;
  d.heterogeneous = true;
  d.n_I = 8;
  d.n_D = 8;
  d.lambda_I = 0.5;
  d.lambda_D = 0.5;
  models::CircuitParams s;
  s.heterogeneous = true;
  const std::vector<presets::Case> cases = {
      {"pv_sst_vip", "pv_sst_vip", models::CircuitParams{}},
      {"default", "default (heterogeneous, n_I = n_D = 8, leak 0.5)", d},
      {"ssn", "ssn (heterogeneous)", s, 0.1}};
  std::mt19937_64 rng(test::seed() + 43);
  for (const auto& c : cases) {
    CAPTURE(c.label);
    const auto L = presets::layer<double>(c, 12, 100, 31);
    const Mat<double> x = test::random_matrix<double>(12, 3, 0.0, 1.0, rng);
    sim::FixedPointParameters fp;
    fp.tol = {1e-10, 1e-10};
    sim::LayerCache<double> fast;
    sim::forward_layer(L, x, fp, fast);
    REQUIRE(fast.solve.ok());
    REQUIRE(!fast.solve.stability_known.empty());
    const auto generic = sim::stability(L, fast.in, fast.z);
    REQUIRE(generic.samples.size() == 3);
    for (int j = 0; j < 3; ++j) {
      CAPTURE(j);
      const auto ref = dense_reference(sim::dense_jacobian(L, fast.in, fast.z, j), 4);
      check_same(generic.samples[std::size_t(j)], ref);
      check_same(fast.stability.samples[std::size_t(j)], ref);
    }
  }
}

namespace {

// The linear E/I circuit of ../shared/circuits.md (tests/sim/stability_test.cpp) with n_E
// excitatory and n_E / 4 inhibitory units and pooled (constant) weights: its mean mode is the
// two-population circuit (Hopf point tau_I* = tau_E (1 + w_II) / (w_EE - 1) = 15 ms), every
// other mode decays at -1/tau_E or -1/tau_I (n_E - 1 and n_I - 1 times). The dense path sees
// leak plus a rank-2 Jacobian.
models::Layer<double> pooled_linear_ei(int n_E, double w_EE, double tau_I) {
  models::LayerSpec t;
  t.kind = models::LayerKind::circuit;
  t.n_E = n_E;
  t.circuit = models::make_preset("ssn", models::CircuitParams{}, n_E, t.phi);
  auto& pops = t.circuit.populations;
  for (auto& p : pops) p.phi.kind = models::Nonlinearity::identity;
  pops[0].tau = 10.0;
  pops[1].tau = tau_I;
  auto L =
      models::initialise<double>(models::make_network_spec(3, 2, {t}, 1.0, 1), 5).layers.front();
  const double n_I = double(pops[1].size);
  L.w["W_EE"].setConstant(w_EE / n_E);
  L.w["W_EI"].setConstant(2.0 / n_I);
  L.w["W_IE"].setConstant(2.0 / n_E);
  L.w["W_II"].setConstant(0.5 / n_I);
  L.w["W_IX"].setConstant(0.1);
  L.w.W_EX.setConstant(0.2);
  L.w.b.setConstant(0.1);
  return L;
}

// The pooled ssn (power-law rates, 120 E units) solved to equilibrium on 3 random inputs in S,
// with the forward pass's stability check (the low-rank path).
template <class S>
struct PooledSsn {
  models::Layer<S> L;
  sim::LayerCache<S> cache;
  PooledSsn(std::uint64_t salt, const sim::FixedPointParameters& fp)
      : L(presets::layer<S>({"ssn", "ssn (pooled)", models::CircuitParams{}, 0.1}, 12, 120, 31)) {
    std::mt19937_64 rng(test::seed() + salt);
    const Mat<S> x = test::random_matrix<S>(12, 3, 0.0, 1.0, rng);
    sim::forward_layer(L, x, fp, cache);
    REQUIRE(cache.solve.ok());
  }
};

}  // namespace

TEST_CASE("pooled circuits: the low-rank path gives the dense spectrum with multiplicities") {
  struct Kind {
    const char* label;
    double w_EE, tau_I;
    sim::Stability expect;
  };
  // Below the Hopf point a stable focus, above it growing oscillations; with strong
  // recurrent excitation and weak inhibition a saddle (real positive eigenvalue).
  const Kind kinds[] = {{"stable", 2.0, 0.9 * 15.0, sim::Stability::stable},
                        {"oscillatory", 2.0, 1.1 * 15.0, sim::Stability::oscillatory},
                        {"unstable", 6.0, 2.0, sim::Stability::unstable}};
  for (const auto& k : kinds) {
    CAPTURE(std::string(k.label));
    const auto L = pooled_linear_ei(80, k.w_EE, k.tau_I);
    const Mat<double> x = Mat<double>::Ones(3, 2);
    sim::CircuitInput<double> in;
    sim::circuit_input(L, x, in);
    sim::CircuitState<double> z;
    sim::initial_state(L, 2, z);
    sim::StabilityParameters sp;
    sp.keep = 6;  // the mean mode's pair and the -1/tau multiplicities
    const auto res = sim::stability(L, in, z, sp);
    for (int j = 0; j < 2; ++j) {
      CAPTURE(j);
      const auto ref = dense_reference(sim::dense_jacobian(L, in, z, j), 6);
      CHECK(ref.cls == k.expect);
      check_same(res.samples[std::size_t(j)], ref);
    }
  }
  // The pooled ssn with its power-law rates at real equilibria.
  sim::FixedPointParameters fp;
  fp.tol = {1e-10, 1e-10};
  const PooledSsn<double> ssn(47, fp);
  const auto& L = ssn.L;
  const auto& cache = ssn.cache;
  for (int j = 0; j < 3; ++j) {
    CAPTURE(j);
    check_same(cache.stability.samples[std::size_t(j)],
               dense_reference(sim::dense_jacobian(L, cache.in, cache.z, j), 4));
  }
}

TEST_CASE("a float Jacobian: the low-rank path agrees with the dense solve to float rounding") {
  // Training runs in float: the Jacobian's diagonal (leak plus recurrent term) is rounded to
  // float, so the leak-plus-low-rank split holds to float rounding only; the low-rank path
  // accepts that and its eigenvalues differ from the dense solve of the same float Jacobian
  // by about that much (docs/numerics.md, "The cost of the eigensolve"). The forward pass's
  // own check (the solver's fast path, full_stability) linearises at the solver's double
  // iterate instead of its float rounding: within 1e-5 of the same dense solve.
  const PooledSsn<float> ssn(53, sim::FixedPointParameters{});
  const auto& L = ssn.L;
  const auto& cache = ssn.cache;
  REQUIRE(!cache.solve.stability_known.empty());
  const auto generic = sim::stability(L, cache.in, cache.z);
  double worst = 0.0, worst_fast = 0.0;
  for (int j = 0; j < 3; ++j) {
    CAPTURE(j);
    const auto ref = dense_reference(sim::dense_jacobian(L, cache.in, cache.z, j), 4);
    const auto relative = [&](const sim::SampleStability& got, double& w) {
      CHECK(got.cls == ref.cls);
      REQUIRE(got.leading.size() == ref.leading.size());
      for (std::size_t k = 0; k < ref.leading.size(); ++k)
        w = std::max(w, std::abs(got.leading[k] - ref.leading[k]) / std::abs(ref.leading[k]));
    };
    relative(generic.samples[std::size_t(j)], worst);
    relative(cache.stability.samples[std::size_t(j)], worst_fast);
  }
  MESSAGE("largest relative difference of the leading eigenvalues: "
          << worst << " (the forward pass's check: " << worst_fast << ")");
  CHECK(worst <= 1e-6);
  CHECK(worst_fast <= 1e-5);
}
