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
#include "eisim/sim/stability.hpp"
#include "source_dir.hpp"

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
    cfg = io::load_config(eisim::bench::compare_rules_yaml());
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

// The stability check's eigen-kernel for one equilibrium of the first hidden layer of the
// circuits of docs/numerics.md, "Solver robustness per circuit" (compare_rules.yaml, first
// test image): 0 heterogeneous default circuit, n_I = n_D = 28, leak 0.5 (f = 56 free units);
// 1 pv_sst_vip (f = 70); 2 ssn (353 units, E recurrent: the dense path).
struct StabilityCase {
  Eigen::MatrixXd J, D, CB, M;  // full Jacobian; reduction's blocks; [[D, I], [C B, a I]]
  Eigen::MatrixXd C, B;         // the couplings through E: d(dz_I/dt)/dv_E, d(dv_E/dt)/dz_I
  double a = 0.0;
  int n_E = 0;
  models::Layer<S> layer;
  sim::LayerCache<S> cache;
};

const StabilityCase& stability_case(int circuit) {
  static std::map<int, StabilityCase> cache;
  auto it = cache.find(circuit);
  if (it != cache.end()) return it->second;
  static const std::vector<std::vector<std::string>> sets = {
      {"network.circuit.n_I=28", "network.circuit.n_D=28", "network.circuit.pooling=heterogeneous",
       "network.circuit.lambda_I=0.5", "network.circuit.lambda_D=0.5"},
      {"network.circuit.preset=pv_sst_vip"},
      {"network.circuit.preset=ssn"}};
  const io::Config cfg = io::load_config(eisim::bench::compare_rules_yaml(), sets.at(circuit));
  const auto net = models::initialise<S>(io::network_spec(cfg), cfg.seed);
  const io::Dataset test = io::load_fashion_mnist(cfg.data.dir, false, 1);
  StabilityCase c;
  c.layer = net.layers[0];
  sim::forward_layer(c.layer, Mat<S>(test.images.leftCols(1).cast<S>()), cfg.fixed_point, c.cache);
  c.J = sim::dense_jacobian(c.layer, c.cache.in, c.cache.z, 0);
  c.n_E = c.layer.spec.circuit.populations[0].size;
  c.a = c.J(0, 0);
  // The free interneuron units, as the check takes them: a unit held at its rectification
  // boundary has a zero row.
  std::vector<Eigen::Index> free;
  for (Eigen::Index i = c.n_E; i < c.J.rows(); ++i)
    if (!c.J.row(i).isZero(0.0)) free.push_back(i);
  const Eigen::Index f = Eigen::Index(free.size());
  Eigen::MatrixXd &C = c.C, &B = c.B;
  C.resize(f, c.n_E);
  B.resize(c.n_E, f);
  c.D.resize(f, f);
  for (Eigen::Index r = 0; r < f; ++r) {
    C.row(r) = c.J.row(free[std::size_t(r)]).head(c.n_E);
    B.col(r) = c.J.col(free[std::size_t(r)]).head(c.n_E);
    for (Eigen::Index k = 0; k < f; ++k)
      c.D(r, k) = c.J(free[std::size_t(r)], free[std::size_t(k)]);
  }
  c.CB = C * B;
  c.M.setZero(2 * f, 2 * f);
  c.M.topLeftCorner(f, f) = c.D;
  c.M.bottomLeftCorner(f, f) = c.CB;
  c.M.topRightCorner(f, f).diagonal().setOnes();
  c.M.bottomRightCorner(f, f).diagonal().setConstant(c.a);
  return cache.emplace(circuit, std::move(c)).first->second;
}

