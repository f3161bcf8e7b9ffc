// eisim sweep: a grid of conditions x eps x seeds, one HDF5 file per point, and a merge step.
//
// Reuse policy (docs/reliability.md): the file of a grid point is reused (skipped when complete,
// resumed when partial) only if its stored resolved configuration equals the point's, apart from
// the keys that may change between a run and its resumption (kMayDiffer). Anything else found
// at a point's path (another configuration, a file that is not a readable run) is refused before
// any training starts, unless --rerun asks to retrain those points from scratch. One process at
// a time runs a point: it holds an OFD lock on <point>.h5.lock while it does.
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "eisim/experiments/commands.hpp"
#include "eisim/io/output.hpp"
#include "eisim/io/provenance.hpp"
#include "eisim/models/error.hpp"

namespace eisim::experiments {

namespace {

namespace fs = std::filesystem;

/// Keys of a point's configuration that may differ from those stored in its file: the number of
/// epochs (a file with fewer is resumed), the progress bar, the after-training simulation, and
/// the grid itself (sweep.*: adding a seed to the grid does not change the existing points; a
/// point's own seed and eps are the top-level `seed` and `data.train_eps`, which are compared).
const std::vector<std::string> kMayDiffer{"train.epochs", "train.progress", "simulate", "sweep",
                                          "evaluate"};

/// Root attribute marking a merged summary (the only kind of existing file --merge replaces).
constexpr const char* kSummaryKind = "sweep_summary";
/// First line of the CSV written beside the summary (the only kind of CSV --merge replaces).
constexpr const char* kCsvHeader = "run,condition,eps,seed,epochs,final_accuracy";

struct GridPoint {
  std::string name;
  std::string condition;
  double eps;
  std::uint64_t seed;
  std::vector<std::string> overrides;
};

/// The shortest "%g" text (at least the 6 digits of a default ostream, as file names always had)
/// that reads back as exactly `x`: 0.3 and 0.30000001 get different names and the override
/// data.train_eps=<text> trains at exactly the grid's value.
std::string number_text(double x) {
  char buf[64];
  for (int prec = 6; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*g", prec, x);
    if (std::strtod(buf, nullptr) == x) break;
  }
  return buf;
}

std::string list_text(const std::vector<double>& v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + number_text(v[i]);
  return s + "]";
}

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string s;
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}

/// A filesystem failure as a user-facing error naming the path.
[[noreturn]] void fs_fail(const std::string& what, const std::string& path, std::error_code ec) {
  throw error(what + " " + path + ": " + ec.message());
}

std::vector<GridPoint> grid(const io::Config& base) {
  const auto& sw = base.sweep;
  // Two equal values would give two grid points with one file, merged as two runs.
  for (std::size_t i = 0; i < sw.seeds.size(); ++i)
    for (std::size_t j = i + 1; j < sw.seeds.size(); ++j)
      if (sw.seeds[i] == sw.seeds[j])
        throw config_error("sweep.seeds", "seed " + std::to_string(sw.seeds[i]) +
                                              " is listed twice; each grid point needs its own "
                                              "seed (a repeated seed would repeat the same run)");
  for (std::size_t i = 0; i < sw.eps.size(); ++i)
    for (std::size_t j = i + 1; j < sw.eps.size(); ++j)
      if (sw.eps[i] == sw.eps[j])
        throw config_error("sweep.eps", "eps " + number_text(sw.eps[i]) + " is listed twice (" +
                                            list_text(sw.eps) +
                                            "); each grid point needs its own eps");
  std::vector<GridPoint> out;
  std::vector<io::SweepCondition> conds = sw.conditions;
  if (conds.empty()) conds.push_back({"base", {}});
  std::map<std::string, std::string> names;  // file name -> the point's description
  for (const auto& c : conds)
    for (double eps : sw.eps)
      for (auto seed : sw.seeds) {
        GridPoint p{c.name + "_eps" + number_text(eps) + "_seed" + std::to_string(seed),
                    c.name,
                    eps,
                    seed,
                    {}};
        const std::string what =
            "condition " + c.name + ", eps " + number_text(eps) + ", seed " + std::to_string(seed);
        const auto [it, fresh] = names.emplace(p.name, what);
        if (!fresh)
          throw config_error("sweep", "grid points (" + it->second + ") and (" + what +
                                          ") would share the file " + p.name + ".h5");
        for (const auto& [k, v] : c.set) p.overrides.push_back(k + "=" + v);
        p.overrides.push_back("data.train_eps=" + number_text(eps));
        p.overrides.push_back("seed=" + std::to_string(seed));
        out.push_back(std::move(p));
      }
  return out;
}

std::string run_path(const io::Config& base, const GridPoint& p) {
  return (fs::path(base.sweep.out_dir) / (p.name + ".h5")).string();
}

io::Config point_config(const SweepOptions& o, const GridPoint& p) {
  // A grid point is one training run: its own condition applies, the others do not (they are
  // validated against the base configuration when the sweep file is loaded).
  std::vector<std::string> ov{"sweep.conditions=[]"};
  ov.insert(ov.end(), p.overrides.begin(), p.overrides.end());
  ov.insert(ov.end(), o.overrides.begin(), o.overrides.end());
  try {
    return io::load_config(o.config_path, ov);
  } catch (const config_error& e) {
    throw config_error(e.key_path(), std::string("grid point ") + p.name + ": " + e.what());
  }
}

// ---- The state of a point's file -------------------------------------------------------------

enum class State {
  missing,   ///< no file: train
  complete,  ///< as many epochs as configured (or more): skip, merge
  partial,   ///< fewer epochs, with a checkpoint: resume
  stale,     ///< made with another configuration: refused unless --rerun
  unusable,  ///< not a readable run file of eisim train: refused unless --rerun
  failed,    ///< marked failed by eisim train: not retried unless --rerun, not merged
  busy,      ///< another process runs it now
};

struct PointFile {
  State state = State::missing;
  std::string why;  ///< stale: the differing keys; unusable, failed, busy: the reason
  int epochs = 0;   ///< epochs in the file's history
  std::optional<io::Config> stored;
};

/// The state of the open run file `f` for the point configuration `cfg`.
PointFile inspect_open(const io::H5File& f, const io::Config& cfg) {
  PointFile r;
  std::string text;
  try {
    text = f.attr_string("/", "config");
  } catch (const error&) {
    r.state = State::unusable;
    r.why = "it has no stored configuration (not a run file of eisim train)";
    return r;
  }
  try {
    r.stored = io::parse_config(text, {}, f.path() + " (stored config)");
  } catch (const error& e) {
    r.state = State::unusable;
    r.why = std::string("its stored configuration cannot be read: ") + e.what();
    return r;
  }
  const auto diff = io::config_differences(*r.stored, cfg, kMayDiffer);
  if (!diff.empty()) {
    r.state = State::stale;
    r.why = "its stored configuration differs (stored vs this sweep): " + join(diff, ", ");
    return r;
  }
  std::string status;
  try {
    status = f.attr_string("/", "status");
    r.epochs = f.exists("train/epoch") ? int(f.read_vector("train/epoch").size()) : 0;
  } catch (const error& e) {
    r.state = State::unusable;
    r.why = e.what();
    return r;
  }
  if (status == "failed") {
    r.state = State::failed;
    try {
      r.why = f.attr_string("/", "failure");
    } catch (const error&) {
      r.why = "status = failed";
    }
  } else if (r.epochs > cfg.train.epochs) {
    // Its weights, traces and history are those of a longer run: merging it under this
    // train.epochs would mix epochs in one summary.
    r.state = State::stale;
    r.why = "it holds " + std::to_string(r.epochs) +
            " epochs, more than train.epochs = " + std::to_string(cfg.train.epochs) +
            " (set train.epochs = " + std::to_string(r.epochs) + ")";
  } else if (r.epochs == cfg.train.epochs && status == "complete") {
    r.state = State::complete;
  } else if (f.exists("checkpoint/epoch")) {
    // Fewer epochs, or a run stopped with status running at the configured epochs (its resume
    // judges it and marks it complete or failed).
    r.state = State::partial;
  } else {
    r.state = State::unusable;
    r.why = "it holds " + std::to_string(r.epochs) + " of " + std::to_string(cfg.train.epochs) +
            " epochs and no checkpoint to resume from";
  }
  return r;
}

/// The state of the file at `path` for the configuration `cfg`; with `probe_lock`, a point
/// another process runs now is `busy` whatever its file says.
PointFile inspect(const std::string& path, const io::Config& cfg, bool probe_lock) {
  PointFile r;
  std::string holder;
  if (probe_lock && io::output_locked(path, &holder)) {
    r.state = State::busy;
    r.why = "being run by another process (lock " + io::lock_path(path) + holder + ")";
    return r;
  }
  std::error_code ec;
  const auto st = fs::status(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) fs_fail("cannot inspect", path, ec);
  if (!fs::exists(st)) return r;
  if (!fs::is_regular_file(st)) {
    r.state = State::unusable;
    r.why = "it exists and is not a regular file";
    return r;
  }
  try {
    const io::H5File f = io::H5File::open_read(path, /*require_checksum=*/true);
    r = inspect_open(f, cfg);
  } catch (const error& e) {
    r.state = State::unusable;
    r.why = std::string("it is not a readable HDF5 run file (") + e.what() + ")";
    return r;
  }
  // What a merge reads (history, accuracies, times) and a resume restores is covered by the
  // checkpoint's checksum: verify it before the file is reused.
  if (r.state == State::complete || r.state == State::partial) {
    try {
      verify_run_file(path);
    } catch (const error& e) {
      r.state = State::unusable;
      r.why = std::string("it does not verify: ") + e.what();
    }
  }
  return r;
}

/// Refuse, before anything is trained, the points whose file may not be reused (stale or
/// unusable) unless --rerun.
void refuse_unusable(const std::vector<GridPoint>& pts, const std::vector<std::string>& paths,
                     const std::vector<PointFile>& files, bool rerun) {
  if (rerun) return;
  std::vector<std::string> bad;
  for (std::size_t i = 0; i < pts.size(); ++i)
    if (files[i].state == State::stale || files[i].state == State::unusable)
      bad.push_back("grid point " + pts[i].name + " (" + paths[i] + "): " + files[i].why);
  if (bad.empty()) return;
  throw config_error("", "the files of " + std::to_string(bad.size()) +
                             " grid point(s) cannot be reused:\n  " + join(bad, "\n  ") +
                             "\nnothing was trained. Restore the configuration that made them, "
                             "use another sweep.out_dir, or pass --rerun to train these points "
                             "again from scratch (their files are replaced)");
}

// ---- Running a point ---------------------------------------------------------------------------

/// Runs one grid point under its lock. Throws io::output_busy if another process runs it.
void run_point(const SweepOptions& o, const io::Config& base, const GridPoint& p,
               const io::Config& cfg, std::size_t index) {
  const std::string out = run_path(base, p);
  const io::OutputLock lock(out, "grid point " + p.name);
  // The state under the lock: the file may have changed since the sweep looked at it.
  const PointFile pf = inspect(out, cfg, /*probe_lock=*/false);
  TrainOptions t;
  t.out = out;
  io::Config run_cfg = cfg;
  switch (pf.state) {
    case State::complete:
      std::fprintf(stderr, "%s: complete, skipped\n", p.name.c_str());
      return;
    case State::partial:
      t.resume = true;
      // The grid-level keys are not compared (kMayDiffer): keep the stored ones so that the
      // resume, which compares everything else, accepts the file.
      run_cfg.sweep = pf.stored->sweep;
      break;
    case State::missing:
      break;
    case State::stale:
    case State::unusable:
    case State::failed:
      if (!o.rerun)
        throw config_error("", "grid point " + p.name + " (" + out + "): " +
                                   (pf.state == State::failed ? "failed in an earlier run: " : "") +
                                   pf.why + "; pass --rerun to train it again from scratch");
      std::fprintf(stderr, "%s: %s%s; training again from scratch (--rerun)\n", p.name.c_str(),
                   pf.state == State::failed ? "failed in an earlier run: " : "", pf.why.c_str());
      t.overwrite = true;
      break;
    case State::busy:
      break;  // not reached: the lock is ours
  }
  t.command = "eisim sweep --config " + o.config_path + " --task-id " + std::to_string(index) +
              " (" + p.name + ")";
  std::fprintf(stderr, "== %s -> %s%s\n", p.name.c_str(), out.c_str(),
               t.resume ? " (resuming)" : "");
  t.lock_held = true;  // run_train would otherwise take the lock held above
  const auto s = run_train(run_cfg, t);
  std::fprintf(stderr, "== %s: final test accuracy %.2f %% (%d epochs, %.0f s)\n", p.name.c_str(),
               100 * s.final_accuracy, s.epochs, s.seconds);
}

// ---- Merging --------------------------------------------------------------------------------

struct MergeTarget {
  std::string h5, csv;
};

/// True if `path` is a summary written by `eisim sweep --merge` (marked by file_kind, or by an
/// eisim from before the mark: a /summary group, no /train and the merge command).
bool is_summary(const std::string& path) {
  try {
    const io::H5File f = io::H5File::open_read(path);
    try {
      if (f.attr_string("/", "file_kind") == kSummaryKind) return true;
    } catch (const error&) {
    }
    return f.exists("summary/run") && !f.exists("train") &&
           f.attr_string("/", "command").rfind("eisim sweep --merge", 0) == 0;
  } catch (const error&) {
    return false;
  }
}

bool is_our_csv(const std::string& path) {
  std::ifstream is(path);
  std::string line;
  return is && std::getline(is, line) && line.rfind(kCsvHeader, 0) == 0;
}

bool regular_file_exists(const std::string& path) {
  std::error_code ec;
  const auto st = fs::status(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) fs_fail("cannot inspect", path, ec);
  return fs::is_regular_file(st);
}

/// Where the summary goes, checked before anything is trained: it ends in .h5, it is not a run
/// file of the grid, and an existing file there (and at the CSV beside it) is replaced only if
/// it is a summary (CSV) written by an earlier merge: summaries are derived data.
MergeTarget merge_target(const SweepOptions& o, const io::Config& base,
                         const std::vector<std::string>& runs) {
  MergeTarget t;
  t.h5 = o.merged_path.empty() ? (fs::path(base.sweep.out_dir) / "summary.h5").string()
                               : o.merged_path;
  if (fs::path(t.h5).extension() != ".h5")
    throw config_error("--merged", "the merged summary " + t.h5 +
                                       " must end in .h5 (its CSV is written beside it, with "
                                       "the extension .csv)");
  t.csv = fs::path(t.h5).replace_extension(".csv").string();
  const auto normal = [](const std::string& p) {
    std::error_code ec;
    const auto a = fs::absolute(p, ec);
    return (ec ? fs::path(p) : a).lexically_normal();
  };
  for (const auto& r : runs)
    if (normal(r) == normal(t.h5) || io::same_file(r, t.h5))
      throw config_error("--merged", t.h5 +
                                         " is the run file of a grid point of this sweep; a "
                                         "merge never replaces a run (choose another path)");
  // Non-regular files and unusable directories first, with the common messages.
  io::check_output_path(t.h5, true, "--merged", /*create_dirs=*/true);
  io::check_output_path(t.csv, true, "--merged (its CSV)", /*create_dirs=*/true);
  if (regular_file_exists(t.h5) && !is_summary(t.h5))
    throw config_error("--merged",
                       t.h5 +
                           " exists and is not a summary written by eisim sweep --merge; "
                           "it is not replaced (choose another path, or remove it)");
  if (regular_file_exists(t.csv) && !is_our_csv(t.csv))
    throw config_error("--merged", t.csv +
                                       " (the CSV beside the summary) exists and was not written "
                                       "by eisim sweep --merge; it is not replaced (choose "
                                       "another --merged path, or remove it)");
  return t;
}

/// The points must share one eval_eps grid to be merged (columns of one table).
void check_same_eval_eps(const std::vector<GridPoint>& pts, const std::vector<io::Config>& cfgs) {
  for (std::size_t i = 1; i < pts.size(); ++i)
    if (cfgs[i].data.eval_eps != cfgs[0].data.eval_eps)
      throw config_error("data.eval_eps",
                         "grid points " + pts[0].name + " (eval_eps " +
                             list_text(cfgs[0].data.eval_eps) + ") and " + pts[i].name +
                             " (eval_eps " + list_text(cfgs[i].data.eval_eps) +
                             ") are evaluated at different data.eval_eps and cannot be merged "
                             "into one table; set data.eval_eps once, outside the conditions");
}

bool same_eps(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t k = 0; k < a.size(); ++k)
    if (!(std::abs(a[k] - b[k]) <= 1e-12 * std::max(1.0, std::abs(b[k])))) return false;
  return true;
}

