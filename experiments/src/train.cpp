// eisim train: the training loop, per-epoch evaluation and atomic checkpoints.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <numeric>
#include <optional>
#include <random>
#include <sstream>

#include "eisim/experiments/commands.hpp"
#include "eisim/experiments/training.hpp"
#include "eisim/io/checksum.hpp"
#include "eisim/io/data.hpp"
#include "eisim/io/output.hpp"
#include "eisim/io/provenance.hpp"
#include "eisim/learning/gradients.hpp"
#include "eisim/learning/optimizer.hpp"
#include "eisim/models/error.hpp"
#include "eisim/sim/forward.hpp"
#include "evaluation.hpp"
#include "progress.hpp"
#include "simulation.hpp"

namespace eisim::experiments {

namespace {

constexpr int kHistBins = 64;

// Per-epoch records, written to /train.
struct History {
  std::vector<std::int64_t> epoch, fwd_it_max, fwd_fail, fwd_fallback, adj_fail;
  std::vector<double> loss, accuracy, seconds, sps, fwd_it_mean, align_total, local_loss;
  std::vector<std::vector<double>> test_acc, test_fail, align, act_mean, act_var;
  std::vector<std::vector<std::int64_t>> hist;
  /// The stability counters of the training forward solves (sim::ForwardStats). A file written
  /// before they existed has none: `stability` is false after reading it, until
  /// fill_missing() (after the checksum, which covers only what the file held).
  std::vector<std::int64_t> stab_checked, fwd_unstable, fwd_oscillatory, fwd_reintegrated;
  bool stability = true;
  /// The fixed-point solver's work per epoch (sim::ForwardStats): samples that needed the
  /// continuation, LU factorisations, GMRES vectors. Absent from older files (`solver` false
  /// after reading one, until fill_missing(): -1, unknown).
  std::vector<std::int64_t> fwd_continued, fwd_lu, fwd_gmres;
  bool solver = true;
  /// Marginal equilibria per epoch (sim::ForwardStats::marginal_samples). Absent from older
  /// files (`marginal` false after reading one, until fill_missing(): -1, unknown).
  std::vector<std::int64_t> fwd_marginal;
  bool marginal = true;
  /// Validation set (data.validation > 0 only), epochs x eval eps.
  std::vector<std::vector<double>> val_acc, val_loss, val_fail;
  /// Silent subtractive inhibition of E in the training forward passes, epochs x hidden layers
  /// (SilentInhibition: fractions of samples and of units). Absent from files written before
  /// it existed: `silence` is false after reading one, until fill_missing() (NaN, unknown).
  std::vector<std::vector<double>> silent_samples, silent_units;
  bool silence = true;

  void fill_missing(std::size_t hidden_layers) {
    if (!stability) {
      for (auto* v : {&stab_checked, &fwd_unstable, &fwd_oscillatory, &fwd_reintegrated})
        v->assign(epoch.size(), 0);
      stability = true;
    }
    if (!solver) {
      for (auto* v : {&fwd_continued, &fwd_lu, &fwd_gmres}) v->assign(epoch.size(), -1);
      solver = true;
    }
    if (!marginal) {
      fwd_marginal.assign(epoch.size(), -1);
      marginal = true;
    }
    if (!silence) {
      const std::vector<double> unknown(hidden_layers, std::numeric_limits<double>::quiet_NaN());
      silent_samples.assign(epoch.size(), unknown);
      silent_units.assign(epoch.size(), unknown);
      silence = true;
    }
  }

  void write(io::H5File& f, const std::vector<double>& eval_eps) const {
    f.write("train/epoch", epoch);
    f.write("train/loss", loss);
    f.write("train/accuracy", accuracy);
    f.write("train/eval_eps", eval_eps);
    f.write("train/test_accuracy", rows(test_acc, eval_eps.size()));
    f.write("train/test_forward_failures", rows(test_fail, eval_eps.size()));
    f.write("train/seconds", seconds);
    f.write("train/samples_per_second", sps);
    f.write("train/forward_iterations_mean", fwd_it_mean);
    f.write("train/forward_iterations_max", fwd_it_max);
    f.write("train/forward_failures", fwd_fail);
    f.write("train/forward_fallbacks", fwd_fallback);
    f.write("train/adjoint_failures", adj_fail);
    f.write("train/stability_checked", stab_checked);
    f.write("train/forward_unstable", fwd_unstable);
    f.write("train/forward_oscillatory", fwd_oscillatory);
    f.write("train/forward_marginal", fwd_marginal);
    f.write("train/forward_reintegrated", fwd_reintegrated);
    f.write("train/forward_continuations", fwd_continued);
    f.write("train/forward_factorisations", fwd_lu);
    f.write("train/forward_krylov_vectors", fwd_gmres);
    const std::size_t L = silent_samples.empty() ? 0 : silent_samples[0].size();
    f.write("train/silent_inhibition_samples", rows(silent_samples, L));
    f.write("train/silent_inhibition_units", rows(silent_units, L));
    if (!val_acc.empty()) {
      f.write("train/validation_accuracy", rows(val_acc, eval_eps.size()));
      f.write("train/validation_loss", rows(val_loss, eval_eps.size()));
      f.write("train/validation_forward_failures", rows(val_fail, eval_eps.size()));
    }
    f.write("train/grad_alignment", rows(align, align.empty() ? 0 : align[0].size()));
    f.write("train/grad_alignment_total", align_total);
    f.write("train/activity_mean", rows(act_mean, act_mean.empty() ? 0 : act_mean[0].size()));
    f.write("train/activity_var", rows(act_var, act_var.empty() ? 0 : act_var[0].size()));
    f.write("train/local_loss", local_loss);
    Mat<double> h(hist.size(), kHistBins);
    for (std::size_t e = 0; e < hist.size(); ++e)
      for (int b = 0; b < kHistBins; ++b) h(e, b) = double(hist[e][b]);
    f.write("train/iterations_histogram", h);
  }

