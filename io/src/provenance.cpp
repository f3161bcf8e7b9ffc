// Provenance attributes and log headers.
#include "eisim/io/provenance.hpp"

#include <unistd.h>

#include <Eigen/Core>
#include <array>
#include <ctime>
#include <fstream>

#include "eisim/build_info.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace eisim::io {

std::string utc_timestamp() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  std::array<char, 32> buf{};
  std::strftime(buf.data(), buf.size(), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return buf.data();
}

int compute_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

std::string host_name() {
  std::array<char, 256> buf{};
  if (gethostname(buf.data(), buf.size() - 1) != 0 || buf[0] == '\0') return "unknown";
  return buf.data();
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  // x86: "model name"; Arm: "Model" (the board) or "CPU part" as the last resort.
  std::string fallback;
  while (std::getline(in, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon), value = line.substr(colon + 1);
    while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.pop_back();
    const auto b = value.find_first_not_of(" \t");
    value = b == std::string::npos ? "" : value.substr(b);
    if (value.empty()) continue;
    if (key == "model name") return value;
    if ((key == "Model" || key == "CPU part") && fallback.empty()) fallback = value;
  }
  return fallback.empty() ? "unknown" : fallback;
}

std::string compiled_isa() {
  std::string s;
  auto add = [&](const char* name) { s += (s.empty() ? "" : " ") + std::string(name); };
#if defined(__x86_64__)
  add("x86-64");
#elif defined(__aarch64__)
  add("aarch64");
#endif
#ifdef __SSE2__
  add("sse2");
#endif
#ifdef __SSE3__
  add("sse3");
#endif
#ifdef __SSSE3__
  add("ssse3");
#endif
#ifdef __SSE4_1__
  add("sse4.1");
#endif
#ifdef __SSE4_2__
  add("sse4.2");
#endif
#ifdef __AVX__
  add("avx");
#endif
#ifdef __AVX2__
  add("avx2");
#endif
#ifdef __FMA__
  add("fma");
#endif
#ifdef __F16C__
  add("f16c");
#endif
#ifdef __BMI2__
  add("bmi2");
#endif
#ifdef __AVX512F__
  add("avx512f");
#endif
#ifdef __AVX512DQ__
  add("avx512dq");
#endif
#ifdef __AVX512BW__
  add("avx512bw");
#endif
#ifdef __AVX512VL__
  add("avx512vl");
#endif
#ifdef __ARM_NEON
  add("neon");
#endif
  return s.empty() ? "unknown" : s;
}

std::string compiler() {
#if defined(__clang__)
  return std::string("Clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("GCC ") + __VERSION__;
#else
  return "unknown";
#endif
}

std::string eigen_version() {
  return std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) + "." +
         std::to_string(EIGEN_MINOR_VERSION);
}

bool native_build() {
#if defined(EISIM_NATIVE_BUILD) && EISIM_NATIVE_BUILD
  return true;
#else
  return false;
#endif
}

std::string compile_flags() {
#ifdef EISIM_CXX_FLAGS
  std::string s = EISIM_CXX_FLAGS;
#else
  std::string s;
#endif
  const auto b = s.find_first_not_of(' ');
  s = b == std::string::npos ? "" : s.substr(b);
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

void write_provenance(H5File& f, const Config& c, const std::string& command) {
  f.set_attr("/", "eisim_version", std::string(build_info::version));
  f.set_attr("/", "git_commit", std::string(build_info::git_commit));
  f.set_attr("/", "build_type", std::string(build_info::build_type));
  f.set_attr("/", "seed", c.seed);
  f.set_attr("/", "precision", std::string(to_string(c.precision)));
  f.set_attr("/", "config", to_yaml(c));
  f.set_attr("/", "command", command);
  f.set_attr("/", "created", utc_timestamp());
  f.set_attr("/", "hostname", host_name());
  f.set_attr("/", "threads", std::int64_t(compute_threads()));
  f.set_attr("/", "cpu_model", cpu_model());
  f.set_attr("/", "isa", compiled_isa());
  f.set_attr("/", "eigen_simd", std::string(Eigen::SimdInstructionSetsInUse()));
  f.set_attr("/", "compiler", compiler());
  f.set_attr("/", "eigen_version", eigen_version());
  f.set_attr("/", "native", std::int64_t(native_build() ? 1 : 0));
  f.set_attr("/", "compile_flags", compile_flags());
}

std::string provenance_header(const Config& c, const std::string& command) {
  std::string s;
  s += std::string("# eisim ") + build_info::version + " (commit " + build_info::git_commit + ", " +
       build_info::build_type + ") seed " + std::to_string(c.seed) + ", precision " +
       to_string(c.precision) + "\n";
  s += "# command: " + command + "\n";
  s += "# created " + utc_timestamp() + " on " + host_name() + ", " +
       std::to_string(compute_threads()) + " thread(s)\n";
  s += "# cpu: " + cpu_model() + "; built for " + compiled_isa() +
       (native_build() ? " (-march=native)" : " (portable, EISIM_NATIVE=OFF)") + " with " +
       compiler() + ", Eigen " + eigen_version() + "\n";
  return s;
}

}  // namespace eisim::io
