#include "eisim/models/memory.hpp"

#include <doctest/doctest.h>

#include <cstdlib>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

TEST_CASE("keep_freed_memory serves batch-sized blocks from the heap, not from fresh mappings") {
#if defined(__GLIBC__)
  // glibc's default serves blocks above 128 KB with mmap (fresh, page-faulting memory each time).
  eisim::models::keep_freed_memory();
  const auto mapped_before = mallinfo2().hblks;
  void* p = std::malloc(1 << 20);  // 1 MB, e.g. a 283 x 1024 float matrix
  REQUIRE(p != nullptr);
  CHECK(mallinfo2().hblks == mapped_before);
  std::free(p);
#else
  MESSAGE("not glibc: keep_freed_memory does nothing");
#endif
}
