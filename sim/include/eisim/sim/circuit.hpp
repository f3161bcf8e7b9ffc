#pragma once
// The circuit's equations, written once (docs/concepts.md, "Circuits"): each population's
// displacement rate F = tau dz/dt, its partial derivatives, the projections that form drives
// and conductances, and the vector-Jacobian product. The ODE integrator, the fixed-point
// solver, the implicit and frozen rules and BPTT all evaluate the circuit through this header.
#include <vector>

#include "eisim/models/network.hpp"
#include "eisim/models/nonlinearity.hpp"

namespace eisim::sim {

/// State of one circuit layer for a batch: one n_P x B matrix per population, in the order of
/// the circuit's populations (E first: its potentials v). Layers that are not circuits keep
/// their pre-activation as the only entry.
template <class S>
struct CircuitState {
  std::vector<Mat<S>> z;
  Mat<S>& v() { return z[0]; }
  const Mat<S>& v() const { return z[0]; }
};

/// What stays fixed while a layer settles: the layer input and each population's external
/// drive (E: e = W_EX x + b; interneurons: their input projections).
template <class S>
struct CircuitInput {
  Mat<S> x;                 ///< the layer input (n_in x B)
  std::vector<Mat<S>> ext;  ///< per population; empty = no external drive
  std::vector<Mat<S>> ux;   ///< per projection: U x of an input_energy projection, else empty
};

/// Everything the equations derive from a state, per population (n_P x B).
template <class S>
struct CircuitTerms {
  std::vector<Mat<S>> rate;   ///< r_P
  std::vector<Mat<S>> drate;  ///< d r_P / d z_P
  std::vector<Mat<S>> q;      ///< drive
  std::vector<Mat<S>> g;      ///< shunting conductance (empty: the population's baseline)
  std::vector<Mat<S>> F;      ///< displacement rate tau dz/dt (rectified)
  std::vector<Mat<S>> dF_dz;  ///< local partial derivatives of F
  std::vector<Mat<S>> dF_dq;
  std::vector<Mat<S>> dF_dg;
  std::vector<Mat<S>> signal;   ///< per projection from a population: what it carries
  std::vector<Mat<S>> dsignal;  ///< d signal / d z_source
};

/// The local dynamics of one population (the one definition of the three kinds): F and its
/// partials from the state z, the drive q and the conductance g, element-wise. `g` may be null
/// (no divisive input: the baseline conductance). Works on batches and on single samples.
/// With `local` false only dF_dq and dF_dg are asked for: F and dF_dz may be left untouched.
template <class Z, class Q, class G, class Out>
void population_terms(const models::Population& p, const Z& z, const Q& q, const G* g, Out& F,
                      Out& dF_dz, Out& dF_dq, Out* dF_dg, bool local = true) {
  using S = typename Z::Scalar;
  const auto za = z.array();
  const auto qa = q.array();
  switch (p.dynamics) {
    case models::Dynamics::leaky: {
      if (g) {
        const auto ga = g->array();
        if (local) F = (-za + S(p.rest) + qa / ga).matrix();
        dF_dq = ga.inverse().matrix();
        if (dF_dg) *dF_dg = (-qa / ga.square()).matrix();
      } else {
        const S ig = S(1) / S(p.conductance);
        if (local) F = (-za + S(p.rest) + qa * ig).matrix();
        dF_dq = Out::Constant(z.rows(), z.cols(), ig);
        if (dF_dg) *dF_dg = Out::Constant(z.rows(), z.cols(), S(0));
      }
      if (local) dF_dz = Out::Constant(z.rows(), z.cols(), S(-1));
      break;
    }
    case models::Dynamics::integrator: {
      // Rectification as a boundary: a unit at r <= 0 with a negative drive stays put.
      F = (S(p.gain) * (qa - S(p.setpoint)) - S(p.leak) * za).matrix();
      const auto free = (za > S(0) || F.array() >= S(0)).eval();
      F = free.select(F.array(), S(0)).matrix();
      dF_dz = (free.template cast<S>() * S(-p.leak)).matrix();
      dF_dq = (free.template cast<S>() * S(p.gain)).matrix();
      if (dF_dg) *dF_dg = Out::Constant(z.rows(), z.cols(), S(0));
      break;
    }
    case models::Dynamics::multiplicative: {
      if (local) {
        F = (S(p.gain) * za * (qa - S(p.setpoint)) - S(p.leak) * (za - S(1))).matrix();
        dF_dz = (S(p.gain) * (qa - S(p.setpoint)) - S(p.leak)).matrix();
      }
      dF_dq = (S(p.gain) * za).matrix();
      if (dF_dg) *dF_dg = Out::Constant(z.rows(), z.cols(), S(0));
      break;
    }
  }
}

/// Rate r = rho(z) of a population and d r / d z: phi(v) for leaky populations, [r]_+ for the
/// others (derivative 1 on r >= 0, the side the rectification keeps).
template <class Z, class Out>
void population_rate(const models::Population& p, const Z& z, Out& r, Out* dr) {
  using S = typename Z::Scalar;
  if (p.dynamics == models::Dynamics::leaky) {
    models::apply_phi(p.phi, z, r);
    if (dr) models::phi_prime(p.phi, z, *dr);
  } else {
    r = z.cwiseMax(S(0));
    if (dr) *dr = (z.array() >= S(0)).template cast<S>().matrix();
  }
}

/// Signal a projection carries from its (population) source, and its derivative.
template <class Z, class R, class Out>
void projection_signal(const models::Projection& pr, const Z& z_src, const R& r_src,
                       const R& dr_src, Out& s, Out* ds) {
  using S = typename Z::Scalar;
  switch (pr.signal) {
    case models::Signal::rate:
      s = r_src;
      if (ds) *ds = dr_src;
      break;
    case models::Signal::potential:
      s = z_src;
      if (ds) *ds = Out::Ones(z_src.rows(), z_src.cols());
      break;
    case models::Signal::squared_potential:
      s = z_src.cwiseAbs2();
      if (ds) *ds = S(2) * z_src;
      break;
    default:
      break;  // input signals are external drives (CircuitInput)
  }
}

/// Common initial state of every solver: each population at its `initial` value.
template <class S>
void initial_state(const models::Layer<S>& layer, int batch, CircuitState<S>& z);

/// The fixed drives of a batch: e = W_EX x + b for E, input projections for the others.
template <class S>
void circuit_input(const models::Layer<S>& layer, const Mat<S>& x, CircuitInput<S>& in);

/// What evaluate() computes. By default everything; the backward passes ask only for what
/// their vector-Jacobian product reads.
struct EvalNeeds {
  bool partials = false;  ///< dF_dz, dF_dq, dF_dg
  bool dsignal = false;   ///< d signal / d z_source (vjp with dz)
  /// F and dF_dz; false (with partials): only dF_dq and dF_dg are needed (vjp without dz), and
  /// F and dF_dz may be left untouched.
  bool local = true;
  /// Populations whose F (and partials) are needed; empty = all. Only the projections into
  /// them are evaluated, and only their sources' rates.
  std::vector<char> targets;
};

/// Evaluate the circuit at state z: rates, signals, drives, conductances and F (with partials
/// if asked). Entries of populations outside needs.targets are left untouched.
template <class S>
void evaluate(const models::Layer<S>& layer, const CircuitInput<S>& in, const CircuitState<S>& z,
              CircuitTerms<S>& t, const EvalNeeds& needs);

/// Everything, with partials and signal derivatives if `partials`.
template <class S>
void evaluate(const models::Layer<S>& layer, const CircuitInput<S>& in, const CircuitState<S>& z,
              CircuitTerms<S>& t, bool partials) {
  EvalNeeds n;
  n.partials = partials;
  n.dsignal = partials;
  evaluate(layer, in, z, t, n);
}

/// Right-hand side dz/dt = F / tau.
template <class S>
void circuit_rhs(const models::Layer<S>& layer, const CircuitInput<S>& in, const CircuitState<S>& z,
                 CircuitState<S>& dzdt);

/// Convergence test shared by both solvers: a sample has converged when every component's
/// displacement rate |tau_k dz_k/dt| <= abs_tol + rel_tol * |z_k|.
struct Tolerance {
  double abs_tol = 1e-6;
  double rel_tol = 1e-6;
};

/// Per-sample residual max_k |tau_k dz_k/dt| and scaled residual (see Tolerance).
template <class S>
void circuit_residual(const models::Layer<S>& layer, const CircuitInput<S>& in,
                      const CircuitState<S>& z, const Tolerance& tol, std::vector<double>& residual,
                      std::vector<double>& scaled);

/// Vector-Jacobian product of F at the evaluated terms `t` (with partials) for the cotangent w
/// (one n_P x B matrix per population, empty = zero):
///  - grads (if set): adds w^T dF/dW to each projection's weight gradient (and U's);
///  - dz (if set): adds J^T w = (dF/dz)^T w, per population (entries sized on first use);
///  - dext (if set): receives w * dF/dq per population, the cotangent of the external drives
///    (for E: of e = W_EX x + b);
///  - dx (if set): adds the input projections' share of dL/dx (not E's W_EX^T dext[0]).
template <class S>
void vjp(const models::Layer<S>& layer, const CircuitInput<S>& in, const CircuitTerms<S>& t,
         const std::vector<Mat<S>>& w, models::LayerWeights<S>* grads, std::vector<Mat<S>>* dz,
         std::vector<Mat<S>>* dext, Mat<S>* dx);

}  // namespace eisim::sim
