// HDF5 files: what is written is read back unchanged (orientation included), h5py sees the same
// shapes, failures are data_errors naming the file, and writes are atomic.
#include "eisim/io/hdf5.hpp"

#include <doctest/doctest.h>
#include <sys/resource.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "eisim/io/config.hpp"
#include "eisim/io/provenance.hpp"
#include "eisim/models/error.hpp"
#include "test_support.hpp"

using eisim::data_error;
using eisim::Mat;
using eisim::io::H5File;

namespace {

/// m(i, j) = 10 i + j, so that a transposed read is visible.
template <class S>
Mat<S> index_matrix(int rows, int cols) {
  Mat<S> m(rows, cols);
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) m(i, j) = S(10 * i + j);
  return m;
}

bool have_h5py() {
  return std::system("/usr/bin/python3 -c 'import h5py' 2>/dev/null") == 0;
}

}  // namespace

TEST_CASE("matrices round-trip through HDF5 with element (i, j) preserved") {
  const auto dir = eisim::test::scratch_dir("h5_matrix");
  const std::string path = (dir / "m.h5").string();
  std::mt19937_64 rng(eisim::test::seed());
  const Mat<double> r = eisim::test::random_matrix<double>(7, 4, -1e6, 1e6, rng);
  {
    H5File f = H5File::create(path);
    f.write("a/b/float", index_matrix<float>(3, 5));
    f.write("/a/double", r);
    f.write("empty", Mat<double>(0, 3));
    f.close();
  }
  const H5File f = H5File::open_read(path);
  const Mat<double> m = f.read_matrix("a/b/float");
  REQUIRE(m.rows() == 3);
  REQUIRE(m.cols() == 5);
  CHECK(m == index_matrix<double>(3, 5));
  CHECK(f.read_matrix("/a/double") == r);  // bit-exact
  CHECK(f.read_matrix("empty").rows() == 0);
  CHECK(f.read_matrix("empty").cols() == 3);
  CHECK(f.exists("a/b"));
  CHECK(f.exists("/a/b/float"));
  CHECK_FALSE(f.exists("a/c"));
  CHECK_FALSE(f.exists("a/b/float/x"));
  CHECK(f.list("/") == std::vector<std::string>{"a", "empty"});
  CHECK(f.list("a") == std::vector<std::string>{"b", "double"});
}

TEST_CASE("vectors, strings, scalars and attributes round-trip") {
  const auto dir = eisim::test::scratch_dir("h5_vectors");
  const std::string path = (dir / "v.h5").string();
  const std::vector<std::string> names{"ankle boot", "", "µ-unit τ_E"};
  {
    H5File f = H5File::create(path);
    f.write("d", std::vector<double>{1.5, -2.0, 1e-300});
    f.write("f", std::vector<float>{0.25f, 3.0f});
    f.write("i", std::vector<std::int64_t>{-1, 0, std::int64_t(1) << 40});
    f.write("s", names);
    f.write_scalar("x", 0.1);
    f.write_string("text", "line 1\nline 2");
    f.write("d", std::vector<double>{4.0});  // replaces the first "d"
    f.set_attr("/", "name", "run");
    f.set_attr("/", "pi", 3.141592653589793);
    f.set_attr("/", "count", std::int64_t(-7));
    f.set_attr("/", "seed", std::uint64_t(12345));
    f.set_attr("d", "unit", "ms");
    f.set_attr("/", "name", std::string("run 2"));  // replaces
  }                                                 // closed by the destructor
  const H5File f = H5File::open_read(path);
  CHECK(f.read_vector("d") == std::vector<double>{4.0});
  CHECK(f.read_vector("f") == std::vector<double>{0.25, 3.0});
  CHECK(f.read_vector("i") == std::vector<double>{-1.0, 0.0, double(std::int64_t(1) << 40)});
  CHECK(f.read_strings("s") == names);
  CHECK(f.read_vector("x") == std::vector<double>{0.1});
  CHECK(f.read_string("text") == "line 1\nline 2");
  CHECK(f.read_matrix("f").rows() == 2);  // a 1-D dataset reads as a column
  CHECK(f.attr_string("/", "name") == "run 2");
  CHECK(f.attr_double("/", "pi") == 3.141592653589793);
  CHECK(f.attr_int("/", "count") == -7);
  CHECK(f.attr_int("/", "seed") == 12345);
  CHECK(f.attr_string("d", "unit") == "ms");
}