  void read(const io::H5File& f) {
    auto ints = [&](const char* p) {
      const auto v = f.read_vector(p);
      return std::vector<std::int64_t>(v.begin(), v.end());
    };
    auto mat_rows = [&](const char* p) {
      const Mat<double> m = f.read_matrix(p);
      std::vector<std::vector<double>> out(m.rows(), std::vector<double>(m.cols()));
      for (int i = 0; i < m.rows(); ++i)
        for (int j = 0; j < m.cols(); ++j) out[i][j] = m(i, j);
      return out;
    };
    epoch = ints("train/epoch");
    fwd_it_max = ints("train/forward_iterations_max");
    fwd_fail = ints("train/forward_failures");
    fwd_fallback = ints("train/forward_fallbacks");
    adj_fail = ints("train/adjoint_failures");
    stability = f.exists("train/forward_unstable");
    if (stability) {
      stab_checked = ints("train/stability_checked");
      fwd_unstable = ints("train/forward_unstable");
      fwd_oscillatory = ints("train/forward_oscillatory");
      fwd_reintegrated = ints("train/forward_reintegrated");
    } else {
      stab_checked.clear();
      fwd_unstable.clear();
      fwd_oscillatory.clear();
      fwd_reintegrated.clear();
    }
    solver = f.exists("train/forward_continuations");
    fwd_continued.clear();
    fwd_lu.clear();
    fwd_gmres.clear();
    if (solver) {
      fwd_continued = ints("train/forward_continuations");
      fwd_lu = ints("train/forward_factorisations");
      fwd_gmres = ints("train/forward_krylov_vectors");
    }
    marginal = f.exists("train/forward_marginal");
    fwd_marginal.clear();
    if (marginal) fwd_marginal = ints("train/forward_marginal");
    silence = f.exists("train/silent_inhibition_samples");
    silent_samples.clear();
    silent_units.clear();
    if (silence) {
      silent_samples = mat_rows("train/silent_inhibition_samples");
      silent_units = mat_rows("train/silent_inhibition_units");
    }
    val_acc.clear();
    val_loss.clear();
    val_fail.clear();
    if (f.exists("train/validation_accuracy")) {
      val_acc = mat_rows("train/validation_accuracy");
      val_loss = mat_rows("train/validation_loss");
      val_fail = mat_rows("train/validation_forward_failures");
    }
    loss = f.read_vector("train/loss");
    accuracy = f.read_vector("train/accuracy");
    seconds = f.read_vector("train/seconds");
    sps = f.read_vector("train/samples_per_second");
    fwd_it_mean = f.read_vector("train/forward_iterations_mean");
    align_total = f.read_vector("train/grad_alignment_total");
    local_loss = f.read_vector("train/local_loss");
    test_acc = mat_rows("train/test_accuracy");
    test_fail = mat_rows("train/test_forward_failures");
    align = mat_rows("train/grad_alignment");
    act_mean = mat_rows("train/activity_mean");
    act_var = mat_rows("train/activity_var");
    const auto h = mat_rows("train/iterations_histogram");
    hist.clear();
    for (const auto& r : h) hist.emplace_back(r.begin(), r.end());
  }

  /// Every restored field, in a fixed order, for the checkpoint checksum.
  void add_to(io::Checksum& c) const {
    for (const auto* v : {&epoch, &fwd_it_max, &fwd_fail, &fwd_fallback, &adj_fail}) c.add(*v);
    for (const auto* v :
         {&loss, &accuracy, &seconds, &sps, &fwd_it_mean, &align_total, &local_loss})
      c.add(*v);
    for (const auto* m : {&test_acc, &test_fail, &align, &act_mean, &act_var})
      for (const auto& r : *m) c.add(r);
    for (const auto& r : hist) c.add(r);
    // Added later: absent from older files, whose checksums they must not change.
    if (stability)
      for (const auto* v : {&stab_checked, &fwd_unstable, &fwd_oscillatory, &fwd_reintegrated})
        c.add(*v);
    for (const auto* m : {&val_acc, &val_loss, &val_fail})
      for (const auto& r : *m) c.add(r);
    if (silence)
      for (const auto* m : {&silent_samples, &silent_units})
        for (const auto& r : *m) c.add(r);
    if (solver)
      for (const auto* v : {&fwd_continued, &fwd_lu, &fwd_gmres}) c.add(*v);
    if (marginal) c.add(fwd_marginal);
  }

  /// Throws data_error unless every per-epoch record holds exactly `epochs` entries numbered
  /// 1..epochs (a truncated or padded history would be extended silently otherwise).
  void check(const std::string& file, std::int64_t epochs, std::size_t n_eval,
             bool validation) const {
    auto require = [&](std::size_t n, const char* what) {
      if (std::int64_t(n) != epochs)
        throw data_error(file, 0,
                         std::string("/train/") + what + " holds " + std::to_string(n) +
                             " epochs but /checkpoint/epoch says " + std::to_string(epochs));
    };
    require(epoch.size(), "epoch");
    for (std::size_t i = 0; i < epoch.size(); ++i)
      if (epoch[i] != std::int64_t(i) + 1)
        throw data_error(file, 0, "/train/epoch is not 1, 2, ..., " + std::to_string(epochs));
    require(loss.size(), "loss");
    require(accuracy.size(), "accuracy");
    require(seconds.size(), "seconds");
    require(sps.size(), "samples_per_second");
    require(fwd_it_mean.size(), "forward_iterations_mean");
    require(fwd_it_max.size(), "forward_iterations_max");
    require(fwd_fail.size(), "forward_failures");
    require(fwd_fallback.size(), "forward_fallbacks");
    require(adj_fail.size(), "adjoint_failures");
    require(align_total.size(), "grad_alignment_total");
    require(local_loss.size(), "local_loss");
    require(test_acc.size(), "test_accuracy");
    require(test_fail.size(), "test_forward_failures");
    require(align.size(), "grad_alignment");
    require(act_mean.size(), "activity_mean");
    require(act_var.size(), "activity_var");
    require(hist.size(), "iterations_histogram");
    if (stability) {
      require(stab_checked.size(), "stability_checked");
      require(fwd_unstable.size(), "forward_unstable");
      require(fwd_oscillatory.size(), "forward_oscillatory");
      require(fwd_reintegrated.size(), "forward_reintegrated");
    }
    if (silence) {
      require(silent_samples.size(), "silent_inhibition_samples");
      require(silent_units.size(), "silent_inhibition_units");
    }
    if (solver) {
      require(fwd_continued.size(), "forward_continuations");
      require(fwd_lu.size(), "forward_factorisations");
      require(fwd_gmres.size(), "forward_krylov_vectors");
    }
    if (marginal) require(fwd_marginal.size(), "forward_marginal");
    if (validation) {
      require(val_acc.size(), "validation_accuracy");
      require(val_loss.size(), "validation_loss");
      require(val_fail.size(), "validation_forward_failures");
      for (const auto* m : {&val_acc, &val_loss, &val_fail})
        for (const auto& r : *m)
          if (r.size() != n_eval)
            throw data_error(file, 0,
                             "/train/validation_* have " + std::to_string(r.size()) +
                                 " columns, data.eval_eps has " + std::to_string(n_eval));
    } else if (!val_acc.empty()) {
      throw data_error(file, 0,
                       "/train/validation_accuracy exists but the stored data.validation is 0");
    }
    for (const auto& r : test_acc)
      if (r.size() != n_eval)
        throw data_error(file, 0,
                         "/train/test_accuracy has " + std::to_string(r.size()) +
                             " columns, data.eval_eps has " + std::to_string(n_eval));
    for (const auto& r : hist)
      if (r.size() != std::size_t(kHistBins))
        throw data_error(file, 0, "/train/iterations_histogram has the wrong number of bins");
  }

