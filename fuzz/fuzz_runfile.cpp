// Fuzz target: the run-file (checkpoint) reader, experiments::verify_run_file. The input is the
// content of an HDF5 file as written by `eisim train`; verify_run_file opens it, parses its
// stored config and loads and verifies its checkpoint as `train --resume` does. Expected outcome
// of a bad file: eisim::error (data_error, config_error); anything else is a finding.
// libhdf5 itself is not instrumented: a crash inside it shows as a SEGV in libhdf5's frames.
#include <cstddef>
#include <cstdint>

#include "eisim/experiments/commands.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto path = eisim::fuzz::scratch_dir() / "run.h5";
  eisim::fuzz::write_file(path, data, size);
  eisim::fuzz::expect_eisim_errors_only(
      [&] { eisim::experiments::verify_run_file(path.string()); });
  return 0;
}
