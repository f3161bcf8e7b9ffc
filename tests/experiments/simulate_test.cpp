// eisim simulate and the training pieces that depend on the circuit's populations and weights.
#include <doctest/doctest.h>

#include <cmath>
#include <regex>
#include <sstream>

#include "eisim/experiments/commands.hpp"
#include "eisim/experiments/training.hpp"
#include "eisim/io/config.hpp"
#include "eisim/models/error.hpp"
#include "eisim/sim/circuit.hpp"
#include "test_support.hpp"

using namespace eisim;

namespace {

/// tests/data/tiny.yaml with the hidden layers' circuit built from `preset`.
io::Config tiny_with(const std::string& preset, std::vector<std::string> extra = {}) {
  extra.insert(extra.begin(), "network.circuit.preset=" + preset);
  return io::load_config(test::source_path("tests/data/tiny.yaml"), extra);
}

std::string joined(const std::vector<models::Population>& pops) {
  std::string s;
  for (const auto& p : pops) s += (s.empty() ? "" : ",") + p.name;
  return s;
}

}  // namespace

TEST_CASE("simulate records the equilibrium and the trajectory of every population of a circuit") {
  for (const auto& preset : models::preset_names()) {
    CAPTURE(preset);
    const auto dir = test::scratch_dir("simulate_populations_" + preset);
    const std::string out = (dir / "sim.h5").string();
    const io::Config cfg = tiny_with(preset);
    experiments::run_simulate(cfg, out, "test");
    const auto net = models::initialise<double>(io::network_spec(cfg), cfg.seed);
    const auto f = io::H5File::open_read(out);
    const int N = int(cfg.simulate.images.size());
    CHECK(f.attr_int("simulate", "failed_samples") == 0);
    for (std::size_t l = 0; l + 1 < net.layers.size(); ++l) {
      CAPTURE(l);
      const auto& spec = net.layers[l].spec;
      const auto& pops = spec.circuit.populations;
      const std::string g = "simulate/layer_" + std::to_string(l);
      CHECK(f.attr_string(g, "populations") == joined(pops));
      CHECK(f.attr_string(g, "preset") == preset);
      for (const auto& s : f.read_strings(g + "/fp_status")) CHECK(s == "converged");
      for (const auto& s : f.read_strings(g + "/ode_status")) CHECK(s == "converged");
      sim::CircuitState<double> eq;
      for (std::size_t k = 0; k < pops.size(); ++k) {
        CAPTURE(pops[k].name);
        const std::string pg = g + "/populations/" + pops[k].name;
        CHECK(f.attr_int(pg, "index") == std::int64_t(k));
        CHECK(f.attr_int(pg, "size") == pops[k].size);
        CHECK(f.attr_string(pg, "dynamics") == models::to_string(pops[k].dynamics));
        for (const char* d : {"trace", "rate"}) CHECK(f.exists(pg + "/" + d));
        const Mat<double> z = f.read_matrix(pg + "/eq");
        REQUIRE(z.rows() == N);
        REQUIRE(z.cols() == pops[k].size);
        eq.z.push_back(z.transpose());
        // The integration ends at the fixed point of every population (the two solvers are
        // independent).
        const double scale = std::max(1.0, z.cwiseAbs().maxCoeff());
        CHECK(f.read_vector(pg + "/ode_fp_max_abs_diff")[0] < 1e-3 * scale);
      }
      CHECK(test::max_rel_error(f.read_matrix(g + "/v_eq"),
                                f.read_matrix(g + "/populations/E/eq")) == 0.0);
      // The stored equilibrium of a layer above the first meets the solver's tolerance for the
      // stored rates of the layer below, recomputed here from the file alone.
      if (l == 0) continue;
      const Mat<double> x =
          f.read_matrix("simulate/layer_" + std::to_string(l - 1) + "/populations/E/rate_eq")
              .transpose();
      sim::CircuitInput<double> in;
      sim::circuit_input(net.layers[l], x, in);
      std::vector<double> residual, scaled;
      sim::circuit_residual(net.layers[l], in, eq, cfg.fixed_point.tol, residual, scaled);
      for (double s : scaled) CHECK(s <= 1.0 + 1e-9);
    }
  }
}

