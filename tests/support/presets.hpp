#pragma once
// The preset circuits (default, inorm, pv_sst_vip, ssn) for the sim and learning tests, and the
// circuit equations written out a second time, from docs/concepts.md and ../shared/circuits.md,
// without sim/'s code: the tests hold the solvers and the learning rules to these.
#include <Eigen/Eigenvalues>
#include <Eigen/LU>
#include <algorithm>
#include <cmath>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "eisim/models/circuit.hpp"
#include "eisim/models/network.hpp"
#include "eisim/sim/circuit.hpp"
#include "test_support.hpp"

namespace eisim::test::presets {

/// A preset with the parameters a test builds it from.
struct Case {
  std::string preset;  ///< models::make_preset's name
  std::string label;   ///< what the test reports
  models::CircuitParams params;
  /// Multiplies W_EX and the input projections (W_IX) of every layer after the first. The ssn's
  /// power-law rates are about ten times its drive; a second ssn layer driven that much harder
  /// (drives of 20 to 70) bursts and diverges from the common initial state or settles in one
  /// of several equilibria, so its drive is scaled back to the first layer's range.
  double downstream_gain = 1.0;
};

/// Every preset, with leak and heterogeneity where the preset has them: the default circuit
/// with heterogeneous pooling, three subtractive and two divisive leaky interneurons; inorm
/// with heterogeneous pooling and two subtractive units; pv_sst_vip as it is (heterogeneous
/// leaky populations); ssn with heterogeneous pooling.
inline std::vector<Case> all() {
  std::vector<Case> out;
  models::CircuitParams d;
  d.heterogeneous = true;
  d.n_I = 3;
  d.n_D = 2;
  d.lambda_I = 0.5;
  d.lambda_D = 0.3;
  out.push_back({"default", "default (heterogeneous, n_I = 3, n_D = 2, leak 0.5 / 0.3)", d});
  models::CircuitParams f;
  f.heterogeneous = true;
  f.n_I = 2;
  out.push_back({"inorm", "inorm (heterogeneous, n_I = 2)", f});
  out.push_back({"pv_sst_vip", "pv_sst_vip", models::CircuitParams{}});
  models::CircuitParams s;
  s.heterogeneous = true;
  out.push_back({"ssn", "ssn (heterogeneous)", s, 0.1});
  return out;
}

/// The default circuit with one interneuron of each type, heterogeneous and leaky: the
/// solvers' pooled (compile-time) instantiation with every term non-zero.
inline Case default_pooled_leaky() {
  models::CircuitParams d;
  d.heterogeneous = true;
  d.lambda_I = 0.5;
  d.lambda_D = 0.3;
  return {"default", "default (heterogeneous, n_I = n_D = 1, leak 0.5 / 0.3)", d};
}

/// A hidden-layer template of kind circuit with n_E units built from the case.
inline models::LayerSpec layer_template(const Case& c, int n_E) {
  models::LayerSpec t;
  t.kind = models::LayerKind::circuit;
  t.n_E = n_E;
  t.circuit = models::make_preset(c.preset, c.params, n_E, t.phi);
  t.theta = c.params.theta;
  return t;
}

/// n_in inputs -> `hidden` layers of the case with n_E units -> a 3-unit E/I readout, with
/// non-zero random biases (so that every parameter has a non-trivial gradient).
template <class S>
models::Network<S> network(const Case& c, int n_in, int n_E, int hidden, std::uint64_t seed) {
  const std::vector<models::LayerSpec> layers(hidden, layer_template(c, n_E));
  auto net = models::initialise<S>(models::make_network_spec(n_in, 3, layers, 1.0, 1), seed);
  std::mt19937_64 rng(seed + 99);
  for (auto& l : net.layers) l.w.b = random_matrix<S>(int(l.w.b.rows()), 1, -0.1, 0.1, rng);
  for (std::size_t l = 1; l < net.layers.size(); ++l) {
    auto& L = net.layers[l];
    L.w.W_EX *= S(c.downstream_gain);
    for (std::size_t k = 2; k < L.spec.weights.size(); ++k) {
      const auto& wi = L.spec.weights[k];
      const bool from_input =
          wi.name == "W_IX" ||
          (wi.projection >= 0 && !wi.energy &&
           L.spec.circuit.projections[wi.projection].signal == models::Signal::input);
      if (from_input) L.w.at(int(k)) *= S(c.downstream_gain);
    }
  }
  return net;
}

/// One circuit layer of the case (the first layer of network()).
template <class S>
models::Layer<S> layer(const Case& c, int n_in, int n_E, std::uint64_t seed) {
  return network<S>(c, n_in, n_E, 1, seed).layers.front();
}

/// Index of a population by name; throws if the circuit has none.
template <class S>
int population(const models::Layer<S>& L, const std::string& name) {
  const auto& pops = L.spec.circuit.populations;
  for (std::size_t p = 0; p < pops.size(); ++p)
    if (pops[p].name == name) return int(p);
  throw std::logic_error("the circuit has no population " + name);
}

// ------------------------------------------------------- the equations, written out again

/// r = phi(v) of a rate function, element by element.
inline double rate(const models::NonlinearitySpec& f, double v) {
  switch (f.kind) {
    case models::Nonlinearity::relu:
      return v > 0 ? v : 0.0;
    case models::Nonlinearity::identity:
      return v;
    case models::Nonlinearity::power:
      return v > f.threshold ? f.gain * std::pow(v - f.threshold, f.power) : 0.0;
    case models::Nonlinearity::sqrt:
      return v > 0 ? std::sqrt(v) : 0.0;
    case models::Nonlinearity::softplus:
      return std::log1p(std::exp(f.beta * v)) / f.beta;
  }
  throw std::logic_error("rate: unknown rate function");
}

/// d phi / dv.
inline double rate_slope(const models::NonlinearitySpec& f, double v) {
  switch (f.kind) {
    case models::Nonlinearity::relu:
      return v > 0 ? 1.0 : 0.0;
    case models::Nonlinearity::identity:
      return 1.0;
    case models::Nonlinearity::power:
      return v > f.threshold ? f.gain * f.power * std::pow(v - f.threshold, f.power - 1) : 0.0;
    case models::Nonlinearity::sqrt:
      return v > 0 ? 0.5 / std::sqrt(v) : 0.0;
    case models::Nonlinearity::softplus:
      return 1.0 / (1.0 + std::exp(-f.beta * v));
  }
  throw std::logic_error("rate_slope: unknown rate function");
}

inline Mat<double> rate(const models::NonlinearitySpec& f, const Mat<double>& v) {
  return v.unaryExpr([&f](double a) { return rate(f, a); });
}

/// Rate of a population's state: phi(v) for a leaky population, [r]_+ for the others.
inline Mat<double> population_rate(const models::Population& p, const Mat<double>& z) {
  if (p.dynamics == models::Dynamics::leaky) return rate(p.phi, z);
  return z.cwiseMax(0.0);
}

/// What the equations give at a state: per population its rates, drive q, conductance g and
/// displacement rate F = tau dz/dt.
struct Terms {
  std::vector<Mat<double>> rate, q, g, F;
};

/// The circuit's equations at state z for input x, from the weights by name:
///   q_E = W_EX x + b + sum of E's subtractive projections, q_P = sum of P's projections;
///   a subtractive projection from E or the input adds W s, from an interneuron -W s;
///   g_P = conductance + sum of divisive projections W r;
///   leaky: F = -v + rest + q / g; integrator: F = gain (q - setpoint) - leak r, held at 0
///   while r <= 0 and F < 0; multiplicative: F = gain r (q - setpoint) - leak (r - 1).
inline Terms terms(const models::Layer<double>& L, const Mat<double>& x,
                   const sim::CircuitState<double>& z) {
  const auto& c = L.spec.circuit;
  const std::size_t P = c.populations.size();
  const Eigen::Index B = x.cols();
  Terms t;
  t.rate.resize(P);
  t.q.resize(P);
  t.g.resize(P);
  t.F.resize(P);
  for (std::size_t p = 0; p < P; ++p) {
    const auto& pop = c.populations[p];
    t.rate[p] = population_rate(pop, z.z[p]);
    t.q[p] = Mat<double>::Zero(pop.size, B);
    t.g[p] = Mat<double>::Constant(pop.size, B, pop.conductance);
  }
  t.q[0] = L.w.W_EX * x;
  t.q[0].colwise() += L.w.b.col(0);
  auto index = [&](const std::string& name) {
    for (std::size_t p = 0; p < P; ++p)
      if (c.populations[p].name == name) return int(p);
    throw std::logic_error("terms: unknown population " + name);
  };
  for (const auto& pr : c.projections) {
    const Mat<double>& W = L.w[pr.name];
    const int tgt = index(pr.target);
    Mat<double> s;
    switch (pr.signal) {
      case models::Signal::input:
        s = x;
        break;
      case models::Signal::input_energy:
        s = (L.w[pr.energy_name] * x).array().square().matrix();
        break;
      case models::Signal::rate:
        s = t.rate[index(pr.source)];
        break;
      case models::Signal::potential:
        s = z.z[index(pr.source)];
        break;
      case models::Signal::squared_potential:
        s = z.z[index(pr.source)].array().square().matrix();
        break;
    }
    if (pr.action == models::Action::divisive) {
      t.g[tgt] += W * s;
    } else {
      const bool excitatory = pr.source == "input" || pr.source == "E";
      t.q[tgt] += (excitatory ? 1.0 : -1.0) * (W * s);
    }
  }
  for (std::size_t p = 0; p < P; ++p) {
    const auto& pop = c.populations[p];
    const auto zz = z.z[p].array();
    const auto q = t.q[p].array();
    switch (pop.dynamics) {
      case models::Dynamics::leaky:
        t.F[p] = (-zz + pop.rest + q / t.g[p].array()).matrix();
        break;
      case models::Dynamics::integrator:
        t.F[p] = (pop.gain * (q - pop.setpoint) - pop.leak * zz).matrix();
        for (Eigen::Index j = 0; j < B; ++j)
          for (int i = 0; i < pop.size; ++i)
            if (z.z[p](i, j) <= 0 && t.F[p](i, j) < 0) t.F[p](i, j) = 0;
        break;
      case models::Dynamics::multiplicative:
        t.F[p] = (pop.gain * zz * (q - pop.setpoint) - pop.leak * (zz - 1.0)).matrix();
        break;
    }
  }
  return t;
}

/// max over components of |F| / (abs_tol + rel_tol |z|): <= 1 where the solvers' test passes.
inline double scaled_residual(const models::Layer<double>& L, const Mat<double>& x,
                              const sim::CircuitState<double>& z, double abs_tol, double rel_tol) {
  const Terms t = terms(L, x, z);
  double worst = 0;
  for (std::size_t p = 0; p < t.F.size(); ++p) {
    const Mat<double> s =
        t.F[p].cwiseAbs().cwiseQuotient((abs_tol + rel_tol * z.z[p].array().abs()).matrix());
    const double m = s.maxCoeff();
    if (!(m <= worst)) worst = m;  // NaN propagates
  }
  return worst;
}

/// The Jacobian of dz/dt = F / tau (1/ms) at sample j of the state z, all populations in order,
/// by central differences of terms().
inline Eigen::MatrixXd fd_jacobian(const models::Layer<double>& L, const Mat<double>& x,
                                   const sim::CircuitState<double>& z, int j) {
  const auto& pops = L.spec.circuit.populations;
  std::vector<std::pair<int, int>> unit;  // (population, index) of every state component
  for (std::size_t p = 0; p < pops.size(); ++p)
    for (int i = 0; i < pops[p].size; ++i) unit.emplace_back(int(p), i);
  const int n = int(unit.size());
  sim::CircuitState<double> zj;
  for (const auto& m : z.z) zj.z.push_back(m.col(j));
  const Mat<double> xj = x.col(j);
  Eigen::MatrixXd J(n, n);
  for (int b = 0; b < n; ++b) {
    const auto [pb, ib] = unit[b];
    const double h = 1e-6 * std::max(1.0, std::abs(zj.z[pb](ib, 0)));
    auto up = zj, down = zj;
    up.z[pb](ib, 0) += h;
    down.z[pb](ib, 0) -= h;
    const Terms tu = terms(L, xj, up), td = terms(L, xj, down);
    for (int a = 0; a < n; ++a) {
      const auto [pa, ia] = unit[a];
      J(a, b) = (tu.F[pa](ia, 0) - td.F[pa](ia, 0)) / (2 * h) / pops[pa].tau;
    }
  }
  return J;
}

/// Largest real part of the eigenvalues of the Jacobian of dz/dt = F / tau at sample j of the
/// state z (central differences of terms()): < 0 where the equilibrium is stable (1/ms).
inline double growth_rate(const models::Layer<double>& L, const Mat<double>& x,
                          const sim::CircuitState<double>& z, int j) {
  return Eigen::EigenSolver<Eigen::MatrixXd>(fd_jacobian(L, x, z, j), false)
      .eigenvalues()
      .real()
      .maxCoeff();
}

/// E's potentials at equilibrium with every other population's state held at z (the frozen
/// rule's view: inhibition constant). Without recurrent E input that is v = rest + q / g, read
/// off once; with it (ssn) Newton's method on E's equation alone, per sample.
inline Mat<double> solve_E_alone(const models::Layer<double>& L, const Mat<double>& x,
                                 sim::CircuitState<double> z) {
  const auto& c = L.spec.circuit;
  const auto& E = c.populations.front();
  std::vector<const models::Projection*> self;
  for (const auto& pr : c.projections)
    if (pr.source == "E" && pr.target == "E") {
      if (pr.signal != models::Signal::rate || pr.action != models::Action::subtractive)
        throw std::logic_error("solve_E_alone: only E -> E rate projections are written out");
      self.push_back(&pr);
    }
  Terms t = terms(L, x, z);
  if (self.empty()) return (E.rest + t.q[0].array() / t.g[0].array()).matrix();
  const int n = E.size;
  for (int it = 0; it < 50; ++it) {
    if (t.F[0].cwiseAbs().maxCoeff() <= 1e-14 * (1.0 + z.z[0].cwiseAbs().maxCoeff())) break;
    for (Eigen::Index j = 0; j < x.cols(); ++j) {
      // dF_E/dv = -1 + (1 / g) W_EE phi'(v): Newton's step on E's equation alone.
      Eigen::MatrixXd J = -Eigen::MatrixXd::Identity(n, n);
      Eigen::VectorXd slope(n);
      for (int i = 0; i < n; ++i) slope(i) = rate_slope(E.phi, z.z[0](i, j));
      for (const auto* pr : self)
        J += t.g[0].col(j).cwiseInverse().asDiagonal() * L.w[pr->name] * slope.asDiagonal();
      z.z[0].col(j) -= Eigen::PartialPivLU<Eigen::MatrixXd>(J).solve(t.F[0].col(j));
    }
    t = terms(L, x, z);
  }
  return z.z[0];
}

}  // namespace eisim::test::presets
