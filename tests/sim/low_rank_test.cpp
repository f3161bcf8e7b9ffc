// The low-rank path (SampleModel::low_rank: every population a leaky Newton unknown and every
// link between them uniform, as in the ssn with pooled projections). Newton's steps by the
// Woodbury identity, the stability check's spectrum from the links' small linearisation, and
// the adjoint's Woodbury solves, each against the dense path it replaces and against an
// independent answer: the circuit equations' residual, the dense eigensolve and the
// transposed system of the Jacobian formed from the batch equations' vector-Jacobian products.
#include <doctest/doctest.h>

#include <Eigen/Eigenvalues>
#include <algorithm>
#include <random>

#include "../../sim/src/sample_system.hpp"
#include "dense_spectrum.hpp"
#include "eisim/sim/stability.hpp"
#include "presets.hpp"

using namespace eisim;
namespace presets = test::presets;
using test::dense_reference;

namespace {

constexpr int kInputs = 12, kUnits = 20, kBatch = 12;

presets::Case ssn_pooled() {
  return {"ssn", "ssn (pooled projections)", models::CircuitParams{}};
}

sim::CircuitInput<double> input_of(const models::Layer<double>& L, const Mat<double>& x) {
  sim::CircuitInput<double> in;
  sim::circuit_input(L, x, in);
  return in;
}

sim::FixedPointParameters fixed_point(bool low_rank) {
  sim::FixedPointParameters fp;
  fp.tol = {1e-12, 1e-12};
  fp.max_iterations = 100;
  fp.low_rank = low_rank;
  return fp;
}

int weight_of(const models::Layer<double>& L, const std::string& projection) {
  const auto& prs = L.spec.circuit.projections;
  for (std::size_t k = 0; k < prs.size(); ++k)
    if (prs[k].name == projection) return L.spec.projection_weight[k];
  throw std::logic_error("no projection " + projection);
}

}  // namespace

TEST_CASE("the pooled ssn takes the low-rank path; heterogeneous or changed weights do not") {
  const auto L = presets::layer<double>(ssn_pooled(), kInputs, kUnits, 41);
  const sim::detail::SampleModel model(L);
  CHECK(model.low_rank_shape);
  CHECK(model.low_rank);
  models::CircuitParams h;
  h.heterogeneous = true;
  const auto Lh = presets::layer<double>({"ssn", "ssn (heterogeneous)", h}, kInputs, kUnits, 41);
  const sim::detail::SampleModel mh(Lh);
  CHECK(mh.low_rank_shape);
  CHECK(!mh.low_rank);
  // One weight of W_EE changed: no longer uniform, and refresh() sees it.
  auto L2 = L;
  L2.w.at(weight_of(L2, "W_EE"))(0, 1) *= 1.5;
  sim::detail::SampleModel m2(L);
  REQUIRE(m2.low_rank);
  m2.refresh(L2);
  CHECK(!m2.low_rank);
  m2.refresh(L);
  CHECK(m2.low_rank);
  // E eliminated (no recurrent E): not the shape.
  const auto Lp = presets::layer<double>({"pv_sst_vip", "pv_sst_vip", {}}, kInputs, kUnits, 41);
  CHECK(!sim::detail::SampleModel(Lp).low_rank_shape);
}

