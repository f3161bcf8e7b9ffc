// eisim sweep: a point's file is reused only for its own configuration, grid points never share
// a file, the merged summary never replaces a run or a foreign file, one process per point.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "eisim/experiments/commands.hpp"
#include "eisim/io/config.hpp"
#include "eisim/io/hdf5.hpp"
#include "eisim/models/error.hpp"
#include "test_support.hpp"

using namespace eisim;
namespace fs = std::filesystem;

namespace {

/// tests/data/tiny.yaml made smaller still (about 0.1 s a point), with its grid in `dir`: one
/// seed, two conditions (implicit, frozen), eps 0.5.
experiments::SweepOptions tiny_sweep(const fs::path& dir, std::vector<std::string> extra = {}) {
  experiments::SweepOptions o;
  o.config_path = test::source_path("tests/data/tiny.yaml");
  o.overrides = {"sweep.out_dir=" + dir.string(),
                 "sweep.seeds=[1]",
                 "train.epochs=1",
                 "data.train_limit=1024",
                 "data.test_limit=128",
                 "network.hidden_layers=1",
                 "network.width=16",
                 "learning.lr_E=0.05",
                 "train.batch_size=16",
                 "simulate.images=[0]"};
  o.overrides.insert(o.overrides.end(), extra.begin(), extra.end());
  return o;
}

std::string stored_config(const fs::path& run) {
  return io::H5File::open_read(run.string()).attr_string("/", "config");
}

/// Everything `f` writes on stderr (fd 2), which is restored afterwards.
std::string capture_stderr(const std::function<void()>& f) {
  const fs::path tmp = fs::path(test::binary_dir()) / "test_scratch" / "stderr.txt";
  std::fflush(stderr);
  const int saved = ::dup(2);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  REQUIRE(fd >= 0);
  ::dup2(fd, 2);
  ::close(fd);
  try {
    f();
  } catch (...) {
    std::fflush(stderr);
    ::dup2(saved, 2);
    ::close(saved);
    throw;
  }
  std::fflush(stderr);
  ::dup2(saved, 2);
  ::close(saved);
  std::ifstream is(tmp);
  std::stringstream ss;
  ss << is.rdbuf();
  return ss.str();
}

/// Holds the lock of a grid point as a running worker would (an OFD lock on <run>.h5.lock).
class HeldLock {
 public:
  explicit HeldLock(const fs::path& lock) {
    fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    REQUIRE(fd_ >= 0);
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    REQUIRE(::fcntl(fd_, F_OFD_SETLK, &fl) == 0);
  }
  ~HeldLock() { ::close(fd_); }

 private:
  int fd_ = -1;
};

}  // namespace

