// GMRES (sim/src/gmres.hpp, private to sim/): against a direct LU solve on random nonsymmetric
// systems, with and without a preconditioner, and its failure modes.
#include "../../sim/src/gmres.hpp"

#include <doctest/doctest.h>

#include <Eigen/LU>
#include <cmath>
#include <limits>
#include <random>

#include "test_support.hpp"

using namespace eisim;
using Md = Eigen::MatrixXd;
using Vd = Eigen::VectorXd;

namespace {

// A well-conditioned nonsymmetric matrix: 2 I plus a random part of norm about 1.
Md random_system(int n, std::uint64_t salt) {
  std::mt19937_64 rng(test::seed() + salt);
  const Md R = test::random_matrix<double>(n, n, -1.0, 1.0, rng) / std::sqrt(double(n));
  return 2.0 * Md::Identity(n, n) + R;
}

}  // namespace

TEST_CASE("GMRES solves a nonsymmetric system to its tolerance, as LU does") {
  const int n = 40;
  const Md A = random_system(n, 1);
  std::mt19937_64 rng(test::seed() + 2);
  const Vd b = test::random_matrix<double>(n, 1, -1.0, 1.0, rng);
  const Vd x_lu = A.partialPivLu().solve(b);
  const auto op = [&](const Vd& v, Vd& out) { out.noalias() = A * v; };
  const auto none = [](const auto& v, Vd& out) { out = v; };
  sim::detail::Gmres g;
  Vd x;
  REQUIRE(g.solve(op, none, b, x, 1e-10, n));
  CHECK((A * x - b).norm() <= 1e-10 * b.norm() * 1.0001);
  CHECK((x - x_lu).norm() <= 1e-8 * x_lu.norm());
  CHECK(g.iterations > 1);
  MESSAGE("unpreconditioned: " << g.iterations << " vectors");
  // An exact preconditioner: one vector.
  const Eigen::PartialPivLU<Md> lu(A);
  const auto exact = [&](const auto& v, Vd& out) { out = lu.solve(v); };
  REQUIRE(g.solve(op, exact, b, x, 1e-10, n));
  CHECK(g.iterations == 1);
  CHECK((x - x_lu).norm() <= 1e-10 * x_lu.norm());
  // A lagged preconditioner (LU of a perturbed matrix) still converges, in fewer vectors than
  // none.
  Md A2 = A;
  A2.diagonal().array() += 0.1;
  const Eigen::PartialPivLU<Md> lu2(A2);
  const auto lagged = [&](const auto& v, Vd& out) { out = lu2.solve(v); };
  sim::detail::Gmres g0;
  Vd x0;
  REQUIRE(g0.solve(op, none, b, x0, 1e-8, n));
  REQUIRE(g.solve(op, lagged, b, x, 1e-8, n));
  CHECK(g.iterations < g0.iterations);
  CHECK((A * x - b).norm() <= 1e-8 * b.norm() * 1.0001);
}

TEST_CASE("GMRES reports failure: too few vectors, a non-finite right-hand side; b = 0 is x = 0") {
  const int n = 30;
  const Md A = random_system(n, 3);
  const auto op = [&](const Vd& v, Vd& out) { out.noalias() = A * v; };
  const auto none = [](const auto& v, Vd& out) { out = v; };
  sim::detail::Gmres g;
  std::mt19937_64 rng(test::seed() + 4);
  Vd b = test::random_matrix<double>(n, 1, -1.0, 1.0, rng);
  Vd x;
  CHECK_FALSE(g.solve(op, none, b, x, 1e-12, 2));
  CHECK(g.iterations == 2);
  CHECK(g.solve(op, none, Vd::Zero(n), x, 1e-12, n));
  CHECK(x.isZero(0.0));
  b(3) = std::numeric_limits<double>::quiet_NaN();
  CHECK_FALSE(g.solve(op, none, b, x, 1e-12, n));
  // A singular operator whose Krylov space cannot reach b: no convergence, no exception.
  const Md S = Md::Zero(n, n);
  const auto zero = [&](const Vd& v, Vd& out) { out.noalias() = S * v; };
  b(3) = 1.0;
  CHECK_FALSE(g.solve(zero, none, b, x, 1e-12, n));
}
