// Newton's method for the circuit's equilibrium.
//
// The E potentials are eliminated exactly: for given interneuron rates the E equation's fixed
// point is v = (e - W_EI r_I) / (sigma0 + W_ED r_D). Newton then runs on the n_I + n_D
// interneuron unknowns only (the low-rank structure of the circuit), per sample, in double
// precision whatever the storage precision. The divisive rates are solved in log space,
// s = log r_D, with the residual log(k_D W_DE v^2 + lambda_D / r_D) - log(k_D theta + lambda_D):
// this has the same positive roots as the ODE, removes the spurious root r_D = 0 and is nearly
// linear in s for the default circuit, so Newton converges in a few steps from any scale.
#include <Eigen/LU>
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>

#include "eisim/models/error.hpp"
#include "eisim/sim/solver.hpp"

namespace eisim::sim {

using models::InhibitionDrive;
using models::Layer;
using Md = Eigen::MatrixXd;
using Vd = Eigen::VectorXd;

namespace {

constexpr double kTinyRate = 1e-300;

struct FeedbackWeights {
  Md W_EI, W_ED, W_IE, W_DE;
};

// Evaluates the reduced residual and Jacobian for one sample.
struct Evaluator {
  const FeedbackWeights& w;
  const models::CircuitParams& c;
  const Tolerance& tol;
  int n_E, n_I, n_D;
  // Workspace (allocated once per thread).
  Vd e, v, g, u, q, h, G, rD, fI, fD;
  Md A, J;
  Eigen::Array<bool, Eigen::Dynamic, 1> active;  // r_I clamped at 0
  bool degenerate = false;                       // W_DE v^2 == 0 for some unit

  Evaluator(const FeedbackWeights& w_, const models::CircuitParams& c_, const Tolerance& t, int nE)
      : w(w_), c(c_), tol(t), n_E(nE), n_I(c_.n_I), n_D(c_.n_D) {
    e.resize(n_E);
    v.resize(n_E);
    g.resize(n_E);
    u.resize(n_E);
    q.resize(n_D);
    h.resize(n_D);
    G.resize(n_I + n_D);
    rD.resize(n_D);
    fI.resize(n_I);
    fD.resize(n_D);
    A.resize(n_E, n_I + n_D);
    J.resize(n_I + n_D, n_I + n_D);
    active.resize(n_I);
  }

  // State from unknowns (r_I, s); residual G and the ODE's displacement rates fI, fD.
  void evaluate(const Vd& rI, const Vd& s) {
    rD = s.array().exp().matrix();
    g.noalias() = w.W_ED * rD;
    g.array() += c.sigma0;
    u = e;
    u.noalias() -= w.W_EI * rI;
    v = (u.array() / g.array()).matrix();
    fI.noalias() = c.k_I * (w.W_IE * v);
    fI -= c.lambda_I * rI;
    for (int k = 0; k < n_I; ++k) {
      active(k) = rI(k) <= 0.0 && fI(k) < 0.0;
      if (active(k)) fI(k) = 0.0;
    }
    q.noalias() = w.W_DE * v.cwiseAbs2();
    fD = (c.k_D * rD.array() * (q.array() - c.theta) - c.lambda_D * (rD.array() - 1.0)).matrix();
    h = (c.k_D * q.array() + c.lambda_D / rD.array()).matrix();
    const double target = std::log(c.k_D * c.theta + c.lambda_D);
    const double floor = 1e-30 * (c.k_D * c.theta + c.lambda_D);
    degenerate = false;
    G.head(n_I) = fI;
    for (int k = 0; k < n_D; ++k) {
      if (!(h(k) > floor)) degenerate = true;
      G(n_I + k) = std::log(std::max(h(k), floor)) - target;
    }
  }

  // Scaled ODE residual (<= 1 means converged) and unscaled residual. F_v is exactly 0.
  std::pair<double, double> ode_residual(const Vd& rI) const {
    double r = 0, sc = 0;
    for (int k = 0; k < n_I; ++k) {
      const double a = std::abs(fI(k));
      r = std::max(r, a);
      sc = std::max(sc, a / (tol.abs_tol + tol.rel_tol * std::abs(rI(k))));
    }
    for (int k = 0; k < n_D; ++k) {
      const double a = std::abs(fD(k));
      r = std::max(r, a);
      sc = std::max(sc, a / (tol.abs_tol + tol.rel_tol * std::abs(rD(k))));
    }
    if (!std::isfinite(r) || !v.allFinite())
      return {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::quiet_NaN()};
    return {r, sc};
  }

