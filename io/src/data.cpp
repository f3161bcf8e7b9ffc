// IDX reader for Fashion-MNIST (gzip via zlib) and the brightness jitter.
#include "eisim/io/data.hpp"

#include <zlib.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>

#include "eisim/models/error.hpp"

namespace eisim::io {
namespace {

constexpr std::uint32_t kImagesMagic = 0x00000803;
constexpr std::uint32_t kLabelsMagic = 0x00000801;
constexpr std::uint32_t kRows = 28, kCols = 28;

std::string hex(std::uint32_t x) {
  std::array<char, 16> buf{};
  std::snprintf(buf.data(), buf.size(), "0x%08X", x);
  return buf.data();
}

std::string missing_message(const std::string& path) {
  return "file not found: " + path +
         "; install the Debian package dataset-fashion-mnist (apt-get install "
         "dataset-fashion-mnist) or point data.dir at a directory holding the IDX files";
}

/// A gzip (or plain) file read sequentially; every read is checked and counted so that errors
/// name the byte offset in the decompressed stream.
class GzReader {
 public:
  explicit GzReader(std::string path) : path_(std::move(path)) {
    if (!std::filesystem::exists(path_)) throw data_error(path_, 0, missing_message(path_));
    file_ = gzopen(path_.c_str(), "rb");
    if (file_ == nullptr) throw data_error(path_, 0, "cannot open the file for reading");
    gzbuffer(file_, 1 << 17);
  }
  GzReader(const GzReader&) = delete;
  GzReader& operator=(const GzReader&) = delete;
  ~GzReader() {
    if (file_ != nullptr) gzclose(file_);
  }

  const std::string& path() const { return path_; }
  std::uint64_t offset() const { return offset_; }

  /// Read exactly n bytes (`what` names them in the truncation message).
  void read(void* dst, std::size_t n, const std::string& what) {
    auto* out = static_cast<unsigned char*>(dst);
    std::size_t got = 0;
    while (got < n) {
      const std::size_t chunk = std::min<std::size_t>(n - got, 1u << 30);
      const int r = gzread(file_, out + got, static_cast<unsigned>(chunk));
      if (r < 0) {
        int code = 0;
        const char* msg = gzerror(file_, &code);
        throw data_error(path_, offset_ + got,
                         "cannot decompress (corrupt gzip stream?): " + std::string(msg));
      }
      if (r == 0) break;
      got += static_cast<std::size_t>(r);
    }
    if (got < n)
      throw data_error(path_, offset_ + got,
                       "truncated file: expected " + std::to_string(n) + " bytes of " + what +
                           " at offset " + std::to_string(offset_) + ", got " +
                           std::to_string(got));
    offset_ += n;
  }

  std::uint32_t read_u32(const std::string& what) {
    std::array<unsigned char, 4> b{};
    read(b.data(), 4, what);
    return (std::uint32_t(b[0]) << 24) | (std::uint32_t(b[1]) << 16) | (std::uint32_t(b[2]) << 8) |
           std::uint32_t(b[3]);
  }

