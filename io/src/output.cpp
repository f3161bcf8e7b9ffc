// The output policy: see eisim/io/output.hpp.
#include "eisim/io/output.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>

#include "eisim/models/error.hpp"

namespace eisim::io {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// Atomic, durable writes and the signal handler that removes their temporary files

namespace {

/// Temporary files that exist right now (written by write_atomically, not yet renamed), so that
/// SIGINT/SIGTERM/SIGHUP can remove them. Fixed storage: the handler may only call
/// async-signal-safe functions, so it reads these slots and calls unlink(). A slot's path is
/// written before its flag is set with release order, and the handler reads the flag first.
constexpr int kTmpSlots = 16;
constexpr std::size_t kTmpPathMax = 4096;
char g_tmp_paths[kTmpSlots][kTmpPathMax];
std::atomic<int> g_tmp_used[kTmpSlots];
std::mutex g_tmp_mutex;
static_assert(std::atomic<int>::is_always_lock_free, "the signal handler needs lock-free flags");

int register_tmp(const std::string& path) {
  if (path.size() >= kTmpPathMax) return -1;
  std::lock_guard<std::mutex> lock(g_tmp_mutex);
  for (int i = 0; i < kTmpSlots; ++i)
    if (g_tmp_used[i].load(std::memory_order_acquire) == 0) {
      std::memcpy(g_tmp_paths[i], path.c_str(), path.size() + 1);
      g_tmp_used[i].store(1, std::memory_order_release);
      return i;
    }
  return -1;
}

void unregister_tmp(int slot) {
  if (slot < 0) return;
  std::lock_guard<std::mutex> lock(g_tmp_mutex);
  g_tmp_used[slot].store(0, std::memory_order_release);
}

extern "C" void remove_tmp_and_reraise(int sig) {
  const int saved = errno;
  for (int i = 0; i < kTmpSlots; ++i)
    if (g_tmp_used[i].load(std::memory_order_acquire) != 0) ::unlink(g_tmp_paths[i]);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(sig, &dfl, nullptr);
  errno = saved;
  ::raise(sig);
}

std::string errno_text(int err) {
  return std::strerror(err);
}

/// Write all of `data` to `fd`; throws data_error naming `path` (e.g. "No space left on device").
void write_all(int fd, const std::string& path, const unsigned char* data, std::size_t n) {
  std::size_t done = 0;
  while (done < n) {
    const ssize_t w = ::write(fd, data + done, std::min<std::size_t>(n - done, 1u << 30));
    if (w < 0) {
      const int err = errno;
      if (err == EINTR) continue;
      throw data_error(path, done,
                       "cannot write the file: " + errno_text(err) + " (after " +
                           std::to_string(done) + " of " + std::to_string(n) + " bytes)");
    }
    done += std::size_t(w);
  }
}

/// fsync the directory holding `path`, so that a rename into it survives a power loss. Returns
/// the reason if it could not (the rename has happened by then: this is a warning, not an error).
std::string sync_directory(const std::string& path) {
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return "cannot open " + dir + ": " + errno_text(errno);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0 && err != EINVAL)  // some file systems cannot sync a directory
    return "cannot sync " + dir + ": " + errno_text(err);
  return {};
}

/// Test hook (documented in docs/reliability.md): EISIM_TEST_DELAY_RENAME_MS=N makes every atomic
/// write wait N ms between writing its temporary file and renaming it, so that tests can
/// interrupt a write at exactly that moment.
int rename_delay_ms() {
  static const int ms = [] {
    const char* v = std::getenv("EISIM_TEST_DELAY_RENAME_MS");
    return v ? std::max(0, std::atoi(v)) : 0;
  }();
  return ms;
}

}  // namespace

void write_bytes_atomically(const std::string& path, const std::vector<unsigned char>& image) {
  const std::string suffix = ".tmp";
  std::string tmpl = path + ".XXXXXX" + suffix;
  // The file is registered for the signal handler right after mkostemps names it; a signal in
  // that instant can leave at most an empty temporary file.
  const int fd = ::mkostemps(tmpl.data(), int(suffix.size()), O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    std::string hint;
    if (err == ENOENT || err == EACCES || err == EROFS)
      hint = " (does the directory exist and is it writable?)";
    throw data_error(path, 0,
                     "cannot create a temporary file beside it: " + errno_text(err) + hint);
  }
  const std::string& tmp = tmpl;
  const int slot = register_tmp(tmp);
  auto discard = [&] {
    ::unlink(tmp.c_str());
    unregister_tmp(slot);
  };
  try {
    write_all(fd, tmp, image.data(), image.size());
    if (::fchmod(fd, 0644) != 0 || ::fsync(fd) != 0) {
      const int err = errno;
      throw data_error(tmp, 0, "cannot sync the file: " + errno_text(err));
    }
  } catch (...) {
    ::close(fd);
    discard();
    throw;
  }
  if (::close(fd) != 0) {
    const int err = errno;
    discard();
    throw data_error(tmp, 0, "cannot close the file: " + errno_text(err));
  }
  if (const int ms = rename_delay_ms(); ms > 0) ::usleep(useconds_t(ms) * 1000);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    discard();
    throw data_error(path, 0, "cannot rename " + tmp + " to " + path + ": " + errno_text(err));
  }
  unregister_tmp(slot);
  if (const std::string why = sync_directory(path); !why.empty())
    std::fprintf(stderr, "warning: %s was written, but its directory could not be synced (%s)\n",
                 path.c_str(), why.c_str());
}

void write_text_atomically(const std::string& path, const std::string& text) {
  write_bytes_atomically(path, std::vector<unsigned char>(text.begin(), text.end()));
}