  static Mat<double> rows(const std::vector<std::vector<double>>& v, std::size_t cols) {
    Mat<double> m(v.size(), cols);
    for (std::size_t i = 0; i < v.size(); ++i)
      for (std::size_t j = 0; j < cols; ++j) m(i, j) = v[i][j];
    return m;
  }
};

template <class S>
void gather(const io::Dataset& d, const std::vector<int>& idx, std::size_t from, std::size_t n,
            Mat<S>& x, std::vector<int>& labels) {
  x.resize(d.images.rows(), n);
  labels.resize(n);
  for (std::size_t j = 0; j < n; ++j) {
    x.col(j) = d.images.col(idx[from + j]).template cast<S>();
    labels[j] = d.labels[idx[from + j]];
  }
}

}  // namespace

// Only keys that exist for the configured layer kind and circuit preset are named: the legacy
// keys such as network.circuit.theta are valid with the default and inorm presets only.
std::string network_hint(const io::Config& cfg) {
  const auto& n = cfg.network;
  const std::string& preset = n.circuit.preset;
  const bool legacy = preset == "default" || preset == "inorm";
  std::ostringstream os;
  switch (n.kind) {
    case models::LayerKind::circuit: {
      os << "the circuit (network.circuit.preset = " << preset;
      const auto& pops = n.circuit.spec.populations;
      const int d = models::find_population(n.circuit.spec, "D");
      if (preset == "default" && d >= 0 && pops[d].setpoint != n.circuit.params.theta)
        os << ", its set point network.circuit.populations.D.setpoint = " << pops[d].setpoint;
      else if (preset == "default")
        os << ", its set point network.circuit.theta = " << n.circuit.params.theta;
      else if (preset == "inorm")
        os << ", its local loss's set point network.circuit.theta = " << n.circuit.params.theta;
      os << ", its populations and projections under network.circuit)";
      break;
    }
    case models::LayerKind::layernorm:
      os << "the LayerNorm layers";
      if (legacy) os << " (set point network.circuit.theta = " << n.circuit.params.theta << ")";
      break;
    case models::LayerKind::none:
      os << "the unnormalised hidden layers (network.kind = none)";
      break;
  }
  return os.str();
}

namespace {

// Keys that may change between a run and its resumption (they do not change what is trained).
const std::vector<std::string> kMayChangeOnResume{"train.epochs", "train.progress", "simulate",
                                                  "evaluate"};

std::string rng_state(const std::mt19937_64& rng) {
  std::ostringstream os;
  os << rng;
  return os.str();
}

/// Everything a resume restores, and its checksum.
template <class S>
struct Checkpoint {
  models::Network<S> net;
  std::vector<models::LayerWeights<S>> velocity;
  std::int64_t epoch = 0;
  std::string rng;
  History hist;

  std::uint32_t checksum(const std::string& config_yaml) const {
    io::Checksum c;
    c.add(config_yaml);
    hist.add_to(c);
    for (const auto& l : net.layers)
      l.w.for_each([&](const std::string&, const Mat<S>& m) { c.add(m); });
    for (const auto& v : velocity)
      v.for_each([&](const std::string&, const Mat<S>& m) { c.add(m); });
    c.add(std::vector<std::int64_t>{epoch});
    c.add(rng);
    return c.value();
  }
};

/// Read and verify the checkpoint of the run file `f` for the network of `cfg` (whose stored
/// configuration the caller has compared). Throws data_error naming the file and the problem.
template <class S>
Checkpoint<S> read_checkpoint(const io::H5File& f, const io::Config& cfg) {
  const std::string& file = f.path();
  Checkpoint<S> ck;
  ck.net = models::initialise<S>(io::network_spec(cfg), cfg.seed);
  for (const char* d : {"checkpoint/epoch", "checkpoint/rng", "checkpoint/checksum"})
    if (!f.exists(d))
      throw data_error(file, 0,
                       std::string("not a complete run file of eisim train (missing /") + d +
                           "; written by another command, or by an older eisim)");
  const auto ep = f.read_vector("checkpoint/epoch");
  if (ep.size() != 1 || !(ep[0] >= 1 && ep[0] <= 1e9) || ep[0] != std::floor(ep[0]))
    throw data_error(file, 0, "/checkpoint/epoch must hold one epoch number >= 1");
  ck.epoch = std::int64_t(ep[0]);
  load_network(f, ck.net);
  if (!f.exists("optimizer"))
    throw data_error(file, 0,
                     "missing /optimizer (the momentum buffers); resuming without them would "
                     "silently reset the optimiser");
  models::Network<S> vel = ck.net;
  load_network(f, vel, "optimizer");
  for (const auto& l : vel.layers) ck.velocity.push_back(l.w);
  ck.rng = f.read_string("checkpoint/rng");
  ck.hist.read(f);
  ck.hist.check(file, ck.epoch, cfg.data.eval_eps.size(), cfg.data.validation > 0);
  const auto stored = f.read_vector("checkpoint/checksum");
  const std::uint32_t now = ck.checksum(f.attr_string("/", "config"));
  if (stored.size() != 1 || stored[0] != double(now)) {
    std::ostringstream os;
    os << "checkpoint checksum mismatch (stored "
       << (stored.size() == 1 ? std::to_string(static_cast<long long>(stored[0])) : "nothing")
       << ", computed " << now
       << " over the configuration, history, weights, optimizer state, epoch and random state): "
          "the file was modified or corrupted after eisim wrote it; refusing to use it";
    throw data_error(file, 0, os.str());
  }
  return ck;
}

template <class S>
class Trainer {
 public:
  Trainer(const io::Config& cfg, const TrainOptions& opt)
      : cfg_(cfg), opt_(opt), sgd_(cfg.learning), rng_(cfg.seed * 0x9E3779B97F4A7C15ULL + 1) {}

