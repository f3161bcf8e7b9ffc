#pragma once
// The eisim commands (simulate, train, sweep) as library functions; app/main.cpp is a thin CLI.
#include <cstdint>
#include <string>
#include <vector>

#include "eisim/io/config.hpp"
#include "eisim/io/hdf5.hpp"
#include "eisim/models/network.hpp"

namespace eisim::experiments {

/// `eisim simulate`: traces and equilibria of `config.simulate.images` written to `out`. An
/// existing `out` is replaced only if `overwrite`; `out` may not be the weights file it reads.
void run_simulate(const io::Config& config, const std::string& out, const std::string& command,
                  bool overwrite = false);

struct TrainOptions {
  std::string out;
  bool resume = false;
  bool overwrite = false;  ///< replace an existing `out` (otherwise it is an error unless resume)
  bool lock_held =
      false;  ///< the caller holds io::OutputLock(out) (sweep); else run_train takes it
  std::string command;
  bool quiet = false;  ///< no progress bar, no summary
};

/// Final numbers of a training run.
struct TrainSummary {
  std::vector<double> eval_eps;
  std::vector<double> test_accuracy;        ///< final epoch, per eval eps
  double final_accuracy = 0;                ///< at the training eps (nearest eval eps)
  std::vector<double> validation_accuracy;  ///< final epoch, per eval eps (data.validation > 0)
  std::vector<double> validation_loss;      ///< likewise
  double seconds = 0;
  int epochs = 0;
};

/// `eisim train`: trains, writing the HDF5 file atomically after every epoch. Everything that can
/// be checked before the first epoch is (config, data, output path, resume checkpoint). A run
/// that diverges or ends at chance accuracy is marked status = "failed" in its file and
/// run_failed is thrown.
TrainSummary run_train(const io::Config& config, const TrainOptions& options);

/// Open a run file written by `eisim train`, parse its stored configuration and load and verify
/// its checkpoint exactly as --resume does (shapes, epoch, history, optimizer state, finite
/// values, checksum). Throws eisim::error naming the file and the problem.
void verify_run_file(const std::string& path);
/// The same on an open file (so that what is verified is what the caller then reads).
void verify_run_file(const io::H5File& file);

/// What one evaluation of an image set at one jitter eps found (train's per-epoch test and
/// validation accuracies, and `eisim evaluate`).
struct EvalResult {
  double accuracy = 0;  ///< a sample whose solve failed in some layer counts as wrong
  double loss = 0;      ///< mean cross-entropy (no label smoothing)
  std::int64_t images = 0;
  std::int64_t failed = 0;     ///< samples with a non-converged equilibrium in some layer
  std::int64_t fallbacks = 0;  ///< sim::ForwardStats, summed over batches
  std::int64_t stability_checked = 0, unstable = 0, oscillatory = 0, marginal = 0, reintegrated = 0;
  /// The solver's work (sim::ForwardStats): layer solves that ran the pseudo-transient
  /// continuation, LU factorisations and GMRES vectors of Newton's and the continuation's steps.
  std::int64_t continuations = 0, factorisations = 0, krylov_vectors = 0;
  double iterations_mean = 0;  ///< per layer solve of a sample
  std::int64_t iterations_max = 0;
  /// Per hidden layer: the fraction of images whose subtractive inhibition of E is silent (every
  /// unit at rate 0); NaN for a layer without it (layernorm, none). See SilentInhibition.
  std::vector<double> silent_inhibition;
};

struct EvaluateOptions {
  std::string run;                     ///< a run file written by eisim train
  std::string out;                     ///< HDF5 output ("" = print the table only)
  bool overwrite = false;              ///< replace an earlier evaluation file at `out`
  std::string split = "all";           ///< test, validation or all (validation if the run has one)
  std::vector<std::string> overrides;  ///< --set, of the keys evaluate_may_change only
  std::string transforms;  ///< a YAML file of such keys (evaluate.*), applied before --set
  std::string command;
};

/// The keys `eisim evaluate --set` may change (they do not change the network): data.dir,
/// data.eval_eps, data.test_limit, data.test_seed and fixed_point.
const std::vector<std::string>& evaluate_may_change();

struct EvaluationRow {
  std::string set;                   ///< "test" or "validation"
  std::string transform = "jitter";  ///< jitter (data.eval_eps), shift, contrast or noise
  double eps = 0;                    ///< brightness jitter (0 for the other transforms)
  double value = 0;                  ///< the transform's value (eps for jitter)
  EvalResult result;
};

struct EvaluateSummary {
  std::int64_t epoch = 0;  ///< the run's epochs (its /checkpoint/epoch)
  std::string status;      ///< the run's status
  std::vector<EvaluationRow> rows;
};

/// `eisim evaluate`: verifies the run file as --resume does (checksums, shapes), rebuilds its
/// network from the stored configuration and weights, and evaluates it on the test set and/or
/// the validation split at every data.eval_eps, exactly as train does after every epoch (so
/// its numbers reproduce the run's last epoch). Writes `out` atomically if given (never the run
/// file, never a file that is not an earlier evaluation). Throws config_error for a wrong
/// option or --set, data_error for a wrong or corrupt run file.
EvaluateSummary run_evaluate(const EvaluateOptions& options);

/// The table of run_evaluate's rows, as printed by the CLI.
std::string evaluation_table(const EvaluateSummary& summary);

struct SweepOptions {
  std::string config_path;
  std::vector<std::string> overrides;
  int task_id = -1;    ///< run this grid point only (-1: none)
  bool local = false;  ///< run every missing grid point here
  int jobs = 1;
  bool merge = false;       ///< gather complete runs into a summary
  std::string merged_path;  ///< default: <out_dir>/summary.h5; must end in .h5
  bool list = false;        ///< print the grid and exit
  bool rerun = false;       ///< retrain from scratch the points whose file has another config
  std::string self_exe;     ///< path of the eisim executable (for --local --jobs > 1)
};

/// Exit code of `eisim sweep --task-id N` when another process is running point N (1: error,
/// 2: configuration error, 3: internal error, 4: the run failed).
inline constexpr int sweep_exit_busy = 5;

/// `eisim sweep`. Returns the process exit code: 0, 1 if a grid point failed, sweep_exit_busy.
/// A point's existing file is reused only if its stored configuration equals the point's
/// (config_error naming the keys otherwise, before anything is trained, unless `rerun`).
int run_sweep(const SweepOptions& options);

// Weights and optimiser state in HDF5 (/weights/layer_<l>/<name>, /optimizer/layer_<l>/<name>).
template <class S>
void save_network(io::H5File& f, const models::Network<S>& net,
                  const std::string& group = "weights");
template <class S>
void load_network(const io::H5File& f, models::Network<S>& net,
                  const std::string& group = "weights");

/// One aligned text table, printed by train and sweep.
std::string format_table(const std::vector<std::string>& header,
                         const std::vector<std::vector<std::string>>& rows);

}  // namespace eisim::experiments