TEST_CASE("every weight of any circuit is saved and restored under its name in the spec") {
  for (const auto& preset : models::preset_names()) {
    CAPTURE(preset);
    const io::Config cfg = tiny_with(preset);
    const auto spec = io::network_spec(cfg);
    const auto a = models::initialise<float>(spec, 1);
    auto b = models::initialise<float>(spec, 2);
    const auto dir = test::scratch_dir("save_weights_" + preset);
    const std::string path = (dir / "w.h5").string();
    io::write_atomically(path, [&](io::H5File& f) { experiments::save_network(f, a); });
    const auto f = io::H5File::open_read(path);
    for (std::size_t l = 0; l < spec.layers.size(); ++l)
      for (const auto& w : spec.layers[l].weights)
        CHECK_MESSAGE(f.exists("weights/layer_" + std::to_string(l) + "/" + w.name), w.name);
    experiments::load_network(f, b);
    for (std::size_t l = 0; l < spec.layers.size(); ++l)
      for (int k = 0; k < a.layers[l].w.count(); ++k) {
        CAPTURE(a.layers[l].w.name(k));
        CHECK(a.layers[l].w.at(k) == b.layers[l].w.at(k));
      }
  }
}

TEST_CASE("gradient clipping bounds the trained weights' gradients and leaves fixed ones alone") {
  const io::Config cfg = tiny_with("default");
  const auto net = models::initialise<double>(io::network_spec(cfg), 1);
  for (const bool train_inhibitory : {true, false}) {
    CAPTURE(train_inhibitory);
    learning::Gradients<double> g;
    g.zero_like(net);
    std::mt19937_64 rng(test::seed());
    for (std::size_t l = 0; l < net.layers.size(); ++l)
      for (int k = 0; k < g.layers[l].count(); ++k) {
        Mat<double>& m = g.layers[l].at(k);
        m = test::random_matrix<double>(int(m.rows()), int(m.cols()), -1, 1, rng);
        // Huge gradients on the weights the optimiser does not update must not shrink the others.
        if (!learning::is_trained(net.layers[l].spec, k, train_inhibitory)) m *= 1e6;
      }
    const auto before = g;
    double trained2 = 0, fixed = 0;
    for (std::size_t l = 0; l < net.layers.size(); ++l)
      for (int k = 0; k < g.layers[l].count(); ++k) {
        if (learning::is_trained(net.layers[l].spec, k, train_inhibitory))
          trained2 += g.layers[l].at(k).squaredNorm();
        else
          fixed += g.layers[l].at(k).size();
      }
    REQUIRE(fixed > 0);  // the default circuit's pooling weights are fixed
    const double norm = experiments::clip_gradients(net, g, 0.5, train_inhibitory);
    CHECK(norm == doctest::Approx(std::sqrt(trained2)).epsilon(1e-12));
    double after2 = 0;
    for (std::size_t l = 0; l < net.layers.size(); ++l)
      for (int k = 0; k < g.layers[l].count(); ++k) {
        if (learning::is_trained(net.layers[l].spec, k, train_inhibitory)) {
          after2 += g.layers[l].at(k).squaredNorm();
          CHECK(test::max_rel_error(g.layers[l].at(k), before.layers[l].at(k) * (0.5 / norm)) <
                1e-12);
        } else {
          CHECK(g.layers[l].at(k) == before.layers[l].at(k));
        }
      }
    CHECK(std::sqrt(after2) == doctest::Approx(0.5).epsilon(1e-12));
    // Within the bound nothing changes.
    const auto small = g;
    CHECK(experiments::clip_gradients(net, g, 1.0, train_inhibitory) ==
          doctest::Approx(0.5).epsilon(1e-12));
    for (std::size_t l = 0; l < net.layers.size(); ++l)
      for (int k = 0; k < g.layers[l].count(); ++k)
        CHECK(g.layers[l].at(k) == small.layers[l].at(k));
  }
}

TEST_CASE("the failure hints name only configuration keys that exist for the circuit") {
  // Every key the hint names, set to the value it shows, is accepted by the configuration of
  // that preset and kind (a legacy key such as network.circuit.theta is an error with the
  // pv_sst_vip and ssn presets).
  const std::regex key_value(R"((network\.[A-Za-z0-9_.]+) = ([^,)\s]+))");
  for (const auto& preset : models::preset_names())
    for (const std::string kind : {"circuit", "layernorm", "none"}) {
      CAPTURE(preset);
      CAPTURE(kind);
      const std::vector<std::string> base{"network.circuit.preset=" + preset,
                                          "network.kind=" + kind};
      io::Config cfg;
      try {
        cfg = io::load_config(test::source_path("tests/data/tiny.yaml"), base);
      } catch (const config_error&) {
        continue;  // a combination the configuration refuses
      }
      const std::string hint = experiments::network_hint(cfg);
      CAPTURE(hint);
      int named = 0;
      for (std::sregex_iterator it(hint.begin(), hint.end(), key_value), end; it != end; ++it) {
        auto set = base;
        set.push_back((*it)[1].str() + "=" + (*it)[2].str());
        CHECK_NOTHROW(io::load_config(test::source_path("tests/data/tiny.yaml"), set));
        ++named;
      }
      // A LayerNorm layer's set point is a key of the default and inorm presets only.
      if (kind != "layernorm" || preset == "default" || preset == "inorm") CHECK(named >= 1);
    }
}