  TrainSummary run() {
    const bool show = cfg_.train.progress && !opt_.quiet;
    // Everything knowable before the first epoch is checked before it.
    // A symbolic link is followed: the run's file is the link's target (a rename over the link
    // would replace the link and leave the target stale).
    opt_.out = io::resolve_output(opt_.out);
    // One writer per output: a second `train --out` of the same file (or a simulate of it) is
    // refused while this one runs, and the existence check below happens under the lock.
    io::check_output_path(opt_.out, opt_.resume || opt_.overwrite, "--out");
    std::optional<io::OutputLock> lock;
    if (!opt_.lock_held) lock.emplace(opt_.out, "--out " + opt_.out);
    if (opt_.resume && !std::filesystem::exists(opt_.out))
      throw error("--resume: " + opt_.out +
                  " does not exist; run without --resume to start a new run there");
    io::check_output_path(opt_.out, opt_.resume || opt_.overwrite, "--out");  // under the lock
    if (!opt_.quiet) std::fprintf(stderr, "%s", io::provenance_header(cfg_, opt_.command).c_str());
    {
      io::TrainingData td =
          io::load_training_data(cfg_.data.dir, cfg_.data.train_limit, cfg_.data.validation);
      train_ = std::move(td.train);
      val_ = std::move(td.validation);
      val_first_ = td.validation_first;
    }
    test_ = io::load_fashion_mnist(cfg_.data.dir, false, cfg_.data.test_limit);
    for (int i : cfg_.simulate.images)
      if (i < 0 || i >= test_.size())
        throw config_error("simulate.images",
                           "image index " + std::to_string(i) +
                               " is outside the test set used for training (0.." +
                               std::to_string(test_.size() - 1) +
                               ", data.test_limit = " + std::to_string(cfg_.data.test_limit) +
                               "); the traces of the final network would fail at the end");
    net_ = models::initialise<S>(io::network_spec(cfg_), cfg_.seed);
    int start = 0;
    if (opt_.resume) start = resume();
    make_probe();
    const int epochs = cfg_.train.epochs;
    Progress bar(show);
    for (int ep = start; ep < epochs; ++ep) {
      const auto t0 = std::chrono::steady_clock::now();
      try {
        train_epoch(ep, bar);
        // Evaluation runs the forward pass too, which stops on a layer without a stable
        // equilibrium: the same handling as a failure in training.
        evaluate(ep, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      } catch (const numerical_error& e) {
        // The file keeps its last complete epoch, marked failed; the exit code is that of every
        // failed run (4).
        const bool marked = mark_failed(e.what());
        throw run_failed(std::string(e.what()) +
                         (marked ? " (" + opt_.out + " keeps epoch " + std::to_string(ep) +
                                       ", marked status = failed)"
                                 : " (nothing was written)"));
      }
      const std::string failure = assess(ep + 1 == epochs);
      write(failure.empty() ? (ep + 1 == epochs ? "complete" : "running") : "failed", ep + 1,
            ep + 1 == epochs || !failure.empty(), failure);
      if (!opt_.quiet) {
        std::fprintf(stderr, "epoch %d/%d: loss %.4f, train acc %.2f %%, test acc", ep + 1, epochs,
                     hist_.loss.back(), 100 * hist_.accuracy.back());
        for (std::size_t k = 0; k < cfg_.data.eval_eps.size(); ++k)
          std::fprintf(stderr, " %.2f%% (eps %.2f)", 100 * hist_.test_acc.back()[k],
                       cfg_.data.eval_eps[k]);
        if (!hist_.val_acc.empty()) {
          std::fprintf(stderr, ", validation acc");
          for (std::size_t k = 0; k < cfg_.data.eval_eps.size(); ++k)
            std::fprintf(stderr, " %.2f%%", 100 * hist_.val_acc.back()[k]);
          std::fprintf(stderr, " (loss %.4f at eps %.2f)",
                       hist_.val_loss.back()[nearest_eval(cfg_.data.train_eps)],
                       cfg_.data.eval_eps[nearest_eval(cfg_.data.train_eps)]);
        }
        std::fprintf(stderr, ", %.1f s, alignment %.3f\n", hist_.seconds.back(),
                     hist_.align_total.back());
      }
      if (!failure.empty())
        throw run_failed("training failed at epoch " + std::to_string(ep + 1) + ": " + failure +
                         " (" + opt_.out + " is marked status = failed)");
    }
    if (start >= epochs) {
      // Nothing to train. A run stopped early (status running) whose configured epochs are now
      // reached is judged and finished here, so that it cannot end looking complete unjudged.
      if (stored_status_ == "running") {
        const std::string failure = assess(true);
        write(failure.empty() ? "complete" : "failed", start, true, failure);
        if (!failure.empty())
          throw run_failed("training failed at epoch " + std::to_string(start) + ": " + failure +
                           " (" + opt_.out + " is marked status = failed)");
      }
      if (!opt_.quiet)
        std::fprintf(stderr, "nothing to do: %s already holds %d epochs\n", opt_.out.c_str(),
                     start);
    }
    TrainSummary s;
    s.eval_eps = cfg_.data.eval_eps;
    s.test_accuracy = hist_.test_acc.empty() ? std::vector<double>{} : hist_.test_acc.back();
    s.epochs = int(hist_.epoch.size());
    s.seconds = std::accumulate(hist_.seconds.begin(), hist_.seconds.end(), 0.0);
    if (!s.test_accuracy.empty())
      s.final_accuracy = s.test_accuracy[nearest_eval(cfg_.data.train_eps)];
    if (!hist_.val_acc.empty()) {
      s.validation_accuracy = hist_.val_acc.back();
      s.validation_loss = hist_.val_loss.back();
    }
    return s;
  }

 private:
  /// The index of the data.eval_eps entry nearest to `eps` (the first of equals).
  std::size_t nearest_eval(double eps) const {
    std::size_t best = 0;
    for (std::size_t k = 0; k < cfg_.data.eval_eps.size(); ++k)
      if (std::abs(cfg_.data.eval_eps[k] - eps) < std::abs(cfg_.data.eval_eps[best] - eps))
        best = k;
    return best;
  }

  int resume() {
    const io::H5File f = io::H5File::open_read(opt_.out, /*require_checksum=*/true);
    if (!f.exists("checkpoint"))
      throw data_error(opt_.out, 0,
                       "not a run file of eisim train (no /checkpoint): nothing to resume");
    const io::Config old =
        io::parse_config(f.attr_string("/", "config"), {}, opt_.out + " (stored config)");
    const auto diff = io::config_differences(old, cfg_, kMayChangeOnResume);
    if (!diff.empty()) {
      std::string keys;
      for (const auto& d : diff) keys += "\n  " + d;
      throw config_error(
          diff.front().substr(0, diff.front().find(' ')),
          "cannot resume " + opt_.out +
              ": this configuration differs from the stored one (stored vs now):" + keys +
              "\nonly train.epochs, train.progress and simulate.* may "
              "change on resume; set the others back to their stored values with --set "
              "(a default can change between eisim versions), or start a new run (another "
              "--out) instead");
    }
    if (f.attr_string("/", "status") == "failed")
      throw run_failed("cannot resume " + opt_.out + ": the run is marked failed (" +
                       f.attr_string("/", "failure") +
                       "); a failed run stays failed: start a new run with a changed "
                       "configuration (another --out, or --overwrite)");
    Checkpoint<S> ck = read_checkpoint<S>(f, cfg_);
    net_ = std::move(ck.net);
    sgd_.velocity() = std::move(ck.velocity);
    std::istringstream is(ck.rng);
    is >> rng_;
    if (!is) throw data_error(opt_.out, 0, "corrupt /checkpoint/rng");
    hist_ = std::move(ck.hist);
    // A file from before the stability counters (0 checked) or the silence fractions (NaN).
    hist_.fill_missing(net_.layers.size() - 1);
    owns_file_ = true;
    stored_status_ = f.attr_string("/", "status");
    // Sums over threads round differently: a resume is bit-identical to an uninterrupted run
    // only with the thread count the run used.
    const std::int64_t threads = io::compute_threads();
    if (f.attr_int("/", "threads") != threads)
      std::fprintf(stderr,
                   "warning: %s was trained with %lld thread(s) and resumes with %lld: the result "
                   "will not be bit-identical to an uninterrupted run (use --threads %lld)\n",
                   opt_.out.c_str(), static_cast<long long>(f.attr_int("/", "threads")),
                   static_cast<long long>(threads),
                   static_cast<long long>(f.attr_int("/", "threads")));
    if (!opt_.quiet)
      std::fprintf(stderr, "resuming %s after epoch %lld\n", opt_.out.c_str(),
                   static_cast<long long>(ck.epoch));
    return int(ck.epoch);
  }

  /// The diagnostic probe batch: the first train.probe_batch images of the validation set, or of
  /// the test set when there is none (data.validation = 0).
  void make_probe() {
    const io::Dataset& src = val_.size() > 0 ? val_ : test_;
    std::vector<int> idx(std::min(cfg_.train.probe_batch, src.size()));
    std::iota(idx.begin(), idx.end(), 0);
    gather(src, idx, 0, idx.size(), probe_x_, probe_y_);
    std::mt19937_64 prng(cfg_.data.test_seed + 999);
    io::apply_jitter<S>(probe_x_, cfg_.data.train_eps, prng);
  }

  void train_epoch(int ep, Progress& bar) {
    const int N = train_.size(), B = cfg_.train.batch_size;
    std::vector<int> perm(N);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng_);
    double loss_sum = 0, local_sum = 0;
    long correct = 0, seen = 0, it_sum = 0, it_count = 0;
    std::int64_t it_max = 0, fwd_fail = 0, fwd_fallback = 0, adj_fail = 0;
    std::int64_t stab_checked = 0, unstable = 0, oscillatory = 0, marginal = 0, reintegrated = 0;
    std::int64_t continued = 0, lu = 0, gmres = 0;
    std::vector<std::int64_t> hist(kHistBins, 0);
    SilentInhibition silent;
    const auto t0 = std::chrono::steady_clock::now();
    Mat<S> x, dlogits;
    std::vector<int> labels;
    sim::ForwardCache<S> cache;
    learning::Gradients<S> grads;
    const int nb = (N + B - 1) / B;
    for (int b = 0; b < nb; ++b) {
      const std::size_t from = std::size_t(b) * B, n = std::min<std::size_t>(B, N - from);
      gather(train_, perm, from, n, x, labels);
      io::apply_jitter<S>(x, cfg_.data.train_eps, rng_);
      double loss = 0;
      int hits = 0;
      // A solver or adjoint failure, with where it happened and what to try.
      const auto in_context = [&](auto&& step) {
        try {
          step();
        } catch (const numerical_error& e) {
          std::ostringstream os;
          os << e.what() << " [at epoch " << ep + 1 << ", batch " << b + 1 << "/" << nb;
          if (ep > 0 || b > 0)
            os << "; training had already started, so the weights may have diverged: try a "
                  "smaller learning rate (learning.lr_E = "
               << cfg_.learning.lr_E << ")";
          os << "]";
          throw numerical_error("training", os.str());
        }
      };
      if (cfg_.learning.rule == learning::Rule::bptt) {
        learning::backward_bptt(net_, x, labels, cfg_.learning, grads, &loss);
        sim::ForwardCache<S> c2;  // accuracy of the trajectory's end point
        sim::forward(net_, x, cfg_.fixed_point, c2);
        Mat<S> d;
        learning::cross_entropy(c2.logits(), labels, cfg_.learning.label_smoothing, d, &hits);
        silent.add(net_, c2);
      } else {
        sim::ForwardStats fs;
        // The implicit rule's adjoint and the local loss's reuse the solver's last evaluations;
        // the stability check's counts need no list of eigenvalues.
        sim::FixedPointParameters fp = cfg_.fixed_point;
        fp.keep_linearisation = learning::solves_adjoint(net_.spec, cfg_.learning);
        fp.stability_leading = 0;
        fp.stability_class_only = true;
        in_context([&] { fs = sim::forward(net_, x, fp, cache); });
        fwd_fail += fs.failed_samples;
        fwd_fallback += fs.fallback_samples;
        stab_checked += fs.stability_checked;
        unstable += fs.unstable_samples;
        oscillatory += fs.oscillatory_samples;
        marginal += fs.marginal_samples;
        reintegrated += fs.reintegrated_samples;
        continued += fs.continuation_samples;
        lu += fs.factorisations;
        gmres += fs.krylov_vectors;
        silent.add(net_, cache);
        loss = learning::cross_entropy(cache.logits(), labels, cfg_.learning.label_smoothing,
                                       dlogits, &hits);
        if (std::isfinite(loss))
          in_context([&] { learning::backward(net_, cache, dlogits, cfg_.learning, grads); });
        adj_fail += grads.adjoint.failed;
        for (const auto& lc : cache.layers)
          for (int it : lc.solve.sample_iterations) {
            ++hist[std::min(it, kHistBins - 1)];
            it_sum += it;
            ++it_count;
            it_max = std::max<std::int64_t>(it_max, it);
          }
        if (cfg_.learning.train_inhibitory && std::isfinite(loss))
          local_sum += learning::local_homeostatic_gradients(
              net_, cache, cfg_.learning.local_loss_weight, grads);
      }
      if (!std::isfinite(loss)) {
        std::ostringstream os;
        os << "loss is " << loss << " at epoch " << ep + 1 << ", batch " << b + 1 << "/" << nb;
        if (ep == 0 && b == 0 && !opt_.resume)
          os << ", before any weight update: the untrained network already produces non-finite "
                "output, so the learning rate is not the cause; check network.init_gain = "
             << cfg_.network.init_gain << ", " << network_hint(cfg_)
             << " and precision = " << io::to_string(cfg_.precision);
        else
          os << "; the weights have diverged: try a smaller learning rate (learning.lr_E = "
             << cfg_.learning.lr_E << ", learning.lr_I = " << cfg_.learning.lr_I
             << ") or gradient clipping (train.max_grad_norm = " << cfg_.train.max_grad_norm << ")";
        throw numerical_error("training", os.str());
      }
      if (cfg_.train.max_grad_norm > 0)
        clip_gradients(net_, grads, cfg_.train.max_grad_norm, cfg_.learning.train_inhibitory);
      sgd_.step(net_, grads);
      loss_sum += loss * n;
      correct += hits;
      seen += long(n);
      const double el =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      char extra[160];
      std::snprintf(extra, sizeof extra, "loss %.4f acc %.1f%% %.0f samples/s", loss_sum / seen,
                    100.0 * correct / seen, seen / std::max(el, 1e-9));
      bar.update("epoch " + std::to_string(ep + 1) + "/" + std::to_string(cfg_.train.epochs), b + 1,
                 nb, extra);
    }
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    hist_.epoch.push_back(ep + 1);
    hist_.loss.push_back(loss_sum / seen);
    hist_.accuracy.push_back(double(correct) / seen);
    hist_.sps.push_back(seen / std::max(el, 1e-9));
    hist_.fwd_it_mean.push_back(it_count ? double(it_sum) / it_count : 0.0);
    hist_.fwd_it_max.push_back(it_max);
    hist_.fwd_fail.push_back(fwd_fail);
    hist_.fwd_fallback.push_back(fwd_fallback);
    hist_.adj_fail.push_back(adj_fail);
    hist_.stab_checked.push_back(stab_checked);
    hist_.fwd_unstable.push_back(unstable);
    hist_.fwd_oscillatory.push_back(oscillatory);
    hist_.fwd_marginal.push_back(marginal);
    hist_.fwd_reintegrated.push_back(reintegrated);
    hist_.fwd_continued.push_back(continued);
    hist_.fwd_lu.push_back(lu);
    hist_.fwd_gmres.push_back(gmres);
    hist_.silent_samples.push_back(silent.sample_fraction());
    hist_.silent_units.push_back(silent.unit_fraction());
    hist_.local_loss.push_back(local_sum / nb);
    hist_.hist.push_back(hist);
    if (fwd_fallback > 0 && !opt_.quiet)
      std::fprintf(stderr, "note: %lld forward solves needed the ODE fallback in epoch %d\n",
                   static_cast<long long>(fwd_fallback), ep + 1);
    if (fwd_fail > 0 && !opt_.quiet)
      std::fprintf(stderr,
                   "warning: %lld forward solves did not converge in epoch %d "
                   "(see /train/forward_failures; raise fixed_point.max_iterations?)\n",
                   static_cast<long long>(fwd_fail), ep + 1);
    if ((unstable > 0 || oscillatory > 0) && !opt_.quiet)
      std::fprintf(stderr,
                   "note: %lld unstable and %lld oscillatory equilibria (of %lld checked), %lld "
                   "re-integrated, in epoch %d (see /train/forward_unstable)\n",
                   static_cast<long long>(unstable), static_cast<long long>(oscillatory),
                   static_cast<long long>(stab_checked), static_cast<long long>(reintegrated),
                   ep + 1);
    if (marginal > 0 && !opt_.quiet)
      std::fprintf(
          stderr,
          "note: %lld marginal equilibria (leading real part in (1e-9, %g] /ms: kept and "
          "used; fixed_point.stability_marginal) in epoch %d (see /train/forward_marginal)\n",
          static_cast<long long>(marginal), cfg_.fixed_point.stability_marginal, ep + 1);
  }

