#pragma once
// The stability check's eigenvalue kernels (private to sim/; defined in stability.cpp, declared
// here for the tests).
#include <Eigen/Core>
#include <vector>

namespace eisim::sim::detail {

/// Every eigenvalue of a square matrix, in `ev` (Eigen's Hessenberg reduction, LAPACK's
/// eigenvalue-only dlahqr); false if the QR iteration did not converge or gave non-finite values.
bool all_eigenvalues(const Eigen::Ref<const Eigen::MatrixXd>& A, Eigen::VectorXcd& ev);

/// The spectrum of J = Lambda + L, Lambda = lam[g] on the rows start[g] .. start[g + 1] - 1 and L
/// of low rank, from a small projected eigenproblem (see stability.cpp); false where J has no
/// such structure to `tol` (Frobenius), is too small (n < 48) or is not finite: then the caller
/// solves densely. Each lam[g] is listed at most `keep` times.
bool low_rank_spectrum(const Eigen::MatrixXd& J, const std::vector<Eigen::Index>& start,
                       const std::vector<double>& lam, double tol, int keep, Eigen::VectorXcd& ev);

}  // namespace eisim::sim::detail
