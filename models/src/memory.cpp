#include "eisim/models/memory.hpp"

#include <cstdlib>  // defines __GLIBC__ on glibc systems

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace eisim::models {

void keep_freed_memory() {
#if defined(__GLIBC__)
  // Blocks below 32 MB (glibc's largest allowed mmap threshold; a larger value is rejected)
  // come from the heap, and up to 512 MB of free heap top is kept. Setting either threshold
  // also turns off glibc's dynamic adjustment of both.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
#endif
}

}  // namespace eisim::models
