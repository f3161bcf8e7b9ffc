// Fuzz target: the YAML config reader and `--set` overrides, io::parse_config(yaml, overrides).
// Input: the YAML text, then up to 8 override strings ("path.to.key=value"), separated by NUL
// bytes. Expected outcome of a bad input: eisim::error (config_error); anything else is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "eisim/io/config.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> parts;
  std::size_t begin = 0;
  while (parts.size() < 9) {
    const std::size_t end = input.find('\0', begin);
    if (end == std::string_view::npos) {
      parts.emplace_back(input.substr(begin));
      break;
    }
    parts.emplace_back(input.substr(begin, end - begin));
    begin = end + 1;
  }
  const std::string yaml = parts.front();
  const std::vector<std::string> overrides(parts.begin() + 1, parts.end());
  eisim::io::Config c;
  try {
    c = eisim::io::parse_config(yaml, overrides, "<fuzz>");
  } catch (const eisim::error&) {
    return 0;  // the expected outcome of a bad input
  } catch (const std::exception& e) {
    eisim::fuzz::finding(e);
  }
  // A config that was accepted must round-trip: its resolved YAML parses, without error, to
  // the same config (run files store it and resume compares it).
  const std::string resolved = eisim::io::to_yaml(c);
  eisim::io::Config again;
  try {
    again = eisim::io::parse_config(resolved, {}, "<resolved>");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FINDING: the resolved config does not parse: %s\n%s\n", e.what(),
                 resolved.c_str());
    std::abort();
  }
  const auto diff = eisim::io::config_differences(c, again);
  if (!diff.empty()) {
    std::fprintf(stderr, "FINDING: to_yaml does not round-trip (%s):\n%s\n", diff.front().c_str(),
                 resolved.c_str());
    std::abort();
  }
  return 0;
}