  // Jacobian of G with respect to (r_I, s) at the last evaluated point.
  void jacobian() {
    // A = [dv/dr_I, dv/ds] = [-diag(1/g) W_EI, -diag(v/g) W_ED diag(r_D)]
    A.leftCols(n_I) = -(w.W_EI.array().colwise() / g.array()).matrix();
    A.rightCols(n_D) =
        -((w.W_ED.array().colwise() * (v.array() / g.array())).rowwise() * rD.transpose().array())
             .matrix();
    J.topRows(n_I).noalias() = c.k_I * (w.W_IE * A);
    J.topLeftCorner(n_I, n_I).diagonal().array() -= c.lambda_I;
    // dG_D/d(.) = diag(k_D / h) W_DE diag(2 v) A, plus -lambda_D / (r_D h) on the s diagonal.
    Md B = w.W_DE * ((2.0 * v).asDiagonal() * A);
    for (int k = 0; k < n_D; ++k) {
      const double hk = std::max(h(k), 1e-300);
      J.row(n_I + k) = (c.k_D / hk) * B.row(k);
      J(n_I + k, n_I + k) -= c.lambda_D / (rD(k) * hk);
    }
    // A divisive unit that sees no E activity (W_DE v^2 = 0, e.g. a constant drive) has no
    // positive fixed point; its rate decays to 0 (as in the ODE): step log r_D down.
    for (int k = 0; k < n_D; ++k)
      if (!(h(k) > 1e-30 * (c.k_D * c.theta + c.lambda_D))) {
        J.row(n_I + k).setZero();
        J(n_I + k, n_I + k) = 1.0;
        G(n_I + k) = 1e300;  // capped to max_log_step by the caller
      }
    // Clamped interneurons are fixed at 0: identity row/column, zero residual.
    for (int k = 0; k < n_I; ++k)
      if (active(k)) {
        J.row(k).setZero();
        J.col(k).setZero();
        J(k, k) = 1.0;
        G(k) = 0.0;
      }
  }

  double merit() const {
    double m = 0;
    for (int k = 0; k < n_I + n_D; ++k)
      if (k >= n_I || !active(k)) m += G(k) * G(k);
    return m;
  }

  // Interface of newton_column (shared with PooledEvaluator).
  struct State {
    Vd rI, s;
  };
  Vd delta;
  Eigen::PartialPivLU<Md> lu;

