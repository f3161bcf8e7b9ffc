// The checkout's source directory (bench/source_dir.hpp), from this file's compile definition.
#include "source_dir.hpp"

namespace eisim::bench {

const char* source_dir() {
  return EISIM_SOURCE_DIR;
}

}  // namespace eisim::bench