TEST_CASE("low-rank Newton steps reach the dense solve's equilibrium, and classify it alike") {
  const auto L = presets::layer<double>(ssn_pooled(), kInputs, kUnits, 42);
  std::mt19937_64 rng(test::seed() + 42);
  const Mat<double> x = test::random_matrix<double>(kInputs, kBatch, 0.0, 1.0, rng);
  const auto in = input_of(L, x);
  sim::CircuitState<double> zl, zd;
  sim::initial_state(L, kBatch, zl);
  sim::initial_state(L, kBatch, zd);
  const auto rl = sim::solve_fixed_point(L, in, fixed_point(true), zl);
  const auto rd = sim::solve_fixed_point(L, in, fixed_point(false), zd);
  INFO(rl.describe() << " / " << rd.describe());
  REQUIRE(rl.ok());
  REQUIRE(rd.ok());
  // Every step by the formula: no LU, no GMRES; the dense path the other way round.
  CHECK(rl.low_rank_solves > 0);
  CHECK(rl.factorisations == 0);
  CHECK(rl.krylov_vectors == 0);
  CHECK(rd.low_rank_solves == 0);
  CHECK(rd.factorisations > 0);
  // The same iterates to rounding: the same samples continued, the same equilibria.
  CHECK(rl.continuation_samples == rd.continuation_samples);
  double d = 0, scale = 1;
  for (std::size_t p = 0; p < zd.z.size(); ++p) {
    d = std::max(d, (zl.z[p] - zd.z[p]).cwiseAbs().maxCoeff());
    scale = std::max(scale, zd.z[p].cwiseAbs().maxCoeff());
  }
  CHECK(d <= 1e-9 * scale);
  // Independently: the circuit equations hold at the low-rank equilibrium.
  std::vector<double> residual, scaled;
  sim::circuit_residual(L, in, zl, sim::Tolerance{1e-12, 1e-12}, residual, scaled);
  for (int j = 0; j < kBatch; ++j) CHECK(scaled[std::size_t(j)] <= 1.0);
  // The check's classes and leading eigenvalues: the small linearisation's and the dense
  // path's (full_stability on the formed Jacobian).
  REQUIRE(rl.stability_known.size() == std::size_t(kBatch));
  REQUIRE(rd.stability_known.size() == std::size_t(kBatch));
  for (int j = 0; j < kBatch; ++j) {
    CAPTURE(j);
    REQUIRE(rl.stability_known[std::size_t(j)]);
    REQUIRE(rd.stability_known[std::size_t(j)]);
    const auto &a = rl.sample_stability[std::size_t(j)], &b = rd.sample_stability[std::size_t(j)];
    CHECK(a.cls == sim::Stability::stable);
    CHECK(a.cls == b.cls);
    CHECK(std::abs(a.max_real - b.max_real) <= 1e-8 * std::abs(b.max_real) + 1e-12);
    CHECK(std::abs(a.frequency_hz - b.frequency_hz) <= 1e-6 * b.frequency_hz + 1e-9);
  }
}

TEST_CASE("the low-rank spectrum is the dense Jacobian's, at stable and unstable states") {
  // At states that are not equilibria (the identity holds at any state): E and I potentials
  // drawn so that the power-law slopes vary from unit to unit, with recurrent excitation
  // scaled up so that some states have growing modes. The reference: Eigen's dense eigensolve
  // of the full Jacobian from the batch equations' vector-Jacobian products.
  auto L = presets::layer<double>(ssn_pooled(), kInputs, kUnits, 43);
  std::mt19937_64 rng(test::seed() + 43);
  const int B = 16;
  const Mat<double> x = test::random_matrix<double>(kInputs, B, 0.0, 1.0, rng);
  int unstable = 0, stable = 0, complex_leading = 0;
  // Gains of W_EE and of the E <-> I loop: as built, recurrent excitation 4x, and a strong
  // loop as well (complex leading pairs).
  const double gains[3][2] = {{1.0, 1.0}, {4.0, 1.0}, {4.0, 6.0}};
  for (const auto& gain : gains) {
    CAPTURE(gain[0]);
    CAPTURE(gain[1]);
    auto Lg = L;
    Lg.w.at(weight_of(Lg, "W_EE")) *= gain[0];
    Lg.w.at(weight_of(Lg, "W_EI")) *= gain[1];
    Lg.w.at(weight_of(Lg, "W_IE")) *= gain[1];
    const auto in = input_of(Lg, x);
    sim::CircuitState<double> z;
    sim::initial_state(Lg, B, z);
    for (auto& zp : z.z) zp = test::random_matrix<double>(int(zp.rows()), B, -0.5, 2.0, rng);
    const sim::detail::SampleModel model(Lg);
    REQUIRE(model.low_rank);
    sim::detail::SampleSystem<false> sys(model, sim::Tolerance{});
    sim::detail::SampleSystem<false>::State u;
    for (int j = 0; j < B; ++j) {
      CAPTURE(j);
      sys.load(in, z, j, u);
      sys.evaluate(u);
      sys.form_low_rank();
      Eigen::VectorXcd ev;
      REQUIRE(sys.low_rank_spectrum(3, ev));
      sim::StabilityParameters sp;
      sp.keep = 3;
      const auto got = sim::classify(ev, sp);
      const auto ref = dense_reference(sim::dense_jacobian(Lg, in, z, j), 3);
      CHECK(got.cls == ref.cls);
      CHECK(std::abs(got.max_real - ref.max_real) <= 1e-9 * (1.0 + std::abs(ref.max_real)));
      CHECK(std::abs(got.frequency_hz - ref.frequency_hz) <= 1e-7 * (1.0 + ref.frequency_hz));
      REQUIRE(got.leading.size() == ref.leading.size());
      for (std::size_t k = 0; k < ref.leading.size(); ++k)
        CHECK(std::abs(got.leading[k] - ref.leading[k]) <= 1e-9 * (1.0 + std::abs(ref.leading[k])));
      (ref.max_real > 0 ? unstable : stable) += 1;
      complex_leading += ref.frequency_hz > 0;
    }
  }
  // Both classes and complex leading pairs were exercised (not stable real spectra only).
  MESSAGE("states: " << stable << " stable, " << unstable << " growing, " << complex_leading
                     << " with a complex leading pair");
  CHECK(stable > 0);
  CHECK(unstable > 0);
  CHECK(complex_leading > 0);
}

