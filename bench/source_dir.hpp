#pragma once
// The checkout's source directory, for the benchmarks' default configuration paths. A compile
// definition of bench/source_dir.cpp alone (bench/CMakeLists.txt), so that the benchmark files
// compile to the same objects in any checkout and ccache reuses them (docs/dev.md).
#include <string>

namespace eisim::bench {

const char* source_dir();

/// experiments/compare_rules.yaml of this checkout: the benchmarks' default configuration.
inline std::string compare_rules_yaml() {
  return std::string(source_dir()) + "/experiments/compare_rules.yaml";
}

}  // namespace eisim::bench
