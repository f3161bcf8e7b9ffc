// The checkout's source and build directories, for tests/support/test_support.hpp. They are
// compile definitions of this file only (tests/CMakeLists.txt).
#include "test_support.hpp"

namespace eisim::test {

const char* source_dir() {
  return EISIM_SOURCE_DIR;
}

const char* binary_dir() {
  return EISIM_BINARY_DIR;
}

}  // namespace eisim::test