 private:
  std::string path_;
  gzFile file_ = nullptr;
  std::uint64_t offset_ = 0;
};

void check_magic(GzReader& in, std::uint32_t expected, const char* kind) {
  const std::uint32_t found = in.read_u32("header");
  if (found != expected)
    throw data_error(in.path(), 0,
                     std::string("bad magic number: expected ") + hex(expected) + " (" + kind +
                         "), found " + hex(found) + "; is this an IDX " + kind + " file?");
}

int check_limit(const std::string& path, int limit) {
  if (limit < 0) throw data_error(path, 0, "limit = " + std::to_string(limit) + " must be >= 0");
  return limit;
}

int count_to_read(std::uint32_t count, int limit) {
  if (limit > 0 && std::uint32_t(limit) < count) return limit;
  return static_cast<int>(count);
}

struct ImagesHeader {
  std::uint32_t count = 0;
};

/// Reads the header of an IDX3 image file and checks it; leaves the reader at the pixels.
ImagesHeader read_images_header(GzReader& in) {
  check_magic(in, kImagesMagic, "images");
  ImagesHeader h;
  h.count = in.read_u32("header");
  const std::uint32_t rows = in.read_u32("header");
  const std::uint32_t cols = in.read_u32("header");
  if (rows != kRows || cols != kCols)
    throw data_error(in.path(), 8,
                     "wrong image size: " + std::to_string(rows) + " x " + std::to_string(cols) +
                         ", expected 28 x 28");
  if (h.count > std::uint32_t(std::numeric_limits<int>::max() / (kRows * kCols)))
    throw data_error(in.path(), 4, "implausible image count " + std::to_string(h.count));
  return h;
}

Mat<float> read_pixels(GzReader& in, int n) {
  const std::size_t pixels = std::size_t(kRows) * kCols;
  std::vector<unsigned char> raw(pixels * std::size_t(n));
  in.read(raw.data(), raw.size(), "pixel data (" + std::to_string(n) + " images)");
  using ByteMat = Eigen::Matrix<unsigned char, Eigen::Dynamic, Eigen::Dynamic>;
  const Eigen::Map<const ByteMat> bytes(raw.data(), Eigen::Index(pixels), n);
  return bytes.cast<float>() / 255.0f;
}

std::uint32_t read_labels_header(GzReader& in) {
  check_magic(in, kLabelsMagic, "labels");
  return in.read_u32("header");
}

std::vector<std::uint8_t> read_label_bytes(GzReader& in, int n) {
  std::vector<std::uint8_t> labels(static_cast<std::size_t>(n));
  const std::uint64_t start = in.offset();
  in.read(labels.data(), labels.size(), "labels (" + std::to_string(n) + " labels)");
  for (std::size_t i = 0; i < labels.size(); ++i)
    if (labels[i] > 9)
      throw data_error(in.path(), start + i,
                       "label " + std::to_string(labels[i]) + " of item " + std::to_string(i) +
                           " is > 9 (Fashion-MNIST has 10 classes)");
  return labels;
}

/// dir/name.gz, or dir/name if only the uncompressed file exists.
std::string idx_path(const std::string& dir, const std::string& name) {
  const std::string gz = (std::filesystem::path(dir) / (name + ".gz")).string();
  const std::string plain = (std::filesystem::path(dir) / name).string();
  if (!std::filesystem::exists(gz) && std::filesystem::exists(plain)) return plain;
  return gz;
}

}  // namespace

Mat<float> read_idx_images(const std::string& gz_path, int limit) {
  check_limit(gz_path, limit);
  GzReader in(gz_path);
  const ImagesHeader h = read_images_header(in);
  return read_pixels(in, count_to_read(h.count, limit));
}

std::vector<std::uint8_t> read_idx_labels(const std::string& gz_path, int limit) {
  check_limit(gz_path, limit);
  GzReader in(gz_path);
  const std::uint32_t count = read_labels_header(in);
  return read_label_bytes(in, count_to_read(count, limit));
}

Dataset load_fashion_mnist(const std::string& dir, bool train, int limit) {
  const std::string prefix = train ? "train" : "t10k";
  const std::string images_path = idx_path(dir, prefix + "-images-idx3-ubyte");
  const std::string labels_path = idx_path(dir, prefix + "-labels-idx1-ubyte");
  check_limit(images_path, limit);
  GzReader images(images_path);
  GzReader labels(labels_path);
  const ImagesHeader h = read_images_header(images);
  const std::uint32_t n_labels = read_labels_header(labels);
  if (h.count != n_labels)
    throw data_error(images_path, 4,
                     "count mismatch: " + std::to_string(h.count) + " images, but " + labels_path +
                         " has " + std::to_string(n_labels) + " labels");
  const int n = count_to_read(h.count, limit);
  Dataset d;
  d.images = read_pixels(images, n);
  d.labels = read_label_bytes(labels, n);
  d.rows = int(kRows);
  d.cols = int(kCols);
  return d;
}

template <class S>
void apply_jitter(Eigen::Ref<Mat<S>> x, double eps, std::mt19937_64& rng) {
  if (!(eps >= 0.0 && eps <= 1.0))
    throw error("apply_jitter: eps = " + std::to_string(eps) + " must be in [0, 1]");
  if (eps == 0.0) return;
  for (Eigen::Index j = 0; j < x.cols(); ++j) {
    const double u = double(rng() >> 11) * 0x1.0p-53;  // U[0, 1)
    const S d = S((2.0 * u - 1.0) * eps);
    x.col(j) = (x.col(j).array() + d).cwiseMax(S(0)).cwiseMin(S(1)).matrix();
  }
}

template void apply_jitter<float>(Eigen::Ref<Mat<float>>, double, std::mt19937_64&);
template void apply_jitter<double>(Eigen::Ref<Mat<double>>, double, std::mt19937_64&);

}  // namespace eisim::io