int merge(const SweepOptions& o, const io::Config& base, const std::vector<GridPoint>& pts,
          const std::vector<io::Config>& cfgs, const MergeTarget& target) {
  std::vector<std::string> run, cond, paths;
  std::vector<double> eps, final_acc, secs;
  std::vector<std::int64_t> seeds, epochs;
  std::vector<std::vector<double>> per_eps;
  // Validation accuracy after the last epoch (NaN for a run without data.validation).
  std::vector<double> val_final;
  std::vector<std::vector<double>> val_per_eps;
  bool any_validation = false;
  std::vector<double> eval_eps;
  std::string eval_eps_run;
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> refused, failed, busy;
  int missing = 0;
  for (std::size_t i = 0; i < pts.size(); ++i) {
    const GridPoint& p = pts[i];
    const io::Config& cfg = cfgs[i];
    const std::string path = run_path(base, p);
    PointFile pf = inspect(path, cfg, /*probe_lock=*/true);
    if (pf.state != State::complete) {
      if (pf.state == State::stale || pf.state == State::unusable)
        refused.push_back("grid point " + p.name + " (" + path + "): " + pf.why);
      else if (pf.state == State::failed)
        failed.push_back(p.name);
      else if (pf.state == State::busy)
        busy.push_back(p.name);
      else
        ++missing;
      continue;
    }
    // Read from the file whose state was just checked (inspect again on the open file).
    const io::H5File f = io::H5File::open_read(path, /*require_checksum=*/true);
    pf = inspect_open(f, cfg);
    if (pf.state != State::complete) {
      ++missing;
      continue;
    }
    // The configured epoch (a longer run holds it in its history: there is no schedule that
    // depends on the number of epochs, and resume is bit-identical).
    const int E = cfg.train.epochs;
    const auto ev = f.read_vector("train/eval_eps");
    const Mat<double> acc = f.read_matrix("train/test_accuracy");
    const auto s = f.read_vector("train/seconds");
    if (!same_eps(ev, cfg.data.eval_eps))
      throw data_error(path, 0,
                       "/train/eval_eps = " + list_text(ev) +
                           " differs from its stored configuration's data.eval_eps = " +
                           list_text(cfg.data.eval_eps));
    if (acc.cols() != Eigen::Index(ev.size()) || acc.rows() < E || Eigen::Index(s.size()) < E)
      throw data_error(path, 0,
                       "/train/test_accuracy has shape (" + std::to_string(acc.rows()) + ", " +
                           std::to_string(acc.cols()) + ") and /train/seconds " +
                           std::to_string(s.size()) + " entries; expected at least " +
                           std::to_string(E) + " epochs of " + std::to_string(ev.size()) +
                           " eval eps");
    if (eval_eps_run.empty()) {
      eval_eps = ev;
      eval_eps_run = p.name;
    } else if (!same_eps(ev, eval_eps)) {
      throw config_error("data.eval_eps", "runs " + eval_eps_run + " (eval_eps " +
                                              list_text(eval_eps) + ") and " + p.name +
                                              " (eval_eps " + list_text(ev) +
                                              ") were evaluated at different data.eval_eps and "
                                              "cannot be merged into one table");
    }
    std::size_t best = 0;
    for (std::size_t k = 0; k < eval_eps.size(); ++k)
      if (std::abs(eval_eps[k] - p.eps) < std::abs(eval_eps[best] - p.eps)) best = k;
    run.push_back(p.name);
    paths.push_back(path);
    cond.push_back(p.condition);
    eps.push_back(p.eps);
    seeds.push_back(std::int64_t(p.seed));
    epochs.push_back(E);
    final_acc.push_back(acc(E - 1, Eigen::Index(best)));
    std::vector<double> row(eval_eps.size());
    for (std::size_t k = 0; k < row.size(); ++k) row[k] = acc(E - 1, Eigen::Index(k));
    per_eps.push_back(row);
    std::vector<double> vrow(eval_eps.size(), std::numeric_limits<double>::quiet_NaN());
    if (f.exists("train/validation_accuracy")) {
      const Mat<double> va = f.read_matrix("train/validation_accuracy");
      if (va.cols() != Eigen::Index(ev.size()) || va.rows() < E)
        throw data_error(path, 0,
                         "/train/validation_accuracy has shape (" + std::to_string(va.rows()) +
                             ", " + std::to_string(va.cols()) + "); expected at least " +
                             std::to_string(E) + " epochs of " + std::to_string(ev.size()) +
                             " eval eps");
      for (std::size_t k = 0; k < vrow.size(); ++k) vrow[k] = va(E - 1, Eigen::Index(k));
      any_validation = true;
    }
    val_final.push_back(vrow[best]);
    val_per_eps.push_back(vrow);
    double total = 0;
    for (int e = 0; e < E; ++e) total += s[std::size_t(e)];
    secs.push_back(total);
    std::vector<std::string> r{p.condition, number_text(p.eps), std::to_string(p.seed)};
    std::ostringstream a;
    a << std::fixed << std::setprecision(2) << 100 * final_acc.back();
    r.push_back(a.str());
    std::ostringstream va;
    if (std::isnan(val_final.back()))
      va << "-";
    else
      va << std::fixed << std::setprecision(2) << 100 * val_final.back();
    r.push_back(va.str());
    for (double x : row) {
      std::ostringstream b;
      b << std::fixed << std::setprecision(2) << 100 * x;
      r.push_back(b.str());
    }
    std::ostringstream t;
    t << std::fixed << std::setprecision(0) << total;
    r.push_back(t.str());
    rows.push_back(r);
  }
  if (!refused.empty())
    throw config_error("", "merge refused: the files of " + std::to_string(refused.size()) +
                               " grid point(s) do not belong to this sweep's configuration:\n  " +
                               join(refused, "\n  ") +
                               "\nnothing was written. Run the sweep with --local --rerun to "
                               "train them again, or merge with the configuration that made them");
  for (const auto& name : failed)
    std::fprintf(stderr, "merge: %s failed (status = failed in its file), not merged\n",
                 name.c_str());
  for (const auto& name : busy)
    std::fprintf(stderr, "merge: %s is being run by another process, not merged\n", name.c_str());
  if (run.empty()) {
    std::fprintf(stderr, "merge: no complete runs in %s\n", base.sweep.out_dir.c_str());
    return 1;
  }
  // One merge at a time writes a summary, and the pair (summary, CSV) is never mixed: the old
  // CSV is removed first, so an interruption leaves a missing CSV, never one of another merge.
  const io::OutputLock lock(target.h5, "--merged " + target.h5);
  {
    std::error_code ec;
    fs::remove(target.csv, ec);
    if (ec) fs_fail("cannot replace", target.csv, ec);
  }
  io::write_atomically(target.h5, [&](io::H5File& f) {
    f.write("summary/run", run);
    f.write("summary/condition", cond);
    f.write("summary/eps", eps);
    f.write("summary/seed", seeds);
    f.write("summary/final_accuracy", final_acc);
    f.write("summary/eval_eps", eval_eps);
    Mat<double> pe(per_eps.size(), eval_eps.size());
    for (std::size_t i = 0; i < per_eps.size(); ++i)
      for (std::size_t k = 0; k < eval_eps.size(); ++k) pe(i, k) = per_eps[i][k];
    f.write("summary/accuracy_per_eps", pe);
    f.write("summary/seconds", secs);
    f.write("summary/epochs", epochs);
    if (any_validation) {
      f.write("summary/validation_accuracy", val_final);
      Mat<double> ve(val_per_eps.size(), eval_eps.size());
      for (std::size_t i = 0; i < val_per_eps.size(); ++i)
        for (std::size_t k = 0; k < eval_eps.size(); ++k) ve(i, k) = val_per_eps[i][k];
      f.write("summary/validation_accuracy_per_eps", ve);
    }
    io::write_provenance(f, base, "eisim sweep --merge --config " + o.config_path);
    f.set_attr("/", "file_kind", kSummaryKind);
    for (std::size_t i = 0; i < run.size(); ++i) {
      const std::string& name = run[i];
      const io::H5File src = io::H5File::open_read(paths[i], /*require_checksum=*/true);
      f.copy_from(src, "train", "runs/" + name + "/train");
      if (src.exists("simulate")) f.copy_from(src, "simulate", "runs/" + name + "/simulate");
      for (const char* a :
           {"rule", "error_transform", "kind", "status", "git_commit", "eisim_version",
            "build_type", "config", "precision", "command", "created", "hostname", "cpu_model",
            "isa", "eigen_simd", "compiler", "eigen_version", "compile_flags"}) {
        std::string v;
        try {
          v = src.attr_string("/", a);
        } catch (const error&) {
          continue;  // an attribute an older eisim did not write
        }
        f.set_attr("runs/" + name, a, v);
      }
      f.set_attr("runs/" + name, "seed", src.attr_int("/", "seed"));
      try {
        f.set_attr("runs/" + name, "native", src.attr_int("/", "native"));
      } catch (const error&) {
        // written by an eisim from before the attribute
      }
    }
  });
  // The CSV beside the summary, written atomically like every output.
  {
    std::ostringstream os;
    os << kCsvHeader;
    for (double e : eval_eps) os << ",accuracy_eps" << number_text(e);
    os << ",seconds";
    if (any_validation) os << ",validation_accuracy";
    os << "\n";
    for (std::size_t i = 0; i < run.size(); ++i) {
      os << run[i] << "," << cond[i] << "," << number_text(eps[i]) << "," << seeds[i] << ","
         << epochs[i] << "," << number_text(final_acc[i]);
      for (double x : per_eps[i]) os << "," << number_text(x);
      os << "," << number_text(secs[i]);
      if (any_validation) os << "," << number_text(val_final[i]);
      os << "\n";
    }
    io::write_text_atomically(target.csv, os.str());
  }
  std::vector<std::string> header{"condition", "eps", "seed", "final acc %", "val acc %"};
  for (double e : eval_eps) header.push_back("acc@" + number_text(e));
  header.push_back("seconds");
  std::printf("Per run (test accuracy %% after the last epoch):\n%s\n",
              format_table(header, rows).c_str());
  // Per condition and eps: mean and standard deviation over seeds.
  std::vector<std::vector<std::string>> agg;
  std::vector<std::pair<std::string, double>> keys;
  for (std::size_t i = 0; i < run.size(); ++i)
    if (std::find(keys.begin(), keys.end(), std::pair{cond[i], eps[i]}) == keys.end())
      keys.emplace_back(cond[i], eps[i]);
  auto fmt = [](double x, int prec) {
    std::ostringstream os;
    os << std::fixed << std::setprecision(prec) << x;
    return os.str();
  };
  for (const auto& [c, e] : keys) {
    std::vector<std::size_t> m;
    for (std::size_t i = 0; i < run.size(); ++i)
      if (cond[i] == c && eps[i] == e) m.push_back(i);
    auto mean_sd = [&](auto get) {
      double s1 = 0, s2 = 0;
      for (auto i : m) s1 += get(i);
      const double mu = s1 / m.size();
      for (auto i : m) s2 += (get(i) - mu) * (get(i) - mu);
      return std::pair{mu, m.size() > 1 ? std::sqrt(s2 / (m.size() - 1)) : 0.0};
    };
    const auto [mu, sd] = mean_sd([&](std::size_t i) { return 100 * final_acc[i]; });
    std::vector<std::string> r{c, number_text(e), std::to_string(m.size()),
                               fmt(mu, 2) + " +- " + fmt(sd, 2)};
    {
      const auto [vmu, vsd] = mean_sd([&](std::size_t i) { return 100 * val_final[i]; });
      r.push_back(std::isnan(vmu) ? "-" : fmt(vmu, 2) + " +- " + fmt(vsd, 2));
    }
    for (std::size_t k = 0; k < eval_eps.size(); ++k)
      r.push_back(fmt(mean_sd([&](std::size_t i) { return 100 * per_eps[i][k]; }).first, 2));
    r.push_back(fmt(mean_sd([&](std::size_t i) { return secs[i]; }).first, 0));
    agg.push_back(r);
  }
  std::vector<std::string> h2{"rule/condition", "eps", "seeds", "final acc % (mean +- sd)",
                              "val acc % (mean +- sd)"};
  for (double e : eval_eps) h2.push_back("acc@" + number_text(e));
  h2.push_back("seconds/run");
  std::printf("Comparison (mean over seeds):\n%s", format_table(h2, agg).c_str());
  const std::size_t incomplete = std::size_t(missing) + failed.size() + busy.size();
  std::string note;
  if (incomplete) {
    note = " (" + std::to_string(incomplete) + " grid points not merged: ";
    std::vector<std::string> parts;
    if (missing) parts.push_back(std::to_string(missing) + " missing or partial");
    if (!failed.empty()) parts.push_back(std::to_string(failed.size()) + " failed");
    if (!busy.empty()) parts.push_back(std::to_string(busy.size()) + " running elsewhere");
    note += join(parts, ", ") + ")";
  }
  std::fprintf(stderr, "merged %zu runs into %s and %s%s\n", run.size(), target.h5.c_str(),
               target.csv.c_str(), note.c_str());
  return failed.empty() ? 0 : 1;  // a failed point is a failure of the sweep, merged or not
}

