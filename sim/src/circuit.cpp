// The circuit's equations: drive, right-hand side, residual. See docs/concepts.md.
#include <cmath>
#include <sstream>

#include "eisim/models/error.hpp"
#include "eisim/sim/solver.hpp"

namespace eisim::sim {

using models::InhibitionDrive;
using models::Layer;
using models::LayerKind;

const char* to_string(SolverStatus s) {
  switch (s) {
    case SolverStatus::converged:
      return "converged";
    case SolverStatus::max_iterations:
      return "max_iterations";
    case SolverStatus::diverged:
      return "diverged";
    case SolverStatus::non_finite:
      return "non_finite";
  }
  return "unknown";
}

std::string SolveResult::describe() const {
  std::ostringstream os;
  os << to_string(status) << " after " << iterations << " iterations, residual " << residual
     << " (scaled " << scaled_residual << "), " << failed_samples << "/" << sample_status.size()
     << " samples not converged";
  if (t_final > 0) os << ", t = " << t_final << " ms";
  return os.str();
}

template <class S>
void CircuitState<S>::resize(int n_E, int n_I, int n_D, int batch) {
  v.resize(n_E, batch);
  r_I.resize(n_I, batch);
  r_D.resize(n_D, batch);
}

template <class S>
void excitatory_drive(const models::LayerWeights<S>& w, const Mat<S>& x, Mat<S>& e) {
  e.noalias() = w.W_EX * x;
  e.colwise() += w.b.col(0);
}

template <class S>
void initial_state(const Layer<S>& layer, int batch, CircuitState<S>& z) {
  const auto& c = layer.spec.circuit;
  z.resize(layer.spec.n_E, c.n_I, c.n_D, batch);
  z.v.setZero();
  z.r_I.setZero();
  z.r_D.setOnes();
}

namespace {

// Targets of the feed-forward interneurons: r_I* = W_IX x, r_D* = sqrt(W_DE (U x)^2 + eps).
template <class S>
void feedforward_targets(const Layer<S>& layer, const Mat<S>& x, Mat<S>& rI, Mat<S>& rD) {
  const auto& w = layer.w;
  rI.noalias() = w.W_IX * x;
  Mat<S> ux = w.U * x;
  rD.noalias() = w.W_DE * ux.cwiseAbs2();
  rD = (rD.array() + S(layer.spec.circuit.ff_epsilon)).sqrt().matrix();
}

}  // namespace

template <class S>
void circuit_rhs(const Layer<S>& layer, const Mat<S>& e, const Mat<S>& x, const CircuitState<S>& z,
                 CircuitState<S>& d) {
  if (layer.spec.kind != LayerKind::circuit)
    throw internal_error("circuit_rhs called on a layer that is not a circuit");
  const auto& c = layer.spec.circuit;
  const auto& w = layer.w;
  d.resize(layer.spec.n_E, c.n_I, c.n_D, int(e.cols()));
  // Shunting gain g = sigma0 + W_ED [r_D]_+, subtractive input W_EI [r_I]_+.
  Mat<S> g = w.W_ED * z.r_D.cwiseMax(S(0));
  g.array() += S(c.sigma0);
  Mat<S> u = e;
  u.noalias() -= w.W_EI * z.r_I.cwiseMax(S(0));
  d.v = ((u.array() / g.array() - z.v.array()) / S(c.tau_E)).matrix();
  if (c.drive == InhibitionDrive::feedback) {
    d.r_I.noalias() = S(c.k_I) * (w.W_IE * z.v);
    d.r_I -= S(c.lambda_I) * z.r_I;
    // Rectified interneurons: the rate stays at 0 while its drive is negative.
    d.r_I = (z.r_I.array() <= S(0) && d.r_I.array() < S(0)).select(S(0), d.r_I.array()).matrix();
    d.r_I /= S(c.tau_I);
    Mat<S> q = w.W_DE * z.v.cwiseAbs2();
    d.r_D = (S(c.k_D) * z.r_D.array() * (q.array() - S(c.theta)) -
             S(c.lambda_D) * (z.r_D.array() - S(1))) /
            S(c.tau_D);
  } else {
    Mat<S> rI, rD;
    feedforward_targets(layer, x, rI, rD);
    d.r_I = (rI - z.r_I) / S(c.tau_I);
    d.r_D = (rD - z.r_D) / S(c.tau_D);
  }
}

template <class S>
void circuit_residual(const Layer<S>& layer, const Mat<S>& e, const Mat<S>& x,
                      const CircuitState<S>& z, const Tolerance& tol, std::vector<double>& residual,
                      std::vector<double>& scaled) {
  CircuitState<S> d;
  circuit_rhs(layer, e, x, z, d);
  const auto& c = layer.spec.circuit;
  const int B = int(e.cols());
  residual.assign(B, 0.0);
  scaled.assign(B, 0.0);
  auto acc = [&](const Mat<S>& dz, const Mat<S>& zz, double tau) {
    for (int j = 0; j < B; ++j)
      for (int i = 0; i < dz.rows(); ++i) {
        const double r = std::abs(double(dz(i, j)) * tau);
        const double s = r / (tol.abs_tol + tol.rel_tol * std::abs(double(zz(i, j))));
        // NaN propagates: max with NaN must report NaN.
        if (!(r <= residual[j])) residual[j] = r;
        if (!(s <= scaled[j])) scaled[j] = s;
      }
  };
  acc(d.v, z.v, c.tau_E);
  acc(d.r_I, z.r_I, c.tau_I);
  acc(d.r_D, z.r_D, c.tau_D);
}

#define EISIM_INSTANTIATE(S)                                                                 \
  template struct CircuitState<S>;                                                           \
  template void excitatory_drive<S>(const models::LayerWeights<S>&, const Mat<S>&, Mat<S>&); \
  template void initial_state<S>(const Layer<S>&, int, CircuitState<S>&);                    \
  template void circuit_rhs<S>(const Layer<S>&, const Mat<S>&, const Mat<S>&,                \
                               const CircuitState<S>&, CircuitState<S>&);                    \
  template void circuit_residual<S>(const Layer<S>&, const Mat<S>&, const Mat<S>&,           \
                                    const CircuitState<S>&, const Tolerance&,                \
                                    std::vector<double>&, std::vector<double>&);
EISIM_INSTANTIATE(float)
EISIM_INSTANTIATE(double)
#undef EISIM_INSTANTIATE

}  // namespace eisim::sim