TEST_CASE("the low-rank adjoint equals the LU adjoint and solves the formed J^T a = rhs") {
  const auto L = presets::layer<double>(ssn_pooled(), kInputs, kUnits, 44);
  std::mt19937_64 rng(test::seed() + 44);
  const Mat<double> x = test::random_matrix<double>(kInputs, kBatch, 0.0, 1.0, rng);
  const Mat<double> g_v = test::random_matrix<double>(kUnits, kBatch, -1.0, 1.0, rng);
  const auto in = input_of(L, x);
  sim::CircuitState<double> z;
  sim::initial_state(L, kBatch, z);
  REQUIRE(sim::solve_fixed_point(L, in, fixed_point(true), z).ok());
  sim::CircuitTerms<double> t;
  sim::evaluate(L, in, z, t, true);
  std::vector<Mat<double>> wl, wd;
  sim::AdjointParameters ap;
  const auto sl = sim::solve_adjoint(L, in, z, t, g_v, ap, wl);
  ap.low_rank = false;
  ap.krylov_min_unknowns = 0;  // every sample by LU
  const auto sd = sim::solve_adjoint(L, in, z, t, g_v, ap, wd);
  REQUIRE(sl.ok());
  REQUIRE(sd.ok());
  CHECK(sl.low_rank_solves == kBatch);
  CHECK(sl.factorisations == 0);
  CHECK(sl.krylov_vectors == 0);
  CHECK(sd.low_rank_solves == 0);
  CHECK(sd.factorisations == kBatch);
  CHECK(sl.worst_residual <= 1e-10);
  CHECK(sl.worst_rcond > 0.0);
  REQUIRE(wl.size() == wd.size());
  for (std::size_t p = 0; p < wd.size(); ++p) {
    CAPTURE(p);
    const double scale = std::max(1.0, wd[p].cwiseAbs().maxCoeff());
    CHECK((wl[p] - wd[p]).cwiseAbs().maxCoeff() <= 1e-9 * scale);
  }
  // Independently: M = dF/dz = diag(tau) (dz/dt)/dz from the batch equations, M^T a = -g_v
  // on E's rows and 0 elsewhere.
  const auto& pops = L.spec.circuit.populations;
  for (int j = 0; j < kBatch; ++j) {
    CAPTURE(j);
    Eigen::MatrixXd M = sim::dense_jacobian(L, in, z, j);
    Eigen::VectorXd a(M.rows()), rhs = Eigen::VectorXd::Zero(M.rows());
    Eigen::Index o = 0;
    for (std::size_t p = 0; p < pops.size(); ++p) {
      M.middleRows(o, pops[p].size) *= pops[p].tau;
      a.segment(o, pops[p].size) = wl[p].col(j);
      o += pops[p].size;
    }
    rhs.head(kUnits) = -g_v.col(j);
    CHECK((M.transpose() * a - rhs).norm() <= 1e-9 * rhs.norm());
  }
}