// Stimulus protocols (simulate.protocol; docs/config.md, docs/hdf5.md "Stimulus protocol").

namespace {

/// The mean over units of population `name`'s rate at row k of /simulate/protocol/layer_<l>.
double protocol_mean_rate(const io::H5File& f, int l, const std::string& name, Eigen::Index k) {
  const Mat<double> r = f.read_matrix("simulate/protocol/layer_" + std::to_string(l) +
                                      "/populations/" + name + "/rate");
  return r.row(k).mean();
}

}  // namespace

TEST_CASE("a protocol run records its time axis, tables and every population's trace and rate") {
  const auto dir = test::scratch_dir("simulate_protocol");
  const std::string out = (dir / "sim.h5").string();
  // Two windows on a default circuit of two hidden layers, then a long unperturbed segment of
  // image 0 (simulate.images[0], unjittered) so that both layers settle on the equilibria that
  // the fixed-point solver found for it.
  const io::Config cfg =
      tiny_with("default", {"simulate.eps=0",
                            "simulate.protocol.segments=[{image: 1, brightness: 0.5, duration: "
                            "100}, {image: 0, duration: 50}, {image: 0, duration: 1000}]",
                            "simulate.protocol.perturbations=[{population: I, start: 20, end: 60, "
                            "current: 0.5}, {population: I, start: 110, end: 130, silence: true, "
                            "layer: 1}]",
                            "simulate.protocol.record_interval=2.5"});
  experiments::run_simulate(cfg, out, "test");
  const auto net = models::initialise<double>(io::network_spec(cfg), cfg.seed);
  const auto f = io::H5File::open_read(out);
  const std::string g = "simulate/protocol";
  // The existing outputs are still there, unchanged in shape.
  CHECK(f.read_vector("simulate/t").size() == 21);
  CHECK(f.attr_int("simulate", "failed_samples") == 0);

  const auto t = f.read_vector(g + "/t");
  REQUIRE(t.size() == 461);  // 1150 ms every 2.5 ms, both ends
  CHECK(t.front() == 0.0);
  CHECK(t[1] == 2.5);
  CHECK(t.back() == 1150.0);
  CHECK(f.attr_double(g, "duration") == 1150.0);
  CHECK(f.attr_int(g, "failed_layers") == 0);
  CHECK(f.read_vector(g + "/segments/start") == std::vector<double>{0, 100, 150});
  CHECK(f.read_vector(g + "/segments/end") == std::vector<double>{100, 150, 1150});
  CHECK(f.read_vector(g + "/segments/image") == std::vector<double>{1, 0, 0});
  CHECK(f.read_vector(g + "/segments/brightness") == std::vector<double>{0.5, 1, 1});
  CHECK(f.read_vector(g + "/segments/label") ==
        std::vector<double>{f.read_vector("simulate/labels")[1],
                            f.read_vector("simulate/labels")[0],
                            f.read_vector("simulate/labels")[0]});
  CHECK(f.read_strings(g + "/perturbations/population") == std::vector<std::string>{"I", "I"});
  CHECK(f.read_vector(g + "/perturbations/layer") == std::vector<double>{-1, 1});
  CHECK(f.read_vector(g + "/perturbations/start") == std::vector<double>{20, 110});
  CHECK(f.read_vector(g + "/perturbations/end") == std::vector<double>{60, 130});
  CHECK(f.read_vector(g + "/perturbations/current") == std::vector<double>{0.5, 0});
  CHECK(f.read_vector(g + "/perturbations/silence") == std::vector<double>{0, 1});

  CHECK_FALSE(f.exists(g + "/layer_2"));  // the readout is not a circuit
  for (int l = 0; l < 2; ++l) {
    CAPTURE(l);
    const auto& spec = net.layers[std::size_t(l)].spec;
    const auto& pops = spec.circuit.populations;
    const std::string lg = g + "/layer_" + std::to_string(l);
    CHECK(f.attr_string(lg, "status") == "converged");
    CHECK(f.attr_string(lg, "populations") == joined(pops));
    for (std::size_t k = 0; k < pops.size(); ++k) {
      CAPTURE(pops[k].name);
      const std::string pg = lg + "/populations/" + pops[k].name;
      const Mat<double> z = f.read_matrix(pg + "/trace"), r = f.read_matrix(pg + "/rate");
      CHECK(z.rows() == 461);
      CHECK(z.cols() == pops[k].size);
      CHECK(r.rows() == 461);
      CHECK(r.cols() == pops[k].size);
      CHECK(z.allFinite());
      CHECK(f.attr_int(pg, "index") == std::int64_t(k));
      // After 1000 ms of image 0 the layer sits at its equilibrium for image 0, which simulate's
      // fixed-point solver found independently (layer 1: for layer 0's equilibrium rates).
      const Mat<double> eq = f.read_matrix("simulate/layer_" + std::to_string(l) + "/populations/" +
                                           pops[k].name + "/eq");
      const double scale = std::max(1.0, eq.row(0).cwiseAbs().maxCoeff());
      CHECK((z.row(460) - eq.row(0)).cwiseAbs().maxCoeff() < 1e-4 * scale);
    }
    // The E rates are phi(v).
    Mat<double> phi;
    models::apply_phi(spec.phi, f.read_matrix(lg + "/populations/E/trace"), phi);
    CHECK(test::max_rel_error(phi, f.read_matrix(lg + "/populations/E/rate")) < 1e-12);
  }
}

