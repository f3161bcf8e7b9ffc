// Evaluation of a network on a jittered image set (see evaluation.hpp).
#include "evaluation.hpp"

#include <algorithm>
#include <limits>
#include <random>
#include <vector>

#include "eisim/learning/gradients.hpp"
#include "eisim/sim/circuit.hpp"
#include "eisim/sim/forward.hpp"

namespace eisim::experiments {

template <class S>
EvalResult evaluate_set(const models::Network<S>& net, const io::Dataset& d, double eps,
                        std::uint64_t seed, const sim::FixedPointParameters& fp,
                        const Transform* transform) {
  EvalResult r;
  SilentInhibition silent;
  std::mt19937_64 rng(seed);
  Mat<S> x, dl;
  std::vector<int> labels;
  sim::ForwardCache<S> cache;
  long correct = 0, it_count = 0;
  double loss_sum = 0, it_sum = 0;
  const int N = d.size();
  for (int from = 0; from < N; from += kEvalBatch) {
    const int n = std::min(kEvalBatch, N - from);
    x = d.images.middleCols(from, n).template cast<S>();
    labels.assign(d.labels.begin() + from, d.labels.begin() + from + n);
    io::apply_jitter<S>(x, eps, rng);
    if (transform) io::apply_transform<S>(x, transform->kind, transform->value, rng);
    const sim::ForwardStats fs = sim::forward(net, x, fp, cache);
    silent.add(net, cache);
    r.fallbacks += fs.fallback_samples;
    r.stability_checked += fs.stability_checked;
    r.unstable += fs.unstable_samples;
    r.oscillatory += fs.oscillatory_samples;
    r.marginal += fs.marginal_samples;
    r.reintegrated += fs.reintegrated_samples;
    r.continuations += fs.continuation_samples;
    r.factorisations += fs.factorisations;
    r.krylov_vectors += fs.krylov_vectors;
    int hits = 0;
    loss_sum += n * learning::cross_entropy(cache.logits(), labels, 0.0, dl, &hits);
    // A sample whose equilibrium did not converge in some layer is counted, and counted as
    // wrong: an accuracy never rests on a solve that failed.
    for (int j = 0; j < n; ++j) {
      bool ok = true;
      for (const auto& lc : cache.layers)
        if (!lc.solve.sample_status.empty() &&
            lc.solve.sample_status[j] != sim::SolverStatus::converged)
          ok = false;
      if (ok) continue;
      ++r.failed;
      Eigen::Index best = 0;
      cache.logits().col(j).maxCoeff(&best);
      if (int(best) == labels[j]) --hits;
    }
    correct += hits;
    for (const auto& lc : cache.layers)
      for (int it : lc.solve.sample_iterations) {
        it_sum += it;
        ++it_count;
        r.iterations_max = std::max<std::int64_t>(r.iterations_max, it);
      }
  }
  r.images = N;
  r.accuracy = N > 0 ? double(correct) / N : 0.0;
  r.loss = N > 0 ? loss_sum / N : 0.0;
  r.iterations_mean = it_count ? it_sum / double(it_count) : 0.0;
  r.silent_inhibition = silent.sample_fraction();
  return r;
}

template <class S>
void SilentInhibition::add(const models::Network<S>& net, const sim::ForwardCache<S>& cache) {
  const std::size_t L = net.layers.size() - 1;  // hidden layers (the readout has no circuit)
  samples.resize(L, 0.0);
  units.resize(L, 0.0);
  applies.resize(L, 0);
  const int B = int(cache.logits().cols());
  total += B;
  Mat<S> r;
  Eigen::ArrayXd silent_units(B);
  for (std::size_t l = 0; l < L; ++l) {
    const auto& spec = net.layers[l].spec;
    if (spec.kind != models::LayerKind::circuit) continue;
    const auto& pops = spec.circuit.populations;
    std::vector<char> inhibits_E(pops.size(), 0);
    for (const auto& pr : spec.circuit.projections)
      if (pr.tgt == 0 && pr.src > 0 && pr.action == models::Action::subtractive)
        inhibits_E[pr.src] = 1;
    silent_units.setZero();
    int n_units = 0;
    for (std::size_t p = 0; p < pops.size(); ++p) {
      if (!inhibits_E[p]) continue;
      sim::population_rate(pops[p], cache.layers[l].z.z[p], r, static_cast<Mat<S>*>(nullptr));
      silent_units += (r.array() <= S(0)).template cast<double>().colwise().sum().transpose();
      n_units += int(r.rows());
    }
    if (n_units == 0) continue;
    applies[l] = 1;
    samples[l] += double((silent_units == double(n_units)).count());
    units[l] += silent_units.sum() / n_units;
  }
}

std::vector<double> SilentInhibition::sample_fraction() const {
  std::vector<double> f(samples.size(), std::numeric_limits<double>::quiet_NaN());
  for (std::size_t l = 0; l < f.size(); ++l)
    if (applies[l] && total > 0) f[l] = samples[l] / double(total);
  return f;
}

std::vector<double> SilentInhibition::unit_fraction() const {
  std::vector<double> f(units.size(), std::numeric_limits<double>::quiet_NaN());
  for (std::size_t l = 0; l < f.size(); ++l)
    if (applies[l] && total > 0) f[l] = units[l] / double(total);
  return f;
}

template void SilentInhibition::add(const models::Network<float>&, const sim::ForwardCache<float>&);
template void SilentInhibition::add(const models::Network<double>&,
                                    const sim::ForwardCache<double>&);

template EvalResult evaluate_set(const models::Network<float>&, const io::Dataset&, double,
                                 std::uint64_t, const sim::FixedPointParameters&, const Transform*);
template EvalResult evaluate_set(const models::Network<double>&, const io::Dataset&, double,
                                 std::uint64_t, const sim::FixedPointParameters&, const Transform*);

}  // namespace eisim::experiments