void remove_temporaries_on_signal() {
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
    struct sigaction old {};
    if (::sigaction(sig, nullptr, &old) != 0) continue;
    if (old.sa_handler == SIG_IGN) continue;  // e.g. nohup: an ignored signal stays ignored
    struct sigaction sa {};
    sa.sa_handler = remove_tmp_and_reraise;
    sigemptyset(&sa.sa_mask);
    ::sigaction(sig, &sa, nullptr);
  }
}

void check_output_path(const std::string& path, bool may_replace, const std::string& what,
                       bool create_dirs) {
  if (path.empty()) throw error(what + ": the output path is empty");
  for (const char* reserved : {".lock", ".tmp"}) {
    const std::string r = reserved;
    if (path.size() >= r.size() && path.compare(path.size() - r.size(), r.size(), r) == 0)
      throw error(what + " " + path + ": names ending in " + r +
                  " are reserved for eisim's lock and temporary files; choose another name");
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if (!S_ISREG(st.st_mode))
      throw error(what + " " + path + " exists and is " + describe_file_type(st.st_mode) +
                  ", not a regular file; eisim writes outputs only to regular files");
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

// ---------------------------------------------------------------------------------------------
// Output locks

namespace {

std::string lock_holder(int fd) {
  char buf[256] = {};
  const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  std::string s = n > 0 ? std::string(buf, std::size_t(n)) : std::string();
  while (!s.empty() && (s.back() == '\n' || s.back() == '\0')) s.pop_back();
  return s.empty() ? "" : ", held by " + s;
}

/// True if the file is empty or holds one line "pid N on HOST" (what OutputLock writes).
bool is_lock_text(int fd) {
  char buf[300] = {};
  const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return n == 0;
  const std::string s(buf, std::size_t(n));
  return s.rfind("pid ", 0) == 0 && s.find(" on ") != std::string::npos && s.back() == '\n' &&
         s.find('\n') == s.size() - 1;
}

}  // namespace

std::string lock_path(const std::string& output) {
  return output + ".lock";
}

OutputLock::OutputLock(const std::string& output, const std::string& what)
    : path_(lock_path(output)) {
  for (int attempt = 0;; ++attempt) {
    // Never follow a link, and never take over a file that is not an eisim lock: the lock file
    // is truncated, rewritten and removed, so it must be ours.
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd_ < 0) {
      const int err = errno;
      if (err == ELOOP)
        throw error(what + ": its lock file " + path_ +
                    " is a symbolic link; eisim does not write through it (remove it)");
      throw error(what + ": cannot create the lock file " + path_ + ": " + std::strerror(err));
    }
    struct stat own {};
    if (::fstat(fd_, &own) != 0 || !S_ISREG(own.st_mode) || !is_lock_text(fd_)) {
      ::close(fd_);
      fd_ = -1;
      throw error(what + ": " + path_ +
                  " exists and is not an eisim lock file; eisim keeps its lock there while it "
                  "writes the output: move that file away");
    }
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    if (::fcntl(fd_, F_OFD_SETLK, &fl) != 0) {
      const int err = errno;
      const std::string holder = lock_holder(fd_);
      ::close(fd_);
      fd_ = -1;
      if (err == EAGAIN || err == EACCES)
        throw output_busy(what + " is being written by another process (lock " + path_ + holder +
                          ")");
      throw error(what + ": cannot lock " + path_ + ": " + std::strerror(err));
    }
    // The previous holder removes the file when it is done: make sure the locked file is the one
    // at the path now, not one it removed after we opened it.
    struct stat a {
    }, b{};
    if (::fstat(fd_, &a) == 0 && ::stat(path_.c_str(), &b) == 0 && a.st_dev == b.st_dev &&
        a.st_ino == b.st_ino)
      break;
    ::close(fd_);
    fd_ = -1;
    if (attempt == 100) throw error(what + ": cannot lock " + path_);
  }
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  const std::string who = "pid " + std::to_string(::getpid()) + " on " + host + "\n";
  if (::ftruncate(fd_, 0) == 0) (void)!::pwrite(fd_, who.data(), who.size(), 0);
}

OutputLock::~OutputLock() {
  // Remove the file while still holding the lock (see the constructor), then release it.
  ::unlink(path_.c_str());
  ::close(fd_);
}

bool output_locked(const std::string& output, std::string* holder) {
  const std::string path = lock_path(output);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return false;
    throw error("cannot open the lock file " + path + ": " + std::strerror(err));
  }
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  const int rc = ::fcntl(fd, F_OFD_GETLK, &fl);
  const int err = errno;
  const bool locked = rc == 0 && fl.l_type != F_UNLCK;
  if (locked && holder) *holder = lock_holder(fd);
  ::close(fd);
  if (rc != 0) throw error("cannot test the lock file " + path + ": " + std::strerror(err));
  return locked;
}

std::string resolve_output(const std::string& path) {
  // Follow the chain of links by hand: weakly_canonical stops at a link whose target does not
  // exist yet, and the output is to be created at that target.
  fs::path p = path;
  for (int hops = 0;; ++hops) {
    std::error_code ec;
    if (!fs::is_symlink(fs::symlink_status(p, ec))) break;
    if (hops == 40) throw error("cannot follow the symbolic link " + path + ": too many levels");
    const fs::path target = fs::read_symlink(p, ec);
    if (ec) throw error("cannot follow the symbolic link " + p.string() + ": " + ec.message());
    p = target.is_absolute() ? target : p.parent_path() / target;
  }
  return p == fs::path(path) ? path : p.lexically_normal().string();
}

const char* describe_file_type(unsigned mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "not a regular file";
}

bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  return fs::equivalent(a, b, ec) && !ec;
}

}  // namespace eisim::io
