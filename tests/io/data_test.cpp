// Fashion-MNIST reading (real files and deliberately broken ones) and the brightness jitter.
#include "eisim/io/data.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <array>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "eisim/models/error.hpp"
#include "test_support.hpp"

using eisim::data_error;
using eisim::Mat;

namespace {

const std::string kDataDir = "/usr/share/datasets/fashion-mnist";

void put_be32(std::vector<unsigned char>& out, std::uint32_t x) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back((x >> shift) & 0xFF);
}

/// An IDX3 image file: header (magic, count, rows, cols) and `pixels` bytes.
std::vector<unsigned char> idx_images(std::uint32_t magic, std::uint32_t count, std::uint32_t rows,
                                      std::uint32_t cols,
                                      const std::vector<unsigned char>& pixels) {
  std::vector<unsigned char> out;
  put_be32(out, magic);
  put_be32(out, count);
  put_be32(out, rows);
  put_be32(out, cols);
  out.insert(out.end(), pixels.begin(), pixels.end());
  return out;
}

std::vector<unsigned char> idx_labels(std::uint32_t count, const std::vector<unsigned char>& ls) {
  std::vector<unsigned char> out;
  put_be32(out, 0x00000801);
  put_be32(out, count);
  out.insert(out.end(), ls.begin(), ls.end());
  return out;
}

void write_gz(const std::filesystem::path& path, const std::vector<unsigned char>& bytes) {
  gzFile f = gzopen(path.string().c_str(), "wb");
  REQUIRE(f != nullptr);
  if (!bytes.empty())
    REQUIRE(gzwrite(f, bytes.data(), unsigned(bytes.size())) == int(bytes.size()));
  REQUIRE(gzclose(f) == Z_OK);
}

/// `n` images whose pixel p of image k is (k + p) % 256.
std::vector<unsigned char> ramp_pixels(int n) {
  std::vector<unsigned char> px(std::size_t(n) * 784);
  for (int k = 0; k < n; ++k)
    for (int p = 0; p < 784; ++p) px[std::size_t(k) * 784 + p] = (k + p) % 256;
  return px;
}

bool have_fashion_mnist() {
  return std::filesystem::exists(kDataDir + "/t10k-images-idx3-ubyte.gz");
}

}  // namespace

TEST_CASE("the Fashion-MNIST test set loads: 10000 images in [0, 1], balanced labels 0-9") {
  if (!have_fashion_mnist()) {
    MESSAGE("skipped: " << kDataDir << " missing (apt-get install dataset-fashion-mnist)");
    return;
  }
  const auto test = eisim::io::load_fashion_mnist(kDataDir, false);
  CHECK(test.images.rows() == 784);
  CHECK(test.images.cols() == 10000);
  CHECK(test.size() == 10000);
  CHECK(test.rows == 28);
  CHECK(test.cols == 28);
  CHECK(test.images.minCoeff() == 0.0f);
  CHECK(test.images.maxCoeff() == 1.0f);
  CHECK(test.labels[0] == 9);  // the first test image is an ankle boot
  std::array<int, 10> per_class{};
  for (auto l : test.labels) {
    REQUIRE(l <= 9);
    ++per_class[l];
  }
  for (int n : per_class) CHECK(n == 1000);
  // Pixels are multiples of 1/255.
  const Mat<float> scaled = test.images.leftCols(10) * 255.0f;
  CHECK((scaled.array() - scaled.array().round()).abs().maxCoeff() < 1e-4f);

  SUBCASE("a limit keeps the first images") {
    const auto few = eisim::io::load_fashion_mnist(kDataDir, false, 100);
    CHECK(few.images.cols() == 100);
    CHECK(few.labels.size() == 100);
    CHECK(few.images == test.images.leftCols(100));
    CHECK(std::equal(few.labels.begin(), few.labels.end(), test.labels.begin()));
  }
}

