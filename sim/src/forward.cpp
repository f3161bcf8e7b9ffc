// The forward pass, one overload per layer kind (models::visit picks it).
#include "eisim/sim/forward.hpp"

#include <cmath>

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

template <class S>
void run(models::CircuitKind, const Layer<S>& layer, const Mat<S>& x,
         const FixedPointParameters& fp, LayerCache<S>& c) {
  circuit_input(layer, x, c.in);
  // Every batch starts from the same initial state, so results do not depend on history.
  initial_state(layer, int(x.cols()), c.z);
  c.solve = solve_fixed_point(layer, c.in, fp, c.z);
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
    forward_layer(net.layers[l], l == 0 ? x : cache.layers[l - 1].r, fp, c);
    if (net.layers[l].spec.kind != models::LayerKind::circuit) continue;
    stats.iterations_max = std::max(stats.iterations_max, c.solve.iterations);
    for (int it : c.solve.sample_iterations) iter_sum += it;
    ++circuits;
    stats.failed_samples += c.solve.failed_samples;
    stats.fallback_samples += c.solve.fallback_samples;
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