// ---- --local ---------------------------------------------------------------------------------

std::string describe_wait_status(int status) {
  if (WIFEXITED(status)) {
    const int code = WEXITSTATUS(status);
    const char* what = code == 1   ? " (an error)"
                       : code == 2 ? " (a configuration error)"
                       : code == 3 ? " (an internal error)"
                       : code == 4 ? " (the run failed: status = failed in its file)"
                                   : "";
    return "exit code " + std::to_string(code) + what;
  }
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* name = ::strsignal(sig);
    return "killed by signal " + std::to_string(sig) + (name ? std::string(" (") + name + ")" : "");
  }
  return "wait status " + std::to_string(status);
}

struct LocalResult {
  int failed = 0;
  int busy = 0;
};

/// Runs the points `todo` in this process, one after another.
LocalResult run_here(const SweepOptions& o, const io::Config& base,
                     const std::vector<GridPoint>& pts, const std::vector<io::Config>& cfgs,
                     const std::vector<std::size_t>& todo) {
  LocalResult r;
  for (auto i : todo) {
    try {
      run_point(o, base, pts[i], cfgs[i], i);
    } catch (const io::output_busy& e) {
      std::fprintf(stderr, "sweep: %s; skipped\n", e.what());
      ++r.busy;
    } catch (const eisim::error& e) {
      std::fprintf(stderr, "error: %s: %s\n", pts[i].name.c_str(), e.what());
      ++r.failed;
    }
  }
  return r;
}

