#pragma once
// Right-preconditioned GMRES for the Newton steps of large circuits and for the adjoint solves
// of large systems (sim/src/adjoint.cpp, with the dense J^T as its operator); private to sim/.
//
// Why hand-written and not Eigen's unsupported GMRES: the operator here is matrix-free (the
// E-mediated part C A of the reduced Jacobian is applied as two thin products, never formed),
// the preconditioner is an existing LU of a lagged Jacobian, the dimension is small (tens to a
// few hundred unknowns) and the solve runs per sample inside Newton: Eigen's version wants the
// operator wrapped as a sparse-matrix expression type and allocates its Krylov basis per call.
// This one keeps its workspace between calls and stops after `max_iter` vectors without
// restarting (the caller then refactorises instead). No code was taken from elsewhere; the
// algorithm is the textbook one (Saad & Schultz 1986: Arnoldi with modified Gram-Schmidt,
// Givens rotations on the Hessenberg matrix).
#include <Eigen/Core>
#include <algorithm>
#include <cmath>

namespace eisim::sim::detail {

class Gmres {
 public:
  using Md = Eigen::MatrixXd;
  using Vd = Eigen::VectorXd;

  int iterations = 0;  ///< Krylov vectors built by the last solve()

  /// Solve op(x) = b to ||b - op(x)|| <= rtol ||b|| with the preconditioner x = prec(y)
  /// (right preconditioning: op(prec(.)) is what the Krylov space sees, so the residual tested
  /// is the true one). x starts at 0. `op(v, out)` and `prec(v, out)` write out = A v and
  /// out = M^-1 v. False (x unspecified) if not converged within max_iter vectors or not finite.
  template <class Op, class Prec>
  bool solve(const Op& op, const Prec& prec, const Vd& b, Vd& x, double rtol, int max_iter) {
    const int n = int(b.size());
    const int k_max = std::max(1, std::min(max_iter, n));
    iterations = 0;
    const double beta = b.norm();
    if (!std::isfinite(beta)) return false;
    if (beta == 0.0) {
      x.setZero(n);
      return true;
    }
    V_.resize(n, k_max + 1);
    H_.setZero(k_max + 1, k_max);
    c_.resize(k_max);
    s_.resize(k_max);
    g_.setZero(k_max + 1);
    g_(0) = beta;
    V_.col(0) = b / beta;
    for (int j = 0; j < k_max; ++j) {
      prec(V_.col(j), z_);
      op(z_, w_);
      for (int i = 0; i <= j; ++i) {
        H_(i, j) = w_.dot(V_.col(i));
        w_.noalias() -= H_(i, j) * V_.col(i);
      }
      const double h = w_.norm();
      H_(j + 1, j) = h;
      // The previous rotations, then a new one that zeroes H(j + 1, j).
      for (int i = 0; i < j; ++i) {
        const double t = c_(i) * H_(i, j) + s_(i) * H_(i + 1, j);
        H_(i + 1, j) = -s_(i) * H_(i, j) + c_(i) * H_(i + 1, j);
        H_(i, j) = t;
      }
      const double r = std::hypot(H_(j, j), H_(j + 1, j));
      if (!std::isfinite(r) || r == 0.0) return false;
      c_(j) = H_(j, j) / r;
      s_(j) = H_(j + 1, j) / r;
      H_(j, j) = r;
      H_(j + 1, j) = 0.0;
      g_(j + 1) = -s_(j) * g_(j);
      g_(j) = c_(j) * g_(j);
      iterations = j + 1;
      const bool done = std::abs(g_(j + 1)) <= rtol * beta || h == 0.0;
      if (done) {
        // y = H^-1 g (upper triangular), x = M^-1 V y.
        const auto Hj = H_.topLeftCorner(j + 1, j + 1).triangularView<Eigen::Upper>();
        y_ = Hj.solve(g_.head(j + 1));
        w_.noalias() = V_.leftCols(j + 1) * y_;
        prec(w_, x);
        return x.allFinite();
      }
      V_.col(j + 1) = w_ / h;
    }
    return false;
  }

 private:
  Md V_, H_;
  Vd c_, s_, g_, y_, z_, w_;
};

}  // namespace eisim::sim::detail