TEST_CASE("the Fashion-MNIST training set has 60000 images, 6000 per class") {
  if (!have_fashion_mnist()) {
    MESSAGE("skipped: " << kDataDir << " missing (apt-get install dataset-fashion-mnist)");
    return;
  }
  const auto labels = eisim::io::read_idx_labels(kDataDir + "/train-labels-idx1-ubyte.gz");
  REQUIRE(labels.size() == 60000);
  std::array<int, 10> per_class{};
  for (auto l : labels) ++per_class[l];
  for (int n : per_class) CHECK(n == 6000);
  const auto train = eisim::io::load_fashion_mnist(kDataDir, true);
  CHECK(train.images.cols() == 60000);
  CHECK(train.images.minCoeff() >= 0.0f);
  CHECK(train.images.maxCoeff() <= 1.0f);
}

TEST_CASE("an IDX image file maps pixel p of image k to row p of column k, divided by 255") {
  const auto dir = eisim::test::scratch_dir("idx_ok");
  write_gz(dir / "img.gz", idx_images(0x803, 3, 28, 28, ramp_pixels(3)));
  const Mat<float> x = eisim::io::read_idx_images((dir / "img.gz").string());
  REQUIRE(x.rows() == 784);
  REQUIRE(x.cols() == 3);
  for (int k = 0; k < 3; ++k)
    for (int p : {0, 1, 27, 28, 500, 783}) CHECK(x(p, k) == float((k + p) % 256) / 255.0f);
  CHECK(eisim::io::read_idx_images((dir / "img.gz").string(), 2).cols() == 2);
  CHECK(eisim::io::read_idx_images((dir / "img.gz").string(), 50).cols() == 3);
}

TEST_CASE("a missing data file names the path and the Debian package") {
  const auto dir = eisim::test::scratch_dir("idx_missing");
  const std::string path = (dir / "t10k-images-idx3-ubyte.gz").string();
  CHECK_THROWS_WITH_AS(eisim::io::load_fashion_mnist(dir.string(), false),
                       doctest::Contains(path.c_str()), data_error);
  CHECK_THROWS_WITH_AS(eisim::io::load_fashion_mnist(dir.string(), false),
                       doctest::Contains("apt-get install dataset-fashion-mnist"), data_error);
  CHECK_THROWS_WITH_AS(eisim::io::read_idx_labels((dir / "nope.gz").string()),
                       doctest::Contains("dataset-fashion-mnist"), data_error);
}

TEST_CASE("a file with the wrong magic number prints expected and found in hex") {
  const auto dir = eisim::test::scratch_dir("idx_magic");
  const auto path = (dir / "img.gz").string();
  write_gz(path, idx_images(0x801, 1, 28, 28, ramp_pixels(1)));
  CHECK_THROWS_WITH_AS(eisim::io::read_idx_images(path),
                       doctest::Contains("bad magic number: expected 0x00000803 (images), found "
                                         "0x00000801"),
                       data_error);
  const auto labels = (dir / "labels.gz").string();
  write_gz(labels, idx_images(0x803, 1, 28, 28, ramp_pixels(1)));
  CHECK_THROWS_WITH_AS(eisim::io::read_idx_labels(labels),
                       doctest::Contains("expected 0x00000801 (labels), found 0x00000803"),
                       data_error);
  CHECK_THROWS_WITH_AS(eisim::io::read_idx_labels(labels), doctest::Contains(labels.c_str()),
                       data_error);
}

