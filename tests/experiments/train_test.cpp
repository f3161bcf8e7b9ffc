#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>

#include "eisim/experiments/commands.hpp"
#include "eisim/io/config.hpp"
#include "eisim/models/error.hpp"
#include "test_support.hpp"

using namespace eisim;
namespace fs = std::filesystem;

namespace {

io::Config tiny(const std::vector<std::string>& extra = {}) {
  std::vector<std::string> ov{"train.epochs=2"};
  ov.insert(ov.end(), extra.begin(), extra.end());
  return io::load_config(test::source_path("tests/data/tiny.yaml"), ov);
}

models::Network<double> weights_of(const std::string& path, const io::Config& c) {
  auto net = models::initialise<double>(io::network_spec(c), 999);  // overwritten below
  const auto f = io::H5File::open_read(path);
  experiments::load_network(f, net);
  return net;
}

experiments::TrainOptions quiet(const std::string& out, bool resume = false) {
  experiments::TrainOptions o;
  o.out = out;
  o.resume = resume;
  o.quiet = true;
  o.command = "test";
  return o;
}

}  // namespace

TEST_CASE("two epochs in one run equal one epoch, a resume, and one more epoch") {
  for (const char* rule : {"implicit", "frozen"}) {
    CAPTURE(rule);
    const auto dir = test::scratch_dir(std::string("resume_") + rule);
    const std::string set = std::string("learning.rule=") + rule;
    const std::string a = (dir / "a.h5").string(), b = (dir / "b.h5").string();
    experiments::run_train(tiny({set, "train.epochs=2"}), quiet(a));
    experiments::run_train(tiny({set, "train.epochs=1"}), quiet(b));
    experiments::run_train(tiny({set, "train.epochs=2"}), quiet(b, true));
    const auto wa = weights_of(a, tiny()), wb = weights_of(b, tiny());
    double worst = 0;
    for (std::size_t l = 0; l < wa.layers.size(); ++l) {
      std::vector<const Mat<double>*> ma, mb;
      wa.layers[l].w.for_each([&](const std::string&, const Mat<double>& m) { ma.push_back(&m); });
      wb.layers[l].w.for_each([&](const std::string&, const Mat<double>& m) { mb.push_back(&m); });
      REQUIRE(ma.size() == mb.size());
      for (std::size_t k = 0; k < ma.size(); ++k)
        worst = std::max(worst, (*ma[k] - *mb[k]).cwiseAbs().maxCoeff());
    }
    CHECK(worst <= 1e-6);
    const auto fa = io::H5File::open_read(a), fb = io::H5File::open_read(b);
    CHECK(fa.read_vector("train/loss") == fb.read_vector("train/loss"));
    for (const char* d : {"train/forward_continuations", "train/forward_factorisations",
                          "train/forward_krylov_vectors", "train/forward_marginal"})
      CHECK_MESSAGE(fa.read_vector(d) == fb.read_vector(d), d);
    CHECK(fb.attr_string("/", "status") == "complete");
  }
}

TEST_CASE("a NaN loss stops training with a hint and leaves the last good file intact") {
  const auto dir = test::scratch_dir("nan");
  const std::string out = (dir / "run.h5").string();
  experiments::run_train(tiny({"train.epochs=1"}), quiet(out));
  const auto before = std::filesystem::last_write_time(out);
  auto o = quiet(out);
  o.overwrite = true;  // a new run asked to replace the file, which fails in its first epoch
  CHECK_THROWS_WITH_AS(experiments::run_train(tiny({"train.epochs=3", "learning.lr_E=1e30"}), o),
                       doctest::Contains("try a smaller learning rate"), eisim::run_failed);
  CHECK(std::filesystem::last_write_time(out) == before);
  const auto f = io::H5File::open_read(out);
  CHECK(f.read_vector("train/epoch").size() == 1);
  CHECK(f.attr_string("/", "status") == "complete");
}