/// Runs the points `todo` as child processes (eisim sweep --task-id i), o.jobs at a time.
LocalResult run_children(const SweepOptions& o, const std::vector<GridPoint>& pts,
                         const std::vector<std::size_t>& todo) {
  if (o.self_exe.empty()) throw internal_error("sweep: --jobs > 1 needs SweepOptions::self_exe");
  LocalResult r;
  const pid_t parent = ::getpid();
  std::map<pid_t, std::size_t> running;  // pid -> grid point
  std::size_t next = 0;
  while (next < todo.size() || !running.empty()) {
    while (int(running.size()) < o.jobs && next < todo.size()) {
      const std::size_t i = todo[next++];
      // Everything the child needs is built before fork: after it, only exec.
      std::vector<std::string> args{o.self_exe,    "sweep",     "--config",
                                    o.config_path, "--task-id", std::to_string(i)};
      for (const auto& s : o.overrides) {
        args.push_back("--set");
        args.push_back(s);
      }
      if (o.rerun) args.push_back("--rerun");
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      const std::string exec_failed =
          "eisim sweep: cannot run " + o.self_exe + " for grid point " + pts[i].name;
      const pid_t pid = ::fork();
      if (pid == 0) {
        // A child does not outlive the sweep (killed with it, it stops too).
        ::prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (::getppid() != parent) ::_exit(1);
        ::setenv("OMP_NUM_THREADS", "1", 1);
        ::execv(o.self_exe.c_str(), argv.data());
        std::perror(exec_failed.c_str());
        ::_exit(127);
      }
      if (pid < 0) {
        std::fprintf(stderr, "error: %s: cannot start a process for it: fork failed: %s\n",
                     pts[i].name.c_str(), std::strerror(errno));
        ++r.failed;
        continue;
      }
      running.emplace(pid, i);
    }
    if (running.empty()) continue;
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      throw error(std::string("sweep: waiting for the grid point processes failed: ") +
                  std::strerror(errno));
    }
    const auto it = running.find(pid);
    if (it == running.end()) continue;
    const std::string& name = pts[it->second].name;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
      // done
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == sweep_exit_busy) {
      std::fprintf(stderr, "sweep: %s is being run by another process; skipped\n", name.c_str());
      ++r.busy;
    } else {
      std::fprintf(stderr, "error: grid point %s failed (%s)\n", name.c_str(),
                   describe_wait_status(status).c_str());
      ++r.failed;
    }
    running.erase(it);
  }
  return r;
}