TEST_CASE("a low-rank solve that misses its residual test says so (the dense path solves)") {
  // A tolerance of 0 cannot be met in floating point: the solve reports failure with its
  // residual instead of returning its x as if exact, and direction() forms the Jacobian.
  const auto L = presets::layer<double>(ssn_pooled(), kInputs, kUnits, 45);
  std::mt19937_64 rng(test::seed() + 45);
  const Mat<double> x = test::random_matrix<double>(kInputs, 1, 0.0, 1.0, rng);
  const auto in = input_of(L, x);
  sim::CircuitState<double> z;
  sim::initial_state(L, 1, z);
  // At the equilibrium (at the initial state no unit is above threshold: V = 0, M diagonal,
  // and the formula is exact).
  REQUIRE(sim::solve_fixed_point(L, in, fixed_point(true), z).ok());
  const sim::detail::SampleModel model(L);
  sim::detail::SampleSystem<false> sys(model, sim::Tolerance{});
  sim::detail::SampleSystem<false>::State u;
  sys.load(in, z, 0, u);
  sys.evaluate(u);
  sys.form_low_rank();
  REQUIRE(sys.lr_V().cwiseAbs().maxCoeff() > 0.0);
  const Eigen::VectorXd b = Eigen::VectorXd::Random(model.n);
  Eigen::VectorXd xs;
  REQUIRE(sys.low_rank_solve(0.0, b, xs, false, 1e-10));
  CHECK(sys.low_rank_residual <= 1e-10);
  REQUIRE(sys.low_rank_residual > 0.0);  // rounding: a tolerance of 0 is not met
  CHECK(!sys.low_rank_solve(0.0, b, xs, false, 0.0));
  // The dense step, then the low-rank one, then the low-rank one with a tolerance it misses.
  sys.low_rank_steps = false;
  REQUIRE(sys.direction(4.0));
  const Eigen::VectorXd dense = sys.delta;
  CHECK(sys.factorisations == 1);
  sys.low_rank_steps = true;
  REQUIRE(sys.direction(4.0));
  CHECK((sys.delta - dense).norm() <= 1e-10 * dense.norm());
  CHECK(sys.low_rank_solves == 1);
  CHECK(sys.factorisations == 1);
  sys.low_rank_rtol = 0.0;
  sys.delta.setZero();
  REQUIRE(sys.direction(4.0));
  CHECK(sys.low_rank_solves == 1);
  CHECK(sys.factorisations == 2);
  CHECK((sys.delta - dense).norm() <= 1e-12 * dense.norm());
}

TEST_CASE("where a population has no more units than low-rank columns, the check forms J") {
  // ssn with 4 E units has one I unit, and its one column (I's rate, to E and to I) leaves no
  // eigenvalue -1/tau_I guaranteed: low_rank_spectrum declines and the solver's check forms
  // the Jacobian; with 8 E units (2 I units) the small problem serves. Both give the dense
  // path's classes and leading real parts.
  for (const int n_E : {4, 8}) {
    CAPTURE(n_E);
    const auto L = presets::layer<double>(ssn_pooled(), kInputs, n_E, 46);
    std::mt19937_64 rng(test::seed() + 46);
    const Mat<double> x = test::random_matrix<double>(kInputs, 4, 0.0, 1.0, rng);
    const auto in = input_of(L, x);
    const sim::detail::SampleModel model(L);
    REQUIRE(model.low_rank);
    CHECK(model.lr_source.size() == 2);  // E's rate and I's rate
    sim::CircuitState<double> zl, zd;
    sim::initial_state(L, 4, zl);
    sim::initial_state(L, 4, zd);
    const auto rl = sim::solve_fixed_point(L, in, fixed_point(true), zl);
    const auto rd = sim::solve_fixed_point(L, in, fixed_point(false), zd);
    REQUIRE(rl.ok());
    REQUIRE(rd.ok());
    sim::detail::SampleSystem<false> sys(model, sim::Tolerance{});
    sim::detail::SampleSystem<false>::State u;
    sys.load(in, zl, 0, u);
    sys.evaluate(u);
    sys.form_low_rank();
    Eigen::VectorXcd ev;
    CHECK(sys.low_rank_spectrum(4, ev) == (n_E == 8));
    for (int j = 0; j < 4; ++j) {
      CAPTURE(j);
      REQUIRE(rl.stability_known[std::size_t(j)]);
      const auto &a = rl.sample_stability[std::size_t(j)], &b = rd.sample_stability[std::size_t(j)];
      CHECK(a.cls == b.cls);
      CHECK(std::abs(a.max_real - b.max_real) <= 1e-8 * std::abs(b.max_real) + 1e-12);
      const auto ref = dense_reference(sim::dense_jacobian(L, in, zl, j), 4);
      CHECK(std::abs(a.max_real - ref.max_real) <= 1e-8 * std::abs(ref.max_real) + 1e-12);
    }
  }
}