TEST_CASE("an existing output is replaced only when asked, and never if it is not a regular file") {
  const auto dir = test::scratch_dir("overwrite");
  const std::string out = (dir / "run.h5").string();
  experiments::run_train(tiny({"train.epochs=1"}), quiet(out));
  const auto before = std::filesystem::last_write_time(out);
  CHECK_THROWS_WITH_AS(experiments::run_train(tiny({"train.epochs=1"}), quiet(out)),
                       doctest::Contains("--overwrite"), eisim::error);
  CHECK(std::filesystem::last_write_time(out) == before);
  auto o = quiet(out);
  o.overwrite = true;
  experiments::run_train(tiny({"train.epochs=1", "seed=9"}), o);
  CHECK(io::H5File::open_read(out).attr_int("/", "seed") == 9);
  std::filesystem::create_directories(dir / "a_directory.h5");
  o.out = (dir / "a_directory.h5").string();
  CHECK_THROWS_WITH_AS(experiments::run_train(tiny({"train.epochs=1"}), o),
                       doctest::Contains("not a regular file"), eisim::error);
  o.out = (dir / "no_such_dir" / "x.h5").string();
  CHECK_THROWS_WITH_AS(experiments::run_train(tiny({"train.epochs=1"}), o),
                       doctest::Contains("does not exist"), eisim::error);
}

TEST_CASE("what can be checked before the first epoch is checked before it") {
  const auto dir = test::scratch_dir("early");
  const std::string out = (dir / "run.h5").string();
  // data.test_limit below the simulated image indices: refused before training, not at the end.
  CHECK_THROWS_WITH_AS(
      experiments::run_train(tiny({"data.test_limit=4", "simulate.images=[0, 5]"}), quiet(out)),
      doctest::Contains("simulate.images"), eisim::config_error);
  CHECK_FALSE(std::filesystem::exists(out));
  CHECK_THROWS_WITH_AS(experiments::run_train(tiny(), quiet(out, true)),
                       doctest::Contains("does not exist"), eisim::error);
}

TEST_CASE("the simulated images may change on resume, and the refusal names the differing key") {
  const auto dir = test::scratch_dir("resume_keys");
  const std::string out = (dir / "run.h5").string();
  experiments::run_train(tiny({"train.epochs=1"}), quiet(out));
  experiments::run_train(tiny({"train.epochs=2", "simulate.images=[1]"}), quiet(out, true));
  CHECK(io::H5File::open_read(out).read_vector("train/epoch").size() == 2);
  CHECK_THROWS_WITH_AS(
      experiments::run_train(tiny({"train.epochs=3", "network.width=12"}), quiet(out, true)),
      doctest::Contains("network.width (24 vs 12)"), eisim::config_error);
}

TEST_CASE("a run that diverges or learns nothing is marked failed, with the cause") {
  const auto dir = test::scratch_dir("failed");
  const std::string a = (dir / "diverged.h5").string(), b = (dir / "chance.h5").string();
  CHECK_THROWS_WITH_AS(experiments::run_train(tiny({"learning.lr_E=1e6"}), quiet(a)),
                       doctest::Contains("diverged"), eisim::run_failed);
  const auto fa = io::H5File::open_read(a);
  CHECK(fa.attr_string("/", "status") == "failed");
  CHECK(fa.attr_string("/", "failure").find("learning.lr_E") != std::string::npos);
  CHECK(fa.read_vector("train/epoch").size() == 1);  // stopped at the first diverged epoch
  CHECK_THROWS_WITH_AS(experiments::run_train(tiny({"network.circuit.theta=1e-30"}), quiet(b)),
                       doctest::Contains("learned nothing"), eisim::run_failed);
  CHECK(io::H5File::open_read(b).attr_string("/", "status") == "failed");
  // A failed run stays failed: resuming it (with nothing left to do, or with more epochs that
  // might recover) reports the failure instead of continuing.
  CHECK_THROWS_WITH_AS(
      experiments::run_train(tiny({"network.circuit.theta=1e-30"}), quiet(b, true)),
      doctest::Contains("marked failed"), eisim::run_failed);
  CHECK_THROWS_WITH_AS(
      experiments::run_train(tiny({"learning.lr_E=1e6", "train.epochs=3"}), quiet(a, true)),
      doctest::Contains("marked failed"), eisim::run_failed);
  CHECK(io::H5File::open_read(a).read_vector("train/epoch").size() == 1);
}

