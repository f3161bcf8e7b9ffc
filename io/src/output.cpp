// The output policy: see eisim/io/output.hpp.
#include "eisim/io/output.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "eisim/models/error.hpp"

namespace eisim::io {

namespace fs = std::filesystem;

void check_output_path(const std::string& path, bool may_replace, const std::string& what,
                       bool create_dirs) {
  if (path.empty()) throw error(what + ": the output path is empty");
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if (!S_ISREG(st.st_mode))
      throw error(what + " " + path + " exists and is not a regular file (" +
                  (S_ISDIR(st.st_mode)    ? "a directory"
                   : S_ISCHR(st.st_mode)  ? "a character device"
                   : S_ISBLK(st.st_mode)  ? "a block device"
                   : S_ISFIFO(st.st_mode) ? "a FIFO"
                   : S_ISSOCK(st.st_mode) ? "a socket"
                                          : "not a regular file") +
                  "); eisim writes outputs only to regular files");
    if (!may_replace)
      throw error(what + " " + path +
                  " already exists; eisim does not replace an existing output unless asked "
                  "(pass --overwrite to replace it, or choose another path)");
  } else if (errno != ENOENT) {
    throw error(what + " " + path + ": cannot inspect the path: " + std::strerror(errno));
  }
  fs::path dir = fs::path(path).parent_path();
  if (dir.empty()) dir = ".";
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    if (!create_dirs)
      throw error(what + " " + path + ": the directory " + dir.string() +
                  " does not exist (create it first)");
    fs::create_directories(dir, ec);
    if (ec)
      throw error(what + " " + path + ": cannot create the directory " + dir.string() + ": " +
                  ec.message());
  }
  if (!fs::is_directory(dir, ec))
    throw error(what + " " + path + ": " + dir.string() + " is not a directory");
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    throw error(what + " " + path + ": the directory " + dir.string() +
                " is not writable: " + std::strerror(errno));
}

std::string resolve_output(const std::string& path) {
  std::error_code ec;
  if (!fs::is_symlink(fs::symlink_status(path, ec))) return path;
  const fs::path target = fs::weakly_canonical(path, ec);
  if (ec) throw error("cannot follow the symbolic link " + path + ": " + ec.message());
  return target.string();
}

bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  return fs::equivalent(a, b, ec) && !ec;
}

}  // namespace eisim::io
