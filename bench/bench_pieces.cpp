// Google Benchmark timings of the pieces of a training step (bench/README.md, "bench_pieces"):
// the equilibrium solve of one circuit layer, the adjoint (implicit-gradient) solve, and one
// whole training step, each on the default network of experiments/compare_rules.yaml
// (784 -> 283 -> 283 -> 10, float32) with real Fashion-MNIST test images and brightness jitter
// eps = 0.75. The solver pieces run twice: on the scalar fast path for one interneuron of each
// type (the default) and on the general matrix code (pooled_fast_path = false), so the ratio
// of the two is measured in one run.
//
//   bench_pieces [--benchmark_filter=REGEX] [--benchmark_repetitions=N] ...
//
// One thread (omp_set_num_threads(1)) unless OMP_NUM_THREADS is set; freed memory is kept in
// the process (models::keep_freed_memory) as in `eisim train`.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <map>
#include <random>
#include <string>

#include "eisim/io/config.hpp"
#include "eisim/io/data.hpp"
#include "eisim/learning/gradients.hpp"
#include "eisim/learning/optimizer.hpp"
#include "eisim/models/memory.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

using namespace eisim;
using S = float;

// The network, a jittered batch and its forward cache, built once per batch size.
struct Setup {
  io::Config cfg;
  models::Network<S> net;
  Mat<S> x;
  std::vector<int> labels;

  explicit Setup(int batch) {
    cfg = io::load_config(std::string(EISIM_SOURCE_DIR) + "/experiments/compare_rules.yaml");
    net = models::initialise<S>(io::network_spec(cfg), cfg.seed);
    const io::Dataset test = io::load_fashion_mnist(cfg.data.dir, false, batch);
    x = test.images.leftCols(batch).cast<S>();
    std::mt19937_64 rng(1);
    io::apply_jitter<S>(x, 0.75, rng);
    for (int j = 0; j < batch; ++j) labels.push_back(test.labels[j]);
  }
};

const Setup& setup(int batch) {
  static std::map<int, Setup> cache;
  auto it = cache.find(batch);
  if (it == cache.end()) it = cache.emplace(batch, Setup(batch)).first;
  return it->second;
}

void set_items(benchmark::State& st, int batch) {
  st.SetItemsProcessed(st.iterations() * batch);
}

// Equilibrium of the first hidden layer from the solvers' initial state (drive precomputed).
void BM_Equilibrium(benchmark::State& st) {
  const int batch = int(st.range(0));
  const bool fast = st.range(1) != 0;
  const Setup& s = setup(batch);
  const auto& layer = s.net.layers[0];
  Mat<S> e;
  sim::excitatory_drive(layer.w, s.x, e);
  sim::FixedPointParameters fp = s.cfg.fixed_point;
  fp.pooled_fast_path = fast;
  sim::CircuitState<S> z;
  for (auto _ : st) {
    sim::initial_state(layer, batch, z);
    const auto res = sim::solve_fixed_point(layer, e, s.x, fp, z);
    if (!res.ok()) st.SkipWithError(res.describe().c_str());
    benchmark::DoNotOptimize(z.v.data());
  }
  set_items(st, batch);
}

// The backward pass of a network whose only hidden layer is a circuit with 16 inputs, so that
// the GEMMs are negligible and the time is the per-sample adjoint solves (implicit) or the
// division by the gain (frozen), plus phi' and the rank-1 gradients of the pooling weights.
void BM_CircuitBackward(benchmark::State& st) {
  const int batch = int(st.range(0));
  const int mode = int(st.range(1));  // 0 implicit general, 1 implicit fast, 2 frozen
  const Setup& s = setup(batch);
  models::NetworkSpec spec = io::network_spec(s.cfg, 16);
  spec.layers.erase(spec.layers.begin() + 1);  // one hidden circuit layer + readout
  spec.layers.back().n_in = spec.layers.front().n_E;
  const auto net = models::initialise<S>(spec, 1);
  const Mat<S> x = s.x.topRows(16);
  learning::LearningSpec ls = s.cfg.learning;
  ls.rule = mode == 2 ? learning::Rule::frozen : learning::Rule::implicit;
  ls.pooled_fast_path = mode == 1;
  learning::ForwardCache<S> cache;
  learning::forward(net, x, s.cfg.fixed_point, cache);
  Mat<S> dlogits;
  learning::cross_entropy(cache.logits(), s.labels, 0.1, dlogits);
  learning::Gradients<S> g;
  for (auto _ : st) {
    learning::backward(net, cache, dlogits, ls, g);
    benchmark::DoNotOptimize(g.layers[0].W_EX.data());
  }
  set_items(st, batch);
}

// One training step as `eisim train` does it: forward, loss, backward, SGD (no data loading).
void BM_TrainStep(benchmark::State& st) {
  const int batch = int(st.range(0));
  const bool frozen = st.range(1) != 0;
  const Setup& s = setup(batch);
  auto net = s.net;
  learning::LearningSpec ls = s.cfg.learning;
  ls.rule = frozen ? learning::Rule::frozen : learning::Rule::implicit;
  learning::Sgd<S> sgd(ls);
  learning::ForwardCache<S> cache;
  learning::Gradients<S> g;
  Mat<S> dlogits;
  for (auto _ : st) {
    learning::forward(net, s.x, s.cfg.fixed_point, cache);
    learning::cross_entropy(cache.logits(), s.labels, ls.label_smoothing, dlogits);
    learning::backward(net, cache, dlogits, ls, g);
    sgd.step(net, g);
  }
  set_items(st, batch);
}

}  // namespace

BENCHMARK(BM_Equilibrium)
    ->ArgNames({"batch", "fast"})
    ->ArgsProduct({{32, 256}, {0, 1}})
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_CircuitBackward)
    ->ArgNames({"batch", "mode"})
    ->ArgsProduct({{32, 64, 128, 256}, {0, 1, 2}})
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_TrainStep)
    ->ArgNames({"batch", "frozen"})
    ->ArgsProduct({{32, 256}, {0, 1}})
    ->Unit(benchmark::kMicrosecond);

int main(int argc, char** argv) {
#ifdef _OPENMP
  if (std::getenv("OMP_NUM_THREADS") == nullptr) omp_set_num_threads(1);
#endif
  eisim::models::keep_freed_memory();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
