// ODE integration of a circuit with Boost.Odeint's controlled Dormand-Prince 5(4) stepper with
// dense output (for traces at requested times). The whole batch is one ODE system; the run
// stops when every sample meets the equilibrium tolerance (same test as the fixed-point solver).
#include <boost/numeric/odeint.hpp>
#include <cmath>
#include <limits>

#include "eisim/models/error.hpp"
#include "eisim/sim/solver.hpp"

namespace eisim::sim {

namespace odeint = boost::numeric::odeint;
using models::Layer;
using State = std::vector<double>;

namespace {

void pack(const CircuitState<double>& z, State& y) {
  std::size_t n = 0;
  for (const auto& m : z.z) n += std::size_t(m.size());
  y.resize(n);
  std::size_t at = 0;
  for (const auto& m : z.z) {
    std::copy_n(m.data(), m.size(), y.data() + at);
    at += std::size_t(m.size());
  }
}

void unpack(const State& y, CircuitState<double>& z) {
  std::size_t at = 0;
  for (auto& m : z.z) {
    std::copy_n(y.data() + at, m.size(), m.data());
    at += std::size_t(m.size());
  }
}

// The ODE system in odeint's form; reuses its buffers between calls.
struct System {
  const Layer<double>& layer;
  const CircuitInput<double>& in;
  CircuitState<double> z, d;
  void operator()(const State& y, State& dydt, double /*t*/) {
    unpack(y, z);
    circuit_rhs(layer, in, z, d);
    pack(d, dydt);
  }
};

template <class S>
CircuitInput<double> input_as_double(const CircuitInput<S>& in) {
  CircuitInput<double> out;
  out.x = in.x.template cast<double>();
  for (const auto& m : in.ext) out.ext.push_back(m.template cast<double>());
  for (const auto& m : in.ux) out.ux.push_back(m.template cast<double>());
  return out;
}

template <class To, class From>
CircuitState<To> cast_state(const CircuitState<From>& z) {
  CircuitState<To> out;
  for (const auto& m : z.z) out.z.push_back(m.template cast<To>());
  return out;
}

}  // namespace

template <class S>
SolveResult integrate(const Layer<S>& layer_in, const CircuitInput<S>& in_s, const OdeParameters& p,
                      CircuitState<S>& z_io, const std::vector<double>& observe_times,
                      const TraceObserver<S>& observe) {
  if (layer_in.spec.kind != models::LayerKind::circuit)
    throw internal_error("integrate called on a layer that is not a circuit");
  const int B = int(in_s.ext[0].cols());
  if (z_io.z.size() != layer_in.spec.circuit.populations.size() || z_io.v().cols() != B)
    initial_state(layer_in, B, z_io);
  const Layer<double> layer = models::cast_layer<double>(layer_in);
  const CircuitInput<double> in = input_as_double(in_s);
  System sys{layer, in, {}, {}};
  sys.z = cast_state<double>(z_io);
  CircuitState<double> zc = sys.z;  // for residual checks and observation
  State y;
  pack(sys.z, y);

  auto stepper = odeint::make_dense_output(p.stepper_abs_tol, p.stepper_rel_tol,
                                           odeint::runge_kutta_dopri5<State>());
  stepper.initialize(y, 0.0, p.dt_initial);
  std::size_t next_obs = 0;
  State yo(y.size());
  auto emit = [&](double t, const State& ys) {
    if (!observe) return;
    unpack(ys, zc);
    observe(t, cast_state<S>(zc));
  };
  while (next_obs < observe_times.size() && observe_times[next_obs] <= 0.0)
    emit(observe_times[next_obs++], y);

  SolveResult res;
  res.sample_status.assign(B, SolverStatus::max_iterations);
  res.sample_iterations.assign(B, 0);
  res.sample_residual.assign(B, 0.0);
  std::vector<double> resid, scaled;
  int steps = 0;
  double t = 0.0;
  bool done = false, failed = false;
  const bool wants_trace = observe && !observe_times.empty();
  SolverStatus fail_status = SolverStatus::max_iterations;
  while (!done) {
    try {
      const auto [t0, t1] = stepper.do_step(std::ref(sys));
      (void)t0;
      t = t1;
    } catch (const odeint::step_adjustment_error&) {
      failed = true;
      fail_status = SolverStatus::diverged;
      break;
    }
    ++steps;
    while (next_obs < observe_times.size() && observe_times[next_obs] <= t) {
      stepper.calc_state(observe_times[next_obs], yo);
      emit(observe_times[next_obs++], yo);
    }
    const State& cur = stepper.current_state();
    bool finite = true;
    for (double v : cur) finite = finite && std::isfinite(v);
    if (!finite) {
      failed = true;
      fail_status = SolverStatus::non_finite;
      break;
    }
    if (steps % p.check_every == 0) {
      unpack(cur, zc);
      circuit_residual(layer, in, zc, p.tol, resid, scaled);
      double worst = 0.0;
      bool all = true;
      for (int j = 0; j < B; ++j) {
        worst = std::max(worst, resid[j]);
        if (scaled[j] <= 1.0 && res.sample_status[j] != SolverStatus::converged) {
          res.sample_status[j] = SolverStatus::converged;
          res.sample_iterations[j] = steps;
        }
        all = all && scaled[j] <= 1.0;
      }
      res.residual_history.push_back(worst);
      // Keep going until every sample converged and every requested trace time is recorded.
      if (all && !(wants_trace && next_obs < observe_times.size())) done = true;
    }
    if (!done && (t >= p.t_max || steps >= p.max_steps)) break;
  }
  unpack(stepper.current_state(), zc);
  circuit_residual(layer, in, zc, p.tol, resid, scaled);
  res.iterations = steps;
  res.t_final = t;
  res.residual = 0.0;
  res.scaled_residual = 0.0;
  res.failed_samples = 0;
  res.status = SolverStatus::converged;
  for (int j = 0; j < B; ++j) {
    res.sample_residual[j] = resid[j];
    // The final state decides: a sample that met the test once but drifted is not converged.
    if (failed)
      res.sample_status[j] = fail_status;
    else if (!std::isfinite(resid[j]))
      res.sample_status[j] = SolverStatus::non_finite;
    else if (scaled[j] <= 1.0)
      res.sample_status[j] = SolverStatus::converged;
    else
      res.sample_status[j] = SolverStatus::max_iterations;
    if (res.sample_status[j] != SolverStatus::converged) {
      res.sample_iterations[j] = steps;  // every step taken (not only up to a passed test)
      ++res.failed_samples;
      if (res.status == SolverStatus::converged ||
          res.sample_status[j] != SolverStatus::max_iterations)
        res.status = res.sample_status[j];
    }
    if (!(resid[j] <= res.residual)) res.residual = resid[j];
    if (!(scaled[j] <= res.scaled_residual)) res.scaled_residual = scaled[j];
  }
  z_io = cast_state<S>(zc);
  return res;
}

template SolveResult integrate<float>(const Layer<float>&, const CircuitInput<float>&,
                                      const OdeParameters&, CircuitState<float>&,
                                      const std::vector<double>&, const TraceObserver<float>&);
template SolveResult integrate<double>(const Layer<double>&, const CircuitInput<double>&,
                                       const OdeParameters&, CircuitState<double>&,
                                       const std::vector<double>&, const TraceObserver<double>&);

}  // namespace eisim::sim