TEST_CASE("a run stopped early and resumed with fewer epochs is judged before it is complete") {
  const auto dir = test::scratch_dir("judged");
  // A file left with status running (a run stopped after its first epoch) and resumed with
  // train.epochs = 1 has nothing to train: it is judged like a last epoch, not left running or
  // reported as fine unjudged.
  const std::string good = (dir / "good.h5").string(), bad = (dir / "bad.h5").string();
  experiments::run_train(tiny({"train.epochs=1"}), quiet(good));
  CHECK_THROWS_AS(
      experiments::run_train(tiny({"train.epochs=1", "network.circuit.theta=1e-30"}), quiet(bad)),
      eisim::run_failed);
  for (const auto& path : {good, bad})
    io::update_atomically(path, [](io::H5File& f) { f.set_attr("/", "status", "running"); });
  experiments::run_train(tiny({"train.epochs=1"}), quiet(good, true));
  CHECK(io::H5File::open_read(good).attr_string("/", "status") == "complete");
  CHECK_THROWS_WITH_AS(
      experiments::run_train(tiny({"train.epochs=1", "network.circuit.theta=1e-30"}),
                             quiet(bad, true)),
      doctest::Contains("learned nothing"), eisim::run_failed);
  CHECK(io::H5File::open_read(bad).attr_string("/", "status") == "failed");
}

TEST_CASE("a checkpoint that was altered after it was written is refused on resume") {
  const auto dir = test::scratch_dir("checksum");
  const std::string out = (dir / "run.h5").string();
  experiments::run_train(tiny({"train.epochs=1"}), quiet(out));
  experiments::verify_run_file(out);  // the untouched file verifies
  // Flip one random bit of one stored weight or momentum entry, in six copies.
  std::mt19937_64 rng(test::seed());
  for (int trial = 0; trial < 6; ++trial) {
    const std::string copy = (dir / ("flip" + std::to_string(trial) + ".h5")).string();
    const int bit = int(rng() % 32);
    io::update_atomically(out, [](io::H5File&) {});  // a no-op edit keeps the file valid
    std::filesystem::copy_file(out, copy);
    io::update_atomically(copy, [&](io::H5File& f) {
      const char* names[] = {"weights/layer_0/W_EX", "weights/layer_1/b", "optimizer/layer_0/W_EX"};
      const std::string name = names[trial % 3];
      Mat<double> m = f.read_matrix(name);
      Mat<float> w = m.cast<float>();
      std::uint32_t u;
      std::memcpy(&u, &w(0, 0), 4);
      u ^= 1u << bit;
      std::memcpy(&w(0, 0), &u, 4);
      f.write(name, w);
    });
    CAPTURE(bit);
    CHECK_THROWS_WITH_AS(experiments::verify_run_file(copy), doctest::Contains("checksum"),
                         eisim::data_error);
    CHECK_THROWS_AS(experiments::run_train(tiny({"train.epochs=2"}), quiet(copy, true)),
                    eisim::data_error);
  }
  experiments::verify_run_file(out);
}

TEST_CASE("a run file from before /train/forward_marginal resumes, with -1 for its epochs") {
  // tests/data/run_6aeb20f.h5: one epoch of tests/data/tiny.yaml (simulate.images [0]) written
  // by eisim at commit 6aeb20f, which had neither the dataset nor the key
  // fixed_point.stability_marginal (its checksum does not cover the one, its stored
  // configuration does not hold the other).
  const auto dir = test::scratch_dir("marginal_resume");
  const std::string out = (dir / "run.h5").string();
  fs::copy_file(test::source_path("tests/data/run_6aeb20f.h5"), out,
                fs::copy_options::overwrite_existing);
  std::string yaml;
  {
    const auto f = io::H5File::open_read(out);
    REQUIRE_FALSE(f.exists("train/forward_marginal"));
    yaml = f.attr_string("/", "config");
  }
  REQUIRE(yaml.find("stability_marginal") == std::string::npos);
  experiments::verify_run_file(out);
  const std::string cfg = (dir / "stored.yaml").string();
  {
    std::ofstream os(cfg);
    os << yaml;
  }
  experiments::run_train(io::load_config(cfg, {"train.epochs=2"}), quiet(out, true));
  const auto f = io::H5File::open_read(out);
  const auto v = f.read_vector("train/forward_marginal");
  REQUIRE(v.size() == 2);
  CHECK(v[0] == -1);  // unknown: trained before the count existed
  CHECK(v[1] >= 0);
  CHECK(f.read_vector("train/epoch").size() == 2);
  experiments::verify_run_file(out);
}

