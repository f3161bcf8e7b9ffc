// The stability check's eigenvalue kernels (sim/src/spectrum.hpp, private to sim/) against
// Eigen's dense EigenSolver: the eigenvalue-only QR, and the leak-plus-low-rank shortcut, which
// must run where its structure holds and refuse where it does not (full rank, NaN, too small).
#include "../../sim/src/spectrum.hpp"

#include <doctest/doctest.h>

#include <Eigen/Eigenvalues>
#include <algorithm>
#include <cmath>
#include <complex>
#include <limits>
#include <random>
#include <vector>

#include "test_support.hpp"

using namespace eisim;
using Md = Eigen::MatrixXd;
using Cd = std::complex<double>;

namespace {

// The k eigenvalues of largest real part (ties: larger imaginary part first).
std::vector<Cd> leading(const Eigen::VectorXcd& ev, std::size_t k) {
  std::vector<Cd> l(ev.data(), ev.data() + ev.size());
  std::sort(l.begin(), l.end(), [](Cd a, Cd b) {
    return a.real() != b.real() ? a.real() > b.real() : a.imag() > b.imag();
  });
  l.resize(std::min(k, l.size()));
  return l;
}

std::vector<Cd> dense_leading(const Md& J, std::size_t k) {
  Eigen::EigenSolver<Md> es(J, false);
  REQUIRE(es.info() == Eigen::Success);
  return leading(es.eigenvalues(), k);
}

// Two groups of units (60 and 40) with leaks -0.05 and -0.1 on the diagonal plus a rank-2 part.
struct LowRank {
  Md J;
  std::vector<Eigen::Index> start{0, 60, 100};
  std::vector<double> lam{-0.05, -0.1};
  explicit LowRank(std::uint64_t salt) {
    std::mt19937_64 rng(test::seed() + salt);
    const Md U = test::random_matrix<double>(100, 2, -0.2, 0.2, rng);
    const Md V = test::random_matrix<double>(100, 2, -0.2, 0.2, rng);
    J = U * V.transpose();
    J.diagonal().head(60).array() += lam[0];
    J.diagonal().tail(40).array() += lam[1];
  }
};

void check_same(const std::vector<Cd>& a, const std::vector<Cd>& b, double rel) {
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    CAPTURE(i);
    CHECK(std::abs(a[i] - b[i]) <= rel * std::max(1.0, std::abs(b[i])));
  }
}

}  // namespace

TEST_CASE("eigenvalue-only QR gives the dense EigenSolver's spectrum") {
  std::mt19937_64 rng(test::seed() + 1);
  const Md A = test::random_matrix<double>(30, 30, -1.0, 1.0, rng);
  Eigen::VectorXcd ev;
  REQUIRE(sim::detail::all_eigenvalues(A, ev));
  CHECK(ev.size() == 30);
  check_same(leading(ev, 30), dense_leading(A, 30), 1e-10);
  Md bad = A;
  bad(4, 7) = std::numeric_limits<double>::quiet_NaN();
  CHECK_FALSE(sim::detail::all_eigenvalues(bad, ev));
}

TEST_CASE("the low-rank shortcut runs where J is leak plus low rank and matches the dense solve") {
  const LowRank c(2);
  Eigen::VectorXcd ev;
  const double tol = 4.0 * std::numeric_limits<double>::epsilon() * c.J.norm();
  REQUIRE(sim::detail::low_rank_spectrum(c.J, c.start, c.lam, tol, 4, ev));
  // At most 2 groups x rank 2 projected eigenvalues, plus each leak listed up to 4 times.
  CHECK(ev.size() <= 4 + 8);
  check_same(leading(ev, 4), dense_leading(c.J, 4), 1e-9);
  // A destabilising rank-2 part: the leading eigenvalue moves right of 0, found by both.
  LowRank u(3);
  u.J += 0.2 * Md::Identity(100, 100);
  for (double& l : u.lam) l += 0.2;
  REQUIRE(sim::detail::low_rank_spectrum(u.J, u.start, u.lam, tol, 4, ev));
  const auto ld = dense_leading(u.J, 4);
  CHECK(ld[0].real() > 0.0);
  check_same(leading(ev, 4), ld, 1e-9);
}

TEST_CASE("the low-rank shortcut refuses full-rank, non-finite and small Jacobians") {
  LowRank c(4);
  Eigen::VectorXcd ev;
  const double tol = 4.0 * std::numeric_limits<double>::epsilon() * c.J.norm();
  std::mt19937_64 rng(test::seed() + 5);
  const Md full = c.J + test::random_matrix<double>(100, 100, -1e-3, 1e-3, rng);
  CHECK_FALSE(sim::detail::low_rank_spectrum(full, c.start, c.lam, tol, 4, ev));
  Md nan = c.J;
  nan(10, 20) = std::numeric_limits<double>::quiet_NaN();
  CHECK_FALSE(sim::detail::low_rank_spectrum(nan, c.start, c.lam, tol, 4, ev));
  Md inf = c.J;
  inf(3, 3) = std::numeric_limits<double>::infinity();
  CHECK_FALSE(sim::detail::low_rank_spectrum(inf, c.start, c.lam, tol, 4, ev));
  CHECK_FALSE(sim::detail::low_rank_spectrum(c.J, c.start, c.lam,
                                             std::numeric_limits<double>::quiet_NaN(), 4, ev));
  const Md small = c.J.topLeftCorner(40, 40);
  CHECK_FALSE(sim::detail::low_rank_spectrum(small, {0, 40}, {c.lam[0]}, tol, 4, ev));
}
