// The output policy: regular files only, reserved names, links followed, one writer per output.
#include "eisim/io/output.hpp"

#include <doctest/doctest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "eisim/io/hdf5.hpp"
#include "eisim/models/error.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using eisim::io::check_output_path;
using eisim::io::OutputLock;

TEST_CASE("an output lock refuses a second holder and never takes over a foreign file") {
  const auto dir = eisim::test::scratch_dir("output_lock");
  const std::string out = (dir / "run.h5").string();
  {
    const OutputLock a(out, "--out run.h5");
    CHECK(eisim::io::output_locked(out));
    CHECK_THROWS_WITH_AS(OutputLock(out, "--out run.h5"),
                         doctest::Contains("is being written by another process"),
                         eisim::io::output_busy);
  }
  CHECK_FALSE(fs::exists(out + ".lock"));  // removed when released
  std::ofstream(out + ".lock") << "precious\n";
  CHECK_THROWS_WITH_AS(OutputLock(out, "--out run.h5"), doctest::Contains("not an eisim lock file"),
                       eisim::error);
  std::ifstream in(out + ".lock");
  std::string text;
  std::getline(in, text);
  CHECK(text == "precious");
  fs::remove(out + ".lock");
  fs::create_symlink(dir / "target", out + ".lock");
  CHECK_THROWS_WITH_AS(OutputLock(out, "--out run.h5"), doctest::Contains("symbolic link"),
                       eisim::error);
  CHECK_FALSE(fs::exists(dir / "target"));
}

TEST_CASE("outputs are regular files with unreserved names, and links are followed") {
  const auto dir = eisim::test::scratch_dir("output_paths");
  for (const char* name : {"x.lock", "x.h5.tmp"})
    CHECK_THROWS_WITH_AS(check_output_path((dir / name).string(), true, "--out"),
                         doctest::Contains("reserved"), eisim::error);
  REQUIRE(::mkfifo((dir / "fifo.h5").c_str(), 0644) == 0);
  CHECK_THROWS_WITH_AS(check_output_path((dir / "fifo.h5").string(), true, "--out"),
                       doctest::Contains("a FIFO"), eisim::error);
  CHECK_THROWS_WITH_AS(eisim::io::H5File::open_read((dir / "fifo.h5").string()),
                       doctest::Contains("a FIFO"), eisim::data_error);  // no endless open
  fs::create_symlink("sub/target.h5", dir / "dangling.h5");
  CHECK(eisim::io::resolve_output((dir / "dangling.h5").string()) ==
        (dir / "sub" / "target.h5").string());
  fs::create_symlink(dir / "dangling.h5", dir / "chain.h5");
  CHECK(eisim::io::resolve_output((dir / "chain.h5").string()) ==
        (dir / "sub" / "target.h5").string());
  CHECK(eisim::io::resolve_output((dir / "plain.h5").string()) == (dir / "plain.h5").string());
}
