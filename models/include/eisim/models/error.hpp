#pragma once
// One exception hierarchy for eisim. User-facing problems derive from eisim::error and carry
// structured fields; eisim::internal_error marks a bug in eisim itself.
#include <cstdint>
#include <stdexcept>
#include <string>

namespace eisim {

/// Base of every error caused by user input, data or numerics.
class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A configuration key is unknown, missing, mistyped or out of range.
class config_error : public error {
 public:
  config_error(std::string key_path, const std::string& what)
      : error(key_path.empty() ? what : key_path + ": " + what), key_path_(std::move(key_path)) {}
  const std::string& key_path() const noexcept { return key_path_; }

 private:
  std::string key_path_;
};

/// A data file is missing, truncated or malformed.
class data_error : public error {
 public:
  data_error(std::string file, std::uint64_t offset, const std::string& what)
      : error(file + ": " + what), file_(std::move(file)), offset_(offset) {}
  const std::string& file() const noexcept { return file_; }
  std::uint64_t offset() const noexcept { return offset_; }

 private:
  std::string file_;
  std::uint64_t offset_;
};

/// A solver failed to converge, or a value became non-finite.
class numerical_error : public error {
 public:
  numerical_error(std::string where, const std::string& what)
      : error(where + ": " + what), where_(std::move(where)) {}
  const std::string& where() const noexcept { return where_; }

 private:
  std::string where_;
};

/// A run that finished its work but failed its checks (it diverged or learned nothing). Its
/// output file is kept, marked status = "failed" with the reason in the "failure" attribute.
class run_failed : public error {
 public:
  using error::error;
};

/// A broken invariant inside eisim (a bug, not a user mistake).
class internal_error : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

}  // namespace eisim
