#pragma once
// The output policy shared by every command (docs/reliability.md):
// - an output is a regular file (never a device, FIFO or directory);
// - nothing that exists is replaced unless the caller says so (--overwrite, --resume, or a
//   documented regeneration such as a sweep summary);
// - everything about the path that can be known before the work starts is checked before it.
#include <string>

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

/// True if `a` and `b` name the same existing file (through links, relative paths, ...).
bool same_file(const std::string& a, const std::string& b);

}  // namespace eisim::io
