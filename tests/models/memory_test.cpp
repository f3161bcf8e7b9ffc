#include "eisim/models/memory.hpp"

#include <doctest/doctest.h>

#include <cstdlib>

#if defined(__GLIBC__)
#include <malloc.h>
#if __GLIBC_PREREQ(2, 33)
#define EISIM_HAVE_MALLINFO2 1
#endif
#endif

TEST_CASE("keep_freed_memory serves batch-sized blocks from the heap, not from fresh mappings") {
#if defined(EISIM_HAVE_MALLINFO2)
  // glibc's default serves blocks above 128 KB with mmap (fresh, page-faulting memory each
  // time); it raises that threshold by itself only after freeing a larger mapped block, so 16 MB
  // (below keep_freed_memory's 32 MB) is mapped unless keep_freed_memory took effect.
  eisim::models::keep_freed_memory();
  const auto mapped_before = mallinfo2().hblks;
  void* p = std::malloc(16 << 20);
  REQUIRE(p != nullptr);
  CHECK(mallinfo2().hblks == mapped_before);
  std::free(p);
#else
  MESSAGE("not glibc >= 2.33: keep_freed_memory is not checked here");
#endif
}