TEST_CASE("a checkpoint with a bad epoch, a short history or no optimizer state is refused") {
  const auto dir = test::scratch_dir("bad_checkpoint");
  const std::string out = (dir / "run.h5").string();
  experiments::run_train(tiny({"train.epochs=2"}), quiet(out));
  struct Case {
    const char* what;
    std::function<void(io::H5File&)> edit;
    const char* message;
  };
  const std::vector<Case> cases{
      {"epoch -3",
       [](io::H5File& f) { f.write("checkpoint/epoch", std::vector<std::int64_t>{-3}); },
       "epoch number >= 1"},
      {"epoch 100",
       [](io::H5File& f) { f.write("checkpoint/epoch", std::vector<std::int64_t>{100}); },
       "says 100"},
      {"empty epoch",
       [](io::H5File& f) { f.write("checkpoint/epoch", std::vector<std::int64_t>{}); },
       "epoch number >= 1"},
      {"short history",
       [](io::H5File& f) {
         f.write("train/loss", std::vector<double>{f.read_vector("train/loss")[0]});
       },
       "/train/loss holds 1 epochs"},
      {"no optimizer", [](io::H5File& f) { f.remove("optimizer"); }, "missing /optimizer"},
      {"NaN weight",
       [](io::H5File& f) {
         Mat<double> m = f.read_matrix("weights/layer_1/b");
         m(0, 0) = std::nan("");
         f.write("weights/layer_1/b", m);
       },
       "non-finite"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.what);
    const std::string copy = (dir / "copy.h5").string();
    std::filesystem::remove(copy);
    std::filesystem::copy_file(out, copy);
    io::update_atomically(copy, c.edit);
    CHECK_THROWS_WITH_AS(experiments::verify_run_file(copy), doctest::Contains(c.message),
                         eisim::data_error);
  }
}

TEST_CASE("a missing dataset names the path and the Debian package") {
  const auto dir = test::scratch_dir("missing");
  CHECK_THROWS_WITH_AS(experiments::run_train(tiny({"data.dir=/nonexistent/fashion"}),
                                              quiet((dir / "x.h5").string())),
                       doctest::Contains("dataset-fashion-mnist"), eisim::data_error);
  CHECK_FALSE(std::filesystem::exists(dir / "x.h5"));
}

TEST_CASE("resuming with a different configuration is refused") {
  const auto dir = test::scratch_dir("resume_mismatch");
  const std::string out = (dir / "run.h5").string();
  experiments::run_train(tiny({"train.epochs=1"}), quiet(out));
  CHECK_THROWS_WITH_AS(
      experiments::run_train(tiny({"train.epochs=2", "learning.lr_E=0.5"}), quiet(out, true)),
      doctest::Contains("cannot resume"), eisim::config_error);
}

