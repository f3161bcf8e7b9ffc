#pragma once
// Shared helpers for eisim's tests.
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "eisim/models/types.hpp"

namespace eisim::test {

/// Seed for randomised tests: EISIM_TEST_SEED or a fixed default, printed by the runner.
inline std::uint64_t seed() {
  if (const char* s = std::getenv("EISIM_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  return 20261129ULL;
}

/// This build's source and build directories (tests/support/paths.cpp: defined in that one
/// file, so that every other test file compiles to the same object in any checkout and ccache
/// reuses it; docs/dev.md, "Compiler cache").
const char* source_dir();
const char* binary_dir();

/// Path of a file in the source tree.
inline std::string source_path(const std::string& rel) {
  return std::string(source_dir()) + "/" + rel;
}

/// A fresh scratch directory under the build tree, removed and recreated.
inline std::filesystem::path scratch_dir(const std::string& name) {
  auto p = std::filesystem::path(binary_dir()) / "test_scratch" / name;
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}

/// Writes `text` to `path` (replacing it).
inline void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path, std::ios::trunc) << text;
}

/// Uniform random matrix in [lo, hi].
template <class S>
Mat<S> random_matrix(int rows, int cols, double lo, double hi, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(lo, hi);
  Mat<S> m(rows, cols);
  for (int j = 0; j < cols; ++j)
    for (int i = 0; i < rows; ++i) m(i, j) = S(u(rng));
  return m;
}

/// max |a - b| / max(|b|, floor)
template <class A, class B>
double max_rel_error(const A& a, const B& b, double floor = 1e-300) {
  const double scale = std::max(b.cwiseAbs().maxCoeff(), floor);
  return (a - b).cwiseAbs().maxCoeff() / scale;
}

}  // namespace eisim::test
