// Google Benchmark timings of the pieces of a training step (bench/README.md, "bench_pieces"):
// the equilibrium solve of one circuit layer, the adjoint (implicit-gradient) solve, and one
// whole training step, each on the default network of experiments/compare_rules.yaml
// (784 -> 283 -> 283 -> 10, float32) with real Fashion-MNIST test images and brightness jitter
// eps = 0.75. Every piece runs twice: with the compile-time fixed-size instantiation of the
// per-sample Newton and adjoint solves that circuits of one unit per inhibitory population (the
// default circuit) use (pooled_fast_path = true, argument fast = 1), and with the dynamic-size
// instantiation of the same code (pooled_fast_path = false, fast = 0), so the ratio of the two
// is measured in one run.
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
#include "eisim/sim/forward.hpp"

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

// Equilibrium of the first hidden layer from the solvers' initial state (drives precomputed).
void BM_Equilibrium(benchmark::State& st) {
  const int batch = int(st.range(0));
  const bool fast = st.range(1) != 0;
  const Setup& s = setup(batch);
  const auto& layer = s.net.layers[0];
  sim::CircuitInput<S> in;
  sim::circuit_input(layer, s.x, in);
  sim::FixedPointParameters fp = s.cfg.fixed_point;
  fp.pooled_fast_path = fast;
  sim::CircuitState<S> z;
  for (auto _ : st) {
    sim::initial_state(layer, batch, z);
    const auto res = sim::solve_fixed_point(layer, in, fp, z);
    if (!res.ok()) st.SkipWithError(res.describe().c_str());
    benchmark::DoNotOptimize(z.v().data());
  }
  set_items(st, batch);
}

// The backward pass of a network whose only hidden layer is a circuit with 16 inputs, so that
// the GEMMs are negligible and the time is the circuit's: the evaluation of its equations with
// partials, the per-sample adjoint solves (implicit: through every population; frozen: E's
// block only) and the vector-Jacobian product that forms the pooling weights' gradients.
void BM_CircuitBackward(benchmark::State& st) {
  const int batch = int(st.range(0));
  const bool frozen = st.range(1) != 0;
  const bool fast = st.range(2) != 0;
  const Setup& s = setup(batch);
  const models::NetworkSpec full = io::network_spec(s.cfg, 16);
  const models::NetworkSpec spec =
      models::make_network_spec(16, full.layers.back().n_E, {full.layers.front()}, full.init_gain,
                                full.layers.back().n_I_plain);
  const auto net = models::initialise<S>(spec, 1);
  const Mat<S> x = s.x.topRows(16);
  learning::LearningSpec ls = s.cfg.learning;
  ls.rule = frozen ? learning::Rule::frozen : learning::Rule::implicit;
  ls.pooled_fast_path = fast;
  sim::FixedPointParameters fp = s.cfg.fixed_point;
  fp.pooled_fast_path = fast;
  sim::ForwardCache<S> cache;
  sim::forward(net, x, fp, cache);
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
  const bool fast = st.range(2) != 0;
  const Setup& s = setup(batch);
  auto net = s.net;
  learning::LearningSpec ls = s.cfg.learning;
  ls.rule = frozen ? learning::Rule::frozen : learning::Rule::implicit;
  ls.pooled_fast_path = fast;
  sim::FixedPointParameters fp = s.cfg.fixed_point;
  fp.pooled_fast_path = fast;
  learning::Sgd<S> sgd(ls);
  sim::ForwardCache<S> cache;
  learning::Gradients<S> g;
  Mat<S> dlogits;
  for (auto _ : st) {
    sim::forward(net, s.x, fp, cache);
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
    ->ArgNames({"batch", "frozen", "fast"})
    ->ArgsProduct({{32, 64, 128, 256}, {0, 1}, {0, 1}})
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_TrainStep)
    ->ArgNames({"batch", "frozen", "fast"})
    ->ArgsProduct({{32, 256}, {0, 1}, {0, 1}})
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
