// eisim train: the training loop, per-epoch evaluation and atomic checkpoints.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <sstream>

#include "eisim/experiments/commands.hpp"
#include "eisim/io/data.hpp"
#include "eisim/io/provenance.hpp"
#include "eisim/models/error.hpp"
#include "progress.hpp"
#include "simulation.hpp"

namespace eisim::experiments {

namespace {

constexpr int kHistBins = 64;
constexpr int kEvalBatch = 500;

// Per-epoch records, written to /train.
struct History {
  std::vector<std::int64_t> epoch, fwd_it_max, fwd_fail, fwd_fallback, adj_fail;
  std::vector<double> loss, accuracy, seconds, sps, fwd_it_mean, align_total, local_loss;
  std::vector<std::vector<double>> test_acc, align, act_mean, act_var;
  std::vector<std::vector<std::int64_t>> hist;

  void write(io::H5File& f, const std::vector<double>& eval_eps) const {
    f.write("train/epoch", epoch);
    f.write("train/loss", loss);
    f.write("train/accuracy", accuracy);
    f.write("train/eval_eps", eval_eps);
    f.write("train/test_accuracy", rows(test_acc, eval_eps.size()));
    f.write("train/seconds", seconds);
    f.write("train/samples_per_second", sps);
    f.write("train/forward_iterations_mean", fwd_it_mean);
    f.write("train/forward_iterations_max", fwd_it_max);
    f.write("train/forward_failures", fwd_fail);
    f.write("train/forward_fallbacks", fwd_fallback);
    f.write("train/adjoint_failures", adj_fail);
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
    loss = f.read_vector("train/loss");
    accuracy = f.read_vector("train/accuracy");
    seconds = f.read_vector("train/seconds");
    sps = f.read_vector("train/samples_per_second");
    fwd_it_mean = f.read_vector("train/forward_iterations_mean");
    align_total = f.read_vector("train/grad_alignment_total");
    local_loss = f.read_vector("train/local_loss");
    test_acc = mat_rows("train/test_accuracy");
    align = mat_rows("train/grad_alignment");
    act_mean = mat_rows("train/activity_mean");
    act_var = mat_rows("train/activity_var");
    const auto h = mat_rows("train/iterations_histogram");
    hist.clear();
    for (const auto& r : h) hist.emplace_back(r.begin(), r.end());
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

// The config of a run, ignoring keys that may change between a run and its resumption.
std::string resumable_yaml(io::Config c) {
  c.train.epochs = 0;
  c.train.progress = false;
  return io::to_yaml(c);
}

std::string rng_state(const std::mt19937_64& rng) {
  std::ostringstream os;
  os << rng;
  return os.str();
}

template <class S>
class Trainer {
 public:
  Trainer(const io::Config& cfg, const TrainOptions& opt)
      : cfg_(cfg), opt_(opt), sgd_(cfg.learning), rng_(cfg.seed * 0x9E3779B97F4A7C15ULL + 1) {}

  TrainSummary run() {
    const bool show = cfg_.train.progress && !opt_.quiet;
    if (!opt_.quiet) std::fprintf(stderr, "%s", io::provenance_header(cfg_, opt_.command).c_str());
    train_ = io::load_fashion_mnist(cfg_.data.dir, true, cfg_.data.train_limit);
    test_ = io::load_fashion_mnist(cfg_.data.dir, false, cfg_.data.test_limit);
    net_ = models::initialise<S>(io::network_spec(cfg_), cfg_.seed);
    int start = 0;
    if (opt_.resume) start = resume();
    make_probe();
    const int epochs = cfg_.train.epochs;
    const auto t_all = std::chrono::steady_clock::now();
    Progress bar(show);
    for (int ep = start; ep < epochs; ++ep) {
      const auto t0 = std::chrono::steady_clock::now();
      train_epoch(ep, bar);
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      evaluate(ep, secs);
      write(ep + 1 == epochs ? "complete" : "running", ep + 1, ep + 1 == epochs);
      if (!opt_.quiet) {
        std::fprintf(stderr, "epoch %d/%d: loss %.4f, train acc %.2f %%, test acc", ep + 1, epochs,
                     hist_.loss.back(), 100 * hist_.accuracy.back());
        for (std::size_t k = 0; k < cfg_.data.eval_eps.size(); ++k)
          std::fprintf(stderr, " %.2f%% (eps %.2f)", 100 * hist_.test_acc.back()[k],
                       cfg_.data.eval_eps[k]);
        std::fprintf(stderr, ", %.1f s, alignment %.3f\n", secs, hist_.align_total.back());
      }
    }
    if (start >= epochs && !opt_.quiet)
      std::fprintf(stderr, "nothing to do: %s already holds %d epochs\n", opt_.out.c_str(), start);
    TrainSummary s;
    s.eval_eps = cfg_.data.eval_eps;
    s.test_accuracy = hist_.test_acc.empty() ? std::vector<double>{} : hist_.test_acc.back();
    s.epochs = int(hist_.epoch.size());
    s.seconds = std::accumulate(hist_.seconds.begin(), hist_.seconds.end(), 0.0);
    if (!s.test_accuracy.empty()) {
      std::size_t best = 0;
      for (std::size_t k = 0; k < s.eval_eps.size(); ++k)
        if (std::abs(s.eval_eps[k] - cfg_.data.train_eps) <
            std::abs(s.eval_eps[best] - cfg_.data.train_eps))
          best = k;
      s.final_accuracy = s.test_accuracy[best];
    }
    (void)t_all;
    return s;
  }

 private:
  int resume() {
    const io::H5File f = io::H5File::open_read(opt_.out);
    const std::string stored = f.attr_string("/", "config");
    const io::Config old = io::parse_config(stored, {}, opt_.out + " (stored config)");
    if (resumable_yaml(old) != resumable_yaml(cfg_))
      throw config_error("", "cannot resume " + opt_.out +
                                 ": its configuration differs from this one in more than "
                                 "train.epochs/train.progress (compare the 'config' attribute)");
    if (!f.exists("checkpoint/epoch"))
      throw data_error(opt_.out, 0, "no checkpoint to resume from (missing /checkpoint/epoch)");
    const int epoch = int(f.read_vector("checkpoint/epoch").at(0));
    load_network(f, net_);
    auto& vel = sgd_.velocity();
    vel.clear();
    for (const auto& l : net_.layers) {
      vel.push_back(l.w);
      vel.back().for_each([](const std::string&, Mat<S>& m) { m.setZero(); });
    }
    if (f.exists("optimizer")) {
      models::Network<S> tmp = net_;
      load_network(f, tmp, "optimizer");
      for (std::size_t l = 0; l < vel.size(); ++l) vel[l] = tmp.layers[l].w;
    }
    std::istringstream is(f.read_string("checkpoint/rng"));
    is >> rng_;
    if (!is) throw data_error(opt_.out, 0, "corrupt /checkpoint/rng");
    hist_.read(f);
    if (!opt_.quiet) std::fprintf(stderr, "resuming %s after epoch %d\n", opt_.out.c_str(), epoch);
    return epoch;
  }

  void make_probe() {
    std::vector<int> idx(std::min(cfg_.train.probe_batch, test_.size()));
    std::iota(idx.begin(), idx.end(), 0);
    gather(test_, idx, 0, idx.size(), probe_x_, probe_y_);
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
    std::vector<std::int64_t> hist(kHistBins, 0);
    const auto t0 = std::chrono::steady_clock::now();
    Mat<S> x, dlogits;
    std::vector<int> labels;
    learning::ForwardCache<S> cache;
    learning::Gradients<S> grads;
    const int nb = (N + B - 1) / B;
    for (int b = 0; b < nb; ++b) {
      const std::size_t from = std::size_t(b) * B, n = std::min<std::size_t>(B, N - from);
      gather(train_, perm, from, n, x, labels);
      io::apply_jitter<S>(x, cfg_.data.train_eps, rng_);
      double loss = 0;
      int hits = 0;
      if (cfg_.learning.rule == learning::Rule::bptt) {
        learning::backward_bptt(net_, x, labels, cfg_.learning, grads, &loss);
        learning::ForwardCache<S> c2;  // accuracy of the trajectory's end point
        learning::forward(net_, x, cfg_.fixed_point, c2);
        Mat<S> d;
        learning::cross_entropy(c2.logits(), labels, cfg_.learning.label_smoothing, d, &hits);
      } else {
        const auto fs = learning::forward(net_, x, cfg_.fixed_point, cache);
        fwd_fail += fs.failed_samples;
        fwd_fallback += fs.fallback_samples;
        loss = learning::cross_entropy(cache.logits(), labels, cfg_.learning.label_smoothing,
                                       dlogits, &hits);
        if (std::isfinite(loss)) {
          try {
            learning::backward(net_, cache, dlogits, cfg_.learning, grads);
          } catch (const numerical_error& e) {
            std::ostringstream os;
            os << e.what() << " [at epoch " << ep + 1 << ", batch " << b + 1 << "/" << nb;
            if (ep > 0 || b > 0)
              os << "; training had already started, so the weights may have diverged: try a "
                    "smaller learning rate (learning.lr_E = "
                 << cfg_.learning.lr_E << ")";
            os << ". The last complete epoch in " << opt_.out << " is intact.]";
            throw numerical_error("training", os.str());
          }
        }
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
        os << "loss is " << loss << " at epoch " << ep + 1 << ", batch " << b + 1 << "/" << nb
           << "; try a smaller learning rate (learning.lr_E = " << cfg_.learning.lr_E
           << ", learning.lr_I = " << cfg_.learning.lr_I << ") or gradient clipping "
           << "(train.max_grad_norm). The last complete epoch in " << opt_.out
           << " is intact (resume with --resume).";
        throw numerical_error("training", os.str());
      }
      if (cfg_.train.max_grad_norm > 0) clip(grads);
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
  }

  void clip(learning::Gradients<S>& g) const {
    double n2 = 0;
    for (auto& l : g.layers)
      l.for_each([&](const std::string&, Mat<S>& m) { n2 += double(m.squaredNorm()); });
    const double n = std::sqrt(n2);
    if (n > cfg_.train.max_grad_norm) {
      const S f = S(cfg_.train.max_grad_norm / n);
      for (auto& l : g.layers) l.for_each([&](const std::string&, Mat<S>& m) { m *= f; });
    }
  }

  void evaluate(int ep, double secs) {
    hist_.seconds.push_back(secs);
    std::vector<double> acc;
    std::vector<int> idx(test_.size());
    std::iota(idx.begin(), idx.end(), 0);
    Mat<S> x, d;
    std::vector<int> labels;
    learning::ForwardCache<S> cache;
    for (std::size_t k = 0; k < cfg_.data.eval_eps.size(); ++k) {
      std::mt19937_64 trng(cfg_.data.test_seed + 1000 * (k + 1));
      long correct = 0;
      for (std::size_t from = 0; from < idx.size(); from += kEvalBatch) {
        const std::size_t n = std::min<std::size_t>(kEvalBatch, idx.size() - from);
        gather(test_, idx, from, n, x, labels);
        io::apply_jitter<S>(x, cfg_.data.eval_eps[k], trng);
        learning::forward(net_, x, cfg_.fixed_point, cache);
        int hits = 0;
        learning::cross_entropy(cache.logits(), labels, 0.0, d, &hits);
        correct += hits;
      }
      acc.push_back(double(correct) / idx.size());
    }
    hist_.test_acc.push_back(acc);
    // Probe batch: activity moments and gradient alignment with the implicit gradient.
    learning::forward(net_, probe_x_, cfg_.fixed_point, cache);
    std::vector<double> am, av;
    for (std::size_t l = 0; l + 1 < cache.layers.size(); ++l) {
      const Mat<S>& v = cache.layers[l].z.v;
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

  void write(const char* status, int epoch, bool final) {
    io::write_atomically(opt_.out, [&](io::H5File& f) {
      io::write_provenance(f, cfg_, opt_.command);
      f.set_attr("/", "status", status);
      f.set_attr("/", "rule", learning::to_string(cfg_.learning.rule));
      f.set_attr("/", "error_transform", learning::to_string(cfg_.learning.error_transform));
      f.set_attr("/", "kind", models::to_string(cfg_.network.kind));
      hist_.write(f, cfg_.data.eval_eps);
      save_network(f, net_);
      // Optimiser state in the same layout as the weights.
      models::Network<S> vel = net_;
      const auto& v = sgd_.velocity();
      for (std::size_t l = 0; l < v.size() && l < vel.layers.size(); ++l) vel.layers[l].w = v[l];
      if (!v.empty()) save_network(f, vel, "optimizer");
      f.write("checkpoint/epoch", std::vector<std::int64_t>{epoch});
      f.write_string("checkpoint/rng", rng_state(rng_));
      if (final && !cfg_.simulate.images.empty()) {
        const auto netd = models::cast_network<double>(net_);
        write_simulation(f, cfg_, netd, test_, false);
      }
    });
  }

  io::Config cfg_;
  TrainOptions opt_;
  learning::Sgd<S> sgd_;
  std::mt19937_64 rng_;
  io::Dataset train_, test_;
  models::Network<S> net_;
  History hist_;
  Mat<S> probe_x_;
  std::vector<int> probe_y_;
};

}  // namespace

TrainSummary run_train(const io::Config& config, const TrainOptions& options) {
  if (config.precision == io::Precision::float64) return Trainer<double>(config, options).run();
  return Trainer<float>(config, options).run();
}

}  // namespace eisim::experiments