  void evaluate(int ep, double secs) {
    hist_.seconds.push_back(secs);
    std::vector<double> acc, fails;
    Mat<S> d;
    sim::ForwardCache<S> cache;
    for (std::size_t k = 0; k < cfg_.data.eval_eps.size(); ++k) {
      const double eps = cfg_.data.eval_eps[k];
      const EvalResult r = evaluate_set(
          net_, test_, eps, eval_seed(cfg_.data.test_seed, k, EvalSet::test), cfg_.fixed_point);
      acc.push_back(r.accuracy);
      fails.push_back(double(r.failed));
      if (r.failed > 0 && !opt_.quiet)
        std::fprintf(stderr,
                     "warning: %lld test images (eps %.2f) did not reach a converged equilibrium "
                     "at epoch %d; they count as errors (see /train/test_forward_failures)\n",
                     static_cast<long long>(r.failed), eps, ep + 1);
    }
    if (val_.size() > 0) {
      std::vector<double> va, vl, vf;
      for (std::size_t k = 0; k < cfg_.data.eval_eps.size(); ++k) {
        const EvalResult r =
            evaluate_set(net_, val_, cfg_.data.eval_eps[k],
                         eval_seed(cfg_.data.test_seed, k, EvalSet::validation), cfg_.fixed_point);
        va.push_back(r.accuracy);
        vl.push_back(r.loss);
        vf.push_back(double(r.failed));
      }
      hist_.val_acc.push_back(va);
      hist_.val_loss.push_back(vl);
      hist_.val_fail.push_back(vf);
    }
    hist_.test_acc.push_back(acc);
    hist_.test_fail.push_back(fails);
    // Probe batch: activity moments and gradient alignment with the implicit gradient.
    sim::forward(net_, probe_x_, cfg_.fixed_point, cache);
    std::vector<double> am, av;
    for (std::size_t l = 0; l + 1 < cache.layers.size(); ++l) {
      const Mat<S>& v = cache.layers[l].z.v();
      double m = 0, var = 0;
      for (int j = 0; j < v.cols(); ++j) {
        const double mj = double(v.col(j).mean());
        m += mj;
        var += double((v.col(j).array() - S(mj)).square().mean());
      }
      am.push_back(m / v.cols());
      av.push_back(var / v.cols());
    }
    hist_.act_mean.push_back(am);
    hist_.act_var.push_back(av);
    std::vector<double> cos(net_.layers.size() + 1, std::numeric_limits<double>::quiet_NaN());
    try {
      learning::cross_entropy(cache.logits(), probe_y_, cfg_.learning.label_smoothing, d);
      learning::LearningSpec exact = cfg_.learning;
      exact.rule = learning::Rule::implicit;
      exact.error_transform = learning::ErrorTransform::none;
      learning::Gradients<S> gi, gr;
      learning::backward(net_, cache, d, exact, gi);
      if (cfg_.learning.rule == learning::Rule::bptt)
        learning::backward_bptt(net_, probe_x_, probe_y_, cfg_.learning, gr);
      else
        learning::backward(net_, cache, d, cfg_.learning, gr);
      cos = learning::gradient_cosines(gr, gi);
    } catch (const numerical_error& e) {
      if (!opt_.quiet)
        std::fprintf(stderr, "warning: gradient alignment not computed at epoch %d: %s\n", ep + 1,
                     e.what());
    }
    hist_.align_total.push_back(cos.back());
    cos.pop_back();
    hist_.align.push_back(cos);
  }

