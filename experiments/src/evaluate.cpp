// eisim evaluate: a trained run file evaluated on the test set and the validation split.
#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <optional>
#include <sstream>

#include "eisim/experiments/commands.hpp"
#include "eisim/io/data.hpp"
#include "eisim/io/output.hpp"
#include "eisim/io/provenance.hpp"
#include "eisim/models/error.hpp"
#include "evaluation.hpp"

namespace eisim::experiments {

namespace {

/// Root attribute marking an evaluation file (the only kind of existing file evaluate replaces,
/// and only with --overwrite).
constexpr const char* kEvaluationKind = "evaluation";

bool is_evaluation(const std::string& path) {
  try {
    const io::H5File f = io::H5File::open_read(path);
    return f.attr_string("/", "file_kind") == kEvaluationKind;
  } catch (const error&) {
    return false;
  }
}

/// The configuration to evaluate with: the run's stored one, changed by --set only where that
/// does not change the network.
io::Config evaluation_config(const io::H5File& f, const std::vector<std::string>& overrides) {
  const std::string stored_text = f.attr_string("/", "config");
  const io::Config stored = io::parse_config(stored_text, {}, f.path() + " (stored config)");
  const io::Config cfg = io::parse_config(stored_text, overrides, "--set");
  const auto diff = io::config_differences(stored, cfg, evaluate_may_change());
  if (!diff.empty()) {
    std::string keys;
    for (const auto& d : diff) keys += "\n  " + d;
    throw config_error(diff.front().substr(0, diff.front().find(' ')),
                       "eisim evaluate --set may change only data.dir, data.eval_eps, "
                       "data.test_limit, data.test_seed and fixed_point.* (the network and its "
                       "data split are the run's); this --set changes (stored vs now):" +
                           keys);
  }
  return cfg;
}

template <class S>
EvaluateSummary evaluate_network(const io::H5File& f, const io::Config& cfg, bool test,
                                 bool validation) {
  models::Network<S> net = models::initialise<S>(io::network_spec(cfg), cfg.seed);
  load_network(f, net);
  EvaluateSummary s;
  auto run_set = [&](const io::Dataset& d, EvalSet set, const char* name) {
    for (std::size_t k = 0; k < cfg.data.eval_eps.size(); ++k) {
      EvaluationRow row;
      row.set = name;
      row.eps = cfg.data.eval_eps[k];
      row.result =
          evaluate_set(net, d, row.eps, eval_seed(cfg.data.test_seed, k, set), cfg.fixed_point);
      s.rows.push_back(row);
    }
  };
  if (test)
    run_set(io::load_fashion_mnist(cfg.data.dir, false, cfg.data.test_limit), EvalSet::test,
            "test");
  if (validation) {
    // Only the held-out images are kept: the split is the run's (data.validation, never --set).
    const io::TrainingData td =
        io::load_training_data(cfg.data.dir, cfg.data.train_limit, cfg.data.validation);
    run_set(td.validation, EvalSet::validation, "validation");
  }
  return s;
}

void write_evaluation(io::H5File& out, const io::Config& cfg, const EvaluateOptions& o,
                      const io::H5File& run, const EvaluateSummary& s) {
  io::write_provenance(out, cfg, o.command);
  out.set_attr("/", "file_kind", kEvaluationKind);
  out.set_attr("/", "source_run", run.path());
  out.set_attr("/", "source_status", s.status);
  out.set_attr("/", "source_epoch", s.epoch);
  for (const char* a : {"git_commit", "created", "hostname", "cpu_model", "isa", "compiler"}) {
    try {
      out.set_attr("/", std::string("source_") + a, run.attr_string("/", a));
    } catch (const error&) {
      // an attribute an older eisim did not write
    }
  }
  out.write("source_checksum",
            std::vector<std::int64_t>{std::int64_t(run.read_vector("checkpoint/checksum").at(0))});
  for (const char* set : {"test", "validation"}) {
    std::vector<double> eps, acc, loss, it_mean;
    std::vector<std::int64_t> images, failed, fallbacks, it_max, checked, unstable, osc, reint;
    for (const auto& r : s.rows) {
      if (r.set != set) continue;
      const EvalResult& e = r.result;
      eps.push_back(r.eps);
      acc.push_back(e.accuracy);
      loss.push_back(e.loss);
      images.push_back(e.images);
      failed.push_back(e.failed);
      fallbacks.push_back(e.fallbacks);
      it_mean.push_back(e.iterations_mean);
      it_max.push_back(e.iterations_max);
      checked.push_back(e.stability_checked);
      unstable.push_back(e.unstable);
      osc.push_back(e.oscillatory);
      reint.push_back(e.reintegrated);
    }
    if (eps.empty()) continue;
    const std::string g = std::string("evaluate/") + set + "/";
    out.write(g + "eval_eps", eps);
    out.write(g + "accuracy", acc);
    out.write(g + "loss", loss);
    out.write(g + "images", images);
    out.write(g + "forward_failures", failed);
    out.write(g + "forward_fallbacks", fallbacks);
    out.write(g + "forward_iterations_mean", it_mean);
    out.write(g + "forward_iterations_max", it_max);
    out.write(g + "stability_checked", checked);
    out.write(g + "forward_unstable", unstable);
    out.write(g + "forward_oscillatory", osc);
    out.write(g + "forward_reintegrated", reint);
  }
}

}  // namespace

const std::vector<std::string>& evaluate_may_change() {
  static const std::vector<std::string> keys{"data.dir", "data.eval_eps", "data.test_limit",
                                             "data.test_seed", "fixed_point"};
  return keys;
}

EvaluateSummary run_evaluate(const EvaluateOptions& options) {
  EvaluateOptions o = options;
  if (o.split != "test" && o.split != "validation" && o.split != "all")
    throw config_error("--split", "'" + o.split + "' is not one of test, validation, all");
  // Everything about the output that can be known before the work starts is checked first.
  std::optional<io::OutputLock> lock;
  if (!o.out.empty()) {
    o.out = io::resolve_output(o.out);
    if (io::same_file(o.out, o.run))
      throw config_error("--out", "the output " + o.out + " is the run file " + o.run +
                                      " itself; eisim evaluate never writes into a run file "
                                      "(choose another --out)");
    io::check_output_path(o.out, o.overwrite, "--out");
    lock.emplace(o.out, "--out " + o.out);
    io::check_output_path(o.out, o.overwrite, "--out");  // under the lock
    if (o.overwrite && std::filesystem::exists(o.out) && !is_evaluation(o.out))
      throw config_error("--out", o.out +
                                      " exists and is not an evaluation written by eisim "
                                      "evaluate; --overwrite replaces only those (choose "
                                      "another --out)");
  }
  const io::H5File f = io::H5File::open_read(o.run, /*require_checksum=*/true);
  verify_run_file(f);  // checksums, shapes, finite weights, as --resume
  const io::Config cfg = evaluation_config(f, o.overrides);
  const bool has_validation = cfg.data.validation > 0;
  if (o.split == "validation" && !has_validation)
    throw config_error("--split", o.run +
                                      " was trained without a validation split "
                                      "(data.validation = 0): every training image was trained "
                                      "on; use --split test");
  const bool test = o.split != "validation";
  const bool validation = o.split == "validation" || (o.split == "all" && has_validation);
  const std::string status = f.attr_string("/", "status");
  const std::int64_t epoch = std::int64_t(f.read_vector("checkpoint/epoch").at(0));
  if (status != "complete")
    std::fprintf(stderr,
                 "note: %s has status %s; evaluating its weights after epoch %lld (the last "
                 "complete one)\n",
                 o.run.c_str(), status.c_str(), static_cast<long long>(epoch));
  EvaluateSummary s = cfg.precision == io::Precision::float64
                          ? evaluate_network<double>(f, cfg, test, validation)
                          : evaluate_network<float>(f, cfg, test, validation);
  s.epoch = epoch;
  s.status = status;
  if (!o.out.empty())
    io::write_atomically(o.out, [&](io::H5File& out) { write_evaluation(out, cfg, o, f, s); });
  return s;
}

std::string evaluation_table(const EvaluateSummary& s) {
  auto fixed = [](double x, int prec) {
    std::ostringstream os;
    os << std::fixed << std::setprecision(prec) << x;
    return os.str();
  };
  std::vector<std::vector<std::string>> rows;
  for (const auto& r : s.rows) {
    const EvalResult& e = r.result;
    rows.push_back({r.set, fixed(r.eps, 2), fixed(100 * e.accuracy, 2), fixed(e.loss, 4),
                    std::to_string(e.images), std::to_string(e.failed), std::to_string(e.fallbacks),
                    fixed(e.iterations_mean, 2), std::to_string(e.iterations_max),
                    std::to_string(e.stability_checked), std::to_string(e.unstable),
                    std::to_string(e.oscillatory), std::to_string(e.reintegrated)});
  }
  return format_table({"set", "eps", "acc %", "loss", "images", "failed", "fallbacks", "it mean",
                       "it max", "stab checked", "unstable", "oscillatory", "reintegrated"},
                      rows);
}

}  // namespace eisim::experiments