TEST_CASE("HDF5 failures are data_errors naming the file and the object") {
  const auto dir = eisim::test::scratch_dir("h5_errors");
  const std::string path = (dir / "e.h5").string();
  CHECK_THROWS_WITH_AS(H5File::open_read(path), doctest::Contains("file not found"), data_error);
  std::ofstream(dir / "text.h5") << "not hdf5";
  CHECK_THROWS_WITH_AS(H5File::open_read((dir / "text.h5").string()),
                       doctest::Contains("not an HDF5 file"), data_error);
  CHECK_THROWS_WITH_AS(H5File::create((dir / "no/such/dir/x.h5").string()),
                       doctest::Contains("cannot create"), data_error);
  {
    H5File f = H5File::create(path);
    f.write("m", index_matrix<double>(2, 2));
    f.write_tensor("t", std::vector<float>(8, 1.0f), {2, 2, 2});
    f.write("s", std::vector<std::string>{"a"});
    CHECK_THROWS_AS(f.write_tensor("bad", std::vector<float>(3), {2, 2}), eisim::internal_error);
  }
  const H5File f = H5File::open_read(path);
  CHECK_THROWS_WITH_AS(f.read_matrix("missing"), doctest::Contains("'missing'"), data_error);
  CHECK_THROWS_WITH_AS(f.read_matrix("missing"), doctest::Contains(path.c_str()), data_error);
  CHECK_THROWS_WITH_AS(f.read_matrix("t"), doctest::Contains("2 x 2 x 2"), data_error);
  CHECK_THROWS_WITH_AS(f.read_vector("m"), doctest::Contains("expected a vector"), data_error);
  CHECK_THROWS_WITH_AS(f.read_strings("m"), doctest::Contains("does not hold strings"), data_error);
  CHECK_THROWS_WITH_AS(f.read_matrix("s"), doctest::Contains("not numeric"), data_error);
  CHECK_THROWS_WITH_AS(f.attr_string("/", "nope"), doctest::Contains("no attribute 'nope'"),
                       data_error);
  H5File readonly = H5File::open_read(path);
  CHECK_THROWS_WITH_AS(readonly.write_scalar("x", 1.0), doctest::Contains("read-only"), data_error);
  H5File moved = std::move(readonly);
  CHECK(moved.is_open());
  CHECK_FALSE(readonly.is_open());  // NOLINT(bugprone-use-after-move): moved-from is closed
  moved.close();
  moved.close();  // harmless
  CHECK_THROWS_WITH_AS(moved.list("/"), doctest::Contains("closed"), data_error);
}

