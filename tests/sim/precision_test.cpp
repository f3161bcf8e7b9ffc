// Float32 honesty (docs/numerics.md, "Precision"): the fixed-point solver iterates in double and
// stores the equilibrium in the layer's precision. Its status refers to the double iterate; the
// stored float32 state differs from it by rounding only, and its residual is the iterate's plus
// what that rounding moves F by (bounded through the Jacobian).
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>

#include "eisim/sim/forward.hpp"
#include "eisim/sim/stability.hpp"
#include "presets.hpp"

using namespace eisim;
namespace presets = test::presets;

namespace {

template <class To, class From>
sim::CircuitInput<To> cast_input(const sim::CircuitInput<From>& in) {
  sim::CircuitInput<To> out;
  out.x = in.x.template cast<To>();
  for (const auto& m : in.ext) out.ext.push_back(m.template cast<To>());
  for (const auto& m : in.ux) out.ux.push_back(m.template cast<To>());
  return out;
}

sim::CircuitState<double> to_double(const sim::CircuitState<float>& z) {
  sim::CircuitState<double> out;
  for (const auto& m : z.z) out.z.push_back(m.cast<double>());
  return out;
}

}  // namespace

TEST_CASE("a float32 equilibrium is the double iterate rounded, and its residual is explained") {
  for (const auto& c : {presets::default_pooled_leaky(), presets::all()[0], presets::all()[2]}) {
    CAPTURE(c.label);
    const auto Lf = presets::layer<float>(c, 12, 40, 17);
    const models::Layer<double> Ld = models::cast_layer<double>(Lf);
    std::mt19937_64 rng(test::seed() + 3);
    const Mat<float> x = test::random_matrix<float>(12, 8, 0.0, 1.0, rng);
    sim::FixedPointParameters fp;
    fp.tol = {1e-6, 1e-6};
    fp.stability = sim::StabilityCheck::off;
    sim::LayerCache<float> cf;
    sim::forward_layer(Lf, x, fp, cf);
    REQUIRE(cf.solve.ok());
    // The same drives (computed in float32) solved in double, tightly.
    const auto in_d = cast_input<double>(cf.in);
    sim::CircuitState<double> zd;
    sim::initial_state(Ld, int(x.cols()), zd);
    sim::FixedPointParameters tight = fp;
    tight.tol = {1e-13, 1e-13};
    REQUIRE(sim::solve_fixed_point(Ld, in_d, tight, zd).ok());
    const auto zf = to_double(cf.z);
    std::vector<double> rf, sf, rd, sd;
    sim::circuit_residual(Ld, in_d, zf, fp.tol, rf, sf);
    sim::circuit_residual(Ld, in_d, zd, fp.tol, rd, sd);
    const double eps = std::numeric_limits<float>::epsilon();
    for (int j = 0; j < int(x.cols()); ++j) {
      CAPTURE(j);
      // Rounding only: within a float32 ulp of |z| plus what the 1e-6 tolerance allows.
      double dz = 0, zmax = 0;
      for (std::size_t p = 0; p < zd.z.size(); ++p) {
        dz = std::max(dz, (zf.z[p].col(j) - zd.z[p].col(j)).cwiseAbs().maxCoeff());
        zmax = std::max(zmax, zd.z[p].col(j).cwiseAbs().maxCoeff());
      }
      // dF/dz (F = tau dz/dt) at the tight equilibrium, its row-sum norm.
      Eigen::MatrixXd J = sim::dense_jacobian(Ld, in_d, zd, j);
      int r = 0;
      for (std::size_t p = 0; p < zd.z.size(); ++p)
        for (int i = 0; i < Ld.spec.circuit.populations[p].size; ++i, ++r)
          J.row(r) *= Ld.spec.circuit.populations[p].tau;
      const double lip = J.cwiseAbs().rowwise().sum().maxCoeff();
      // The solver stopped within tolerance of the root: |z_iterate - z*| <= ~ tol scale / (the
      // smallest singular value); bound it with the tolerance and the Jacobian's conditioning.
      const double smin = Eigen::JacobiSVD<Eigen::MatrixXd>(J).singularValues().minCoeff();
      const double solve_slack = (fp.tol.abs_tol + fp.tol.rel_tol * zmax) / smin;
      CHECK(dz <= eps * zmax + solve_slack);
      // The stored state's residual: the tight one plus the Jacobian times the displacement.
      CHECK(rf[j] <= rd[j] + lip * dz * 1.01 + 1e-12);
    }
  }
}

TEST_CASE("in float64 the stored equilibrium is the iterate: its residual meets the tolerance") {
  const auto c = presets::all()[0];
  const auto L = presets::layer<double>(c, 12, 40, 17);
  std::mt19937_64 rng(test::seed() + 4);
  const Mat<double> x = test::random_matrix<double>(12, 8, 0.0, 1.0, rng);
  sim::FixedPointParameters fp;
  fp.tol = {1e-9, 1e-9};
  sim::LayerCache<double> c0;
  sim::forward_layer(L, x, fp, c0);
  REQUIRE(c0.solve.ok());
  std::vector<double> r, s;
  sim::circuit_residual(L, c0.in, c0.z, fp.tol, r, s);
  for (double v : s) CHECK(v <= 1.0);
}
