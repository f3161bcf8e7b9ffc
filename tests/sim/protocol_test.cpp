// Stimulus protocols (sim/protocol.hpp): segments and perturbation windows, tested against the
// fixed-point solver and against published behaviour of the motifs (../shared/circuits.md): the
// paradoxical response of an inhibition-stabilised network, and VIP -> SST disinhibition.
#include "eisim/sim/protocol.hpp"

#include <doctest/doctest.h>

#include <random>

#include "presets.hpp"

using namespace eisim;
namespace presets = test::presets;

namespace {

// Observations of a protocol at the requested times.
struct Run {
  std::vector<sim::CircuitState<double>> at;
  sim::SolveResult result;
};

Run run(const models::Layer<double>& L, const std::vector<sim::InputSegment<double>>& segments,
        const std::vector<sim::Perturbation>& perturbations, const std::vector<double>& times) {
  Run out;
  sim::CircuitState<double> z;
  sim::OdeParameters op;
  op.stepper_abs_tol = op.stepper_rel_tol = 1e-10;
  out.result = sim::run_protocol<double>(
      L, segments, perturbations, op, z, times,
      [&](double, const sim::CircuitState<double>& s) { out.at.push_back(s); });
  REQUIRE(out.result.ok());
  REQUIRE(out.at.size() == times.size());
  return out;
}

double mean_rate(const models::Layer<double>& L, const sim::CircuitState<double>& z,
                 const std::string& name) {
  const int p = presets::population(L, name);
  return presets::population_rate(L.spec.circuit.populations[p], z.z[p]).mean();
}

sim::CircuitState<double> newton(const models::Layer<double>& L, const Mat<double>& x) {
  sim::CircuitInput<double> in;
  sim::circuit_input(L, x, in);
  sim::CircuitState<double> z;
  sim::initial_state(L, int(x.cols()), z);
  sim::FixedPointParameters fp;
  fp.tol = {1e-12, 1e-12};
  const auto r = sim::solve_fixed_point(L, in, fp, z);
  INFO(r.describe());
  REQUIRE(r.ok());
  return z;
}

double distance(const sim::CircuitState<double>& a, const sim::CircuitState<double>& b) {
  double d = 0;
  for (std::size_t p = 0; p < a.z.size(); ++p)
    d = std::max(d, (a.z[p] - b.z[p]).cwiseAbs().maxCoeff());
  return d;
}

// The pooled ssn (4 E units, 1 I unit) with every E unit and the I unit driven by e.
models::Layer<double> ssn(double e) {
  presets::Case c{"ssn", "ssn (pooled)", models::CircuitParams{}};
  auto L = presets::layer<double>(c, 3, 4, 7);
  L.w.W_EX.setConstant(e / 3);
  L.w.b.setZero();
  L.w["W_IX"].setConstant(e / 3);
  return L;
}

// E alone is unstable at the state (inhibition held fixed): the largest eigenvalue of
// -I + W_EE diag(phi'(v_E)) is positive. From the equations written out in presets.hpp.
bool inhibition_stabilised(const models::Layer<double>& L, const sim::CircuitState<double>& z) {
  const auto& E = L.spec.circuit.populations[0];
  const int n = E.size;
  Eigen::MatrixXd J = -Eigen::MatrixXd::Identity(n, n);
  Eigen::VectorXd slope(n);
  for (int i = 0; i < n; ++i) slope(i) = presets::rate_slope(E.phi, z.z[0](i, 0));
  J += L.w["W_EE"] * slope.asDiagonal();
  return Eigen::EigenSolver<Eigen::MatrixXd>(J, false).eigenvalues().real().maxCoeff() > 0;
}

}  // namespace

TEST_CASE("a protocol's segments end at each segment's equilibrium") {
  const auto c = presets::all()[0];  // default, heterogeneous, leaky
  const auto L = presets::layer<double>(c, 12, 20, 3);
  std::mt19937_64 rng(test::seed() + 5);
  const Mat<double> x1 = test::random_matrix<double>(12, 1, 0.0, 1.0, rng);
  const Mat<double> x2 = 0.3 * x1;  // a dimmer image
  const auto r = run(L, {{x1, 2000.0}, {x2, 2000.0}}, {}, {1999.999, 3999.999});
  CHECK(distance(r.at[0], newton(L, x1)) <= 1e-5);
  CHECK(distance(r.at[1], newton(L, x2)) <= 1e-5);
}

TEST_CASE("silencing a population removes its output during the window only") {
  const auto c = presets::all()[2];  // pv_sst_vip
  auto L = presets::layer<double>(c, 12, 20, 3);
  std::mt19937_64 rng(test::seed() + 6);
  const Mat<double> x = test::random_matrix<double>(12, 1, 0.0, 1.0, rng);
  const int sst = presets::population(L, "SST");
  const auto r = run(L, {{x, 1200.0}}, {{sst, 400.0, 800.0, 0.0, true}}, {399.9, 799.9, 1199.9});
  // During the window: the equilibrium of the circuit without SST's projections.
  auto L0 = L;
  for (std::size_t k = 0; k < L.spec.circuit.projections.size(); ++k)
    if (L.spec.circuit.projections[k].src == sst) L0.w.at(L.spec.projection_weight[k]).setZero();
  const auto z_on = newton(L, x), z_off = newton(L0, x);
  CHECK(distance(r.at[0], z_on) <= 1e-5);
  CHECK(distance(r.at[1], z_off) <= 1e-5);
  CHECK(distance(r.at[2], z_on) <= 1e-5);
  CHECK(mean_rate(L, r.at[1], "E") > mean_rate(L, r.at[0], "E"));  // SST inhibited E
}

TEST_CASE("ssn: exciting I lowers its rate only when the network is inhibition-stabilised") {
  for (double e : {3.0, 10.0, 0.2, 0.5}) {
    CAPTURE(e);
    const auto L = ssn(e);
    const int I = presets::population(L, "I");
    const auto r = run(L, {{Mat<double>::Ones(3, 1), 1500.0}}, {{I, 750.0, 1500.0, 0.5, false}},
                       {749.0, 1499.0});
    const bool isn = inhibition_stabilised(L, r.at[0]);
    const double before = mean_rate(L, r.at[0], "I"), after = mean_rate(L, r.at[1], "I");
    CAPTURE(before);
    CAPTURE(after);
    // The drives were chosen on both sides of the ISN boundary (v_E = 4/3 for pooled weights).
    CHECK(isn == (e >= 3.0));
    if (isn)
      CHECK(after < before);  // the paradoxical effect
    else
      CHECK(after > before);
    // E's rate falls either way (more inhibition reaches it).
    CHECK(mean_rate(L, r.at[1], "E") < mean_rate(L, r.at[0], "E"));
  }
}

TEST_CASE("pv_sst_vip: driving VIP lowers SST and raises E (disinhibition)") {
  const auto c = presets::all()[2];
  const auto L = presets::layer<double>(c, 12, 20, 11);
  std::mt19937_64 rng(test::seed() + 7);
  const Mat<double> x = test::random_matrix<double>(12, 1, 0.0, 1.0, rng);
  const int vip = presets::population(L, "VIP");
  const auto r = run(L, {{x, 1000.0}}, {{vip, 500.0, 1000.0, 0.5, false}}, {499.0, 999.0});
  CHECK(mean_rate(L, r.at[1], "VIP") > mean_rate(L, r.at[0], "VIP"));
  CHECK(mean_rate(L, r.at[1], "SST") < mean_rate(L, r.at[0], "SST"));
  CHECK(mean_rate(L, r.at[1], "E") > mean_rate(L, r.at[0], "E"));
}
