#include "eisim/models/memory.hpp"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace eisim::models {

void keep_freed_memory() {
#if defined(__GLIBC__)
  // Setting either threshold also turns off glibc's dynamic adjustment of both.
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
#endif
}

}  // namespace eisim::models