TEST_CASE("sweep: a point's file made with another configuration is refused before any training") {
  const auto dir = test::scratch_dir("sweep_stale");
  auto o = tiny_sweep(dir);
  o.local = true;
  REQUIRE(experiments::run_sweep(o) == 0);
  const fs::path implicit = dir / "implicit_eps0.5_seed1.h5",
                 frozen = dir / "frozen_eps0.5_seed1.h5";
  const std::string before = stored_config(implicit);
  REQUIRE(before.find("width: 16") != std::string::npos);

  SUBCASE("a --set of a network key") {
    // A second seed: its point is missing and must not be trained either (validated first).
    auto o2 = tiny_sweep(dir, {"network.width=12", "sweep.seeds=[1, 2]"});
    o2.local = true;
    CHECK_THROWS_WITH_AS(experiments::run_sweep(o2),
                         doctest::Contains(("implicit_eps0.5_seed1 (" + implicit.string() +
                                            "): its stored configuration differs (stored vs "
                                            "this sweep): network.width (16 vs 12)")
                                               .c_str()),
                         eisim::config_error);
    CHECK(stored_config(implicit) == before);
    CHECK_FALSE(fs::exists(dir / "implicit_eps0.5_seed2.h5"));
    // --merge and --task-id refuse it too; --list says so.
    auto m = tiny_sweep(dir, {"network.width=12"});
    m.merge = true;
    CHECK_THROWS_WITH_AS(experiments::run_sweep(m), doctest::Contains("network.width (16 vs 12)"),
                         eisim::config_error);
    CHECK_FALSE(fs::exists(dir / "summary.h5"));
    auto t = tiny_sweep(dir, {"network.width=12"});
    t.task_id = 0;
    CHECK_THROWS_WITH_AS(experiments::run_sweep(t), doctest::Contains("pass --rerun"),
                         eisim::config_error);
    CHECK(stored_config(implicit) == before);
    // --rerun trains the points again from scratch, for the configuration asked for.
    o2.rerun = true;
    CHECK(experiments::run_sweep(o2) == 0);
    CHECK(stored_config(implicit).find("width: 12") != std::string::npos);
    CHECK(stored_config(frozen).find("width: 12") != std::string::npos);
    CHECK(fs::exists(dir / "implicit_eps0.5_seed2.h5"));
    // Now they are reused: nothing runs again.
    const auto t1 = fs::last_write_time(implicit);
    o2.rerun = false;
    CHECK(experiments::run_sweep(o2) == 0);
    CHECK(fs::last_write_time(implicit) == t1);
  }
  SUBCASE("a learning rate edited in the configuration") {
    auto o2 = tiny_sweep(dir, {"learning.lr_E=0.04"});
    o2.local = true;
    o2.merge = true;
    CHECK_THROWS_WITH_AS(experiments::run_sweep(o2),
                         doctest::Contains("learning.lr_E (0.05 vs 0.04)"), eisim::config_error);
    CHECK(stored_config(implicit) == before);
  }
  SUBCASE("data.eval_eps changed between two runs of the sweep (was a heap overflow in merge)") {
    auto o2 = tiny_sweep(dir, {"data.eval_eps=[0.0, 0.25, 0.5]", "sweep.seeds=[1, 2]"});
    o2.local = true;
    o2.merge = true;
    CHECK_THROWS_WITH_AS(experiments::run_sweep(o2), doctest::Contains("data.eval_eps"),
                         eisim::config_error);
    CHECK_FALSE(fs::exists(dir / "implicit_eps0.5_seed2.h5"));
    CHECK_FALSE(fs::exists(dir / "summary.h5"));
  }
  SUBCASE("a file at a point's path that is not a run") {
    { std::ofstream(implicit) << "not an HDF5 file\n"; }
    CHECK_THROWS_WITH_AS(experiments::run_sweep(o),
                         doctest::Contains("not a readable HDF5 run file"), eisim::config_error);
    std::ifstream is(implicit);
    std::string line;
    std::getline(is, line);
    CHECK(line == "not an HDF5 file");
    o.rerun = true;
    CHECK(experiments::run_sweep(o) == 0);
    CHECK(stored_config(implicit) == before);  // trained again, same configuration
  }
  SUBCASE("a run file altered after it was written is neither merged nor reused") {
    io::update_atomically(implicit.string(), [](io::H5File& f) {
      Mat<double> acc = f.read_matrix("train/test_accuracy");
      acc(0, 0) = 0.99;
      f.write("train/test_accuracy", acc);
    });
    auto m = tiny_sweep(dir);
    m.merge = true;
    CHECK_THROWS_WITH_AS(experiments::run_sweep(m), doctest::Contains("checksum mismatch"),
                         eisim::config_error);
    CHECK_FALSE(fs::exists(dir / "summary.h5"));
    CHECK_THROWS_WITH_AS(experiments::run_sweep(o), doctest::Contains("does not verify"),
                         eisim::config_error);
  }
  SUBCASE("more epochs than configured: refused, so a summary never mixes epochs") {
    auto o2 = tiny_sweep(dir, {"train.epochs=2"});
    o2.local = true;
    REQUIRE(experiments::run_sweep(o2) == 0);  // resumed to 2 epochs
    auto m = tiny_sweep(dir);                  // 1 epoch
    m.merge = true;
    // The run files hold the weights, traces and history of 2 epochs: a summary "at epoch 1"
    // beside them would mix epochs.
    CHECK_THROWS_WITH_AS(experiments::run_sweep(m),
                         doctest::Contains("2 epochs, more than train.epochs = 1"),
                         eisim::config_error);
    m = tiny_sweep(dir, {"train.epochs=2"});
    m.merge = true;
    CHECK(experiments::run_sweep(m) == 0);
    const auto merged_epochs =
        io::H5File::open_read((dir / "summary.h5").string()).read_vector("summary/epochs");
    CHECK_FALSE(merged_epochs.empty());
    for (double e : merged_epochs) CHECK(e == 2.0);
  }
}