  template <class S>
  void load(const Mat<S>& drive, const CircuitState<S>& z, int j, State& x) {
    e = drive.col(j).template cast<double>();
    x.rI = z.r_I.col(j).template cast<double>().cwiseMax(0.0);
    x.s = z.r_D.col(j).template cast<double>().cwiseMax(kTinyRate).array().log().matrix();
  }
  template <class S>
  void store(const State& x, int j, CircuitState<S>& z) const {
    z.r_I.col(j) = x.rI.cast<S>();
    z.r_D.col(j) = x.s.array().exp().matrix().cast<S>();
    z.v.col(j) = v.cast<S>();
  }
  bool drive_finite() const { return e.allFinite(); }
  void evaluate(const State& x) { evaluate(x.rI, x.s); }
  std::pair<double, double> ode_residual(const State& x) const { return ode_residual(x.rI); }
  // The subtractive rates that balance the I equation at the current gain (an n_I x n_I solve).
  void block_start(State& x) const {
    const Md M = c.k_I * (w.W_IE * (g.cwiseInverse().asDiagonal() * w.W_EI)) +
                 c.lambda_I * Md::Identity(n_I, n_I);
    const Vd rhs = c.k_I * (w.W_IE * (e.array() / g.array()).matrix());
    const Vd r0 = Eigen::FullPivLU<Md>(M).solve(rhs);
    if (r0.allFinite()) x.rI = r0.cwiseMax(0.0);
  }
  // Newton direction at the last evaluated point, log r_D changes capped; false if not finite.
  bool direction(double max_log_step) {
    jacobian();
    lu.compute(J);
    delta = -lu.solve(G);
    if (!delta.allFinite()) return false;
    delta.tail(n_D) = delta.tail(n_D).cwiseMax(-max_log_step).cwiseMin(max_log_step);
    return true;
  }
  void trial(const State& x, double t, State& out) const {
    out.rI = (x.rI + t * delta.head(n_I)).cwiseMax(0.0);
    out.s = x.s + t * delta.tail(n_D);
  }
  bool diverging(const State& x) const { return x.s.cwiseAbs().maxCoeff() > 700.0; }
};

template <class S>
void finish_result(SolveResult& res) {
  res.status = SolverStatus::converged;
  res.failed_samples = 0;
  res.residual = 0;
  res.iterations = 0;
  const auto rank = [](SolverStatus s) {
    switch (s) {
      case SolverStatus::converged:
        return 0;
      case SolverStatus::max_iterations:
        return 1;
      case SolverStatus::diverged:
        return 2;
      case SolverStatus::non_finite:
        return 3;
    }
    return 3;
  };
  for (std::size_t j = 0; j < res.sample_status.size(); ++j) {
    if (res.sample_status[j] != SolverStatus::converged) ++res.failed_samples;
    if (rank(res.sample_status[j]) > rank(res.status)) res.status = res.sample_status[j];
    res.iterations = std::max(res.iterations, res.sample_iterations[j]);
    const double r = res.sample_residual[j];
    if (!(r <= res.residual)) res.residual = r;
  }
}

// The same reduced problem for the default pooled circuit (n_I = n_D = 1): every quantity is a
// scalar or a sum over the E units, so one pass computes the residual and one more the 2 x 2
// Jacobian, with no matrix temporaries (the general Evaluator spends most of its time in Eigen's
// product setup for these rank-1 products). Same equations, clamps and safeguards as Evaluator;
// tests/sim/fixed_point_test.cpp checks that both give the same iterates.
struct PooledEvaluator {
  using Ad = Eigen::ArrayXd;
  Eigen::Map<const Ad> wEI, wED, wIE, wDE;  // the four weight vectors, length n_E
  const models::CircuitParams& c;
  const Tolerance& tol;
  int n_E;
  Ad e, v, ig;  // drive, potentials and 1 / gain of the last evaluation
  double rD = 1, fI = 0, fD = 0, h = 0, G0 = 0, G1 = 0, J00 = 0, J01 = 0, J10 = 0, J11 = 0;
  bool active = false, degenerate = false, finite = true;

  PooledEvaluator(const FeedbackWeights& w, const models::CircuitParams& c_, const Tolerance& t,
                  int nE)
      : wEI(w.W_EI.data(), nE),
        wED(w.W_ED.data(), nE),
        wIE(w.W_IE.data(), nE),
        wDE(w.W_DE.data(), nE),
        c(c_),
        tol(t),
        n_E(nE),
        e(nE),
        v(nE),
        ig(nE) {}

  // Element-wise passes and reductions that Eigen vectorises (the arrays stay in L1).
  void evaluate(double rI, double s) {
    rD = std::exp(s);
    ig = (wED * rD + c.sigma0).inverse();
    v = (e - wEI * rI) * ig;
    const double sI = (wIE * v).sum(), sD = (wDE * v.square()).sum();
    // A non-finite potential makes both sums non-finite (0 * inf is NaN).
    finite = std::isfinite(sI) && std::isfinite(sD);
    fI = c.k_I * sI - c.lambda_I * rI;
    active = rI <= 0.0 && fI < 0.0;
    if (active) fI = 0.0;
    fD = c.k_D * rD * (sD - c.theta) - c.lambda_D * (rD - 1.0);
    h = c.k_D * sD + c.lambda_D / rD;
    const double floor = 1e-30 * (c.k_D * c.theta + c.lambda_D);
    degenerate = !(h > floor);
    G0 = fI;
    G1 = std::log(std::max(h, floor)) - std::log(c.k_D * c.theta + c.lambda_D);
  }

  std::pair<double, double> ode_residual(double rI) const {
    const double r = std::max(std::abs(fI), std::abs(fD));
    if (!std::isfinite(r) || !finite)
      return {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::quiet_NaN()};
    const double sc = std::max(std::abs(fI) / (tol.abs_tol + tol.rel_tol * std::abs(rI)),
                               std::abs(fD) / (tol.abs_tol + tol.rel_tol * std::abs(rD)));
    return {r, sc};
  }

