// eisim evaluate: a trained run file evaluated on the test set and the validation split.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <optional>
#include <sstream>
#include <utility>

#include "eisim/experiments/commands.hpp"
#include "eisim/io/data.hpp"
#include "eisim/io/output.hpp"
#include "eisim/io/provenance.hpp"
#include "eisim/models/error.hpp"
#include "evaluation.hpp"

namespace eisim::experiments {

namespace {

/// The generator seed of transform `kind`'s k-th value on image set `set`: the jitter seed
/// (eval_seed) plus 100 (shift), 200 (contrast) or 300 (noise), apart from every jitter seed.
std::uint64_t transform_seed(std::uint64_t test_seed, std::size_t k, EvalSet set,
                             io::InputTransform kind) {
  return eval_seed(test_seed, k, set) + 100 * (1 + std::uint64_t(kind));
}

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
                       "eisim evaluate --set and --transforms may change only data.dir, "
                       "data.eval_eps, data.test_limit, data.test_seed, fixed_point.* and "
                       "evaluate.* (the network and its data split are the run's); this changes "
                       "(stored vs now):" +
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
      row.eps = row.value = cfg.data.eval_eps[k];
      row.result =
          evaluate_set(net, d, row.eps, eval_seed(cfg.data.test_seed, k, set), cfg.fixed_point);
      s.rows.push_back(row);
    }
    // The evaluate.* transformations, each alone (no jitter); seeds apart from the jitter's.
    const std::pair<io::InputTransform, const std::vector<double>*> lists[] = {
        {io::InputTransform::shift, &cfg.evaluate.shift},
        {io::InputTransform::contrast, &cfg.evaluate.contrast},
        {io::InputTransform::noise, &cfg.evaluate.noise}};
    for (const auto& [kind, values] : lists)
      for (std::size_t k = 0; k < values->size(); ++k) {
        EvaluationRow row;
        row.set = name;
        row.transform = io::to_string(kind);
        row.value = (*values)[k];
        const Transform t{kind, row.value};
        row.result = evaluate_set(net, d, 0.0, transform_seed(cfg.data.test_seed, k, set, kind),
                                  cfg.fixed_point, &t);
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
  // The datasets of every row, by the EvalResult field they hold.
  const std::pair<const char*, double EvalResult::*> reals[] = {
      {"accuracy", &EvalResult::accuracy},
      {"loss", &EvalResult::loss},
      {"forward_iterations_mean", &EvalResult::iterations_mean}};
  const std::pair<const char*, std::int64_t EvalResult::*> counts[] = {
      {"images", &EvalResult::images},
      {"forward_failures", &EvalResult::failed},
      {"forward_fallbacks", &EvalResult::fallbacks},
      {"forward_iterations_max", &EvalResult::iterations_max},
      {"stability_checked", &EvalResult::stability_checked},
      {"forward_unstable", &EvalResult::unstable},
      {"forward_oscillatory", &EvalResult::oscillatory},
      {"forward_marginal", &EvalResult::marginal},
      {"forward_reintegrated", &EvalResult::reintegrated},
      {"forward_continuations", &EvalResult::continuations},
      {"forward_factorisations", &EvalResult::factorisations},
      {"forward_krylov_vectors", &EvalResult::krylov_vectors}};
  for (const char* set : {"test", "validation"})
    for (const char* transform : {"jitter", "shift", "contrast", "noise"}) {
      std::vector<const EvaluationRow*> rows;
      for (const auto& r : s.rows)
        if (r.set == set && r.transform == transform) rows.push_back(&r);
      if (rows.empty()) continue;
      // The jitter rows at evaluate/<set>/ (as before the transforms existed), the others in
      // evaluate/<set>/<transform>/ with their values in `value`.
      const bool jitter = std::string(transform) == "jitter";
      const std::string g =
          std::string("evaluate/") + set + "/" + (jitter ? "" : std::string(transform) + "/");
      std::vector<double> values;
      for (const auto* r : rows) values.push_back(r->value);
      out.write(g + (jitter ? "eval_eps" : "value"), values);
      for (const auto& [name, field] : reals) {
        std::vector<double> v;
        for (const auto* r : rows) v.push_back(r->result.*field);
        out.write(g + name, v);
      }
      for (const auto& [name, field] : counts) {
        std::vector<std::int64_t> v;
        for (const auto* r : rows) v.push_back(r->result.*field);
        out.write(g + name, v);
      }
      const std::size_t L = rows[0]->result.silent_inhibition.size();
      Mat<double> silent(rows.size(), L);
      for (std::size_t i = 0; i < rows.size(); ++i)
        for (std::size_t l = 0; l < L; ++l) silent(i, l) = rows[i]->result.silent_inhibition.at(l);
      out.write(g + "silent_inhibition", silent);
    }
}

}  // namespace

const std::vector<std::string>& evaluate_may_change() {
  static const std::vector<std::string> keys{"data.dir",       "data.eval_eps", "data.test_limit",
                                             "data.test_seed", "fixed_point",   "evaluate"};
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
  std::vector<std::string> overrides;
  if (!o.transforms.empty()) overrides = io::overrides_from_file(o.transforms);
  overrides.insert(overrides.end(), o.overrides.begin(), o.overrides.end());
  const io::Config cfg = evaluation_config(f, overrides);
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
    std::string silent;
    for (double f : e.silent_inhibition)
      silent +=
          (silent.empty() ? "" : " ") + (std::isnan(f) ? std::string("-") : fixed(100 * f, 1));
    rows.push_back({r.set, r.transform, fixed(r.value, 2), fixed(100 * e.accuracy, 2),
                    fixed(e.loss, 4), std::to_string(e.images), std::to_string(e.failed),
                    std::to_string(e.fallbacks), fixed(e.iterations_mean, 2),
                    std::to_string(e.iterations_max), std::to_string(e.stability_checked),
                    std::to_string(e.unstable), std::to_string(e.oscillatory),
                    std::to_string(e.marginal), std::to_string(e.reintegrated),
                    silent.empty() ? "-" : silent});
  }
  return format_table({"set", "transform", "value", "acc %", "loss", "images", "failed",
                       "fallbacks", "it mean", "it max", "stab checked", "unstable", "oscillatory",
                       "marginal", "reintegrated", "silent I % per layer"},
                      rows);
}

}  // namespace eisim::experiments