TEST_CASE(
    "sweep: points evaluated at different data.eval_eps are refused by a merge before training") {
  const auto dir = test::scratch_dir("sweep_eval_eps");
  auto o = tiny_sweep(dir, {"sweep.conditions=[{name: a, set: {data.eval_eps: [0.0, 0.25]}}, "
                            "{name: b}]"});
  o.local = true;
  o.merge = true;
  CHECK_THROWS_WITH_AS(experiments::run_sweep(o),
                       doctest::Contains("a_eps0.5_seed1 (eval_eps [0, 0.25]) and b_eps0.5_seed1 "
                                         "(eval_eps [0, 0.5])"),
                       eisim::config_error);
  CHECK_FALSE(fs::exists(dir / "a_eps0.5_seed1.h5"));
  // Without --merge the points are run; a later merge refuses them the same way.
  o.merge = false;
  CHECK(experiments::run_sweep(o) == 0);
  o.local = false;
  o.merge = true;
  CHECK_THROWS_AS(experiments::run_sweep(o), eisim::config_error);
  CHECK_FALSE(fs::exists(dir / "summary.h5"));
}

TEST_CASE("sweep: grid points never share a file") {
  const auto dir = test::scratch_dir("sweep_names");
  auto o = tiny_sweep(dir, {"sweep.seeds=[1, 1]"});
  o.list = true;
  CHECK_THROWS_WITH_AS(experiments::run_sweep(o), doctest::Contains("seed 1 is listed twice"),
                       eisim::config_error);
  o = tiny_sweep(dir, {"sweep.eps=[0.5, 0.50]"});
  o.list = true;
  CHECK_THROWS_WITH_AS(experiments::run_sweep(o), doctest::Contains("sweep.eps: eps 0.5"),
                       eisim::config_error);
  // Distinct values get distinct names, and each point trains at exactly its eps.
  o = tiny_sweep(dir, {"sweep.eps=[0.3, 0.30000001]", "sweep.conditions=[{name: c}]"});
  o.local = true;
  o.merge = true;
  REQUIRE(experiments::run_sweep(o) == 0);
  const fs::path a = dir / "c_eps0.3_seed1.h5", b = dir / "c_eps0.30000001_seed1.h5";
  REQUIRE(fs::exists(a));
  REQUIRE(fs::exists(b));
  CHECK(io::parse_config(stored_config(a)).data.train_eps == 0.3);
  CHECK(io::parse_config(stored_config(b)).data.train_eps == 0.30000001);
  const auto s = io::H5File::open_read((dir / "summary.h5").string());
  CHECK(s.read_strings("summary/run").size() == 2);
}

TEST_CASE("sweep: the merged summary ends in .h5 and never replaces a run or a foreign file") {
  const auto dir = test::scratch_dir("sweep_merged");
  auto o = tiny_sweep(dir / "runs");
  o.task_id = 0;  // implicit done; frozen missing
  REQUIRE(experiments::run_sweep(o) == 0);
  const fs::path run = dir / "runs" / "implicit_eps0.5_seed1.h5";
  const std::string before = stored_config(run);
  o = tiny_sweep(dir / "runs");
  o.local = true;
  o.merge = true;
  // Each refusal comes before the missing point is trained.
  const auto refused = [&](const std::string& merged, const std::string& message) {
    CAPTURE(merged);
    o.merged_path = merged;
    CHECK_THROWS_WITH_AS(experiments::run_sweep(o), doctest::Contains(message.c_str()),
                         eisim::error);
    CHECK_FALSE(fs::exists(dir / "runs" / "frozen_eps0.5_seed1.h5"));
  };
  refused((dir / "summary.csv").string(), "must end in .h5");
  refused(run.string(), "is the run file of a grid point");
  refused((dir / "runs" / ".." / "runs" / "implicit_eps0.5_seed1.h5").string(),
          "is the run file of a grid point");
  fs::copy_file(run, dir / "other_run.h5");
  refused((dir / "other_run.h5").string(), "is not a summary written by eisim sweep --merge");
  { std::ofstream(dir / "notes.csv") << "my notes\n"; }
  refused((dir / "notes.h5").string(), "was not written by eisim sweep --merge");
  fs::create_directories(dir / "adir.h5");
  refused((dir / "adir.h5").string(), "not a regular file");
  CHECK(stored_config(run) == before);
  CHECK(stored_config(dir / "other_run.h5") == before);
  // A summary (and its CSV) written by a merge is derived data: a later merge replaces it.
  o.merged_path = (dir / "summary.h5").string();
  REQUIRE(experiments::run_sweep(o) == 0);
  CHECK(io::H5File::open_read(o.merged_path).attr_string("/", "file_kind") == "sweep_summary");
  o.local = false;
  CHECK(experiments::run_sweep(o) == 0);
  CHECK(io::H5File::open_read(o.merged_path).read_strings("summary/run").size() == 2);
}

