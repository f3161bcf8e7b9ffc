#include <doctest/doctest.h>

#include <boost/numeric/odeint.hpp>
#include <cmath>

#include "circuits.hpp"
#include "eisim/sim/solver.hpp"

using namespace eisim;

namespace {

// The circuit as an odeint system on a flat vector (the populations' states one after the
// other), for fixed-step order tests.
struct FlatSystem {
  const models::Layer<double>& L;
  const sim::CircuitInput<double>& in;
  void operator()(const std::vector<double>& y, std::vector<double>& dy, double) const {
    sim::CircuitState<double> z, d;
    sim::initial_state(L, int(in.x.cols()), z);
    std::size_t at = 0;
    for (auto& m : z.z) {
      std::copy_n(y.data() + at, m.size(), m.data());
      at += std::size_t(m.size());
    }
    sim::circuit_rhs(L, in, z, d);
    dy.resize(y.size());
    at = 0;
    for (const auto& m : d.z) {
      std::copy_n(m.data(), m.size(), dy.data() + at);
      at += std::size_t(m.size());
    }
  }
};

sim::CircuitInput<double> input_of(const models::Layer<double>& L, const Mat<double>& x) {
  sim::CircuitInput<double> in;
  sim::circuit_input(L, x, in);
  return in;
}

}  // namespace

TEST_CASE("the Dormand-Prince integrator's error shrinks at fifth order with the step") {
  const auto L = test::make_circuit<double>(10, 12, test::leaky_circuit(), 5);
  std::mt19937_64 rng(test::seed() + 10);
  const Mat<double> x = test::random_matrix<double>(10, 2, 0.0, 1.0, rng);
  const auto in = input_of(L, x);
  FlatSystem sys{L, in};
  sim::CircuitState<double> z0;
  sim::initial_state(L, 2, z0);
  z0.z[test::population(L, "I")].setConstant(0.5);  // away from the rectification kink at r_I = 0
  z0.v().setConstant(0.1);
  std::vector<double> y0;
  for (const auto& m : z0.z) y0.insert(y0.end(), m.data(), m.data() + m.size());
  auto solve = [&](double dt) {
    std::vector<double> y = y0;
    boost::numeric::odeint::runge_kutta_dopri5<std::vector<double>> st;
    boost::numeric::odeint::integrate_const(st, sys, y, 0.0, 8.0, dt);
    return y;
  };
  const auto ref = solve(0.01);
  auto err = [&](double dt) {
    const auto y = solve(dt);
    double m = 0;
    for (std::size_t i = 0; i < y.size(); ++i) m = std::max(m, std::abs(y[i] - ref[i]));
    return m;
  };
  const double e1 = err(0.8), e2 = err(0.4), e3 = err(0.2);
  const double p1 = std::log2(e1 / e2), p2 = std::log2(e2 / e3);
  MESSAGE("observed orders " << p1 << ", " << p2);
  CHECK(p1 > 4.5);
  CHECK(p2 > 4.5);
}

TEST_CASE("the adaptive integrator's error at a fixed time shrinks with its tolerance") {
  const auto L = test::make_circuit<double>(10, 12, test::leaky_circuit(), 5);
  std::mt19937_64 rng(test::seed() + 11);
  const Mat<double> x = test::random_matrix<double>(10, 2, 0.0, 1.0, rng);
  const auto in = input_of(L, x);
  auto at_T = [&](double tol) {
    sim::OdeParameters op;
    op.stepper_abs_tol = op.stepper_rel_tol = tol;
    op.tol = {1e-300, 0.0};  // never "converged": run to the observation time
    op.t_max = 30.0;
    sim::CircuitState<double> z;
    Mat<double> v;
    sim::integrate<double>(L, in, op, z, {25.0},
                           [&](double, const sim::CircuitState<double>& s) { v = s.v(); });
    REQUIRE(v.size() > 0);
    return v;
  };
  const Mat<double> ref = at_T(1e-13);
  const double e1 = (at_T(1e-5) - ref).cwiseAbs().maxCoeff();
  const double e2 = (at_T(1e-7) - ref).cwiseAbs().maxCoeff();
  const double e3 = (at_T(1e-9) - ref).cwiseAbs().maxCoeff();
  MESSAGE("errors " << e1 << " " << e2 << " " << e3);
  CHECK(e2 < e1 / 10);
  CHECK(e3 < e2 / 10);
}

TEST_CASE("the trace observer sees every requested time in order") {
  const auto L = test::make_circuit<double>(6, 8, test::default_circuit());
  std::mt19937_64 rng(test::seed() + 12);
  const Mat<double> x = test::random_matrix<double>(6, 3, 0.0, 1.0, rng);
  std::vector<double> seen;
  sim::CircuitState<double> z;
  const auto res =
      sim::integrate<double>(L, input_of(L, x), sim::OdeParameters{}, z, {0.0, 1.0, 5.0, 50.0},
                             [&](double t, const sim::CircuitState<double>& s) {
                               seen.push_back(t);
                               CHECK(s.v().cols() == 3);
                             });
  CHECK(res.ok());
  CHECK(seen == std::vector<double>{0.0, 1.0, 5.0, 50.0});
}