TEST_CASE("write_atomically keeps the old file when fill throws") {
  const auto dir = eisim::test::scratch_dir("h5_atomic");
  const std::string path = (dir / "out.h5").string();
  eisim::io::write_atomically(path, [](H5File& f) { f.write_scalar("old", 1.0); });
  CHECK_THROWS_WITH_AS(eisim::io::write_atomically(path,
                                                   [](H5File& f) {
                                                     f.write_scalar("new", 2.0);
                                                     throw std::runtime_error("boom");
                                                   }),
                       "boom", std::runtime_error);
  CHECK_FALSE(std::filesystem::exists(path + ".tmp"));
  {
    const H5File f = H5File::open_read(path);
    CHECK(f.exists("old"));
    CHECK_FALSE(f.exists("new"));
  }
  eisim::io::write_atomically(path, [](H5File& f) { f.write_scalar("new", 2.0); });
  const H5File f = H5File::open_read(path);
  CHECK(f.exists("new"));
  CHECK_FALSE(f.exists("old"));
  CHECK_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST_CASE("provenance records version, commit, build type, seed and the resolved config") {
  const auto dir = eisim::test::scratch_dir("h5_provenance");
  const std::string path = (dir / "p.h5").string();
  const auto config = eisim::io::parse_config("seed: 42\nnetwork: {width: 64}\n");
  {
    H5File f = H5File::create(path);
    eisim::io::write_provenance(f, config, "eisim train --set network.width=64");
  }
  const H5File f = H5File::open_read(path);
  CHECK(f.attr_string("/", "eisim_version") == "0.1.0");
  CHECK_FALSE(f.attr_string("/", "git_commit").empty());
  CHECK_FALSE(f.attr_string("/", "build_type").empty());
  CHECK(f.attr_int("/", "seed") == 42);
  CHECK(f.attr_string("/", "precision") == "float32");
  CHECK(f.attr_string("/", "command") == "eisim train --set network.width=64");
  CHECK(f.attr_string("/", "hostname") == eisim::io::host_name());
  const std::string created = f.attr_string("/", "created");
  CHECK(created.size() == 20);
  CHECK(created.back() == 'Z');
  const auto back = eisim::io::parse_config(f.attr_string("/", "config"));
  CHECK(eisim::io::to_yaml(back) == eisim::io::to_yaml(config));
  CHECK(back.network.width == 64);

  const std::string header = eisim::io::provenance_header(config, "eisim train");
  CHECK(header.rfind("# eisim 0.1.0 (commit ", 0) == 0);
  CHECK(header.find("seed 42") != std::string::npos);
  CHECK(header.find("# command: eisim train\n") != std::string::npos);
}

TEST_CASE("h5py opens the files and sees the same shapes and values") {
  if (!have_h5py()) {
    MESSAGE("skipped: /usr/bin/python3 cannot import h5py");
    return;
  }
  const auto dir = eisim::test::scratch_dir("h5_h5py");
  const std::string path = (dir / "py.h5").string();
  {
    H5File f = H5File::create(path);
    f.write("layers/0/W", index_matrix<float>(3, 5));
    std::vector<float> t(24);
    for (std::size_t k = 0; k < t.size(); ++k) t[k] = float(k);
    f.write_tensor("t", t, {2, 3, 4});
    f.write("names", std::vector<std::string>{"a", "τ"});
    eisim::io::write_provenance(f, eisim::io::Config{}, "test");
  }
  const std::string script =
      "import h5py, sys\n"
      "f = h5py.File(sys.argv[1], 'r')\n"
      "w = f['layers/0/W']\n"
      "assert w.shape == (3, 5), w.shape\n"
      "assert w.dtype == 'float32'\n"
      "assert w[1, 2] == 12 and w[2, 4] == 24, w[...]\n"
      "t = f['t']\n"
      "assert t.shape == (2, 3, 4) and t[1, 2, 3] == 23, t[...]\n"
      "assert [s.decode() for s in f['names'][...]] == ['a', 'τ']\n"
      "assert f.attrs['eisim_version'] == '0.1.0', f.attrs['eisim_version']\n"
      "assert int(f.attrs['seed']) == 1\n"
      "assert 'tau_E' in f.attrs['config']\n";
  const auto script_path = dir / "check.py";
  std::ofstream(script_path) << script;
  const std::string cmd = "/usr/bin/python3 " + script_path.string() + " " + path;
  CHECK(std::system(cmd.c_str()) == 0);
}

TEST_CASE("write_atomically never touches another process's temporary file of the same output") {
  const auto dir = eisim::test::scratch_dir("h5_tmp_names");
  const std::string path = (dir / "out.h5").string();
  // What a concurrent writer of the same output had in progress (the old shared name, and a
  // name of this scheme with another pid).
  for (const std::string other : {path + ".tmp", path + ".1.0.tmp"}) {
    std::ofstream(other) << "another writer's data";
  }
  eisim::io::write_atomically(path, [](H5File& f) { f.write_scalar("x", 1.0); });
  for (const std::string other : {path + ".tmp", path + ".1.0.tmp"}) {
    std::ifstream in(other);
    std::string text;
    std::getline(in, text);
    CHECK_MESSAGE(text == "another writer's data", other);
  }
  CHECK(H5File::open_read(path).exists("x"));
  int tmps = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    tmps += e.path().extension() == ".tmp";
  CHECK(tmps == 2);  // only the two planted above
}

TEST_CASE("a write that runs out of space fails with the system's reason and leaves nothing") {
  const auto dir = eisim::test::scratch_dir("h5_full");
  const std::string path = (dir / "out.h5").string();
  eisim::io::write_atomically(path, [](H5File& f) { f.write_scalar("old", 1.0); });
  const auto size_before = std::filesystem::file_size(path);
  // A file-size limit makes write() fail as a full disk would (EFBIG instead of ENOSPC).
  struct rlimit old {};
  REQUIRE(getrlimit(RLIMIT_FSIZE, &old) == 0);
  const auto old_xfsz = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = old;
  small.rlim_cur = 64 * 1024;
  REQUIRE(setrlimit(RLIMIT_FSIZE, &small) == 0);
  std::string message;
  try {
    eisim::io::write_atomically(path, [](H5File& f) {
      f.write("big", Mat<double>(Mat<double>::Ones(200, 200)));  // 320 kB
    });
  } catch (const data_error& e) {
    message = e.what();
  }
  setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_xfsz);
  CHECK(message.find("File too large") != std::string::npos);
  CHECK(std::filesystem::file_size(path) == size_before);
  CHECK(H5File::open_read(path).exists("old"));
  for (const auto& e : std::filesystem::directory_iterator(dir))
    CHECK_MESSAGE(e.path().extension() != ".tmp", e.path().string());
}

TEST_CASE("update_atomically edits a copy and replaces the file only when the edit succeeds") {
  const auto dir = eisim::test::scratch_dir("h5_update");
  const std::string path = (dir / "out.h5").string();
  eisim::io::write_atomically(path, [](H5File& f) {
    f.write_scalar("keep", 3.0);
    f.set_attr("/", "status", "running");
  });
  CHECK_THROWS_AS(eisim::io::update_atomically(path,
                                               [](H5File& f) {
                                                 f.set_attr("/", "status", "failed");
                                                 throw data_error("x", 0, "boom");
                                               }),
                  data_error);
  CHECK(H5File::open_read(path).attr_string("/", "status") == "running");
  eisim::io::update_atomically(path, [](H5File& f) { f.set_attr("/", "status", "failed"); });
  const H5File f = H5File::open_read(path);
  CHECK(f.attr_string("/", "status") == "failed");
  CHECK(f.read_vector("keep") == std::vector<double>{3.0});
}