TEST_CASE("a truncated file reports the bytes expected and the bytes found") {
  const auto dir = eisim::test::scratch_dir("idx_truncated");
  const auto path = (dir / "img.gz").string();
  write_gz(path, idx_images(0x803, 5, 28, 28, ramp_pixels(2)));
  try {
    eisim::io::read_idx_images(path);
    FAIL("no exception");
  } catch (const data_error& e) {
    CHECK(std::string(e.what()).find("truncated file: expected 3920 bytes") != std::string::npos);
    CHECK(std::string(e.what()).find("got 1568") != std::string::npos);
    CHECK(e.file() == path);
    CHECK(e.offset() == 16 + 1568);
  }
  // A limit within the data present does not hide the truncation: the whole file is checked.
  CHECK_THROWS_WITH_AS(eisim::io::read_idx_images(path, 2),
                       doctest::Contains("2352 more bytes of pixel data"), data_error);
  // A header cut short is truncated too.
  write_gz(path, {0, 0, 8});
  CHECK_THROWS_WITH_AS(eisim::io::read_idx_images(path), doctest::Contains("truncated"),
                       data_error);
}

TEST_CASE("images that are not 28 x 28 are rejected") {
  const auto dir = eisim::test::scratch_dir("idx_dims");
  const auto path = (dir / "img.gz").string();
  write_gz(path, idx_images(0x803, 1, 27, 28, std::vector<unsigned char>(27 * 28)));
  CHECK_THROWS_WITH_AS(eisim::io::read_idx_images(path),
                       doctest::Contains("wrong image size: 27 x 28, expected 28 x 28"),
                       data_error);
}

TEST_CASE("labels above 9 are rejected with their offset") {
  const auto dir = eisim::test::scratch_dir("idx_labels");
  const auto path = (dir / "lab.gz").string();
  write_gz(path, idx_labels(3, {1, 12, 3}));
  try {
    eisim::io::read_idx_labels(path);
    FAIL("no exception");
  } catch (const data_error& e) {
    CHECK(std::string(e.what()).find("label 12 of item 1 is > 9") != std::string::npos);
    CHECK(e.offset() == 9);
  }
}

TEST_CASE("image and label files with different counts are rejected") {
  const auto dir = eisim::test::scratch_dir("idx_mismatch");
  write_gz(dir / "t10k-images-idx3-ubyte.gz", idx_images(0x803, 3, 28, 28, ramp_pixels(3)));
  write_gz(dir / "t10k-labels-idx1-ubyte.gz", idx_labels(2, {0, 1}));
  CHECK_THROWS_WITH_AS(eisim::io::load_fashion_mnist(dir.string(), false),
                       doctest::Contains("count mismatch: 3 images, but"), data_error);
  write_gz(dir / "t10k-labels-idx1-ubyte.gz", idx_labels(3, {0, 1, 7}));
  const auto d = eisim::io::load_fashion_mnist(dir.string(), false);
  CHECK(d.images.cols() == 3);
  CHECK(d.labels == std::vector<std::uint8_t>{0, 1, 7});
}

TEST_CASE("a FIFO in data.dir is refused before it is opened (it used to hang forever)") {
  const auto dir = eisim::test::scratch_dir("idx_fifo");
  const auto fifo = dir / "t10k-images-idx3-ubyte.gz";
  std::filesystem::remove(fifo);
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  write_gz(dir / "t10k-labels-idx1-ubyte.gz", idx_labels(1, {0}));
  // Watchdog: should the reader block in open(), a writer opens the FIFO after 20 s and closes
  // it, so that the test fails (end of file instead of the message below) instead of hanging.
  std::promise<void> done;
  std::thread watchdog([&fifo, finished = done.get_future()] {
    if (finished.wait_for(std::chrono::seconds(20)) == std::future_status::ready) return;
    const int fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
    if (fd >= 0) ::close(fd);
  });
  std::string message;
  try {
    eisim::io::load_fashion_mnist(dir.string(), false);
  } catch (const data_error& e) {
    message = e.what();
    CHECK(e.file() == fifo.string());
  }
  done.set_value();
  watchdog.join();
  CHECK(message.find(fifo.string()) != std::string::npos);
  CHECK(message.find("is a FIFO (named pipe), not a regular file") != std::string::npos);
  CHECK_THROWS_WITH_AS(eisim::io::read_idx_images(fifo.string()), doctest::Contains("FIFO"),
                       data_error);
}

