// eisim sweep: a grid of conditions x eps x seeds, one HDF5 file per point, and a merge step.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>

#include "eisim/experiments/commands.hpp"
#include "eisim/io/provenance.hpp"
#include "eisim/models/error.hpp"

namespace eisim::experiments {

namespace {

struct GridPoint {
  std::string name;
  std::string condition;
  double eps;
  std::uint64_t seed;
  std::vector<std::string> overrides;
};

std::string eps_text(double eps) {
  std::ostringstream os;
  os << eps;
  return os.str();
}

std::vector<GridPoint> grid(const io::Config& base) {
  std::vector<GridPoint> out;
  const auto& sw = base.sweep;
  std::vector<io::SweepCondition> conds = sw.conditions;
  if (conds.empty()) conds.push_back({"base", {}});
  for (const auto& c : conds)
    for (double eps : sw.eps)
      for (auto seed : sw.seeds) {
        GridPoint p{c.name + "_eps" + eps_text(eps) + "_seed" + std::to_string(seed),
                    c.name,
                    eps,
                    seed,
                    {}};
        for (const auto& [k, v] : c.set) p.overrides.push_back(k + "=" + v);
        p.overrides.push_back("data.train_eps=" + eps_text(eps));
        p.overrides.push_back("seed=" + std::to_string(seed));
        out.push_back(std::move(p));
      }
  return out;
}

std::string run_path(const io::Config& base, const GridPoint& p) {
  return (std::filesystem::path(base.sweep.out_dir) / (p.name + ".h5")).string();
}

// A run is complete when its file says so and holds the configured number of epochs.
bool is_complete(const std::string& path, int epochs) {
  if (!std::filesystem::exists(path)) return false;
  try {
    const io::H5File f = io::H5File::open_read(path);
    return f.attr_string("/", "status") == "complete" &&
           int(f.read_vector("train/epoch").size()) >= epochs;
  } catch (const eisim::error&) {
    return false;
  }
}

io::Config point_config(const SweepOptions& o, const GridPoint& p) {
  // A grid point is one training run: its own condition applies, the others do not (they are
  // validated against the base configuration when the sweep file is loaded).
  std::vector<std::string> ov{"sweep.conditions=[]"};
  ov.insert(ov.end(), p.overrides.begin(), p.overrides.end());
  ov.insert(ov.end(), o.overrides.begin(), o.overrides.end());
  return io::load_config(o.config_path, ov);
}

int run_point(const SweepOptions& o, const io::Config& base, const GridPoint& p) {
  const io::Config cfg = point_config(o, p);
  const std::string out = run_path(base, p);
  if (is_complete(out, cfg.train.epochs)) {
    std::fprintf(stderr, "%s: complete, skipped\n", p.name.c_str());
    return 0;
  }
  std::filesystem::create_directories(base.sweep.out_dir);
  TrainOptions t;
  t.out = out;
  // A partially trained point resumes from its last complete epoch.
  t.resume = std::filesystem::exists(out);
  if (t.resume) {
    try {
      const io::H5File f = io::H5File::open_read(out);
      t.resume = f.exists("checkpoint/epoch");
    } catch (const eisim::error&) {
      t.resume = false;
    }
  }
  t.command = "eisim sweep --config " + o.config_path + " --task-id (" + p.name + ")";
  std::fprintf(stderr, "== %s -> %s\n", p.name.c_str(), out.c_str());
  const auto s = run_train(cfg, t);
  std::fprintf(stderr, "== %s: final test accuracy %.2f %% (%d epochs, %.0f s)\n", p.name.c_str(),
               100 * s.final_accuracy, s.epochs, s.seconds);
  return 0;
}

int merge(const SweepOptions& o, const io::Config& base, const std::vector<GridPoint>& pts) {
  const std::string merged =
      o.merged_path.empty() ? (std::filesystem::path(base.sweep.out_dir) / "summary.h5").string()
                            : o.merged_path;
  std::vector<std::string> run, cond;
  std::vector<double> eps, final_acc, secs;
  std::vector<std::int64_t> seeds, epochs;
  std::vector<std::vector<double>> per_eps;
  std::vector<double> eval_eps;
  std::vector<std::vector<std::string>> rows;
  int missing = 0;
  for (const auto& p : pts) {
    const std::string path = run_path(base, p);
    const io::Config cfg = point_config(o, p);
    if (!is_complete(path, cfg.train.epochs)) {
      ++missing;
      continue;
    }
    const io::H5File f = io::H5File::open_read(path);
    eval_eps = f.read_vector("train/eval_eps");
    const Mat<double> acc = f.read_matrix("train/test_accuracy");
    const auto s = f.read_vector("train/seconds");
    std::size_t best = 0;
    for (std::size_t k = 0; k < eval_eps.size(); ++k)
      if (std::abs(eval_eps[k] - p.eps) < std::abs(eval_eps[best] - p.eps)) best = k;
    run.push_back(p.name);
    cond.push_back(p.condition);
    eps.push_back(p.eps);
    seeds.push_back(std::int64_t(p.seed));
    epochs.push_back(acc.rows());
    final_acc.push_back(acc(acc.rows() - 1, best));
    std::vector<double> row(acc.cols());
    for (int k = 0; k < acc.cols(); ++k) row[k] = acc(acc.rows() - 1, k);
    per_eps.push_back(row);
    double total = 0;
    for (double x : s) total += x;
    secs.push_back(total);
    std::vector<std::string> r{p.condition, eps_text(p.eps), std::to_string(p.seed)};
    std::ostringstream a;
    a << std::fixed << std::setprecision(2) << 100 * final_acc.back();
    r.push_back(a.str());
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
  if (run.empty()) {
    std::fprintf(stderr, "merge: no complete runs in %s\n", base.sweep.out_dir.c_str());
    return 1;
  }
  std::filesystem::create_directories(std::filesystem::path(merged).parent_path().empty()
                                          ? "."
                                          : std::filesystem::path(merged).parent_path());
  io::write_atomically(merged, [&](io::H5File& f) {
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
    io::write_provenance(f, base, "eisim sweep --merge --config " + o.config_path);
    for (const auto& name : run) {
      const io::H5File src = io::H5File::open_read(
          (std::filesystem::path(base.sweep.out_dir) / (name + ".h5")).string());
      f.copy_from(src, "train", "runs/" + name + "/train");
      if (src.exists("simulate")) f.copy_from(src, "simulate", "runs/" + name + "/simulate");
      for (const char* a :
           {"rule", "error_transform", "kind", "status", "git_commit", "eisim_version",
            "build_type", "config", "precision", "command", "created", "hostname"})
        if (src.exists("/")) f.set_attr("runs/" + name, a, src.attr_string("/", a));
      f.set_attr("runs/" + name, "seed", src.attr_int("/", "seed"));
    }
  });
  // CSV next to the merged file.
  const std::string csv = std::filesystem::path(merged).replace_extension(".csv").string();
  std::ofstream os(csv);
  os << "run,condition,eps,seed,epochs,final_accuracy";
  for (double e : eval_eps) os << ",accuracy_eps" << e;
  os << ",seconds\n";
  for (std::size_t i = 0; i < run.size(); ++i) {
    os << run[i] << "," << cond[i] << "," << eps[i] << "," << seeds[i] << "," << epochs[i] << ","
       << final_acc[i];
    for (double x : per_eps[i]) os << "," << x;
    os << "," << secs[i] << "\n";
  }
  std::vector<std::string> header{"condition", "eps", "seed", "final acc %"};
  for (double e : eval_eps) header.push_back("acc@" + eps_text(e));
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
    std::vector<std::string> r{c, eps_text(e), std::to_string(m.size()),
                               fmt(mu, 2) + " +- " + fmt(sd, 2)};
    for (std::size_t k = 0; k < eval_eps.size(); ++k)
      r.push_back(fmt(mean_sd([&](std::size_t i) { return 100 * per_eps[i][k]; }).first, 2));
    r.push_back(fmt(mean_sd([&](std::size_t i) { return secs[i]; }).first, 0));
    agg.push_back(r);
  }
  std::vector<std::string> h2{"rule/condition", "eps", "seeds", "final acc % (mean +- sd)"};
  for (double e : eval_eps) h2.push_back("acc@" + eps_text(e));
  h2.push_back("seconds/run");
  std::printf("Comparison (mean over seeds):\n%s", format_table(h2, agg).c_str());
  std::fprintf(
      stderr, "merged %zu runs into %s and %s%s\n", run.size(), merged.c_str(), csv.c_str(),
      missing ? (" (" + std::to_string(missing) + " grid points incomplete)").c_str() : "");
  return 0;
}

}  // namespace

int run_sweep(const SweepOptions& o) {
  const io::Config base = io::load_config(o.config_path, o.overrides);
  const auto pts = grid(base);
  if (o.list) {
    for (std::size_t i = 0; i < pts.size(); ++i)
      std::printf("%zu %s %s\n", i, pts[i].name.c_str(),
                  is_complete(run_path(base, pts[i]), point_config(o, pts[i]).train.epochs)
                      ? "complete"
                      : "missing");
    return 0;
  }
  // Validate every grid point's configuration before running anything.
  for (const auto& p : pts) (void)point_config(o, p);
  if (o.task_id >= 0) {
    if (o.task_id >= int(pts.size()))
      throw config_error("--task-id", "task " + std::to_string(o.task_id) +
                                          " is outside the grid (" + std::to_string(pts.size()) +
                                          " points: 0.." + std::to_string(pts.size() - 1) + ")");
    run_point(o, base, pts[o.task_id]);
  } else if (o.local) {
    std::vector<std::size_t> todo;
    for (std::size_t i = 0; i < pts.size(); ++i)
      if (!is_complete(run_path(base, pts[i]), point_config(o, pts[i]).train.epochs))
        todo.push_back(i);
    std::fprintf(stderr, "sweep: %zu grid points, %zu to run, %d at a time\n", pts.size(),
                 todo.size(), o.jobs);
    int failed = 0;
    if (o.jobs <= 1) {
      for (auto i : todo) {
        try {
          run_point(o, base, pts[i]);
        } catch (const eisim::error& e) {
          std::fprintf(stderr, "error: %s: %s\n", pts[i].name.c_str(), e.what());
          ++failed;
        }
      }
    } else {
      // One child process per point (eisim sweep --task-id i), `jobs` at a time.
      std::size_t next = 0;
      int running = 0;
      while (next < todo.size() || running > 0) {
        while (running < o.jobs && next < todo.size()) {
          const std::size_t i = todo[next++];
          const pid_t pid = fork();
          if (pid == 0) {
            std::vector<std::string> args{o.self_exe,    "sweep",     "--config",
                                          o.config_path, "--task-id", std::to_string(i)};
            for (const auto& s : o.overrides) {
              args.push_back("--set");
              args.push_back(s);
            }
            std::vector<char*> argv;
            for (auto& a : args) argv.push_back(a.data());
            argv.push_back(nullptr);
            setenv("OMP_NUM_THREADS", "1", 1);
            execv(o.self_exe.c_str(), argv.data());
            std::perror("execv");
            _exit(127);
          }
          if (pid < 0) throw error("sweep: fork failed");
          ++running;
        }
        int status = 0;
        if (wait(&status) > 0) {
          --running;
          if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failed;
        }
      }
    }
    if (failed) std::fprintf(stderr, "sweep: %d grid points failed\n", failed);
    if (o.merge) merge(o, base, pts);
    return failed ? 1 : 0;
  }
  if (o.merge) return merge(o, base, pts);
  return 0;
}

}  // namespace eisim::experiments
