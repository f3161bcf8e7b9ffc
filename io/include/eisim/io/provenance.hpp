#pragma once
// How an output was made: version, git commit, build type, seed, the fully resolved
// configuration, the command line, the time and the host. Written into every HDF5 file and
// printed at the top of every log.
#include <string>

#include "eisim/io/config.hpp"
#include "eisim/io/hdf5.hpp"

namespace eisim::io {

/// Set the provenance attributes on the root group of `f`: eisim_version, git_commit,
/// build_type, seed, precision, config (to_yaml), command, created (UTC, ISO 8601), hostname
/// and threads (compute threads, see compute_threads).
void write_provenance(H5File& f, const Config& c, const std::string& command);

/// The same for logs, as '#' comment lines ending in a newline, e.g.
///   # eisim 0.1.0 (commit 1a2b3c4d5e6f, Release) seed 1, precision float32
///   # command: eisim train --config examples/train.yaml
///   # created 2026-01-31T12:00:00Z on host1, 1 thread(s)
std::string provenance_header(const Config& c, const std::string& command);

/// The current time in UTC as ISO 8601 ("2026-01-31T12:00:00Z").
std::string utc_timestamp();

/// Threads the computation may use (OpenMP's maximum; 1 without OpenMP).
int compute_threads();

/// This machine's host name ("unknown" if it cannot be determined).
std::string host_name();

}  // namespace eisim::io
