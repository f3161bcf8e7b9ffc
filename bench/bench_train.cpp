// bench_train: how fast does eisim train one epoch of Fashion-MNIST, where does the time go, and
// how close is the GEMM work to the machine's Eigen float32 GEMM rate?
//
// The question, the commands and the recorded results are in bench/README.md. The training step
// is the library's (sim::forward, learning::cross_entropy, backward, Sgd::step), exactly as in
// `eisim train`; evaluation and checkpoints are left out. Every repetition trains the first epoch
// from the same initial weights, so the repetitions do the same work. The Eigen GEMM rate is
// measured in the same run, interleaved with the epochs (gemm, epoch, gemm, epoch, ...), and
// medians are reported, because the machine is shared and noisy.
//
// --circuit NAME:KEY=VALUE;KEY=VALUE (repeatable) compares circuits instead: the configuration
// with each circuit's overrides, one epoch each, interleaved with the default circuit (the same
// configuration without them) in every repetition; it prints per circuit the solver's counters
// (ODE fallbacks, failures, Newton iterations, stability classes) and the epoch time as a ratio
// to the default measured in the same run (docs/numerics.md, "Solver robustness per circuit").
//
// --dump IN.h5 --out OUT.h5 runs one forward pass, one backward pass and one SGD step (momentum
// forced to 0; not clipped: train.max_grad_norm is ignored, as by the PyTorch reference) on the
// batch stored in IN.h5 (/batch/x, 784 x B; /batch/labels) with the weights in IN.h5
// (/weights/layer_<l>/<name>), and writes the logits, the loss, every gradient and the updated
// weights to OUT.h5 for bench/reference/compare.py.
#include <CLI/CLI.hpp>
#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "eisim/experiments/commands.hpp"
#include "eisim/experiments/training.hpp"
#include "eisim/io/config.hpp"
#include "eisim/io/data.hpp"
#include "eisim/io/hdf5.hpp"
#include "eisim/learning/gradients.hpp"
#include "eisim/learning/optimizer.hpp"
#include "eisim/models/error.hpp"
#include "eisim/models/memory.hpp"
#include "eisim/models/nonlinearity.hpp"
#include "source_dir.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

using eisim::Mat;
namespace io = eisim::io;
namespace learning = eisim::learning;
namespace models = eisim::models;
namespace sim = eisim::sim;
using Clock = std::chrono::steady_clock;
using S = float;

/// The optimiser's step as eisim train takes it: gradient clipping (train.max_grad_norm) first.
void sgd_step(const io::Config& cfg, learning::Sgd<S>& sgd, models::Network<S>& net,
              learning::Gradients<S>& grads) {
  if (cfg.train.max_grad_norm > 0)
    eisim::experiments::clip_gradients(net, grads, cfg.train.max_grad_norm,
                                       cfg.learning.train_inhibitory);
  sgd.step(net, grads);
}

struct Options {
  std::string config = eisim::bench::compare_rules_yaml();
  std::vector<std::string> sets;
  std::string rule;  // "" = from the config
  int batch = 0;     // 0 = from the config
  int width = 0;     // 0 = from the config
  int threads = 1;
  int limit = 0;  // training samples per epoch (0 = all 60000)
  int reps = 3;
  int profile = 8192;          // samples of the profiling pass (0 = none)
  double gemm_seconds = 0.25;  // length of one GEMM-rate measurement
  std::string dump, out;
  std::vector<std::string> circuits;  // --circuit NAME:KEY=VALUE;KEY=VALUE
  bool default_malloc = false;        // skip models::keep_freed_memory (to measure its effect)
  bool batch_parallel = false;        // experiment: halves of each batch on two threads
};

