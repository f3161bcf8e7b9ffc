#pragma once
// A running CRC-32 (zlib's) over typed values, for checkpoint integrity: every dataset a resume
// restores is added, in a fixed order, as the values it restores (so the stored and the restored
// state hash alike). CRC-32 detects every single-bit error and every burst of up to 32 bits; it
// guards against corruption, not against deliberate tampering.
#include <cstdint>
#include <string>
#include <vector>

#include "eisim/models/types.hpp"

namespace eisim::io {

class Checksum {
 public:
  void add_bytes(const void* data, std::size_t n);
  void add(const std::string& s) {
    add_size(s.size());
    add_bytes(s.data(), s.size());
  }
  template <class T>
  void add(const std::vector<T>& v) {
    add_size(v.size());
    add_bytes(v.data(), v.size() * sizeof(T));
  }
  template <class S>
  void add(const Mat<S>& m) {
    add_size(std::size_t(m.rows()));
    add_size(std::size_t(m.cols()));
    add_bytes(m.data(), std::size_t(m.size()) * sizeof(S));
  }
  std::uint32_t value() const { return crc_; }

 private:
  void add_size(std::size_t n) {
    const std::uint64_t x = n;
    add_bytes(&x, sizeof x);
  }
  std::uint32_t crc_ = 0;
};

}  // namespace eisim::io