  /// Why this run has failed, or "" if it has not: it diverged (checked every epoch), or it ends
  /// (`final`) no better than chance on every test condition.
  std::string assess(bool final) const {
    const double n_classes = 10, chance = 1 / n_classes;
    const double loss = hist_.loss.back(), limit = 2 * std::log(n_classes);
    std::ostringstream os;
    if (!(loss <= limit)) {
      os << "the training loss " << loss << " exceeds 2 ln(10) = " << limit
         << " (twice that of guessing uniformly): the run diverged; try a smaller learning rate "
         << "(learning.lr_E = " << cfg_.learning.lr_E << ", learning.lr_I = " << cfg_.learning.lr_I
         << ") or gradient clipping (train.max_grad_norm)";
      return os.str();
    }
    if (!final) return {};
    // Chance plus three binomial standard errors of the test-set size.
    const double n = test_.size(), margin = 3 * std::sqrt(chance * (1 - chance) / n);
    const auto& acc = hist_.test_acc.back();
    const double best = *std::max_element(acc.begin(), acc.end());
    if (best <= chance + margin) {
      os << "the test accuracy (at most " << 100 * best << " % over data.eval_eps) is at chance ("
         << 100 * chance << " % + 3 standard errors = " << 100 * (chance + margin) << " % for " << n
         << " test images): the network learned nothing. Look at " << network_hint(cfg_)
         << ", the learning rate (learning.lr_E = " << cfg_.learning.lr_E << ") and /train/loss";
      return os.str();
    }
    return {};
  }