TEST_CASE("a training file records history, weights, provenance and equilibrium traces") {
  const auto dir = test::scratch_dir("record");
  const std::string out = (dir / "run.h5").string();
  const auto s = experiments::run_train(tiny(), quiet(out));
  CHECK(s.epochs == 2);
  CHECK(s.final_accuracy > 0.3);  // 10 classes: far above chance after 2 tiny epochs
  const auto f = io::H5File::open_read(out);
  for (const char* d : {"train/loss", "train/test_accuracy", "train/grad_alignment",
                        "train/activity_mean", "train/iterations_histogram", "weights/layer_0/W_EX",
                        "simulate/layer_0/v", "simulate/layer_1/v_eq", "checkpoint/rng"})
    CHECK_MESSAGE(f.exists(d), d);
  CHECK(f.attr_string("/", "git_commit").size() > 0);
  CHECK(f.attr_string("/", "config").find("rule: implicit") != std::string::npos);
  // The implicit rule's gradient is the exact one: alignment 1.
  for (double a : f.read_vector("train/grad_alignment_total")) CHECK(a == doctest::Approx(1.0));
  // The solver's work per epoch: the pooled default circuit factorises its 2 x 2 Jacobian at
  // least once per layer solve that takes a step, and never runs GMRES (below its minimum size).
  const auto lu = f.read_vector("train/forward_factorisations");
  const auto gm = f.read_vector("train/forward_krylov_vectors");
  const auto co = f.read_vector("train/forward_continuations");
  REQUIRE(lu.size() == 2);
  REQUIRE(gm.size() == 2);
  REQUIRE(co.size() == 2);
  // Marginal equilibria (fixed_point.stability_marginal): counted, 0 or more, never -1 (the
  // value for epochs of an older file that had no such count).
  const auto mg = f.read_vector("train/forward_marginal");
  REQUIRE(mg.size() == 2);
  for (int e = 0; e < 2; ++e) {
    CHECK(lu[e] > 0);
    CHECK(gm[e] == 0);
    CHECK(co[e] >= 0);
    CHECK(mg[e] >= 0);
  }
}

TEST_CASE("an interrupted sweep completes only its missing points and merges one row each") {
  const auto dir = test::scratch_dir("sweep");
  const std::string cfg = test::source_path("tests/data/tiny.yaml");
  experiments::SweepOptions o;
  o.config_path = cfg;
  o.overrides = {"sweep.out_dir=" + (dir / "runs").string(), "train.epochs=1",
                 "simulate.images=[0]"};
  o.task_id = 1;  // one grid point done before the "interruption"
  CHECK(experiments::run_sweep(o) == 0);
  const auto p1 = dir / "runs" / "implicit_eps0.5_seed2.h5";
  REQUIRE(std::filesystem::exists(p1));
  const auto t1 = std::filesystem::last_write_time(p1);
  o.task_id = -1;
  o.local = true;
  o.merge = true;
  o.merged_path = (dir / "summary.h5").string();
  CHECK(experiments::run_sweep(o) == 0);
  CHECK(std::filesystem::last_write_time(p1) == t1);  // not re-run
  const auto f = io::H5File::open_read(o.merged_path);
  const auto runs = f.read_strings("summary/run");
  CHECK(runs.size() == 4);
  CHECK(f.read_vector("summary/final_accuracy").size() == 4);
  CHECK(f.exists("runs/frozen_eps0.5_seed1/train/loss"));
  CHECK(std::filesystem::exists(dir / "summary.csv"));
}

TEST_CASE("a task id outside the grid is a config error naming the grid size") {
  experiments::SweepOptions o;
  o.config_path = test::source_path("tests/data/tiny.yaml");
  o.task_id = 99;
  CHECK_THROWS_WITH_AS(experiments::run_sweep(o), doctest::Contains("4 points"),
                       eisim::config_error);
}

TEST_CASE("simulate uses only verified weights of the network it simulates") {
  const auto dir = test::scratch_dir("simulate_weights");
  const std::string run = (dir / "run.h5").string(), out = (dir / "sim.h5").string();
  experiments::run_train(tiny({"train.epochs=1"}), quiet(run));
  const std::string w = "simulate.weights=" + run;
  experiments::run_simulate(tiny({w}), out, "test");
  CHECK(io::H5File::open_read(out).exists("simulate/layer_0/v"));
  CHECK_THROWS_WITH_AS(experiments::run_simulate(tiny({w, "network.circuit.theta=5"}),
                                                 (dir / "b.h5").string(), "test"),
                       doctest::Contains("network.circuit.theta (1.0 vs 5.0)"),
                       eisim::config_error);
  const std::string nock = (dir / "nock.h5").string();
  fs::copy_file(run, nock);
  io::update_atomically(nock, [](io::H5File& f) { f.remove("checkpoint"); });
  CHECK_THROWS_WITH_AS(experiments::run_simulate(tiny({"simulate.weights=" + nock}),
                                                 (dir / "c.h5").string(), "test"),
                       doctest::Contains("not a run file"), eisim::data_error);
  CHECK_THROWS_WITH_AS(experiments::run_simulate(tiny({w}), out, "test"),
                       doctest::Contains("--overwrite"), eisim::error);
}