TEST_CASE("a directory or a device where an IDX file should be is refused, naming what it is") {
  const auto dir = eisim::test::scratch_dir("idx_not_regular");
  std::filesystem::create_directories(dir / "img.gz");
  CHECK_THROWS_WITH_AS(eisim::io::read_idx_images((dir / "img.gz").string()),
                       doctest::Contains("is a directory, not a regular file"), data_error);
  CHECK_THROWS_WITH_AS(eisim::io::read_idx_labels("/dev/zero"),
                       doctest::Contains("/dev/zero: is a character device"), data_error);
}

TEST_CASE("an IDX header that says 0 images or 0 labels is an error") {
  const auto dir = eisim::test::scratch_dir("idx_empty");
  write_gz(dir / "t10k-images-idx3-ubyte.gz", idx_images(0x803, 0, 28, 28, {}));
  write_gz(dir / "t10k-labels-idx1-ubyte.gz", idx_labels(0, {}));
  CHECK_THROWS_WITH_AS(eisim::io::load_fashion_mnist(dir.string(), false),
                       doctest::Contains("the header says 0 images"), data_error);
  CHECK_THROWS_WITH_AS(eisim::io::read_idx_images((dir / "t10k-images-idx3-ubyte.gz").string()),
                       doctest::Contains("0 images"), data_error);
  CHECK_THROWS_WITH_AS(eisim::io::read_idx_labels((dir / "t10k-labels-idx1-ubyte.gz").string()),
                       doctest::Contains("the header says 0 labels"), data_error);
}

TEST_CASE("a header claiming billions of items costs only the bytes the file holds") {
  const auto dir = eisim::test::scratch_dir("idx_huge_count");
  const auto images = (dir / "img").string();  // uncompressed: the reader accepts both
  {
    const auto bytes = idx_images(0x803, 2000000, 28, 28, ramp_pixels(1));
    std::ofstream(images, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  }
  CHECK_THROWS_WITH_AS(eisim::io::read_idx_images(images),
                       doctest::Contains("expected 1568000000 bytes of pixel data"), data_error);
  CHECK_THROWS_WITH_AS(eisim::io::read_idx_images(images, 1), doctest::Contains("truncated"),
                       data_error);  // checked to its end without reading 1.5 GB into memory
  // Labels: a count above INT_MAX used to overflow to a negative size (std::length_error).
  const auto labels = (dir / "lab.gz").string();
  write_gz(labels, idx_labels(0x80000000u, {1, 2}));
  CHECK_THROWS_WITH_AS(eisim::io::read_idx_labels(labels),
                       doctest::Contains("implausible labels count 2147483648"), data_error);
  write_gz(labels, idx_labels(0x7FFFFFFFu, {1, 2}));
  CHECK_THROWS_WITH_AS(eisim::io::read_idx_labels(labels), doctest::Contains("got 2"), data_error);
}

// ---------------------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("jitter with eps = 0 changes nothing and draws nothing", S, float, double) {
  std::mt19937_64 rng(eisim::test::seed());
  Mat<S> x = eisim::test::random_matrix<S>(784, 5, 0.0, 1.0, rng);
  const Mat<S> before = x;
  const auto state = rng;
  eisim::io::apply_jitter<S>(x, 0.0, rng);
  CHECK(x == before);
  CHECK(rng == state);
}

