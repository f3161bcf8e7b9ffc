// Fuzz target: the IDX reader (io::read_idx_images, io::read_idx_labels,
// io::load_fashion_mnist), on plain and gzip-compressed files.
// Input: byte 0 selects the call and the compression, byte 1 the limit (0 = none), bytes 2-3
// where the image file ends and the label file begins (load_fashion_mnist); the rest is the
// file content. Expected outcome of a bad file: eisim::error (data_error); anything else,
// including an allocation the file's size does not justify, is a finding.
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "eisim/io/data.hpp"
#include "fuzz_common.hpp"

namespace {

void write_gz(const std::filesystem::path& path, const std::uint8_t* data, std::size_t size) {
  gzFile f = gzopen(path.c_str(), "wb1");
  if (f == nullptr) std::abort();
  if (size > 0 && gzwrite(f, data, unsigned(size)) != int(size)) std::abort();
  if (gzclose(f) != Z_OK) std::abort();
}

void put(const std::filesystem::path& path, bool gz, const std::uint8_t* data, std::size_t size) {
  std::error_code ec;
  std::filesystem::remove(path, ec);
  if (gz)
    write_gz(path, data, size);
  else
    eisim::fuzz::write_file(path, data, size);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 4) return 0;
  const int mode = data[0] % 3;
  const bool gz = (data[0] & 0x4) != 0;
  const bool train = (data[0] & 0x8) != 0;
  const int limit = data[1];
  const std::size_t split = (std::size_t(data[2]) << 8) | data[3];
  data += 4;
  size -= 4;
  const auto& dir = eisim::fuzz::scratch_dir();
  const std::string ext = gz ? ".gz" : "";
  eisim::fuzz::expect_eisim_errors_only([&] {
    if (mode == 0) {
      const auto path = dir / ("images" + ext);
      put(path, gz, data, size);
      const auto x = eisim::io::read_idx_images(path.string(), limit);
      if (x.rows() != 784 || x.cols() < 1 || (limit > 0 && x.cols() > limit)) std::abort();
    } else if (mode == 1) {
      const auto path = dir / ("labels" + ext);
      put(path, gz, data, size);
      const auto y = eisim::io::read_idx_labels(path.string(), limit);
      if (y.empty() || (limit > 0 && int(y.size()) > limit)) std::abort();
      for (auto l : y)
        if (l > 9) std::abort();
    } else {
      const std::size_t n_images = size == 0 ? 0 : split % (size + 1);
      const std::string prefix = train ? "train" : "t10k";
      // Both names of the other kind are removed, so that idx_path's choice is exercised.
      std::error_code ec;
      for (const char* suffix : {"", ".gz"}) {
        std::filesystem::remove(dir / (prefix + "-images-idx3-ubyte" + suffix), ec);
        std::filesystem::remove(dir / (prefix + "-labels-idx1-ubyte" + suffix), ec);
      }
      put(dir / (prefix + "-images-idx3-ubyte" + ext), gz, data, n_images);
      put(dir / (prefix + "-labels-idx1-ubyte" + ext), gz, data + n_images, size - n_images);
      const auto d = eisim::io::load_fashion_mnist(dir.string(), train, limit);
      if (d.images.cols() != d.size() || d.size() < 1) std::abort();
    }
  });
  return 0;
}
