// The dynamic-size solver's matrix-free products with A = dv_E / dz_core and C = dF_core / dv_E
// (E eliminated) against the matrices formed from the same links. The Krylov steps apply C A
// through apply_A and apply_C; the adjoint applies A^T and C^T through At_times and
// add_Ct_times. A wrong product would only slow Newton down (its residual is evaluated
// independently) and show in the adjoint's gradients far from where it went wrong; here it is
// compared entry by entry.
#include "../../sim/src/sample_system.hpp"

#include <doctest/doctest.h>

#include <Eigen/Dense>
#include <random>

#include "circuits.hpp"
#include "presets.hpp"

using namespace eisim;

namespace {

void check_products(const models::Layer<double>& L, std::uint64_t salt) {
  std::mt19937_64 rng(test::seed() + salt);
  const int B = 3;
  const Mat<double> x = test::random_matrix<double>(int(L.w.W_EX.cols()), B, 0.0, 1.0, rng);
  sim::CircuitInput<double> in;
  sim::circuit_input(L, x, in);
  sim::CircuitState<double> z;
  sim::FixedPointParameters fp;
  REQUIRE(sim::solve_fixed_point(L, in, fp, z).ok());
  const sim::detail::SampleModel model(L);
  REQUIRE(model.st.eliminate_E);
  REQUIRE(!model.pooled);
  sim::detail::SampleSystem<false> ev(model, sim::Tolerance{});
  const int n = model.n, n_E = L.spec.circuit.populations[0].size;
  sim::detail::SampleSystem<false>::State u;
  for (int j = 0; j < B; ++j) {
    CAPTURE(j);
    ev.load(in, z, j, u);
    ev.evaluate(u);
    ev.jacobian();  // forms A and C (and J with C A)
    REQUIRE(ev.A.rows() == n_E);
    REQUIRE(ev.A.cols() == n);
    REQUIRE(ev.C.rows() == n);
    REQUIRE(ev.C.cols() == n_E);
    // Some entry of each is not 0: the comparison below is not between zeros.
    REQUIRE(ev.A.cwiseAbs().maxCoeff() > 0.0);
    REQUIRE(ev.C.cwiseAbs().maxCoeff() > 0.0);
    const Eigen::VectorXd v = Eigen::VectorXd::Random(n), w = Eigen::VectorXd::Random(n_E);
    Eigen::VectorXd out;
    const auto close = [](const Eigen::VectorXd& a, const Eigen::VectorXd& b) {
      return (a - b).cwiseAbs().maxCoeff() <= 1e-12 * (1.0 + b.cwiseAbs().maxCoeff());
    };
    ev.apply_A(v, out);
    CHECK(close(out, ev.A * v));
    ev.apply_C(w, out);
    CHECK(close(out, ev.C * w));
    // C A v both ways, as the Krylov operator forms it.
    Eigen::VectorXd av;
    ev.apply_A(v, av);
    ev.apply_C(av, out);
    CHECK(close(out, ev.C * (ev.A * v)));
    ev.At_times(w, out);
    CHECK(close(out, ev.A.transpose() * w));
    const Eigen::VectorXd base = Eigen::VectorXd::Random(n_E);
    out = base;
    ev.add_Ct_times(v, out);
    CHECK(close(out, base + ev.C.transpose() * v));
    // C A as the solver forms it (over SampleModel::e_source_cols only) equals the whole
    // product: the columns it skips are 0 in A.
    ev.jacobian(false, true);
    const Eigen::MatrixXd full = ev.C * ev.A;
    CHECK((ev.CA - full).cwiseAbs().maxCoeff() <= 1e-12 * (1.0 + full.cwiseAbs().maxCoeff()));
  }
}

}  // namespace

TEST_CASE("matrix-free A, C, A^T and C^T equal the formed matrices' products") {
  SUBCASE("heterogeneous leaky default circuit (subtractive and divisive links into E)") {
    check_products(test::make_circuit<double>(20, 30, test::leaky_circuit(), 5), 1);
  }
  SUBCASE("pv_sst_vip (links among the interneurons, E's links of several populations)") {
    const test::presets::Case c{"pv_sst_vip", "pv_sst_vip", models::CircuitParams{}};
    const auto L = test::presets::layer<double>(c, 12, 20, 7);
    // VIP does not act on E: C A is formed over PV's and SST's columns only.
    const sim::detail::SampleModel model(L);
    int cols = 0;
    for (const auto& run : model.e_source_cols) cols += run.second;
    REQUIRE(L.spec.circuit.populations[3].name == "VIP");
    CHECK(cols == model.n - L.spec.circuit.populations[3].size);
    check_products(L, 2);
  }
}