TEST_CASE("sweep: a grid point that another process is running is refused, and --local skips it") {
  const auto dir = test::scratch_dir("sweep_lock");
  const fs::path lock = dir / "implicit_eps0.5_seed1.h5.lock";
  const HeldLock held(lock);
  auto o = tiny_sweep(dir);
  o.task_id = 0;
  int rc = -1;
  std::string err = capture_stderr([&] { rc = experiments::run_sweep(o); });
  CHECK(rc == experiments::sweep_exit_busy);
  CHECK(err.find("grid point implicit_eps0.5_seed1 is being written by another process (lock " +
                 lock.string()) != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "implicit_eps0.5_seed1.h5"));
  o.task_id = -1;
  o.local = true;
  o.merge = true;
  err = capture_stderr([&] { rc = experiments::run_sweep(o); });
  CHECK(rc == 0);
  CHECK(err.find("implicit_eps0.5_seed1 is being run by another process") != std::string::npos);
  CHECK(err.find("1 running elsewhere") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "implicit_eps0.5_seed1.h5"));
  CHECK(fs::exists(dir / "frozen_eps0.5_seed1.h5"));
  CHECK_FALSE(fs::exists(dir / "frozen_eps0.5_seed1.h5.lock"));  // removed when done
  CHECK(io::H5File::open_read((dir / "summary.h5").string()).read_strings("summary/run").size() ==
        1);
}

TEST_CASE("sweep: nothing to do, or a negative task id, is a configuration error") {
  const auto dir = test::scratch_dir("sweep_noaction");
  auto o = tiny_sweep(dir);
  CHECK_THROWS_WITH_AS(experiments::run_sweep(o), doctest::Contains("nothing to do"),
                       eisim::config_error);
  o.task_id = -2;
  CHECK_THROWS_WITH_AS(experiments::run_sweep(o), doctest::Contains("negative"),
                       eisim::config_error);
  o.task_id = -1;
  o.merge = true;
  o.rerun = true;
  CHECK_THROWS_WITH_AS(experiments::run_sweep(o), doctest::Contains("--rerun"),
                       eisim::config_error);
}

TEST_CASE(
    "sweep: a sweep.out_dir that cannot be read or created is a clear error, not an internal one") {
  const auto dir = test::scratch_dir("sweep_outdir");
  { std::ofstream(dir / "a_file") << "x\n"; }
  auto o = tiny_sweep(dir / "a_file" / "runs");  // below a regular file: ENOTDIR
  o.list = true;
  CHECK_THROWS_WITH_AS(experiments::run_sweep(o), doctest::Contains("Not a directory"),
                       eisim::error);
  o.list = false;
  o.local = true;
  CHECK_THROWS_WITH_AS(experiments::run_sweep(o), doctest::Contains("sweep.out_dir"), eisim::error);
  if (::geteuid() != 0) {  // root reads any directory
    fs::create_directories(dir / "locked");
    fs::permissions(dir / "locked", fs::perms::none);
    auto l = tiny_sweep(dir / "locked");
    l.list = true;
    CHECK_THROWS_WITH_AS(experiments::run_sweep(l), doctest::Contains("Permission denied"),
                         eisim::error);
    fs::permissions(dir / "locked", fs::perms::owner_all);
  }
}