/// sweep.out_dir exists (created if need be) and is writable, before anything is trained.
void prepare_out_dir(const io::Config& base) {
  const std::string& dir = base.sweep.out_dir;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fs_fail("sweep.out_dir: cannot create", dir, ec);
  if (!fs::is_directory(dir, ec))
    throw config_error("sweep.out_dir", dir + " exists and is not a directory");
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    throw error("sweep.out_dir: " + dir + " is not writable: " + std::strerror(errno));
}

int sweep(const SweepOptions& o) {
  const int actions = int(o.list) + int(o.task_id >= 0) + int(o.local) + int(o.merge);
  if (o.task_id < -1)
    throw config_error("--task-id", "task " + std::to_string(o.task_id) +
                                        " is negative; grid points are numbered from 0 (see "
                                        "--list)");
  if (actions == 0)
    throw config_error("",
                       "sweep: nothing to do; give one of --list (print the grid), "
                       "--task-id N (run one point), --local (run every point here), "
                       "--merge (gather the complete points)");
  if (o.list && actions > 1)
    throw config_error("--list",
                       "--list only prints the grid; use it without --task-id, "
                       "--local or --merge");
  if (o.task_id >= 0 && o.local)
    throw config_error("--task-id", "--task-id runs one point and --local every point; give one");
  if (o.rerun && o.task_id < 0 && !o.local)
    throw config_error("--rerun",
                       "--rerun applies to the points that are run (--local or "
                       "--task-id)");
  if (o.jobs < 1)
    throw config_error("--jobs", "--jobs " + std::to_string(o.jobs) + " must be >= 1");

  const io::Config base = io::load_config(o.config_path, o.overrides);
  const auto pts = grid(base);
  // Every grid point's configuration, validated before anything runs.
  std::vector<io::Config> cfgs;
  std::vector<std::string> paths;
  for (const auto& p : pts) {
    cfgs.push_back(point_config(o, p));
    paths.push_back(run_path(base, p));
  }
  if (o.task_id >= int(pts.size()))
    throw config_error("--task-id", "task " + std::to_string(o.task_id) + " is outside the grid (" +
                                        std::to_string(pts.size()) + " points: 0.." +
                                        std::to_string(pts.size() - 1) + ")");
  std::optional<MergeTarget> target;
  if (o.merge) {
    check_same_eval_eps(pts, cfgs);
    target = merge_target(o, base, paths);
  }

  if (o.list) {
    for (std::size_t i = 0; i < pts.size(); ++i) {
      const PointFile pf = inspect(paths[i], cfgs[i], /*probe_lock=*/true);
      std::string state;
      switch (pf.state) {
        case State::missing:
          state = "missing";
          break;
        case State::complete:
          state = "complete";
          break;
        case State::partial:
          state = "partial (" + std::to_string(pf.epochs) + " of " +
                  std::to_string(cfgs[i].train.epochs) + " epochs)";
          break;
        case State::stale:
          state = "stale: " + pf.why;
          break;
        case State::unusable:
          state = "unusable: " + pf.why;
          break;
        case State::failed:
          state = "failed: " + pf.why;
          break;
        case State::busy:
          state = "running: " + pf.why;
          break;
      }
      std::printf("%zu %s %s\n", i, pts[i].name.c_str(), state.c_str());
    }
    return 0;
  }

  if (o.task_id >= 0) {
    prepare_out_dir(base);
    const auto i = std::size_t(o.task_id);
    try {
      run_point(o, base, pts[i], cfgs[i], i);
    } catch (const io::output_busy& e) {
      std::fprintf(stderr, "eisim: error: %s\n", e.what());
      return sweep_exit_busy;
    }
    return o.merge ? merge(o, base, pts, cfgs, *target) : 0;
  }

  if (o.local) {
    prepare_out_dir(base);
    std::vector<PointFile> files;
    for (std::size_t i = 0; i < pts.size(); ++i)
      files.push_back(inspect(paths[i], cfgs[i], /*probe_lock=*/true));
    refuse_unusable(pts, paths, files, o.rerun);
    std::vector<std::size_t> todo;
    int complete = 0, fresh = 0, resumed = 0, again = 0, busy = 0, failed_before = 0;
    for (std::size_t i = 0; i < pts.size(); ++i) {
      switch (files[i].state) {
        case State::complete:
          ++complete;
          break;
        case State::missing:
          ++fresh, todo.push_back(i);
          break;
        case State::partial:
          ++resumed, todo.push_back(i);
          break;
        case State::stale:
        case State::unusable:
          ++again, todo.push_back(i);
          break;  // --rerun (else refused)
        case State::failed:
          if (o.rerun) {
            ++again;
            todo.push_back(i);
          } else {
            ++failed_before;
            std::fprintf(stderr,
                         "sweep: %s failed in an earlier run (%s): %s; not retried (pass --rerun "
                         "to train it again from scratch)\n",
                         pts[i].name.c_str(), paths[i].c_str(), files[i].why.c_str());
          }
          break;
        case State::busy:
          ++busy;
          std::fprintf(stderr, "sweep: %s is %s; skipped\n", pts[i].name.c_str(),
                       files[i].why.c_str());
          break;
      }
    }
    {
      std::string line = "sweep: " + std::to_string(pts.size()) +
                         " grid points: " + std::to_string(complete) + " complete, " +
                         std::to_string(todo.size()) + " to run";
      std::vector<std::string> kinds;
      if (fresh) kinds.push_back(std::to_string(fresh) + " new");
      if (resumed) kinds.push_back(std::to_string(resumed) + " to resume");
      if (again) kinds.push_back(std::to_string(again) + " to train again");
      if (!kinds.empty()) line += " (" + join(kinds, ", ") + ")";
      if (busy) line += ", " + std::to_string(busy) + " running elsewhere";
      if (failed_before) line += ", " + std::to_string(failed_before) + " failed earlier";
      if (!todo.empty())
        line += "; " + std::to_string(std::min<std::size_t>(std::size_t(o.jobs), todo.size())) +
                " at a time";
      std::fprintf(stderr, "%s\n", line.c_str());
    }
    const LocalResult r =
        o.jobs <= 1 ? run_here(o, base, pts, cfgs, todo) : run_children(o, pts, todo);
    const int failed = r.failed + failed_before;
    busy += r.busy;
    if (failed) std::fprintf(stderr, "sweep: %d grid points failed\n", failed);
    if (busy)
      std::fprintf(stderr,
                   "sweep: %d grid points are being run by another process (not waited for)\n",
                   busy);
    if (o.merge) merge(o, base, pts, cfgs, *target);
    return failed ? 1 : 0;
  }
  return merge(o, base, pts, cfgs, *target);
}

}  // namespace

int run_sweep(const SweepOptions& o) {
  try {
    return sweep(o);
  } catch (const fs::filesystem_error& e) {
    // Should not happen (paths are checked with error codes), but never an "internal error".
    throw error(std::string("sweep: ") + e.what());
  }
}

}  // namespace eisim::experiments