void set_threads(int n) {
#ifdef _OPENMP
  omp_set_num_threads(n);
#endif
  Eigen::setNbThreads(n);
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

/// CPU time of the process (all threads), seconds.
double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string load_average() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

// ---------------------------------------------------------------------------------- GEMM rate

/// Eigen float32 GEMM rate in GFLOP/s of C (m x n) = A (m x k) * B (k x n), with the threads
/// currently set: repeats the product for about `seconds`, in 5 blocks, and returns the median
/// block's rate.
double gemm_rate(int m, int k, int n, double seconds) {
  Mat<S> A = Mat<S>::Random(m, k), B = Mat<S>::Random(k, n), C(m, n);
  C.noalias() = A * B;  // warm-up (packing buffers, page faults)
  const double flops = 2.0 * m * double(n) * k;
  const auto t0 = Clock::now();
  C.noalias() = A * B;
  const double one = std::max(seconds_since(t0), 1e-7);
  const int per_block = std::max(1, int(seconds / 5 / one));
  std::vector<double> rates;
  for (int blk = 0; blk < 5; ++blk) {
    const auto t = Clock::now();
    for (int r = 0; r < per_block; ++r) C.noalias() = A * B;
    rates.push_back(flops * per_block / seconds_since(t) / 1e9);
  }
  if (!C.allFinite()) std::printf("warning: non-finite GEMM result\n");
  return median(rates);
}

struct GemmShape {
  const char* name;
  int m, k, n;
};

// ------------------------------------------------------------------------------- flop count

/// GEMM flops of one training sample that a training step needs, counted as 2 m n k for every
/// product with a trained weight: forward W x (W_EX of every layer, and the readout's W_IX x and
/// W_EI (W_IX x)), the weight gradients delta x^T of the same matrices, and the errors passed
/// down W^T delta for every layer except the first (learning::backward computes the gradient
/// with respect to the pixels only if Gradients::input_gradient asks for it; training does not).
/// The products of the circuit layers' recurrent projections (rank 1 for the default circuit's
/// one unit per interneuron population) are not counted.
struct FlopCount {
  double forward = 0, weight_grad = 0, error_grad = 0;
  double useful() const { return forward + weight_grad + error_grad; }
};

FlopCount flops_per_sample(const models::Network<S>& net) {
  FlopCount f;
  for (std::size_t l = 0; l < net.layers.size(); ++l) {
    const auto& s = net.layers[l].spec;
    double prod = double(s.n_E) * s.n_in;
    if (s.kind == models::LayerKind::none)
      prod += double(s.n_I_plain) * s.n_in + s.n_E * s.n_I_plain;
    // A circuit's input projections (W_IX x, and W (U x)^2 of an input_energy projection) are
    // forward GEMMs too; their gradients are not counted.
    double input_proj = 0;
    if (s.kind == models::LayerKind::circuit)
      for (std::size_t k = 0; k < s.circuit.projections.size(); ++k) {
        if (s.circuit.projections[k].src >= 0) continue;
        const auto& w = s.weights[s.projection_weight[k]];
        input_proj += double(w.rows) * w.cols;
        if (s.energy_weight[k] >= 0) input_proj += double(s.n_E) * s.n_in;
      }
    f.forward += 2 * (prod + input_proj);
    f.weight_grad += 2 * prod;
    if (l > 0) f.error_grad += 2 * prod;
  }
  return f;
}

// ------------------------------------------------------------------------------ the training

void gather(const io::Dataset& d, const std::vector<int>& idx, std::size_t from, std::size_t n,
            Mat<S>& x, std::vector<int>& labels) {
  x.resize(d.images.rows(), n);
  labels.resize(n);
  for (std::size_t j = 0; j < n; ++j) {
    x.col(j) = d.images.col(idx[from + j]);
    labels[j] = d.labels[idx[from + j]];
  }
}

/// Wall time of the parts of one epoch (seconds) and what it learned.
struct EpochResult {
  double total = 0, data = 0, forward = 0, loss = 0, backward = 0, optimizer = 0;
  double cpu = 0;  ///< CPU time of all threads
  long samples = 0;
  double loss_mean = 0, accuracy = 0, newton_mean = 0;
  int newton_max = 0, forward_failures = 0, fallbacks = 0;
  int continued = 0;  ///< layer solves where Newton stalled and the continuation ran
  long factorisations = 0, krylov_vectors = 0;  ///< Newton's LUs and GMRES vectors
  long low_rank = 0, adjoint_low_rank = 0;      ///< Newton's and the adjoint's low-rank solves
  int stability_checked = 0, unstable = 0, oscillatory = 0, marginal = 0, reintegrated = 0;
  int adjoint_failures = 0;  ///< the implicit rule's adjoint solves that failed (AdjointStats)
  double adjoint_rcond = 1;  ///< the smallest reciprocal condition estimate of those solves
  long adjoint_lus = 0, adjoint_vectors = 0;  ///< their factorisations and GMRES vectors
};

/// Finer split measured in the profiling pass (seconds, summed over its batches).
struct Profile {
  long samples = 0;
  // Forward, decomposed into the library's public pieces (same calls as sim::forward).
  double f_copy = 0, f_gemm = 0, f_newton = 0, f_phi = 0, f_other = 0, f_library = 0;
  // Backward: the library call, and a replay of its GEMMs on the same shapes and data.
  double b_library = 0, b_gemm_replay = 0, b_zero_like = 0;
  double b_adjoint = 0;  // the circuits' evaluate + (transform_error) + solve_adjoint, replayed
  // Optimiser: Sgd::step (the update and Dale's projection in one pass).
  double o_step = 0;
  double loss = 0, data = 0;
};

class Bench {
 public:
  Bench(const io::Config& cfg, const io::Dataset& train, bool batch_parallel = false)
      : cfg_(cfg), train_(train), batch_parallel_(batch_parallel) {
    if (cfg_.learning.rule == learning::Rule::bptt)
      throw eisim::config_error("learning.rule", "bench_train times implicit and frozen only");
    // As train: the implicit rule's adjoint reuses the solver's last evaluations, and the
    // stability check classifies without listing eigenvalues.
    cfg_.fixed_point.keep_linearisation =
        learning::solves_adjoint(io::network_spec(cfg_), cfg_.learning);
    cfg_.fixed_point.stability_leading = 0;
    cfg_.fixed_point.stability_class_only = true;
  }

  /// The epoch's sample order; every epoch and profiling pass draws the same one.
  std::vector<int> shuffled_order(std::mt19937_64& rng) const {
    std::vector<int> perm(train_.size());
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    return perm;
  }

  models::Network<S> fresh() const {
    return models::initialise<S>(io::network_spec(cfg_), cfg_.seed);
  }

  /// One epoch over the training set from the initial weights, timed per phase.
  EpochResult epoch() const {
    models::Network<S> net = fresh();
    learning::Sgd<S> sgd(cfg_.learning);
    std::mt19937_64 rng(cfg_.seed * 0x9E3779B97F4A7C15ULL + 1);
    const std::vector<int> perm = shuffled_order(rng);
    const int N = train_.size(), B = cfg_.train.batch_size;
    Mat<S> x, dlogits;
    std::vector<int> labels;
    sim::ForwardCache<S> cache;
    learning::Gradients<S> grads;
    EpochResult r;
    double it_sum = 0, loss_sum = 0;
    long hits_sum = 0;
    const auto t_epoch = Clock::now();
    const double cpu0 = cpu_seconds();
    for (int from = 0; from < N; from += B) {
      const int n = std::min(B, N - from);
      auto t = Clock::now();
      gather(train_, perm, from, n, x, labels);
      io::apply_jitter<S>(x, cfg_.data.train_eps, rng);
      r.data += seconds_since(t);
      sim::ForwardStats fs;
      int hits = 0;
      double loss = 0;
      if (batch_parallel_) {
        // forward + loss + backward of the halves in "forward", the gradient sum in "backward"
        loss = split_step(net, x, labels, grads, fs, hits, r.forward, r.backward);
      } else {
        t = Clock::now();
        fs = sim::forward(net, x, cfg_.fixed_point, cache);
        r.forward += seconds_since(t);
        t = Clock::now();
        loss = learning::cross_entropy(cache.logits(), labels, cfg_.learning.label_smoothing,
                                       dlogits, &hits);
        r.loss += seconds_since(t);
        t = Clock::now();
        learning::backward(net, cache, dlogits, cfg_.learning, grads);
        // As eisim train: the local homeostatic loss's gradients of weights that learn from
        // it (`learns: local`; nothing to do in circuits without such weights).
        if (cfg_.learning.train_inhibitory && std::isfinite(loss))
          learning::local_homeostatic_gradients(net, cache, cfg_.learning.local_loss_weight, grads);
        r.backward += seconds_since(t);
      }
      if (!std::isfinite(loss))
        throw eisim::numerical_error("bench_train",
                                     "loss is not finite at sample " + std::to_string(from));
      t = Clock::now();
      sgd_step(cfg_, sgd, net, grads);
      r.optimizer += seconds_since(t);
      it_sum += fs.iterations_mean * n;
      r.newton_max = std::max(r.newton_max, fs.iterations_max);
      r.forward_failures += fs.failed_samples;
      r.fallbacks += fs.fallback_samples;
      // From the forward statistics: the batch-parallel path's halves do not fill `cache`.
      r.continued += fs.continuation_samples;
      r.factorisations += fs.factorisations;
      r.krylov_vectors += fs.krylov_vectors;
      r.low_rank += fs.low_rank_solves;
      r.stability_checked += fs.stability_checked;
      r.unstable += fs.unstable_samples;
      r.oscillatory += fs.oscillatory_samples;
      r.marginal += fs.marginal_samples;
      r.reintegrated += fs.reintegrated_samples;
      r.adjoint_failures += grads.adjoint.failed;
      r.adjoint_rcond = std::min(r.adjoint_rcond, grads.adjoint.worst_rcond);
      r.adjoint_lus += grads.adjoint.factorisations;
      r.adjoint_vectors += grads.adjoint.krylov_vectors;
      r.adjoint_low_rank += grads.adjoint.low_rank_solves;
      loss_sum += loss * n;
      hits_sum += hits;
      r.samples += n;
    }
    r.total = seconds_since(t_epoch);
    r.cpu = cpu_seconds() - cpu0;
    r.loss_mean = loss_sum / r.samples;
    r.accuracy = double(hits_sum) / r.samples;
    r.newton_mean = it_sum / r.samples;
    return r;
  }

  /// The first `samples` of an epoch again, each phase split further with the library's public
  /// pieces; the forward pass runs twice (decomposed, then the library call that training uses).
  Profile profile(int samples) const {
    models::Network<S> net = fresh();
    learning::Sgd<S> sgd(cfg_.learning);
    std::mt19937_64 rng(cfg_.seed * 0x9E3779B97F4A7C15ULL + 1);
    const std::vector<int> perm = shuffled_order(rng);
    const int N = std::min(samples, train_.size()), B = cfg_.train.batch_size;
    Mat<S> x, dlogits;
    std::vector<int> labels;
    sim::ForwardCache<S> cache;
    learning::Gradients<S> grads, scratch;
    std::vector<sim::LayerCache<S>> mine(net.layers.size());
    Mat<S> gw, dx, aux, dinh;
    sim::CircuitTerms<S> terms;
    std::vector<Mat<S>> cotangents;
    Profile p;
    for (int from = 0; from < N; from += B) {
      const int n = std::min(B, N - from);
      auto t = Clock::now();
      gather(train_, perm, from, n, x, labels);
      io::apply_jitter<S>(x, cfg_.data.train_eps, rng);
      p.data += seconds_since(t);
      // Forward, decomposed.
      const Mat<S>* in = &x;
      for (std::size_t l = 0; l < net.layers.size(); ++l) {
        const auto& layer = net.layers[l];
        auto& c = mine[l];
        if (layer.spec.kind == models::LayerKind::circuit) {
          // circuit_input copies x into the cache and forms every fixed drive (W_EX x + b and
          // the interneurons' input projections).
          t = Clock::now();
          sim::circuit_input(layer, *in, c.in);
          p.f_gemm += seconds_since(t);
          t = Clock::now();
          sim::initial_state(layer, n, c.z);
          c.solve = sim::solve_fixed_point(layer, c.in, cfg_.fixed_point, c.z,
                                           cfg_.fixed_point.keep_linearisation ? &c.lin : nullptr);
          p.f_newton += seconds_since(t);
        } else {
          t = Clock::now();
          c.in.x = *in;
          p.f_copy += seconds_since(t);
          t = Clock::now();
          c.in.ext.resize(1);
          c.in.ext[0].noalias() = layer.w.W_EX * c.in.x;
          c.in.ext[0].colwise() += layer.w.b.col(0);
          c.z.z.resize(1);
          const Mat<S>& e = c.in.ext[0];
          if (layer.spec.kind == models::LayerKind::none) {
            c.aux.noalias() = layer.w["W_IX"] * c.in.x;
            c.z.v() = e;
            c.z.v().noalias() -= layer.w["W_EI"] * c.aux;
            p.f_gemm += seconds_since(t);
          } else {  // layernorm
            p.f_gemm += seconds_since(t);
            t = Clock::now();
            const S theta = S(layer.spec.theta);
            c.z.v() = e.rowwise() - e.colwise().mean();
            c.aux =
                ((c.z.v().cwiseAbs2().colwise().mean().array() + S(layer.spec.ln_epsilon)).rsqrt())
                    .matrix();
            c.z.v() =
                (c.z.v().array().rowwise() * (std::sqrt(theta) * c.aux.row(0).array())).matrix();
            p.f_other += seconds_since(t);
          }
        }
        t = Clock::now();
        models::apply_phi(layer.spec.phi, c.z.v(), c.r);
        p.f_phi += seconds_since(t);
        in = &c.r;
      }
      // Forward, the library call.
      t = Clock::now();
      sim::forward(net, x, cfg_.fixed_point, cache);
      p.f_library += seconds_since(t);
      t = Clock::now();
      learning::cross_entropy(cache.logits(), labels, cfg_.learning.label_smoothing, dlogits);
      p.loss += seconds_since(t);
      t = Clock::now();
      learning::backward(net, cache, dlogits, cfg_.learning, grads);
      p.b_library += seconds_since(t);
      // The parts of backward that are public: zeroing the gradients, and per circuit the
      // evaluation of its equations with partials and the adjoint solve of the rule (through
      // the inhibition for implicit, E's block only for frozen after the error transform);
      // E's potentials stand in for the error.
      t = Clock::now();
      scratch.zero_like(net, true);  // as backward does
      p.b_zero_like += seconds_since(t);
      for (std::size_t l = 0; l < net.layers.size(); ++l) {
        if (net.layers[l].spec.kind != models::LayerKind::circuit) continue;
        if (cfg_.learning.rule == learning::Rule::frozen &&
            cfg_.learning.error_transform == learning::ErrorTransform::scale)
          continue;  // no adjoint solve: a division by the drive's spread
        const auto& c = cache.layers[l];
        t = Clock::now();
        sim::evaluate(net.layers[l], c.in, c.z, terms, true);
        sim::AdjointParameters ap;
        ap.pooled_fast_path = cfg_.learning.pooled_fast_path;
        ap.through_inhibition = cfg_.learning.rule == learning::Rule::implicit;
        ap.saved = &c.lin;
        const Mat<S> g_v = ap.through_inhibition
                               ? c.z.v()
                               : learning::transform_error(cfg_.learning.error_transform,
                                                           net.layers[l], c.z.v(), c.z.v());
        sim::solve_adjoint(net.layers[l], c.in, c.z, terms, g_v, ap, cotangents);
        p.b_adjoint += seconds_since(t);
      }
      // Replay of backward's GEMMs with the same shapes (the drive e stands in for the error).
      for (std::size_t l = 0; l < net.layers.size(); ++l) {
        const auto& layer = net.layers[l];
        const auto& c = cache.layers[l];
        const Mat<S>& delta = c.e();
        t = Clock::now();
        gw.noalias() = delta * c.x().transpose();
        if (layer.spec.kind == models::LayerKind::none) {
          gw.noalias() = -delta * c.aux.transpose();
          dinh.noalias() = -(layer.w["W_EI"].transpose() * delta);
          gw.noalias() = dinh * c.x().transpose();
        }
        if (l > 0) {
          dx.noalias() = layer.w.W_EX.transpose() * delta;
          if (layer.spec.kind == models::LayerKind::none)
            dx.noalias() += layer.w["W_IX"].transpose() * dinh;
        }
        p.b_gemm_replay += seconds_since(t);
      }
      t = Clock::now();
      sgd_step(cfg_, sgd, net, grads);
      p.o_step += seconds_since(t);
      p.samples += n;
    }
    return p;
  }

 private:
  // Experiment (--batch-parallel): forward, loss and backward of each half of the batch on its
  // own thread (Eigen single-threaded inside), the two gradient sets summed, one SGD step.
  // Returns the loss and hits of the whole batch; `fs` gets the worse half's statistics.
  double split_step(const models::Network<S>& net, const Mat<S>& x, const std::vector<int>& labels,
                    learning::Gradients<S>& grads, sim::ForwardStats& fs, int& hits,
                    double& t_parallel, double& t_reduce) const {
    const int n = int(x.cols()), h = n / 2;
    const int from[2] = {0, h}, len[2] = {h, n - h};
    double loss[2] = {0, 0};
    int hit[2] = {0, 0};
    sim::ForwardStats st[2];
    auto t = Clock::now();
#pragma omp parallel num_threads(2)
    {
#ifdef _OPENMP
      const int k = omp_get_thread_num();
#else
      for (int k = 0; k < 2; ++k)
#endif
      {
        const Mat<S> xk = x.middleCols(from[k], len[k]);
        const std::vector<int> lk(labels.begin() + from[k], labels.begin() + from[k] + len[k]);
        Mat<S> d;
        st[k] = sim::forward(net, xk, cfg_.fixed_point, half_cache_[k]);
        loss[k] = learning::cross_entropy(half_cache_[k].logits(), lk,
                                          cfg_.learning.label_smoothing, d, &hit[k]);
        d *= S(double(len[k]) / n);  // cross_entropy divides by the half's size
        learning::backward(net, half_cache_[k], d, cfg_.learning, half_grads_[k]);
      }
    }
    t_parallel += seconds_since(t);
    t = Clock::now();
    grads.layers.resize(net.layers.size());
    grads.adjoint = half_grads_[0].adjoint;
    grads.adjoint.add(half_grads_[1].adjoint);
    for (std::size_t l = 0; l < net.layers.size(); ++l) {
      grads.layers[l] = half_grads_[0].layers[l];
      auto& b = half_grads_[1].layers[l];
      grads.layers[l].for_each([&](const std::string& name, Mat<S>& g) {
        b.for_each([&](const std::string& nb, Mat<S>& gb) {
          if (nb == name) g += gb;
        });
      });
    }
    t_reduce += seconds_since(t);
    fs = st[0].iterations_max >= st[1].iterations_max ? st[0] : st[1];
    fs.iterations_mean = (st[0].iterations_mean * len[0] + st[1].iterations_mean * len[1]) / n;
    fs.failed_samples = st[0].failed_samples + st[1].failed_samples;
    fs.fallback_samples = st[0].fallback_samples + st[1].fallback_samples;
    fs.stability_checked = st[0].stability_checked + st[1].stability_checked;
    fs.unstable_samples = st[0].unstable_samples + st[1].unstable_samples;
    fs.oscillatory_samples = st[0].oscillatory_samples + st[1].oscillatory_samples;
    fs.marginal_samples = st[0].marginal_samples + st[1].marginal_samples;
    fs.reintegrated_samples = st[0].reintegrated_samples + st[1].reintegrated_samples;
    fs.continuation_samples = st[0].continuation_samples + st[1].continuation_samples;
    fs.factorisations = st[0].factorisations + st[1].factorisations;
    fs.krylov_vectors = st[0].krylov_vectors + st[1].krylov_vectors;
    fs.low_rank_solves = st[0].low_rank_solves + st[1].low_rank_solves;
    hits = hit[0] + hit[1];
    return (loss[0] * len[0] + loss[1] * len[1]) / n;
  }

  io::Config cfg_;  // a copy: the constructor sets what the training forward keeps
  const io::Dataset& train_;
  bool batch_parallel_ = false;
  mutable sim::ForwardCache<S> half_cache_[2];
  mutable learning::Gradients<S> half_grads_[2];
};

// ------------------------------------------------------------------------------------- dump

int run_dump(const io::Config& cfg_in, const Options& o) {
  io::Config cfg = cfg_in;
  cfg.learning.momentum = 0.0;
  models::Network<S> net = models::initialise<S>(io::network_spec(cfg), cfg.seed);
  // As a training step: the adjoint reuses the solver's last evaluations.
  cfg.fixed_point.keep_linearisation = learning::solves_adjoint(net.spec, cfg.learning);
  const io::H5File in = io::H5File::open_read(o.dump);
  eisim::experiments::load_network(in, net);
  const Mat<S> x = in.read_matrix("batch/x").cast<S>();
  std::vector<int> labels;
  for (double v : in.read_vector("batch/labels")) labels.push_back(int(v));
  if (x.rows() != net.n_in() || int(labels.size()) != x.cols())
    throw eisim::data_error(o.dump, 0, "batch/x must be 784 x B and batch/labels hold B labels");
  sim::ForwardCache<S> cache;
  const auto fs = sim::forward(net, x, cfg.fixed_point, cache);
  Mat<S> dlogits;
  int hits = 0;
  const double loss =
      learning::cross_entropy(cache.logits(), labels, cfg.learning.label_smoothing, dlogits, &hits);
  learning::Gradients<S> grads;
  learning::backward(net, cache, dlogits, cfg.learning, grads);
  learning::Sgd<S> sgd(cfg.learning);
  sgd.step(net, grads);  // unclipped, as bench/reference/eisim_torch.py's step
  io::H5File f = io::H5File::create(o.out);
  f.set_attr("/", "rule", learning::to_string(cfg.learning.rule));
  f.set_attr("/", "config", io::to_yaml(cfg));
  f.write("logits", cache.logits());
  f.write("dlogits", dlogits);
  f.write_scalar("loss", loss);
  f.write_scalar("forward_failures", fs.failed_samples);
  f.write_scalar("newton_iterations_max", fs.iterations_max);
  for (std::size_t l = 0; l < net.layers.size(); ++l) {
    const std::string L = "layer_" + std::to_string(l);
    f.write("hidden/" + L + "/v", cache.layers[l].z.v());
    f.write("hidden/" + L + "/r", cache.layers[l].r);
    grads.layers[l].for_each(
        [&](const std::string& name, const Mat<S>& m) { f.write("grad/" + L + "/" + name, m); });
  }
  eisim::experiments::save_network(f, net, "updated");
  f.close();
  std::printf("dump: rule %s, batch %d, loss %.7f, %d correct, forward %s; wrote %s\n",
              learning::to_string(cfg.learning.rule), int(x.cols()), loss, hits,
              fs.failed_samples ? "NOT CONVERGED" : "converged", o.out.c_str());
  return fs.failed_samples ? 1 : 0;
}

// -------------------------------------------------------------------------------- reporting

void print_profile(const Profile& p, const EpochResult& med, const FlopCount& fc) {
  const double k = 1e6 / p.samples;  // microseconds per sample
  const double f_lib = p.f_library * k, b_lib = p.b_library * k;
  std::printf("\n== Where the time goes (profiling pass: first %ld samples, us per sample) ==\n",
              p.samples);
  std::printf("forward, sim::forward                      %8.2f\n", f_lib);
  std::printf("  drive GEMMs W_EX x + b, readout W_IX x   %8.2f  (circuit_input + readout)\n",
              p.f_gemm * k);
  std::printf("  Newton solve (initial_state + solve_fixed_point) %8.2f\n", p.f_newton * k);
  std::printf("  copy of the layer input into the cache   %8.2f\n", p.f_copy * k);
  std::printf("  phi (ReLU)                               %8.2f\n", p.f_phi * k);
  if (p.f_other > 0)
    std::printf("  layernorm                                %8.2f\n", p.f_other * k);
  std::printf("  sum of the pieces                        %8.2f\n",
              (p.f_gemm + p.f_newton + p.f_copy + p.f_phi + p.f_other) * k);
  std::printf("loss, cross_entropy                        %8.2f\n", p.loss * k);
  std::printf("backward, learning::backward               %8.2f\n", b_lib);
  std::printf("  GEMMs (replayed, same shapes)            %8.2f\n", p.b_gemm_replay * k);
  std::printf("  Gradients::zero_like (replayed)          %8.2f\n", p.b_zero_like * k);
  if (p.b_adjoint > 0)
    std::printf("  circuits' evaluate + adjoint solve (replayed) %8.2f\n", p.b_adjoint * k);
  std::printf(
      "  rest = library call - replayed parts (vector-Jacobian products, phi'; +-1 us) "
      "%8.2f\n",
      b_lib - (p.b_gemm_replay + p.b_zero_like + p.b_adjoint) * k);
  std::printf("optimizer, Sgd::step                       %8.2f\n", p.o_step * k);
  std::printf("data (gather + jitter)                     %8.2f\n", p.data * k);
  const double gemm_us = (p.f_gemm + p.b_gemm_replay) * k;
  const double step_us = f_lib + b_lib + (p.loss + p.o_step + p.data) * k;
  std::printf(
      "GEMMs in total %.2f us per sample = %.0f%% of the profiled step (%.2f us); "
      "their rate %.1f GFLOP/s\n",
      gemm_us, 100 * gemm_us / step_us, step_us, fc.useful() / (gemm_us * 1e-6) / 1e9);
  const double e = 1e6 / med.samples;
  std::printf(
      "timed epochs (median): forward %.2f, loss %.2f, backward %.2f, optimizer %.2f, "
      "data %.2f, total %.2f us per sample\n",
      med.forward * e, med.loss * e, med.backward * e, med.optimizer * e, med.data * e,
      med.total * e);
}

// ------------------------------------------------------------------------- circuit comparison

/// One circuit of --circuit NAME:KEY=VALUE;KEY=VALUE: its name and its overrides.
struct CircuitCase {
  std::string name;
  std::vector<std::string> sets;
};

CircuitCase parse_circuit(const std::string& arg) {
  CircuitCase c;
  const auto colon = arg.find(':');
  c.name = arg.substr(0, colon);
  if (colon == std::string::npos) return c;
  std::string rest = arg.substr(colon + 1);
  for (std::size_t from = 0; from <= rest.size();) {
    const auto semi = std::min(rest.find(';', from), rest.size());
    if (semi > from) c.sets.push_back(rest.substr(from, semi - from));
    from = semi + 1;
  }
  return c;
}

/// Per circuit, one epoch per repetition (the default circuit first in each), then the table.
int run_circuits(const Options& o, const std::vector<std::string>& base_sets) {
  std::vector<CircuitCase> cases{{"default", {}}};
  for (const auto& a : o.circuits) cases.push_back(parse_circuit(a));
  std::vector<io::Config> cfgs;
  for (const auto& c : cases) {
    std::vector<std::string> sets = base_sets;
    sets.insert(sets.end(), c.sets.begin(), c.sets.end());
    cfgs.push_back(io::load_config(o.config, sets));
    if (cfgs.back().precision != io::Precision::float32)
      throw eisim::config_error("precision", "bench_train runs float32 only");
  }
  set_threads(o.threads);
  const io::Dataset train = io::load_fashion_mnist(cfgs[0].data.dir, true, o.limit);
  std::printf(
      "bench_train --circuit: %d circuits, %d training samples per epoch, %d rep(s), %d "
      "thread(s), config %s; load average %s\n",
      int(cases.size()), train.size(), o.reps, o.threads, o.config.c_str(), load_average().c_str());
  std::vector<Bench> benches;
  benches.reserve(cfgs.size());
  for (const auto& cfg : cfgs) benches.emplace_back(cfg, train);
  std::vector<std::vector<EpochResult>> runs(cases.size());
  for (int r = 0; r < o.reps; ++r)
    for (std::size_t c = 0; c < cases.size(); ++c) {
      runs[c].push_back(benches[c].epoch());
      const auto& e = runs[c].back();
      std::printf("rep %d %-14s epoch %.3f s (CPU %.3f s, forward %.3f s, backward %.3f s)\n",
                  r + 1, cases[c].name.c_str(), e.total, e.cpu, e.forward, e.backward);
      std::fflush(stdout);
    }
  // Ratios of median CPU times against the default circuit of the same run.
  auto med = [&](std::size_t c, double EpochResult::*f) {
    std::vector<double> v;
    for (const auto& e : runs[c]) v.push_back(e.*f);
    return median(v);
  };
  const double ref_cpu = med(0, &EpochResult::cpu);
  std::printf(
      "\n%-14s %9s %9s %8s %11s %8s %9s %9s %9s %10s %8s %6s %6s %6s %8s %9s %8s %9s %9s %9s "
      "%9s %7s %9s %6s\n",
      "circuit", "continued", "fallbacks", "failures", "Newton mean", "max", "LUs", "GMRES",
      "low-rank", "stab.chk", "unstable", "osc", "marg", "reint", "adj.fail", "adj.rcond",
      "adj.LUs", "adj.GMRES", "adj.l-r", "epoch CPU", "forward", "ratio", "loss", "acc%");
  for (std::size_t c = 0; c < cases.size(); ++c) {
    const EpochResult& e = runs[c].front();  // the counters are the same in every repetition
    const double cpu = med(c, &EpochResult::cpu);
    std::printf(
        "%-14s %9d %9d %8d %11.2f %8d %9ld %9ld %9ld %10d %8d %6d %6d %6d %8d %9.2g %8ld %9ld "
        "%9ld %8.3fs %8.3fs %6.2fx %9.4g %6.2f\n",
        cases[c].name.c_str(), e.continued, e.fallbacks, e.forward_failures, e.newton_mean,
        e.newton_max, e.factorisations, e.krylov_vectors, e.low_rank, e.stability_checked,
        e.unstable, e.oscillatory, e.marginal, e.reintegrated, e.adjoint_failures, e.adjoint_rcond,
        e.adjoint_lus, e.adjoint_vectors, e.adjoint_low_rank, cpu, med(c, &EpochResult::forward),
        cpu / ref_cpu, e.loss_mean, 100 * e.accuracy);
  }
  for (std::size_t c = 1; c < cases.size(); ++c) {
    std::printf("%s:", cases[c].name.c_str());
    for (const auto& s : cases[c].sets) std::printf(" --set %s", s.c_str());
    std::printf("\n");
  }
  std::printf("load average at the end: %s\n", load_average().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"Training throughput of eisim and its Eigen GEMM efficiency"};
  app.add_option("--config", o.config, "YAML configuration")->check(CLI::ExistingFile);
  app.add_option("--set", o.sets, "override a config key: path.to.key=value");
  app.add_option("--rule", o.rule, "learning rule")->check(CLI::IsMember({"implicit", "frozen"}));
  app.add_option("--batch", o.batch, "batch size (default: the config's)")
      ->check(CLI::PositiveNumber);
  app.add_option("--width", o.width, "hidden width (default: the config's)")
      ->check(CLI::PositiveNumber);
  app.add_option("--threads", o.threads, "OpenMP / Eigen threads")->check(CLI::PositiveNumber);
  app.add_flag("--batch-parallel", o.batch_parallel,
               "experiment: each half of every batch on its own thread (2 threads), gradients "
               "summed; timed epochs only");
  app.add_option("--limit", o.limit, "training samples per epoch (default: all 60000)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--reps", o.reps, "timed epochs")->check(CLI::PositiveNumber);
  app.add_option("--profile", o.profile, "samples of the profiling pass (0 = none)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--gemm-seconds", o.gemm_seconds,
                 "length of one GEMM-rate measurement (0 = do not measure)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--dump", o.dump, "HDF5 file with /weights and /batch: one step, then exit")
      ->check(CLI::ExistingFile);
  app.add_option("--out", o.out, "output HDF5 file of --dump");
  app.add_option("--circuit", o.circuits,
                 "compare a circuit with the default: NAME:KEY=VALUE;KEY=VALUE (repeatable)");
  app.add_flag("--default-malloc", o.default_malloc,
               "keep glibc's default trim/mmap thresholds (eisim train calls "
               "models::keep_freed_memory)");
  CLI11_PARSE(app, argc, argv);
  if (!o.default_malloc) eisim::models::keep_freed_memory();

  try {
    std::vector<std::string> sets = o.sets;
    if (!o.rule.empty()) sets.push_back("learning.rule=" + o.rule);
    if (o.batch > 0) sets.push_back("train.batch_size=" + std::to_string(o.batch));
    if (o.width > 0) sets.push_back("network.width=" + std::to_string(o.width));
    if (!o.circuits.empty()) return run_circuits(o, sets);
    const io::Config cfg = io::load_config(o.config, sets);
    if (cfg.precision != io::Precision::float32)
      throw eisim::config_error("precision", "bench_train runs float32 only");
    set_threads(o.threads);
    if (!o.dump.empty()) {
      if (o.out.empty()) throw eisim::config_error("--out", "--dump needs --out FILE.h5");
      return run_dump(cfg, o);
    }

    const auto t_load = Clock::now();
    const io::Dataset train = io::load_fashion_mnist(cfg.data.dir, true, o.limit);
    const double load_s = seconds_since(t_load);
    const Bench bench(cfg, train, o.batch_parallel);
    const models::Network<S> net0 = bench.fresh();
    const FlopCount fc = flops_per_sample(net0);
    const int H = cfg.network.width, B = cfg.train.batch_size;
    std::printf(
        "bench_train: rule %s, %d hidden %s layers of %d, batch %d, %d thread(s), "
        "%d training samples per epoch (%d reps), float32\n",
        learning::to_string(cfg.learning.rule), cfg.network.hidden_layers,
        models::to_string(cfg.network.kind), H, B, o.threads, train.size(), o.reps);
    std::printf("config %s (--set:", o.config.c_str());
    for (const auto& s : sets) std::printf(" %s", s.c_str());
    std::printf("); data loaded in %.2f s; load average %s\n", load_s, load_average().c_str());
    std::printf(
        "GEMM flops per sample: forward %.0f, weight gradients %.0f, errors passed down "
        "%.0f; useful %.0f\n",
        fc.forward, fc.weight_grad, fc.error_grad, fc.useful());

    const std::vector<GemmShape> shapes{{"square 1024", 1024, 1024, 1024},
                                        {"W x, 283x784x256", 283, 784, 256},
                                        {"W x at this run", H, 784, B},
                                        {"delta x^T at this run", H, B, 784},
                                        {"W^T delta at this run", 784, H, B}};
    const bool gemm = o.gemm_seconds > 0;
    std::vector<std::vector<double>> rates(shapes.size());
    std::vector<EpochResult> epochs;
    for (int r = 0; r < o.reps; ++r) {
      if (gemm)
        for (std::size_t s = 0; s < shapes.size(); ++s)
          rates[s].push_back(gemm_rate(shapes[s].m, shapes[s].k, shapes[s].n, o.gemm_seconds));
      epochs.push_back(bench.epoch());
      const auto& e = epochs.back();
      std::printf("rep %d: epoch %.3f s (%.0f samples/s, CPU %.3f s)", r + 1, e.total,
                  e.samples / e.total, e.cpu);
      if (gemm)
        std::printf(", GEMM %.1f GFLOP/s (1024) %.1f (283x784x256)", rates[0].back(),
                    rates[1].back());
      std::printf(
          "; loss %.4f, train acc %.2f %%, Newton %.2f iterations/sample (max %d), %d not "
          "converged, %d ODE fallbacks; stability: %d checked, %d unstable, %d oscillatory, %d "
          "marginal, %d re-integrated; adjoint: %d failed, smallest rcond %.3g\n",
          e.loss_mean, 100 * e.accuracy, e.newton_mean, e.newton_max, e.forward_failures,
          e.fallbacks, e.stability_checked, e.unstable, e.oscillatory, e.marginal, e.reintegrated,
          e.adjoint_failures, e.adjoint_rcond);
      std::fflush(stdout);
    }
    std::vector<double> totals, cpus;
    for (const auto& e : epochs) {
      totals.push_back(e.total);
      cpus.push_back(e.cpu);
    }
    const double t_med = median(totals);
    const std::size_t mi = std::min_element(totals.begin(), totals.end(),
                                            [&](double a, double b) {
                                              return std::abs(a - t_med) < std::abs(b - t_med);
                                            }) -
                           totals.begin();
    const double t_min = *std::min_element(totals.begin(), totals.end());
    const double n = train.size();
    const double gflops = fc.useful() * n / t_med / 1e9;
    std::vector<double> med_rates(shapes.size(), 0.0);
    if (gemm) {
      std::printf("\n== Eigen float32 GEMM rate, %d thread(s), median of %d measurements ==\n",
                  o.threads, o.reps);
      for (std::size_t s = 0; s < shapes.size(); ++s) {
        med_rates[s] = median(rates[s]);
        std::printf("%-24s m=%4d k=%4d n=%4d  %7.1f GFLOP/s  (min %.1f, max %.1f)\n",
                    shapes[s].name, shapes[s].m, shapes[s].k, shapes[s].n, med_rates[s],
                    *std::min_element(rates[s].begin(), rates[s].end()),
                    *std::max_element(rates[s].begin(), rates[s].end()));
      }
    }
    std::printf("\n== Training epoch ==\n");
    std::printf(
        "median %.3f s for %d samples (min %.3f s, median CPU time %.3f s): %.0f "
        "samples/s; a 60000-sample epoch takes %.2f s%s\n",
        t_med, train.size(), t_min, median(cpus), n / t_med, t_med * 60000.0 / n,
        train.size() < 60000 ? " (extrapolated linearly from the subset)" : "");
    std::printf("useful GEMM flops %.3g per epoch of %d samples -> %.1f GFLOP/s", fc.useful() * n,
                train.size(), gflops);
    if (gemm)
      std::printf(
          " = %.0f%% of the 1024 rate, %.0f%% of the 283x784x256 rate, %.0f%% of this "
          "run's W x rate",
          100 * gflops / med_rates[0], 100 * gflops / med_rates[1], 100 * gflops / med_rates[2]);
    std::printf("\n");
    if (o.profile > 0) print_profile(bench.profile(o.profile), epochs[mi], fc);
    std::printf("\nload average at the end: %s\n", load_average().c_str());
    std::printf(
        "RESULT rule=%s batch=%d width=%d threads=%d samples=%d epoch_s=%.6f "
        "epoch60k_s=%.6f cpu_s=%.6f sps=%.1f gflops=%.3f gemm1024=%.3f gemm283=%.3f "
        "gemmrun=%.3f\n",
        learning::to_string(cfg.learning.rule), B, H, o.threads, train.size(), t_med,
        t_med * 60000.0 / n, median(cpus), n / t_med, gflops, med_rates[0], med_rates[1],
        med_rates[2]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_train: %s\n", e.what());
    return 1;
  }
  return 0;
}