TEST_CASE_TEMPLATE("jitter adds one shift per column, within +-eps, then clips to [0, 1]", S, float,
                   double) {
  std::mt19937_64 rng(eisim::test::seed());
  const double eps = 0.25;
  SUBCASE("away from the bounds the shift is constant down a column") {
    Mat<S> x = eisim::test::random_matrix<S>(784, 400, 0.3, 0.7, rng);
    const Mat<S> before = x;
    eisim::io::apply_jitter<S>(x, eps, rng);
    const Mat<S> shift = x - before;
    double mean = 0, mean_sq = 0;
    std::set<double> distinct;
    for (int j = 0; j < x.cols(); ++j) {
      const S d = shift(0, j);
      CHECK(std::abs(double(d)) <= eps + 1e-6);
      CHECK((shift.col(j).array() - d).abs().maxCoeff() <= S(1e-6));
      mean += double(d) / x.cols();
      mean_sq += double(d) * double(d) / x.cols();
      distinct.insert(double(d));
    }
    CHECK(distinct.size() == std::size_t(x.cols()));
    // U(-eps, eps): mean 0, variance eps^2 / 3 (loose bounds, 400 samples).
    CHECK(std::abs(mean) < 0.05);
    CHECK(mean_sq == doctest::Approx(eps * eps / 3).epsilon(0.2));
  }
  SUBCASE("near the bounds pixels are clipped, as an independent recomputation shows") {
    Mat<S> x = eisim::test::random_matrix<S>(784, 50, 0.0, 1.0, rng);
    x.row(0).setZero();
    x.row(1).setOnes();
    const Mat<S> before = x;
    std::mt19937_64 replay = rng;
    eisim::io::apply_jitter<S>(x, 1.0, rng);
    CHECK(x.minCoeff() >= S(0));
    CHECK(x.maxCoeff() <= S(1));
    for (int j = 0; j < x.cols(); ++j) {
      const double u = double(replay() >> 11) * 0x1.0p-53;
      const S d = S(2 * u - 1);
      const Mat<S> expected = (before.col(j).array() + d).cwiseMax(S(0)).cwiseMin(S(1)).matrix();
      CHECK(x.col(j) == expected);
    }
  }
  SUBCASE("the same seed gives the same result, a block can be jittered in place") {
    Mat<S> a = Mat<S>::Constant(784, 20, S(0.5));
    Mat<S> b = a;
    std::mt19937_64 r1(42), r2(42);
    eisim::io::apply_jitter<S>(a, eps, r1);
    eisim::io::apply_jitter<S>(b, eps, r2);
    CHECK(a == b);
    Mat<S> c = Mat<S>::Constant(784, 20, S(0.5));
    std::mt19937_64 r3(42);
    eisim::io::apply_jitter<S>(c.rightCols(10), eps, r3);
    CHECK(c.leftCols(10) == Mat<S>::Constant(784, 10, S(0.5)));
    CHECK(c.rightCols(10) == a.leftCols(10));
  }
  SUBCASE("eps outside [0, 1] is an error") {
    Mat<S> x = Mat<S>::Zero(4, 2);
    CHECK_THROWS_AS(eisim::io::apply_jitter<S>(x, -0.1, rng), eisim::error);
    CHECK_THROWS_AS(eisim::io::apply_jitter<S>(x, std::nan(""), rng), eisim::error);
  }
}