  void jacobian() {
    // dv/dr_I = -w_EI / g, dv/ds = -w_ED v r_D / g (see Evaluator::jacobian).
    // With d0 = -w_EI / g and d1 = -w_ED v / g: J00 = k_I sum w_IE d0, J01 = k_I r_D sum
    // w_IE d1, J10 = k_D / h sum 2 w_DE v d0, J11 = k_D r_D / h sum 2 w_DE v d1 (+ leak).
    const double a00 = -(wIE * wEI * ig).sum(), a01 = -(wIE * wED * v * ig).sum();
    const double b0 = -2.0 * (wDE * v * wEI * ig).sum();
    const double b1 = -2.0 * (wDE * v.square() * wED * ig).sum();
    const double hk = std::max(h, 1e-300);
    J00 = c.k_I * a00 - c.lambda_I;
    J01 = c.k_I * rD * a01;
    J10 = (c.k_D / hk) * b0;
    J11 = (c.k_D / hk) * rD * b1 - c.lambda_D / (rD * hk);
    if (degenerate) {
      J10 = 0.0;
      J11 = 1.0;
      G1 = 1e300;
    }
    if (active) {
      J00 = 1.0;
      J01 = J10 = 0.0;
      G0 = 0.0;
    }
  }

  double merit() const { return (active ? 0.0 : G0 * G0) + G1 * G1; }

  // Interface of newton_column (see Evaluator).
  struct State {
    double rI = 0, s = 0;
  };
  double d0 = 0, d1 = 0;  // Newton direction