// method 0: Eigen's EigenSolver (eigenvalues only) of the reduction's 2f x 2f matrix, or of the
// full Jacobian for ssn, as the check did before; 1: what the check does now
// (sim::reduced_stability on the same blocks; for ssn sim::stability() of the sample, which
// also forms the Jacobian).
void BM_StabilityKernel(benchmark::State& st) {
  const int circuit = int(st.range(0));
  const bool now = st.range(1) != 0;
  const StabilityCase& c = stability_case(circuit);
  const bool dense = circuit == 2;
  for (auto _ : st) {
    if (!now) {
      Eigen::EigenSolver<Eigen::MatrixXd> es(dense ? c.J : c.M, false);
      benchmark::DoNotOptimize(es.eigenvalues().data());
    } else if (dense) {
      const auto r = sim::stability(c.layer, c.cache.in, c.cache.z, {}, {0});
      benchmark::DoNotOptimize(r.samples.data());
    } else {
      const auto r = sim::reduced_stability(c.D, c.CB, c.a, c.n_E, {});
      benchmark::DoNotOptimize(r.leading.data());
    }
  }
  set_items(st, 1);
  st.counters["size"] = double(dense ? c.J.rows() : c.M.rows());  // before the deflations
}

// The per-sample products behind a reduced circuit's solve (docs/numerics.md, "A floor for
// the speed targets"), with the shapes of stability_case(circuit) (0 heterogeneous, 1 pv_sst_vip):
// kernel 0, C B formed over B's nonzero columns (f x n_E times n_E x r, r the units acting on
// E, as the solver forms it: once per equilibrium, the stability check's blocks and the
// adjoint's matrix); 1, the Jacobian's part through E applied to one vector as
// the Krylov operator does per sample, C (B v) over the same columns (two matrix-vector
// products, the multiply-adds of one residual evaluation's drives too); 2, the same for
// the 32 samples of a batch at once, C (S .* (B V)) with a per-sample scaling S (the diagonal
// factors that differ between samples): two GEMMs, what a solver stepping the samples in
// lockstep would do. Items are samples (32 per iteration for kernel 2).
void BM_CouplingKernel(benchmark::State& st) {
  const StabilityCase& c = stability_case(int(st.range(0)));
  const int kernel = int(st.range(1));
  const Eigen::Index f = c.C.rows(), n_E = c.C.cols();
  constexpr int kBatch = 32;
  std::vector<Eigen::Index> acting;
  for (Eigen::Index j = 0; j < f; ++j)
    if (!c.B.col(j).isZero(0.0)) acting.push_back(j);
  const Eigen::MatrixXd B_act = c.B(Eigen::all, acting);
  const Eigen::Index r = B_act.cols();
  Eigen::MatrixXd CB_act(f, r), out(f, kBatch), V = Eigen::MatrixXd::Random(r, kBatch);
  Eigen::MatrixXd BV(n_E, kBatch), Sc = Eigen::MatrixXd::Random(n_E, kBatch);
  Eigen::VectorXd v = V.col(0), Bv(n_E), w(f);
  for (auto _ : st) {
    if (kernel == 0) {
      CB_act.noalias() = c.C * B_act;
      benchmark::DoNotOptimize(CB_act.data());
    } else if (kernel == 1) {
      Bv.noalias() = B_act * v;
      w.noalias() = c.C * Bv;
      benchmark::DoNotOptimize(w.data());
    } else {
      BV.noalias() = B_act * V;
      BV.array() *= Sc.array();
      out.noalias() = c.C * BV;
      benchmark::DoNotOptimize(out.data());
    }
    benchmark::ClobberMemory();
  }
  set_items(st, kernel == 2 ? kBatch : 1);
  st.counters["f"] = double(f);
  st.counters["n_E"] = double(n_E);
  st.counters["r"] = double(r);
}

}  // namespace

BENCHMARK(BM_CouplingKernel)
    ->ArgNames({"circuit", "kernel"})
    ->ArgsProduct({{0, 1}, {0, 1, 2}})
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Equilibrium)
    ->ArgNames({"batch", "fast"})
    ->ArgsProduct({{32, 256}, {0, 1}})
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_CircuitBackward)
    ->ArgNames({"batch", "frozen", "fast"})
    ->ArgsProduct({{32, 64, 128, 256}, {0, 1}, {0, 1}})
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_StabilityKernel)
    ->ArgNames({"circuit", "now"})
    ->ArgsProduct({{0, 1, 2}, {0, 1}})
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