TEST_CASE(
    "driving VIP in pv_sst_vip lowers SST's rate and raises E's (disinhibition, from the file)") {
  const auto dir = test::scratch_dir("simulate_protocol_vip");
  const std::string out = (dir / "sim.h5").string();
  const io::Config cfg = tiny_with(
      "pv_sst_vip", {"network.hidden_layers=1", "network.width=20", "simulate.images=[0]",
                     "simulate.protocol.segments=[{image: 0, duration: 1000}]",
                     "simulate.protocol.perturbations=[{population: VIP, start: 500, end: 1000, "
                     "current: 0.5}]"});
  experiments::run_simulate(cfg, out, "test");
  const auto f = io::H5File::open_read(out);
  const auto t = f.read_vector("simulate/protocol/t");
  REQUIRE(t.size() == 1001);
  REQUIRE(t[499] == 499.0);
  REQUIRE(t[999] == 999.0);
  CHECK(f.attr_string("simulate/protocol/layer_0", "status") == "converged");
  // Just before the window (settled after 500 ms) and at its end.
  const double vip0 = protocol_mean_rate(f, 0, "VIP", 499),
               vip1 = protocol_mean_rate(f, 0, "VIP", 999);
  const double sst0 = protocol_mean_rate(f, 0, "SST", 499),
               sst1 = protocol_mean_rate(f, 0, "SST", 999);
  const double e0 = protocol_mean_rate(f, 0, "E", 499), e1 = protocol_mean_rate(f, 0, "E", 999);
  CAPTURE(vip0);
  CAPTURE(vip1);
  CAPTURE(sst0);
  CAPTURE(sst1);
  CAPTURE(e0);
  CAPTURE(e1);
  CHECK(vip1 > vip0);
  CHECK(sst1 < sst0);
  CHECK(e1 > e0);
  // Before the window the circuit had settled: the rates of the last 50 ms before it agree.
  CHECK(std::abs(protocol_mean_rate(f, 0, "SST", 449) - sst0) < 1e-3 * std::max(1.0, sst0));
}

TEST_CASE("a protocol whose integration fails says where, and leaves the layers above alone") {
  // Silencing the default circuit's divisive interneuron leaves E with the conductance sigma0 =
  // 1e-6 alone: its potentials run away and the integration stops (non_finite).
  const auto dir = test::scratch_dir("simulate_protocol_fails");
  const std::string out = (dir / "sim.h5").string();
  const io::Config cfg = tiny_with(
      "default", {"simulate.images=[0]", "simulate.protocol.segments=[{image: 0, duration: 200}]",
                  "simulate.protocol.perturbations=[{population: D, start: 100, end: 200, "
                  "silence: true, layer: 0}]"});
  experiments::run_simulate(cfg, out, "test");
  const auto f = io::H5File::open_read(out);
  CHECK(f.attr_int("simulate/protocol", "failed_layers") == 1);
  CHECK(f.attr_string("simulate/protocol/layer_0", "status") != "converged");
  CHECK(f.attr_string("simulate/protocol/layer_1", "status") == "skipped");
  const Mat<double> e0 = f.read_matrix("simulate/protocol/layer_0/populations/E/trace");
  REQUIRE(e0.rows() == 201);
  CHECK(e0.topRows(100).allFinite());  // recorded up to the failure
  CHECK(std::isnan(e0(200, 0)));
  CHECK(f.read_matrix("simulate/protocol/layer_1/populations/E/trace").array().isNaN().all());
}
