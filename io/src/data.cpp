// IDX reader for Fashion-MNIST (gzip via zlib) and the brightness jitter.
#include "eisim/io/data.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>

#include "eisim/io/output.hpp"
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

[[noreturn]] void throw_not_regular(const std::string& path, mode_t mode) {
  throw data_error(path, 0,
                   std::string("is ") + describe_file_type(mode) +
                       ", not a regular file; data.dir must hold the IDX files themselves");
}

/// A gzip (or plain) file read sequentially; every read is checked and counted so that errors
/// name the byte offset in the decompressed stream. Only regular files are read: a FIFO would
/// block forever in open() (issue 9, defect 10), a device could be endless.
class GzReader {
 public:
  explicit GzReader(std::string path) : path_(std::move(path)) {
    struct stat st {};
    if (::stat(path_.c_str(), &st) != 0) {
      if (errno == ENOENT || errno == ENOTDIR) throw data_error(path_, 0, missing_message(path_));
      throw data_error(path_, 0, std::string("cannot access the file: ") + std::strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) throw_not_regular(path_, st.st_mode);
    // Non-blocking open, then fstat: the path may have been replaced by a FIFO since stat().
    const int fd = ::open(path_.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
      throw data_error(path_, 0,
                       std::string("cannot open the file for reading: ") + std::strerror(errno));
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      throw_not_regular(path_, st.st_mode);
    }
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    file_ = gzdopen(fd, "rb");
    if (file_ == nullptr) {
      ::close(fd);
      throw data_error(path_, 0, "cannot open the file for reading (zlib)");
    }
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

  /// Read exactly n bytes into a new buffer that grows as the data arrives, so that a header
  /// claiming more data than the file holds costs only what the file holds, not n bytes.
  std::vector<unsigned char> read_bytes(std::size_t n, const std::string& what) {
    constexpr std::size_t kChunk = std::size_t(1) << 22;
    std::vector<unsigned char> out;
    out.reserve(std::min(n, kChunk));
    const std::uint64_t start = offset_;
    while (out.size() < n) {
      const std::size_t old_size = out.size();
      const std::size_t chunk = std::min(n - old_size, kChunk);
      out.resize(old_size + chunk);
      const int r = gzread(file_, out.data() + old_size, static_cast<unsigned>(chunk));
      if (r < 0) {
        int code = 0;
        const char* msg = gzerror(file_, &code);
        throw data_error(path_, start + old_size,
                         "cannot decompress (corrupt gzip stream?): " + std::string(msg));
      }
      out.resize(old_size + static_cast<std::size_t>(r));
      if (static_cast<std::size_t>(r) < chunk) break;  // end of the stream
    }
    if (out.size() < n)
      throw data_error(path_, start + out.size(),
                       "truncated file: expected " + std::to_string(n) + " bytes of " + what +
                           " at offset " + std::to_string(start) + ", got " +
                           std::to_string(out.size()));
    offset_ += n;
    return out;
  }

  /// Read the `rest` bytes of data that remain after what was used (the images past a limit),
  /// then the end of the stream: this makes zlib check the gzip trailer (CRC-32 and length of the
  /// whole file), so a corrupted or truncated file is refused even when only a prefix is used,
  /// and data after the declared items is refused too.
  void finish(std::uint64_t rest, const std::string& what) {
    std::vector<unsigned char> scratch(std::size_t(1) << 20);
    const std::uint64_t start = offset_;
    while (rest > 0) {
      const auto chunk = static_cast<unsigned>(std::min<std::uint64_t>(rest, scratch.size()));
      const int r = gzread(file_, scratch.data(), chunk);
      if (r < 0) throw corrupt(offset_);
      if (r == 0)
        throw data_error(path_, offset_,
                         "truncated file: " + std::to_string(rest) + " more bytes of " + what +
                             " expected after offset " + std::to_string(start));
      rest -= std::uint64_t(r);
      offset_ += std::uint64_t(r);
    }
    unsigned char extra = 0;
    const int r = gzread(file_, &extra, 1);
    if (r < 0) throw corrupt(offset_);
    if (r > 0)
      throw data_error(path_, offset_,
                       "unexpected data after the " + what + " that the header declares");
    int code = Z_OK;
    const char* msg = gzerror(file_, &code);
    if (code != Z_OK) throw corrupt(offset_, msg);
  }

  std::uint32_t read_u32(const std::string& what) {
    std::array<unsigned char, 4> b{};
    read(b.data(), 4, what);
    return (std::uint32_t(b[0]) << 24) | (std::uint32_t(b[1]) << 16) | (std::uint32_t(b[2]) << 8) |
           std::uint32_t(b[3]);
  }

 private:
  data_error corrupt(std::uint64_t at, const char* msg = nullptr) {
    int code = 0;
    if (msg == nullptr) msg = gzerror(file_, &code);
    return data_error(path_, at,
                      std::string("corrupt or truncated gzip stream (") + msg +
                          "); the file does not match its own checksum: reinstall "
                          "dataset-fashion-mnist or copy the file again");
  }

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

/// A count from an IDX header: at least 1 (a dataset with no items trains nothing) and at most
/// `max` (so that sizes in bytes fit an int-indexed matrix).
std::uint32_t check_count(const std::string& path, std::uint32_t count, std::uint32_t max,
                          const char* items) {
  if (count == 0)
    throw data_error(path, 4,
                     std::string("the header says 0 ") + items + "; a dataset with no " + items +
                         " trains nothing");
  if (count > max)
    throw data_error(
        path, 4,
        std::string("implausible ") + items + " count " + std::to_string(count) + " in the header");
  return count;
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
  check_count(in.path(), h.count, std::uint32_t(std::numeric_limits<int>::max() / (kRows * kCols)),
              "images");
  return h;
}

Mat<float> read_pixels(GzReader& in, int n) {
  const std::size_t pixels = std::size_t(kRows) * kCols;
  const std::vector<unsigned char> raw =
      in.read_bytes(pixels * std::size_t(n), "pixel data (" + std::to_string(n) + " images)");
  using ByteMat = Eigen::Matrix<unsigned char, Eigen::Dynamic, Eigen::Dynamic>;
  const Eigen::Map<const ByteMat> bytes(raw.data(), Eigen::Index(pixels), n);
  return bytes.cast<float>() / 255.0f;
}

std::uint32_t read_labels_header(GzReader& in) {
  check_magic(in, kLabelsMagic, "labels");
  return check_count(in.path(), in.read_u32("header"),
                     std::uint32_t(std::numeric_limits<int>::max()), "labels");
}

std::vector<std::uint8_t> read_label_bytes(GzReader& in, int n) {
  const std::uint64_t start = in.offset();
  const std::vector<std::uint8_t> labels =
      in.read_bytes(static_cast<std::size_t>(n), "labels (" + std::to_string(n) + " labels)");
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
  std::error_code ec;  // an unreadable path is reported by GzReader, naming the file
  if (!std::filesystem::exists(gz, ec) && std::filesystem::exists(plain, ec)) return plain;
  return gz;
}

}  // namespace

Mat<float> read_idx_images(const std::string& gz_path, int limit) {
  check_limit(gz_path, limit);
  GzReader in(gz_path);
  const ImagesHeader h = read_images_header(in);
  const int n = count_to_read(h.count, limit);
  Mat<float> x = read_pixels(in, n);
  in.finish(std::uint64_t(h.count - std::uint32_t(n)) * kRows * kCols, "pixel data");
  return x;
}

std::vector<std::uint8_t> read_idx_labels(const std::string& gz_path, int limit) {
  check_limit(gz_path, limit);
  GzReader in(gz_path);
  const std::uint32_t count = read_labels_header(in);
  const int n = count_to_read(count, limit);
  std::vector<std::uint8_t> y = read_label_bytes(in, n);
  in.finish(count - std::uint32_t(n), "labels");
  return y;
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
  images.finish(std::uint64_t(h.count - std::uint32_t(n)) * kRows * kCols, "pixel data");
  labels.finish(n_labels - std::uint32_t(n), "labels");
  d.rows = int(kRows);
  d.cols = int(kCols);
  return d;
}

Dataset slice(const Dataset& d, int first, int n) {
  if (first < 0 || n < 0 || first > d.size() - n)
    throw error("slice: images [" + std::to_string(first) + ", " + std::to_string(first + n) +
                ") are outside a dataset of " + std::to_string(d.size()));
  Dataset out;
  out.images = d.images.middleCols(first, n);
  out.labels.assign(d.labels.begin() + first, d.labels.begin() + first + n);
  out.rows = d.rows;
  out.cols = d.cols;
  return out;
}

TrainingData load_training_data(const std::string& dir, int train_limit, int validation) {
  if (validation < 0) throw error("data.validation = " + std::to_string(validation) + " < 0");
  TrainingData t;
  if (validation == 0) {
    t.train = load_fashion_mnist(dir, true, train_limit);
    return t;
  }
  Dataset all = load_fashion_mnist(dir, true, 0);
  const int left = all.size() - validation;
  if (left < 1)
    throw data_error(idx_path(dir, "train-images-idx3-ubyte"), 0,
                     "data.validation = " + std::to_string(validation) + " holds out all " +
                         std::to_string(all.size()) +
                         " training images; nothing is left to train on");
  if (train_limit > left)
    throw config_error("data.train_limit", "data.train_limit = " + std::to_string(train_limit) +
                                               " exceeds the " + std::to_string(left) +
                                               " training images left after data.validation = " +
                                               std::to_string(validation) + " are held out");
  t.validation_first = left;
  t.validation = slice(all, left, validation);
  t.train = slice(all, 0, train_limit > 0 ? train_limit : left);
  return t;
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

const char* to_string(InputTransform t) {
  switch (t) {
    case InputTransform::shift:
      return "shift";
    case InputTransform::contrast:
      return "contrast";
    case InputTransform::noise:
      return "noise";
  }
  return "?";
}

template <class S>
void apply_transform(Eigen::Ref<Mat<S>> x, InputTransform t, double value, std::mt19937_64& rng) {
  if (!std::isfinite(value) || (t == InputTransform::shift && std::abs(value) > 1.0) ||
      (t != InputTransform::shift && value < 0.0))
    throw error(std::string("apply_transform: ") + to_string(t) + " = " + std::to_string(value) +
                " is out of range (shift in [-1, 1], contrast and noise >= 0)");
  switch (t) {
    case InputTransform::shift:
      x.array() += S(value);
      break;
    case InputTransform::contrast:
      x.array() *= S(value);
      break;
    case InputTransform::noise: {
      if (value == 0.0) return;
      const auto uniform = [&] { return (double(rng() >> 11) + 0.5) * 0x1.0p-53; };  // (0, 1)
      // Each pair of uniforms gives two normals: the first pixel takes the cosine, the next the
      // sine (x may be a strided block: indexed by column, then row).
      double spare = 0.0;
      bool have_spare = false;
      for (Eigen::Index j = 0; j < x.cols(); ++j)
        for (Eigen::Index i = 0; i < x.rows(); ++i) {
          double z = spare;
          if (!have_spare) {
            const double r = std::sqrt(-2.0 * std::log(uniform())), a = 2.0 * M_PI * uniform();
            z = r * std::cos(a);
            spare = r * std::sin(a);
          }
          have_spare = !have_spare;
          x(i, j) += S(value * z);
        }
      break;
    }
  }
  x = x.cwiseMax(S(0)).cwiseMin(S(1));
}

template void apply_transform<float>(Eigen::Ref<Mat<float>>, InputTransform, double,
                                     std::mt19937_64&);
template void apply_transform<double>(Eigen::Ref<Mat<double>>, InputTransform, double,
                                      std::mt19937_64&);

}  // namespace eisim::io
