#pragma once
// The eisim commands (simulate, train, sweep) as library functions; app/main.cpp is a thin CLI.
#include <string>
#include <vector>

#include "eisim/io/config.hpp"
#include "eisim/io/hdf5.hpp"
#include "eisim/learning/optimizer.hpp"

namespace eisim::experiments {

/// `eisim simulate`: traces and equilibria of `config.simulate.images` written to `out`.
void run_simulate(const io::Config& config, const std::string& out, const std::string& command);

struct TrainOptions {
  std::string out;
  bool resume = false;
  std::string command;
  bool quiet = false;  ///< no progress bar, no summary
};

/// Final numbers of a training run.
struct TrainSummary {
  std::vector<double> eval_eps;
  std::vector<double> test_accuracy;  ///< final epoch, per eval eps
  double final_accuracy = 0;          ///< at the training eps (nearest eval eps)
  double seconds = 0;
  int epochs = 0;
};

/// `eisim train`: trains, writing the HDF5 file atomically after every epoch.
TrainSummary run_train(const io::Config& config, const TrainOptions& options);

struct SweepOptions {
  std::string config_path;
  std::vector<std::string> overrides;
  int task_id = -1;    ///< run this grid point only
  bool local = false;  ///< run every missing grid point here
  int jobs = 1;
  bool merge = false;       ///< gather complete runs into a summary
  std::string merged_path;  ///< default: <out_dir>/summary.h5
  bool list = false;        ///< print the grid and exit
  std::string self_exe;     ///< path of the eisim executable (for --local --jobs > 1)
};

/// `eisim sweep`. Returns the process exit code.
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
