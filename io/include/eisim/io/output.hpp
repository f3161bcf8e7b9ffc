#pragma once
// The output policy shared by every command (docs/reliability.md):
// - an output is a regular file (never a device, FIFO or directory);
// - nothing that exists is replaced unless the caller says so (--overwrite, --resume, or a
//   documented regeneration such as a sweep summary);
// - everything about the path that can be known before the work starts is checked before it.
#include <string>
#include <vector>

#include "eisim/models/error.hpp"

namespace eisim::io {

/// Throws eisim::error unless `path` can receive an output file: it must not be an existing
/// non-regular file, its directory must exist (or be creatable when `create_dirs`) and be
/// writable, and if the file exists `may_replace` must be true. `what` names the option in
/// messages (e.g. "--out").
void check_output_path(const std::string& path, bool may_replace, const std::string& what,
                       bool create_dirs = false);

/// The path an output is written to: a symbolic link is followed to its final target (writing
/// replaces a file by rename, which would otherwise replace the link and leave the target stale);
/// any other path is returned as is.
std::string resolve_output(const std::string& path);

/// What a file of this st_mode is, for messages: "a directory", "a FIFO (named pipe)", ...
const char* describe_file_type(unsigned mode);

/// True if `a` and `b` name the same existing file (through links, relative paths, ...).
bool same_file(const std::string& a, const std::string& b);

/// Write `bytes` to `path` atomically and durably: to a new temporary file beside it
/// (path.XXXXXX.tmp, made by mkostemps, so no two writers share one), fsynced, renamed over
/// `path`, then the directory is fsynced. Until the rename any existing `path` is untouched; on
/// failure (a full disk, say) nothing is left behind and data_error names the file and the
/// system's reason. write_atomically (hdf5.hpp) uses it for every HDF5 output.
void write_bytes_atomically(const std::string& path, const std::vector<unsigned char>& bytes);
/// The same for a text file (the CSV beside a sweep summary).
void write_text_atomically(const std::string& path, const std::string& text);

/// Install SIGINT/SIGTERM/SIGHUP handlers that remove the temporary files of atomic writes in
/// progress, then end the process with the signal as before. A signal that is ignored (nohup)
/// stays ignored. Called once by the CLI.
void remove_temporaries_on_signal();

/// Another process holds the lock of an output (OutputLock).
class output_busy : public error {
 public:
  using error::error;
};

/// An exclusive lock on an output for as long as a command writes it: an open-file-description
/// lock (F_OFD_SETLK) on `output + ".lock"`, which records "pid N on host". It conflicts with any
/// other holder, in this process or another; the kernel releases it when its holder exits or
/// crashes, and it can be tested without being taken (output_locked). The lock file is removed
/// when the lock is released normally; one left by a killed process is harmless and reused.
class OutputLock {
 public:
  /// Throws output_busy ("<what> is being written by another process (lock ..., held by ...)")
  /// or error if the lock file cannot be created.
  OutputLock(const std::string& output, const std::string& what);
  ~OutputLock();
  OutputLock(const OutputLock&) = delete;
  OutputLock& operator=(const OutputLock&) = delete;

 private:
  std::string path_;
  int fd_ = -1;
};

/// The lock file of an output.
std::string lock_path(const std::string& output);

/// True if a process holds the lock of `output`; then `holder` (if given) receives
/// ", held by pid N on host".
bool output_locked(const std::string& output, std::string* holder = nullptr);

}  // namespace eisim::io
