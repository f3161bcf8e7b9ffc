// Fuzz target: the run-file (checkpoint) reader. The input is the content of an HDF5 file as
// written by `eisim train`; the file is opened and checked the way `train --resume` does
// (stored config, weights, optimizer state, checkpoint, history). Expected outcome of a bad
// file: eisim::error (data_error, config_error); anything else is a finding.
// libhdf5 itself is not instrumented: a crash inside it shows as a SEGV in libhdf5's frames.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>

#include "eisim/experiments/commands.hpp"
#include "eisim/io/config.hpp"
#include "eisim/io/hdf5.hpp"
#include "eisim/models/network.hpp"
#include "fuzz_common.hpp"

namespace {

using eisim::io::H5File;

/// Parameters of the network a config describes (to skip configs whose network alone would
/// exceed the fuzzer's memory limit: that is the user's request, not a reader bug).
double parameter_count(const eisim::models::NetworkSpec& spec) {
  double n = 0;
  for (const auto& l : spec.layers)
    n += double(l.n_E) * (double(l.n_in) + l.circuit.n_I + l.circuit.n_D + 4) +
         double(l.n_I_plain) * l.n_in;
  return n;
}

template <class S>
void load_checkpoint(const H5File& f, const eisim::models::NetworkSpec& spec, std::uint64_t seed) {
  auto net = eisim::models::initialise<S>(spec, seed);
  eisim::experiments::load_network(f, net);
  if (f.exists("optimizer")) eisim::experiments::load_network(f, net, "optimizer");
}

void walk(const H5File& f, const std::string& group, int depth) {
  if (depth > 8) return;
  for (const auto& name : f.list(group)) {
    const std::string path = group == "/" ? "/" + name : group + "/" + name;
    try {
      (void)f.read_matrix(path);
    } catch (const eisim::error&) {
      try {
        walk(f, path, depth + 1);
      } catch (const eisim::error&) {
      }
    }
  }
}

void check_run_file(const std::string& path) {
  const H5File f = H5File::open_read(path);
  const eisim::io::Config config =
      eisim::io::parse_config(f.attr_string("/", "config"), {}, path + " (stored config)");
  const auto spec = eisim::io::network_spec(config);
  if (parameter_count(spec) > 2e6) return;
  if (config.precision == eisim::io::Precision::float64)
    load_checkpoint<double>(f, spec, config.seed);
  else
    load_checkpoint<float>(f, spec, config.seed);
  if (f.exists("checkpoint/epoch") && f.read_vector("checkpoint/epoch").empty())
    throw eisim::data_error(path, 0, "empty /checkpoint/epoch");
  if (f.exists("checkpoint/rng")) (void)f.read_string("checkpoint/rng");
  for (const char* d : {"train/epoch", "train/loss", "train/accuracy", "train/eval_eps"})
    if (f.exists(d)) (void)f.read_vector(d);
  if (f.exists("train/test_accuracy")) (void)f.read_matrix("train/test_accuracy");
  (void)f.attr_string("/", "status");
  walk(f, "/", 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto path = eisim::fuzz::scratch_dir() / "run.h5";
  eisim::fuzz::write_file(path, data, size);
  eisim::fuzz::expect_eisim_errors_only([&] { check_run_file(path.string()); });
  return 0;
}
