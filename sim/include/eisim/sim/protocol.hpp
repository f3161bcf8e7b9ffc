#pragma once
// Stimulus protocols: a circuit layer integrated through a sequence of input segments, with
// current injected into, or the output of, a named population switched during time windows
// (docs/concepts.md, "Stability, oscillations and perturbation protocols"). Used by `eisim
// simulate`.
#include <string>
#include <vector>

#include "eisim/models/network.hpp"
#include "eisim/sim/circuit.hpp"
#include "eisim/sim/solver.hpp"

namespace eisim::sim {

/// A time window during which one population is perturbed.
struct Perturbation {
  int population = 0;  ///< index in the circuit's populations
  double start = 0.0;  ///< ms, from the protocol's start
  double end = 0.0;    ///< ms (exclusive)
  /// Added to the population's drive q during the window (in the units of q; positive is
  /// excitatory). For a leaky population with conductance g it shifts v by current / g.
  double current = 0.0;
  /// Silence the population during the window: its projections carry nothing (its synaptic
  /// output is removed; its own state still evolves).
  bool silence = false;
};

/// The layer's input during [start, start + duration): one column per sample.
template <class S>
struct InputSegment {
  Mat<S> x;
  double duration = 0.0;  ///< ms
};

/// Integrate a layer (Boost.Odeint, as sim::integrate) from state z through the segments, with
/// the perturbations applied in their windows. `observe` is called at each of `times` (ms,
/// ascending, within the protocol). The integration restarts at every segment boundary and
/// window edge (the right-hand side is discontinuous there). Returns the last interval's
/// statistics with the total number of steps; the state keeps evolving (no equilibrium test).
template <class S>
SolveResult run_protocol(const models::Layer<S>& layer,
                         const std::vector<InputSegment<S>>& segments,
                         const std::vector<Perturbation>& perturbations, const OdeParameters& ode,
                         CircuitState<S>& z, const std::vector<double>& times,
                         const TraceObserver<S>& observe);

}  // namespace eisim::sim
