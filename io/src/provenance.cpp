// Provenance attributes and log headers.
#include "eisim/io/provenance.hpp"

#include <unistd.h>

#include <array>
#include <ctime>

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
}

std::string provenance_header(const Config& c, const std::string& command) {
  std::string s;
  s += std::string("# eisim ") + build_info::version + " (commit " + build_info::git_commit + ", " +
       build_info::build_type + ") seed " + std::to_string(c.seed) + ", precision " +
       to_string(c.precision) + "\n";
  s += "# command: " + command + "\n";
  s += "# created " + utc_timestamp() + " on " + host_name() + ", " +
       std::to_string(compute_threads()) + " thread(s)\n";
  return s;
}

}  // namespace eisim::io
