#pragma once
// Shared by the fuzz targets: a per-process scratch directory (in /dev/shm when it exists, so
// that files cost no disk I/O), removed at exit, and the exception policy.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <typeinfo>

#include "eisim/models/error.hpp"

namespace eisim::fuzz {

inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    std::filesystem::path base = "/dev/shm";
    if (!std::filesystem::is_directory(base)) base = std::filesystem::temp_directory_path();
    auto d = base / ("eisim-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(scratch_dir(), ec);
    });
    return d;
  }();
  return dir;
}

inline void write_file(const std::filesystem::path& path, const void* data, std::size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), std::streamsize(size));
  if (!out) std::abort();
}

[[noreturn]] inline void finding(const std::exception& e) {
  std::fprintf(stderr, "FINDING: exception %s escaped: %s\n", typeid(e).name(), e.what());
  std::abort();
}

/// Runs f: eisim::error is the expected outcome of a malformed input; anything else that
/// escapes (eisim::internal_error, std::bad_alloc, yaml-cpp's exceptions, ...) is a finding.
template <class F>
void expect_eisim_errors_only(F&& f) {
  try {
    f();
  } catch (const eisim::error&) {
  } catch (const std::exception& e) {
    finding(e);
  } catch (...) {
    std::fprintf(stderr, "FINDING: a non-std exception escaped\n");
    std::abort();
  }
}

}  // namespace eisim::fuzz
