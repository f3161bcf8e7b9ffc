#include "eisim/io/checksum.hpp"

#include <zlib.h>

#include <algorithm>

namespace eisim::io {

void Checksum::add_bytes(const void* data, std::size_t n) {
  const auto* p = static_cast<const Bytef*>(data);
  while (n > 0) {
    const auto chunk = static_cast<uInt>(std::min<std::size_t>(n, 1u << 30));
    crc_ = static_cast<std::uint32_t>(crc32(crc_, p, chunk));
    p += chunk;
    n -= chunk;
  }
}

}  // namespace eisim::io
