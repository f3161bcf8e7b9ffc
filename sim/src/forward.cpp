// The forward pass, one overload per layer kind (models::visit picks it).
#include "eisim/sim/forward.hpp"

#include <cmath>
#include <sstream>

#include "eisim/models/error.hpp"
#include "eisim/models/nonlinearity.hpp"

namespace eisim::sim {

using models::Layer;

namespace {

template <class S>
void plain_drive(const Layer<S>& layer, const Mat<S>& x, LayerCache<S>& c) {
  c.in.x = x;
  c.in.ext.resize(1);
  c.in.ext[0].noalias() = layer.w.W_EX * x;
  c.in.ext[0].colwise() += layer.w.b.col(0);
  c.z.z.resize(1);
}

// The populations' parameters, for messages about a layer's dynamics.
std::string circuit_parameters(const models::CircuitSpec& c) {
  std::ostringstream os;
  os << "circuit " << c.preset << ":";
  for (const auto& p : c.populations) {
    os << " " << p.name << " (" << models::to_string(p.dynamics) << ", n " << p.size << ", tau "
       << p.tau << " ms";
    if (p.dynamics != models::Dynamics::leaky) os << ", gain " << p.gain << ", leak " << p.leak;
    os << ")";
  }
  return os.str();
}

// The stability check and its policy (FixedPointParameters::stability) on the solved layer.
template <class S>
void check_stability(const Layer<S>& layer, const FixedPointParameters& fp, LayerCache<S>& c) {
  const int B = int(c.z.v().cols());
  c.checked.clear();
  for (int j = 0; j < B; ++j)
    if (c.solve.sample_status[j] == SolverStatus::converged &&
        (fp.stability_samples <= 0 || j < fp.stability_samples))
      c.checked.push_back(j);
  if (c.checked.empty()) return;  // (an empty list would mean every sample)
  // The solver's fast path (FixedPointParameters::stability_fast_path) has already classified
  // the samples it covers; stability() takes the rest.
  const bool known = !c.solve.stability_known.empty();
  std::vector<int> rest;
  if (known) {
    for (int j : c.checked)
      if (!c.solve.stability_known[std::size_t(j)]) rest.push_back(j);
  } else {
    rest = c.checked;
  }
  StabilityParameters sp;
  sp.marginal = fp.stability_marginal;
  if (rest.size() == c.checked.size()) {
    c.stability = stability(layer, c.in, c.z, sp, c.checked);
  } else {
    StabilityResult generic;
    if (!rest.empty()) generic = stability(layer, c.in, c.z, sp, rest);
    c.stability = StabilityResult{};
    c.stability.samples.resize(c.checked.size());
    std::size_t g = 0;
    for (std::size_t q = 0; q < c.checked.size(); ++q) {
      const int j = c.checked[q];
      c.stability.samples[q] = c.solve.stability_known[std::size_t(j)]
                                   ? c.solve.sample_stability[std::size_t(j)]
                                   : std::move(generic.samples[g++]);
    }
    c.stability.recount();
  }
  c.found_unstable = c.stability.unstable;
  c.found_oscillatory = c.stability.oscillatory;
  c.found_marginal = c.stability.marginal;
  if (c.stability.not_stable() == 0) return;
  if (fp.stability == StabilityCheck::fail)
    throw numerical_error("stability", c.stability.describe() + " (" +
                                           circuit_parameters(layer.spec.circuit) +
                                           "; fixed_point.stability: integrate replaces them "
                                           "by integrating the ODE)");
  // Integrate the ODE from the common initial state where the equilibrium is not stable.
  std::vector<int> bad, at;
  for (std::size_t q = 0; q < c.checked.size(); ++q) {
    const Stability k = c.stability.samples[q].cls;
    if (k == Stability::unstable || k == Stability::oscillatory) {
      bad.push_back(c.checked[q]);
      at.push_back(int(q));
    }
  }
  CircuitInput<S> ins;
  select_samples(c.in, bad, ins);
  CircuitState<S> zs;
  initial_state(layer, int(bad.size()), zs);
  const SolveResult ores = integrate(layer, ins, fallback_ode(fp), zs);
  const StabilityResult again = stability(layer, ins, zs, sp);
  for (std::size_t q = 0; q < bad.size(); ++q) {
    const int j = bad[q];
    c.solve.sample_iterations[j] += ores.sample_iterations[q];
    if (ores.sample_status[q] == SolverStatus::converged &&
        (again.samples[q].cls == Stability::stable ||
         again.samples[q].cls == Stability::marginal)) {
      for (std::size_t k = 0; k < c.z.z.size(); ++k) c.z.z[k].col(j) = zs.z[k].col(Eigen::Index(q));
      c.solve.sample_residual[j] = ores.sample_residual[q];
      c.stability.samples[std::size_t(at[q])] = again.samples[q];
      ++c.reintegrated;
    } else {
      // Keep the solver's equilibrium and its classification: the layer has no stable one.
      c.solve.sample_status[j] = SolverStatus::unstable;
      ++c.no_stable;
    }
  }
  // Counts and the batch status after the policy.
  c.stability.recount();
  if (c.no_stable > 0) {
    c.solve.failed_samples += c.no_stable;
    if (c.solve.status == SolverStatus::converged) c.solve.status = SolverStatus::unstable;
  }
}

template <class S>
void run(models::CircuitKind, const Layer<S>& layer, const Mat<S>& x,
         const FixedPointParameters& fp, LayerCache<S>& c) {
  circuit_input(layer, x, c.in);
  // Every batch starts from the same initial state, so results do not depend on history.
  initial_state(layer, int(x.cols()), c.z);
  c.solve = solve_fixed_point(layer, c.in, fp, c.z, fp.keep_linearisation ? &c.lin : nullptr);
  if (!fp.keep_linearisation) c.lin.stride = 0;
  c.stability = StabilityResult{};
  c.checked.clear();
  c.found_unstable = c.found_oscillatory = c.found_marginal = c.reintegrated = c.no_stable = 0;
  if (fp.stability != StabilityCheck::off) check_stability(layer, fp, c);
}

template <class S>
void run(models::LayerNormKind, const Layer<S>& layer, const Mat<S>& x, const FixedPointParameters&,
         LayerCache<S>& c) {
  plain_drive(layer, x, c);
  c.solve = SolveResult{};
  const Mat<S>& e = c.in.ext[0];
  Mat<S>& v = c.z.v();
  v = e.rowwise() - e.colwise().mean();
  c.aux = ((v.cwiseAbs2().colwise().mean().array() + S(layer.spec.ln_epsilon)).rsqrt()).matrix();
  v = (v.array().rowwise() * (std::sqrt(S(layer.spec.theta)) * c.aux.row(0).array())).matrix();
}

template <class S>
void run(models::PlainKind, const Layer<S>& layer, const Mat<S>& x, const FixedPointParameters&,
         LayerCache<S>& c) {
  plain_drive(layer, x, c);
  c.solve = SolveResult{};
  c.aux.noalias() = layer.w["W_IX"] * x;
  c.z.v() = c.in.ext[0];
  c.z.v().noalias() -= layer.w["W_EI"] * c.aux;
}

}  // namespace

template <class S>
void forward_layer(const Layer<S>& layer, const Mat<S>& x, const FixedPointParameters& fp,
                   LayerCache<S>& c) {
  models::visit(layer.spec.kind, [&](auto kind) { run(kind, layer, x, fp, c); });
  models::apply_phi(layer.spec.phi, c.z.v(), c.r);
}

template <class S>
ForwardStats forward(const models::Network<S>& net, const Mat<S>& x, const FixedPointParameters& fp,
                     ForwardCache<S>& cache) {
  cache.layers.resize(net.layers.size());
  ForwardStats stats;
  double iter_sum = 0;
  int circuits = 0;
  for (std::size_t l = 0; l < net.layers.size(); ++l) {
    LayerCache<S>& c = cache.layers[l];
    try {
      forward_layer(net.layers[l], l == 0 ? x : cache.layers[l - 1].r, fp, c);
    } catch (const numerical_error& e) {
      throw numerical_error("layer " + std::to_string(l), e.what());
    }
    if (net.layers[l].spec.kind != models::LayerKind::circuit) continue;
    stats.stability_checked += int(c.checked.size());
    stats.unstable_samples += c.found_unstable;
    stats.oscillatory_samples += c.found_oscillatory;
    stats.marginal_samples += c.found_marginal;
    stats.reintegrated_samples += c.reintegrated;
    if (c.no_stable > 0)
      throw numerical_error(
          "layer " + std::to_string(l),
          "no stable equilibrium for " + std::to_string(c.no_stable) + " of " +
              std::to_string(x.cols()) + " samples: " + c.stability.describe() +
              "; integrating the ODE from the initial state did not settle either (" +
              circuit_parameters(net.layers[l].spec.circuit) +
              "). `eisim simulate` records what the layer does instead (a limit cycle)");
    stats.iterations_max = std::max(stats.iterations_max, c.solve.iterations);
    for (int it : c.solve.sample_iterations) iter_sum += it;
    ++circuits;
    stats.failed_samples += c.solve.failed_samples;
    stats.fallback_samples += c.solve.fallback_samples;
    stats.continuation_samples += c.solve.continuation_samples;
    stats.factorisations += c.solve.factorisations;
    stats.krylov_vectors += c.solve.krylov_vectors;
    stats.low_rank_solves += c.solve.low_rank_solves;
    if (!(c.solve.residual <= stats.worst_residual)) stats.worst_residual = c.solve.residual;
  }
  if (circuits > 0) stats.iterations_mean = iter_sum / (double(circuits) * double(x.cols()));
  return stats;
}

#define EISIM_INSTANTIATE(S)                                                                  \
  template void forward_layer<S>(const Layer<S>&, const Mat<S>&, const FixedPointParameters&, \
                                 LayerCache<S>&);                                             \
  template ForwardStats forward<S>(const models::Network<S>&, const Mat<S>&,                  \
                                   const FixedPointParameters&, ForwardCache<S>&);
EISIM_INSTANTIATE(float)
EISIM_INSTANTIATE(double)
#undef EISIM_INSTANTIATE

}  // namespace eisim::sim