  /// A numerical failure in the middle of an epoch: the file keeps its last complete epoch and
  /// is marked failed with the reason (the weights of the broken epoch are not written).
  bool mark_failed(const std::string& why) const {
    if (!owns_file_) return false;  // no epoch of this run was written yet: leave the path alone
    try {
      io::update_atomically(opt_.out, [&](io::H5File& f) {
        f.set_attr("/", "status", "failed");
        f.set_attr("/", "failure", why);
      });
    } catch (const eisim::error& e) {
      std::fprintf(stderr, "warning: could not mark %s as failed: %s\n", opt_.out.c_str(),
                   e.what());
      return false;
    }
    return true;
  }

  void write(const char* status, int epoch, bool final, const std::string& failure) {
    Checkpoint<S> ck;
    ck.net = net_;  // copies of the state written, so that the checksum sees what resume reads
    ck.velocity = sgd_.velocity();
    if (ck.velocity.empty())
      for (const auto& l : net_.layers) {
        ck.velocity.push_back(l.w);
        ck.velocity.back().for_each([](const std::string&, Mat<S>& m) { m.setZero(); });
      }
    ck.epoch = epoch;
    ck.rng = rng_state(rng_);
    const std::string yaml = io::to_yaml(cfg_);
    owns_file_ = true;
    io::write_atomically(opt_.out, [&](io::H5File& f) {
      io::write_provenance(f, cfg_, opt_.command);
      if (f.attr_string("/", "config") != yaml)
        throw internal_error("train: the stored configuration is not to_yaml(config)");
      f.set_attr("/", "status", status);
      if (!failure.empty()) f.set_attr("/", "failure", failure);
      // The learning rule exists only for circuits: layernorm and none layers are trained by
      // plain back-propagation whatever learning.rule says, so their files record no rule.
      if (cfg_.network.kind == models::LayerKind::circuit) {
        f.set_attr("/", "rule", learning::to_string(cfg_.learning.rule));
        f.set_attr("/", "error_transform", learning::to_string(cfg_.learning.error_transform));
      }
      f.set_attr("/", "kind", models::to_string(cfg_.network.kind));
      f.set_attr("/", "validation_images", std::int64_t(val_.size()));
      f.set_attr("/", "validation_first", std::int64_t(val_first_));
      f.set_attr("/", "probe_set", val_.size() > 0 ? "validation" : "test");
      hist_.write(f, cfg_.data.eval_eps);
      save_network(f, net_);
      // Optimiser state in the same layout as the weights.
      models::Network<S> vel = net_;
      for (std::size_t l = 0; l < vel.layers.size(); ++l) vel.layers[l].w = ck.velocity[l];
      save_network(f, vel, "optimizer");
      f.write("checkpoint/epoch", std::vector<std::int64_t>{epoch});
      f.write_string("checkpoint/rng", ck.rng);
      ck.hist = hist_;
      f.write("checkpoint/checksum", std::vector<std::int64_t>{ck.checksum(yaml)});
      f.set_attr("checkpoint/checksum", "algorithm",
                 "CRC-32 (zlib) over the stored config, /train history, /weights, /optimizer, "
                 "/checkpoint/epoch and /checkpoint/rng as restored");
      if (final && !cfg_.simulate.images.empty()) {
        const auto netd = models::cast_network<double>(net_);
        write_simulation(f, cfg_, netd, test_, false);
      }
    });
  }