  template <class S>
  void load(const Mat<S>& drive, const CircuitState<S>& z, int j, State& x) {
    e = drive.col(j).template cast<double>();
    x.rI = std::max(double(z.r_I(0, j)), 0.0);
    x.s = std::log(std::max(double(z.r_D(0, j)), kTinyRate));
  }
  template <class S>
  void store(const State& x, int j, CircuitState<S>& z) const {
    z.r_I(0, j) = S(x.rI);
    z.r_D(0, j) = S(std::exp(x.s));
    z.v.col(j) = v.cast<S>();
  }
  bool drive_finite() const { return e.allFinite(); }
  void evaluate(const State& x) { evaluate(x.rI, x.s); }
  std::pair<double, double> ode_residual(const State& x) const { return ode_residual(x.rI); }
  void block_start(State& x) const {
    const double m = c.k_I * (wIE * wEI * ig).sum() + c.lambda_I;
    const double rhs = (wIE * e * ig).sum();
    // A singular 1 x 1 system has the minimum-norm solution 0 (as FullPivLU gives).
    const double r0 = m != 0.0 ? c.k_I * rhs / m : 0.0;
    if (std::isfinite(r0)) x.rI = std::max(r0, 0.0);
  }
  bool direction(double max_log_step) {
    jacobian();
    // 2 x 2 solve J d = -G by LU with partial pivoting, as the general code's PartialPivLU
    // does: elimination and back substitution never form products like J00 * G1, which
    // overflow for a degenerate divisive unit (G1 = 1e300) where LU gives d1 = -1e300 exactly.
    double a00 = J00, a01 = J01, a10 = J10, a11 = J11, b0 = -G0, b1 = -G1;
    if (std::abs(a10) > std::abs(a00)) {
      std::swap(a00, a10);
      std::swap(a01, a11);
      std::swap(b0, b1);
    }
    const double l = a00 != 0.0 ? a10 / a00 : 0.0;
    d1 = (b1 - l * b0) / (a11 - l * a01);
    d0 = (b0 - a01 * d1) / a00;
    if (!std::isfinite(d0) || !std::isfinite(d1)) return false;
    d1 = std::clamp(d1, -max_log_step, max_log_step);
    return true;
  }
  void trial(const State& x, double t, State& out) const {
    out.rI = std::max(x.rI + t * d0, 0.0);
    out.s = x.s + t * d1;
  }
  bool diverging(const State& x) const { return std::abs(x.s) > 700.0; }
};

struct ColumnOutcome {
  SolverStatus status = SolverStatus::max_iterations;
  int iterations = 0;
  double residual = 0.0, scaled = 0.0;
};

// Damped Newton for one sample on the evaluator's drive, from x (updated in place).
template <class Ev>
ColumnOutcome newton_column(Ev& ev, typename Ev::State& x, typename Ev::State& x_try,
                            const FixedPointParameters& p, bool block_start,
                            std::vector<double>& history) {
  ColumnOutcome out;
  ev.evaluate(x);  // also for a non-finite drive, so that the stored state shows it
  if (!ev.drive_finite()) {
    out.status = SolverStatus::non_finite;
    out.residual = std::numeric_limits<double>::quiet_NaN();
    return out;
  }
  if (block_start) {
    // Start with the subtractive rates balanced, so Newton starts with the mean removed.
    ev.block_start(x);
    ev.evaluate(x);
  }
  for (;; ++out.iterations) {
    std::tie(out.residual, out.scaled) = ev.ode_residual(x);
    history.push_back(out.residual);
    if (!std::isfinite(out.residual)) {
      out.status = SolverStatus::non_finite;
      return out;
    }
    if (out.scaled <= 1.0) {
      out.status = SolverStatus::converged;
      return out;
    }
    if (out.iterations >= p.max_iterations) {
      out.status = SolverStatus::max_iterations;
      return out;
    }
    if (!ev.direction(p.max_log_step)) {
      out.status = SolverStatus::diverged;
      return out;
    }
    const double m0 = ev.merit();
    const bool degenerate = ev.degenerate;
    double t = 1.0;
    for (int bt = 0; bt <= p.max_backtracks; ++bt, t *= 0.5) {
      ev.trial(x, t, x_try);
      ev.evaluate(x_try);
      if (degenerate || ev.merit() <= (1.0 - 1e-4 * t) * m0) break;
    }
    // Without sufficient decrease take the smallest step anyway; the iteration cap and the
    // reported status guard against stagnation.
    std::swap(x, x_try);
    if (ev.diverging(x)) {
      out.status = SolverStatus::diverged;
      return out;
    }
  }
}

}  // namespace

template <class S>
SolveResult solve_fixed_point(const Layer<S>& layer, const Mat<S>& e, const Mat<S>& x,
                              const FixedPointParameters& p, CircuitState<S>& z) {
  if (layer.spec.kind != models::LayerKind::circuit)
    throw internal_error("solve_fixed_point called on a layer that is not a circuit");
  const auto& c = layer.spec.circuit;
  const int B = int(e.cols()), n_E = layer.spec.n_E;
  if (z.v.cols() != B || z.r_I.rows() != c.n_I || z.r_D.rows() != c.n_D) initial_state(layer, B, z);
  SolveResult res;
  res.sample_status.assign(B, SolverStatus::converged);
  res.sample_iterations.assign(B, 0);
  res.sample_residual.assign(B, 0.0);

  if (c.drive == InhibitionDrive::feedforward) {
    // The interneurons do not see the E population: the fixed point is explicit.
    const auto& w = layer.w;
    z.r_I.noalias() = w.W_IX * x;
    Mat<S> ux = w.U * x;
    z.r_D.noalias() = w.W_DE * ux.cwiseAbs2();
    z.r_D = (z.r_D.array() + S(c.ff_epsilon)).sqrt().matrix();
    Mat<S> g = w.W_ED * z.r_D;
    g.array() += S(c.sigma0);
    z.v = e;
    z.v.noalias() -= w.W_EI * z.r_I.cwiseMax(S(0));
    z.v.array() /= g.array();
    // The state is the fixed point by construction (residual zero up to rounding, which the
    // tests check independently); only a non-finite input can spoil it.
    for (int j = 0; j < B; ++j) {
      res.sample_iterations[j] = 1;
      const bool finite = z.v.col(j).allFinite() && z.r_D.col(j).allFinite();
      res.sample_residual[j] = finite ? 0.0 : std::numeric_limits<double>::quiet_NaN();
      if (!finite) res.sample_status[j] = SolverStatus::non_finite;
    }
    finish_result<S>(res);
    return res;
  }

  FeedbackWeights w{layer.w.W_EI.template cast<double>(), layer.w.W_ED.template cast<double>(),
                    layer.w.W_IE.template cast<double>(), layer.w.W_DE.template cast<double>()};
  std::vector<double> scaled(B, 0.0);
  std::vector<std::vector<double>> histories(B);

  // Newton on the given columns, starting from z (with the block start if asked).
  const bool pooled = c.n_I == 1 && c.n_D == 1 && p.pooled_fast_path;
  auto newton = [&](const std::vector<int>& cols, bool block_start) {
    const int ncols = int(cols.size());
    auto run = [&](auto& ev) {
      typename std::remove_reference_t<decltype(ev)>::State x, x_try;
#pragma omp for schedule(static)
      for (int q = 0; q < ncols; ++q) {
        const int j = cols[q];
        ev.load(e, z, j, x);
        const ColumnOutcome out = newton_column(ev, x, x_try, p, block_start, histories[j]);
        res.sample_status[j] = out.status;
        res.sample_iterations[j] += out.iterations;
        res.sample_residual[j] = out.residual;
        scaled[j] = out.scaled;
        ev.store(x, j, z);
      }
    };
#pragma omp parallel if (ncols >= 128)
    {
      if (pooled) {
        PooledEvaluator ev(w, c, p.tol, n_E);
        run(ev);
      } else {
        Evaluator ev(w, c, p.tol, n_E);
        run(ev);
      }
    }
  };
  std::vector<int> all(B);
  for (int j = 0; j < B; ++j) all[j] = j;
  newton(all, true);

  // Fallback: where Newton failed (it can stall on leaky heterogeneous circuits whose basin is
  // small), integrate the ODE from the common initial state, then polish with Newton.
  std::vector<int> failed;
  for (int j = 0; j < B; ++j)
    if (res.sample_status[j] == SolverStatus::max_iterations ||
        res.sample_status[j] == SolverStatus::diverged)
      failed.push_back(j);
  if (p.ode_fallback && !failed.empty()) {
    const int F = int(failed.size());
    Mat<S> es(e.rows(), F), xs(x.rows(), F);
    for (int q = 0; q < F; ++q) {
      es.col(q) = e.col(failed[q]);
      if (x.cols() == B) xs.col(q) = x.col(failed[q]);
    }
    CircuitState<S> zs;
    initial_state(layer, F, zs);
    OdeParameters op;
    op.tol = p.tol;
    op.t_max = p.fallback_t_max;
    op.max_steps = p.fallback_max_steps;
    // The step error must stay well below the equilibrium tolerance, or the residual stalls
    // just above it (measured in bench/README.md).
    op.stepper_abs_tol = std::min(op.stepper_abs_tol, 0.01 * p.tol.abs_tol);
    op.stepper_rel_tol = std::min(op.stepper_rel_tol, 0.01 * std::max(p.tol.rel_tol, 1e-14));
    const SolveResult ores = integrate(layer, es, xs, op, zs);
    for (int q = 0; q < F; ++q) {
      z.v.col(failed[q]) = zs.v.col(q);
      z.r_I.col(failed[q]) = zs.r_I.col(q);
      z.r_D.col(failed[q]) = zs.r_D.col(q);
      res.sample_iterations[failed[q]] += ores.sample_iterations[q];
    }
    newton(failed, false);
    res.fallback_samples = F;
  }
  for (int j = 0; j < B; ++j)
    if (!(scaled[j] <= res.scaled_residual)) res.scaled_residual = scaled[j];
  // Worst residual after each iteration, over samples (shorter histories hold their last value).
  std::size_t len = 0;
  for (const auto& h : histories) len = std::max(len, h.size());
  res.residual_history.assign(len, 0.0);
  for (const auto& h : histories)
    for (std::size_t i = 0; i < len; ++i) {
      const double r = h.empty() ? 0.0 : h[std::min(i, h.size() - 1)];
      if (!(r <= res.residual_history[i])) res.residual_history[i] = r;
    }
  finish_result<S>(res);
  return res;
}

template SolveResult solve_fixed_point<float>(const Layer<float>&, const Mat<float>&,
                                              const Mat<float>&, const FixedPointParameters&,
                                              CircuitState<float>&);
template SolveResult solve_fixed_point<double>(const Layer<double>&, const Mat<double>&,
                                               const Mat<double>&, const FixedPointParameters&,
                                               CircuitState<double>&);

}  // namespace eisim::sim
