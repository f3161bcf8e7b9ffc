// Stimulus protocols (see protocol.hpp): piecewise-constant inputs and perturbations, integrated
// interval by interval with sim::integrate.
#include "eisim/sim/protocol.hpp"

#include <algorithm>
#include <limits>

#include "eisim/models/error.hpp"

namespace eisim::sim {

using models::Layer;

template <class S>
SolveResult run_protocol(const Layer<S>& layer, const std::vector<InputSegment<S>>& segments,
                         const std::vector<Perturbation>& perturbations, const OdeParameters& ode,
                         CircuitState<S>& z, const std::vector<double>& times,
                         const TraceObserver<S>& observe) {
  const auto& c = layer.spec.circuit;
  if (segments.empty()) throw internal_error("run_protocol: no segment");
  // Interval edges: segment boundaries and window edges inside the protocol.
  std::vector<double> seg_start{0.0};
  for (const auto& s : segments) {
    if (!(s.duration > 0)) throw internal_error("run_protocol: a segment of duration <= 0");
    seg_start.push_back(seg_start.back() + s.duration);
  }
  const double T = seg_start.back();
  std::vector<double> edges = seg_start;
  for (const auto& p : perturbations) {
    if (p.population < 0 || p.population >= int(c.populations.size()))
      throw internal_error("run_protocol: perturbation of an unknown population");
    for (double e : {p.start, p.end})
      if (e > 0 && e < T) edges.push_back(e);
  }
  std::sort(edges.begin(), edges.end());
  edges.erase(std::unique(edges.begin(), edges.end()), edges.end());
  const int B = int(segments.front().x.cols());
  if (z.z.size() != c.populations.size() || z.v().cols() != B) initial_state(layer, B, z);

  SolveResult total;
  std::size_t next = 0;  // next requested observation
  for (std::size_t k = 0; k + 1 < edges.size(); ++k) {
    const double a = edges[k], b = edges[k + 1], mid = 0.5 * (a + b);
    const auto seg = std::size_t(std::upper_bound(seg_start.begin(), seg_start.end(), a) -
                                 seg_start.begin() - 1);
    // The layer and its input during this interval.
    Layer<S> L = layer;
    std::vector<const Perturbation*> active;
    for (const auto& p : perturbations)
      if (p.start <= mid && mid < p.end) active.push_back(&p);
    for (const auto* p : active)
      if (p->silence)
        for (std::size_t j = 0; j < c.projections.size(); ++j)
          if (c.projections[j].src == p->population)
            L.w.at(layer.spec.projection_weight[j]).setZero();
    CircuitInput<S> in;
    circuit_input(L, segments[seg].x, in);
    for (const auto* p : active) {
      if (p->current == 0.0) continue;
      Mat<S>& ext = in.ext[std::size_t(p->population)];
      if (ext.size() == 0) ext.setZero(c.populations[std::size_t(p->population)].size, B);
      ext.array() += S(p->current);
    }
    // Observations in [a, b) (and T in the last interval), then the state at b.
    std::vector<double> local;
    std::vector<double> global;
    const bool last = k + 2 == edges.size();
    while (next < times.size() && (times[next] < b || (last && times[next] <= b))) {
      if (times[next] >= a) {
        local.push_back(times[next] - a);
        global.push_back(times[next]);
      }
      ++next;
    }
    local.push_back(b - a);
    std::size_t seen = 0;
    CircuitState<S> end;
    const TraceObserver<S> obs = [&](double, const CircuitState<S>& s) {
      if (seen + 1 < local.size()) {
        if (observe) observe(global[seen], s);
      } else if (seen + 1 == local.size()) {
        end = s;
      }
      ++seen;
    };
    OdeParameters op = ode;
    op.tol = {0.0, 0.0};  // no equilibrium test: integrate the whole interval
    op.t_max = b - a;
    CircuitState<S> zi = z;
    const SolveResult r = integrate(L, in, op, zi, local, obs);
    total.iterations += r.iterations;
    if (r.status == SolverStatus::non_finite || r.status == SolverStatus::diverged ||
        seen < local.size()) {
      z = zi;
      // max_iterations: the step cap (OdeParameters::max_steps, per interval) was reached.
      total.status = r.status;
      total.t_final = a + r.t_final;
      return total;
    }
    z = end;
    total.t_final = b;
  }
  total.status = SolverStatus::converged;  // integrated through every interval
  return total;
}

template SolveResult run_protocol<float>(const Layer<float>&,
                                         const std::vector<InputSegment<float>>&,
                                         const std::vector<Perturbation>&, const OdeParameters&,
                                         CircuitState<float>&, const std::vector<double>&,
                                         const TraceObserver<float>&);
template SolveResult run_protocol<double>(const Layer<double>&,
                                          const std::vector<InputSegment<double>>&,
                                          const std::vector<Perturbation>&, const OdeParameters&,
                                          CircuitState<double>&, const std::vector<double>&,
                                          const TraceObserver<double>&);

}  // namespace eisim::sim
