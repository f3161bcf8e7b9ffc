#pragma once
// How an output was made: version, git commit, build type, seed, the fully resolved
// configuration, the command line, the time and the host. Written into every HDF5 file and
// printed at the top of every log.
#include <string>

#include "eisim/io/config.hpp"
#include "eisim/io/hdf5.hpp"

namespace eisim::io {

/// Set the provenance attributes on the root group of `f`: eisim_version, git_commit,
/// build_type, seed, precision, config (to_yaml), command, created (UTC, ISO 8601), hostname,
/// threads (compute threads, see compute_threads), and where the numbers were made: cpu_model,
/// isa (compiled_isa), eigen_simd, compiler, eigen_version, native (1 if built with
/// -march=native, EISIM_NATIVE=ON) and compile_flags.
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

/// The CPU's model name from /proc/cpuinfo ("unknown" if not found).
std::string cpu_model();

/// The instruction-set extensions eisim was compiled for, from the compiler's predefined macros
/// (__AVX2__, __AVX512F__, ...), e.g. "x86-64 sse2 sse3 ssse3 sse4.1 sse4.2 avx avx2 fma".
std::string compiled_isa();

/// The compiler and its version, e.g. "GCC 12.2.0".
std::string compiler();

/// Eigen's version, e.g. "3.4.0".
std::string eigen_version();

/// True if eisim was built with -march=native (CMake option EISIM_NATIVE, on by default).
bool native_build();

/// The C++ compiler flags of the build type (CMAKE_CXX_FLAGS and CMAKE_CXX_FLAGS_<TYPE>, then
/// -march=native if native_build()).
std::string compile_flags();

}  // namespace eisim::io