  io::Config cfg_;
  TrainOptions opt_;
  bool owns_file_ = false;     ///< opt_.out holds this run (written by it, or resumed from)
  std::string stored_status_;  ///< of the resumed file
  learning::Sgd<S> sgd_;
  std::mt19937_64 rng_;
  io::Dataset train_, test_, val_;
  int val_first_ = 0;  ///< index of the first validation image in the training file
  models::Network<S> net_;
  History hist_;
  Mat<S> probe_x_;
  std::vector<int> probe_y_;
};

}  // namespace

template <class S>
double clip_gradients(const models::Network<S>& net, learning::Gradients<S>& grads, double max_norm,
                      bool train_inhibitory) {
  if (grads.layers.size() != net.layers.size())
    throw internal_error("clip_gradients: gradients of another network");
  double n2 = 0;
  for (std::size_t l = 0; l < net.layers.size(); ++l)
    for (int k = 0; k < grads.layers[l].count(); ++k)
      if (learning::is_trained(net.layers[l].spec, k, train_inhibitory))
        n2 += double(grads.layers[l].at(k).template cast<double>().squaredNorm());
  const double norm = std::sqrt(n2);
  if (!(norm > max_norm)) return norm;  // within bounds, or NaN
  const S f = S(max_norm / norm);
  for (std::size_t l = 0; l < net.layers.size(); ++l)
    for (int k = 0; k < grads.layers[l].count(); ++k)
      if (learning::is_trained(net.layers[l].spec, k, train_inhibitory)) grads.layers[l].at(k) *= f;
  return norm;
}

template double clip_gradients(const models::Network<float>&, learning::Gradients<float>&, double,
                               bool);
template double clip_gradients(const models::Network<double>&, learning::Gradients<double>&, double,
                               bool);

void verify_run_file(const std::string& path) {
  verify_run_file(io::H5File::open_read(path, /*require_checksum=*/true));
}

void verify_run_file(const io::H5File& f) {
  const std::string& path = f.path();
  if (!f.has_file_checksum())
    throw data_error(path, 0,
                     "no whole-file checksum: not written by this eisim (an older version, or "
                     "rewritten by another tool); eisim does not resume from or reuse it");
  if (!f.exists("checkpoint"))
    throw data_error(path, 0, "not a run file of eisim train (no /checkpoint)");
  const io::Config cfg =
      io::parse_config(f.attr_string("/", "config"), {}, path + " (stored config)");
  const std::string status = f.attr_string("/", "status");
  if (status != "running" && status != "complete" && status != "failed")
    throw data_error(path, 0, "unknown status '" + status + "'");
  if (cfg.precision == io::Precision::float64)
    (void)read_checkpoint<double>(f, cfg);
  else
    (void)read_checkpoint<float>(f, cfg);
}

TrainSummary run_train(const io::Config& config, const TrainOptions& options) {
  if (config.precision == io::Precision::float64) return Trainer<double>(config, options).run();
  return Trainer<float>(config, options).run();
}

}  // namespace eisim::experiments
