// eisim command-line interface: a thin layer over eisim::experiments.
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <new>
#include <string>
#include <vector>

#include "eisim/build_info.hpp"
#include "eisim/experiments/commands.hpp"
#include "eisim/io/output.hpp"
#include "eisim/models/error.hpp"
#include "eisim/models/memory.hpp"

namespace {

std::string command_line(int argc, char** argv) {
  std::string s;
  for (int i = 0; i < argc; ++i) s += (i ? " " : "") + std::string(argv[i]);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace eisim;
  CLI::App app{"eisim: excitatory/inhibitory circuits that learn"};
  app.set_version_flag("--version", std::string("eisim ") + build_info::version + " (" +
                                        build_info::git_commit + ", " + build_info::build_type +
                                        ")");
  app.require_subcommand(1);
  // Options of the top level are accepted after the subcommand too.
  app.fallthrough();
  int threads = 0;
  app.add_option("--threads", threads,
                 "compute threads (default 1, or OMP_NUM_THREADS if set; see docs/numerics.md)")
      ->check(CLI::Range(1, 256));
  std::string config, out;
  std::vector<std::string> sets;
  bool resume = false, overwrite = false;

  // An empty value (an unset "$SLURM_ARRAY_TASK_ID", say) is an error, not grid point 0.
  const CLI::Validator non_empty(
      [](std::string& v) { return v.empty() ? std::string("an empty value is not allowed") : ""; },
      "NON-EMPTY");
  auto* sim = app.add_subcommand("simulate", "circuit traces and equilibria of test images");
  sim->add_option("--config", config, "YAML configuration")->required()->check(CLI::ExistingFile);
  sim->add_option("--out", out, "output HDF5 file")->required()->check(non_empty);
  sim->add_option("--set", sets, "override a config key: path.to.key=value");
  sim->add_flag("--overwrite", overwrite, "replace an existing --out file");

  auto* train = app.add_subcommand("train", "train a network and record everything in HDF5");
  train->add_option("--config", config, "YAML configuration")->required()->check(CLI::ExistingFile);
  train->add_option("--out", out, "output HDF5 file (also the checkpoint)")
      ->required()
      ->check(non_empty);
  train->add_option("--set", sets, "override a config key: path.to.key=value");
  train->add_flag("--resume", resume, "continue from the checkpoint in --out");
  train->add_flag("--overwrite", overwrite, "replace an existing --out file with a new run");

  experiments::EvaluateOptions eo;
  auto* evaluate = app.add_subcommand(
      "evaluate", "evaluate a trained run file on the test set and the validation split");
  evaluate->add_option("--run", eo.run, "run file written by eisim train")
      ->required()
      ->check(CLI::ExistingFile);
  evaluate->add_option("--out", eo.out, "output HDF5 file (default: print the table only)")
      ->check(non_empty);
  evaluate->add_flag("--overwrite", eo.overwrite, "replace an earlier evaluation at --out");
  evaluate
      ->add_option("--split", eo.split,
                   "test, validation, or all (test, and validation if the run has one)")
      ->check(CLI::IsMember({"test", "validation", "all"}));
  evaluate->add_option("--set", eo.overrides,
                       "change data.dir, data.eval_eps, data.test_limit, data.test_seed, "
                       "fixed_point.* or evaluate.*: path.to.key=value");
  evaluate
      ->add_option("--transforms", eo.transforms,
                   "YAML file of such keys, e.g. evaluate.shift (experiments/evaluate.yaml)")
      ->check(CLI::ExistingFile);

  experiments::SweepOptions so;
  auto* sweep = app.add_subcommand("sweep", "run a grid of trainings (conditions x eps x seeds)");
  sweep->add_option("--config", so.config_path, "YAML configuration with a sweep section")
      ->required()
      ->check(CLI::ExistingFile);
  sweep->add_option("--set", so.overrides, "override a config key for every grid point");
  auto* task_id =
      sweep
          ->add_option("--task-id", so.task_id, "run grid point N >= 0 (e.g. $SLURM_ARRAY_TASK_ID)")
          ->check(non_empty);
  auto* local =
      sweep->add_flag("--local", so.local, "run every incomplete grid point on this machine");
  sweep->add_option("--jobs", so.jobs, "parallel processes for --local")
      ->check(CLI::PositiveNumber)
      ->needs(local);
  auto* merge =
      sweep->add_flag("--merge", so.merge, "gather complete runs into a summary HDF5/CSV");
  sweep
      ->add_option("--merged", so.merged_path,
                   "summary file, ending in .h5 (default <out_dir>/summary.h5); an existing "
                   "file there is replaced only if it is an earlier summary")
      ->needs(merge)
      ->check(non_empty);
  sweep->add_flag("--list", so.list, "print the grid with each point's state");
  sweep->add_flag("--rerun", so.rerun,
                  "train again from scratch the points whose file was made with another "
                  "configuration, is unreadable or failed (their files are replaced)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; every command-line error exits 2, like a configuration error.
    return app.exit(e) == 0 ? 0 : 2;
  }
  eisim::models::keep_freed_memory();
  eisim::io::remove_temporaries_on_signal();
  if (resume && overwrite) {
    std::fprintf(stderr, "eisim: --resume and --overwrite exclude each other\n");
    return 2;
  }
  // OMP_NUM_THREADS is checked like --threads: a huge value made the OpenMP runtime crash.
  if (const char* env = std::getenv("OMP_NUM_THREADS"); env != nullptr && threads == 0) {
    char* end = nullptr;
    errno = 0;
    const long n = std::strtol(env, &end, 10);
    if (errno != 0 || end == env || *end != '\0' || n < 1 || n > 256) {
      std::fprintf(stderr,
                   "eisim: OMP_NUM_THREADS='%s' is not a thread count in [1, 256]; unset it or "
                   "use --threads N\n",
                   env);
      return 2;
    }
  }
  // One thread unless asked: at the default batch size a second thread gains about 10 % on an
  // idle machine and can cost 10x on a busy one (docs/numerics.md, bench/README.md).
#ifdef _OPENMP
  if (threads > 0)
    omp_set_num_threads(threads);
  else if (std::getenv("OMP_NUM_THREADS") == nullptr)
    omp_set_num_threads(1);
#else
  (void)threads;
#endif
  const std::string cmd = command_line(argc, argv);
  try {
    if (*sim) {
      experiments::run_simulate(io::load_config(config, sets), out, cmd, overwrite);
    } else if (*train) {
      experiments::TrainOptions t;
      t.out = out;
      t.resume = resume;
      t.overwrite = overwrite;
      t.command = cmd;
      const auto s = experiments::run_train(io::load_config(config, sets), t);
      std::vector<std::string> header{"final test acc %"};
      std::vector<std::string> row{std::to_string(100 * s.final_accuracy)};
      for (std::size_t k = 0; k < s.eval_eps.size(); ++k) {
        header.push_back("acc@" + std::to_string(s.eval_eps[k]).substr(0, 4));
        row.push_back(std::to_string(100 * s.test_accuracy[k]).substr(0, 5));
      }
      for (std::size_t k = 0; k < s.validation_accuracy.size(); ++k) {
        header.push_back("val@" + std::to_string(s.eval_eps[k]).substr(0, 4));
        row.push_back(std::to_string(100 * s.validation_accuracy[k]).substr(0, 5));
      }
      header.push_back("seconds");
      row.push_back(std::to_string(int(s.seconds)));
      std::printf("%s", experiments::format_table(header, {row}).c_str());
      std::fprintf(stderr, "wrote %s\n", out.c_str());
    } else if (*evaluate) {
      if (eo.overwrite && eo.out.empty())
        throw config_error("--overwrite", "evaluate --overwrite needs --out");
      eo.command = cmd;
      const auto s = experiments::run_evaluate(eo);
      std::printf("%s", experiments::evaluation_table(s).c_str());
      if (!eo.out.empty()) std::fprintf(stderr, "wrote %s\n", eo.out.c_str());
    } else if (*sweep) {
      // -1 is the default (no --task-id); given explicitly it is refused like any negative N.
      if (task_id->count() > 0 && so.task_id < 0)
        throw config_error("--task-id", "task " + std::to_string(so.task_id) +
                                            " is negative; grid points are numbered from 0 (see "
                                            "--list)");
      so.self_exe = "/proc/self/exe";
      char buf[4096];
      const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
      if (n > 0) so.self_exe.assign(buf, std::size_t(n));
      return experiments::run_sweep(so);
    }
  } catch (const eisim::config_error& e) {
    std::fprintf(stderr, "eisim: configuration error: %s\n", e.what());
    return 2;
  } catch (const eisim::io::output_busy& e) {
    std::fprintf(stderr, "eisim: busy: %s\n", e.what());
    return experiments::sweep_exit_busy;
  } catch (const eisim::run_failed& e) {
    std::fprintf(stderr, "eisim: run failed: %s\n", e.what());
    return 4;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr,
                 "eisim: error: out of memory; reduce network.width, train.batch_size or the "
                 "simulated images/record points\n");
    return 1;
  } catch (const std::filesystem::filesystem_error& e) {
    std::fprintf(stderr, "eisim: error: %s\n", e.what());
    return 1;
  } catch (const eisim::error& e) {
    std::fprintf(stderr, "eisim: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "eisim: internal error: %s\n", e.what());
    return 3;
  }
  return 0;
}