TEST_CASE_TEMPLATE("the evaluate transforms: shift, contrast and Gaussian noise, then clipping", S,
                   float, double) {
  using eisim::io::InputTransform;
  std::mt19937_64 rng(eisim::test::seed());
  Mat<S> x = eisim::test::random_matrix<S>(784, 50, 0.0, 1.0, rng);
  const Mat<S> before = x;
  SUBCASE("shift adds the value to every pixel and clips; shift 0 and contrast 1 change nothing") {
    const auto state = rng;
    eisim::io::apply_transform<S>(x, InputTransform::shift, 0.0, rng);
    eisim::io::apply_transform<S>(x, InputTransform::contrast, 1.0, rng);
    eisim::io::apply_transform<S>(x, InputTransform::noise, 0.0, rng);
    CHECK(x == before);
    CHECK(rng == state);  // none of them draws
    eisim::io::apply_transform<S>(x, InputTransform::shift, -0.3, rng);
    const Mat<S> want = (before.array() - S(0.3)).cwiseMax(S(0)).matrix();
    CHECK((x - want).cwiseAbs().maxCoeff() <= S(1e-6));
  }
  SUBCASE("contrast multiplies and clips at 1") {
    eisim::io::apply_transform<S>(x, InputTransform::contrast, 1.5, rng);
    const Mat<S> want = (before.array() * S(1.5)).cwiseMin(S(1)).matrix();
    CHECK((x - want).cwiseAbs().maxCoeff() <= S(1e-6));
  }
  SUBCASE("noise has mean 0 and the given sd per pixel, away from the bounds, and a seed repeats") {
    Mat<S> g = Mat<S>::Constant(784, 50, S(0.5));
    std::mt19937_64 a(11), b(11);
    Mat<S> g2 = g;
    eisim::io::apply_transform<S>(g, InputTransform::noise, 0.05, a);
    eisim::io::apply_transform<S>(g2, InputTransform::noise, 0.05, b);
    CHECK(g == g2);
    const Eigen::ArrayXd d = (g.array() - S(0.5)).template cast<double>().reshaped();
    CHECK(std::abs(d.mean()) < 0.05 * 5 / std::sqrt(double(d.size())));
    CHECK(std::sqrt((d * d).mean()) == doctest::Approx(0.05).epsilon(0.02));
    // A strided block gets the same noise as the contiguous matrix it was copied from.
    Mat<S> big = Mat<S>::Constant(800, 50, S(0.5));
    std::mt19937_64 c(11);
    eisim::io::apply_transform<S>(big.topRows(784), InputTransform::noise, 0.05, c);
    CHECK(big.topRows(784) == g);
    CHECK((big.bottomRows(16).array() == S(0.5)).all());
  }
  SUBCASE("values out of range are refused") {
    CHECK_THROWS_AS(eisim::io::apply_transform<S>(x, InputTransform::shift, 1.5, rng),
                    eisim::error);
    CHECK_THROWS_AS(eisim::io::apply_transform<S>(x, InputTransform::contrast, -1.0, rng),
                    eisim::error);
    CHECK_THROWS_AS(eisim::io::apply_transform<S>(x, InputTransform::noise, std::nan(""), rng),
                    eisim::error);
  }
}

TEST_CASE("a gzip file whose data or trailer is damaged is refused, even when a prefix is used") {
  const auto dir = eisim::test::scratch_dir("idx_gzip_damage");
  const auto path = (dir / "img.gz").string();
  write_gz(path, idx_images(0x803, 5, 28, 28, ramp_pixels(5)));
  CHECK(eisim::io::read_idx_images(path, 2).cols() == 2);
  std::vector<char> gz;
  {
    std::ifstream in(path, std::ios::binary);
    gz.assign(std::istreambuf_iterator<char>(in), {});
  }
  REQUIRE(gz.size() > 30);
  auto rewrite = [&](const std::vector<char>& bytes) {
    std::ofstream(path, std::ios::binary | std::ios::trunc)
        .write(bytes.data(), std::streamsize(bytes.size()));
  };
  // The trailer (CRC-32 and length) cut off: the data still decompresses.
  rewrite(std::vector<char>(gz.begin(), gz.end() - 8));
  CHECK_THROWS_WITH_AS(eisim::io::read_idx_images(path, 2), doctest::Contains("gzip"), data_error);
  // One bit of the stored CRC-32 flipped: the data are intact but do not match it.
  auto flipped = gz;
  flipped[flipped.size() - 6] ^= 1;
  rewrite(flipped);
  CHECK_THROWS_WITH_AS(eisim::io::read_idx_images(path, 2), doctest::Contains("gzip"), data_error);
  CHECK_THROWS_WITH_AS(eisim::io::read_idx_images(path), doctest::Contains("gzip"), data_error);
  // Data after the declared images.
  auto longer = idx_images(0x803, 5, 28, 28, ramp_pixels(5));
  longer.push_back(7);
  write_gz(path, longer);
  CHECK_THROWS_WITH_AS(eisim::io::read_idx_images(path), doctest::Contains("unexpected data after"),
                       data_error);
}
